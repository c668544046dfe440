"""A member process starts without the packages the backend imports and no member uses (member.startup)."""
import importlib.util
import os
import subprocess
import sys

import pytest

from ensemble.member.startup import UNUSED_BY_MEMBERS, unused_packages

SKIPPED = ("sklearn", "matplotlib", "IPython", "jax")


def test_every_backend_skips_the_same_packages_but_jax_is_kept_where_it_may_be_the_backend():
    assert unused_packages("tensorflow") == ("sklearn", "matplotlib", "IPython", "jax")
    assert unused_packages("jax") == UNUSED_BY_MEMBERS == ("sklearn", "matplotlib", "IPython")
    assert unused_packages(None) == unused_packages("") == UNUSED_BY_MEMBERS  # not named: jax may be the backend


def modules_after(module: str, args: list[str], tmp_path) -> tuple[set[str], set[str]]:
    """Of the skipped packages, those loaded and those marked absent in a process after `python -m module args` ran
    (through runpy, as run.executors starts members before Python 3.11), with the backend loaded (else there was
    nothing to skip). RESULTS_FD in args is a file descriptor of the child's own, open on /dev/null."""
    code = ("import os, runpy, sys\n"
            "fd = str(os.open(os.devnull, os.O_WRONLY))\n"
            f"sys.argv = [{module!r}, *[fd if arg == 'RESULTS_FD' else arg for arg in {args!r}]]\n"
            "try:\n"
            f"    runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
            "except SystemExit:\n"
            "    pass\n"
            "assert 'keras.src.backend' in sys.modules\n"
            f"print('LOADED', *[name for name in {SKIPPED!r} if sys.modules.get(name) is not None])\n"
            f"print('ABSENT', *[name for name in {SKIPPED!r} if name in sys.modules and sys.modules[name] is None])\n")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    loaded, absent = result.stdout.splitlines()[-2:]
    return set(loaded.split()[1:]), set(absent.split()[1:])


def installed_skipped() -> set[str]:
    installed = {name for name in SKIPPED if importlib.util.find_spec(name) is not None}
    assert installed, "the test environment has none of the skipped packages: nothing to check"
    return installed


@pytest.mark.parametrize("module, args", [("ensemble.member", ["--help"]),
                                          ("ensemble.member.worker", ["--home", ".", "--results-fd", "RESULTS_FD"])],
                         ids=["member process", "worker"])
def test_member_entry_points_load_the_backend_without_the_unused_packages(module, args, tmp_path):
    installed_skipped()
    loaded, absent = modules_after(module, args, tmp_path)
    assert loaded == set() and absent == set(SKIPPED)


def test_the_library_imported_elsewhere_keeps_them(tmp_path):
    # the same modules imported by a notebook or a test, not run as an entry point: nothing is hidden from it
    installed_skipped()
    assert modules_after("ensemble.member.predict", [], tmp_path)[1] == set()


def test_members_are_told_the_backend_the_runner_checked(monkeypatch, tmp_path):
    from ensemble.run.executors import member_environment

    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "keras.json").write_text('{"backend": "jax"}')
    assert member_environment({})["KERAS_BACKEND"] == "jax"  # keras.json's, as the runner read it
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    assert member_environment({"CUDA_VISIBLE_DEVICES": ""})["KERAS_BACKEND"] == "tensorflow"


def test_members_run_tensorflow_with_onednn_unless_the_user_says_otherwise(monkeypatch):
    from ensemble.run.executors import member_environment

    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    env = member_environment({})
    assert env["TF_ENABLE_ONEDNN_OPTS"] == "1"
    # TensorFlow itself reads it: on an AVX2-only CPU, where it would otherwise leave oneDNN off
    probe = "from tensorflow.python.util import _pywrap_util_port as port; print(port.IsMklEnabled())"
    result = subprocess.run([sys.executable, "-c", probe], env={**env, "KERAS_BACKEND": "tensorflow"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "True"
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert member_environment({})["TF_ENABLE_ONEDNN_OPTS"] == "0"
