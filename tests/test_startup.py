"""A member process starts without the packages the backend imports and no member uses (member.startup)."""
import importlib.util
import os
import subprocess
import sys

import pytest

from ensemble.member.startup import UNUSED_BY_MEMBERS, unused_packages

SKIPPED = ("sklearn", "matplotlib", "IPython", "jax")


def test_every_backend_skips_the_same_packages_but_jax_keeps_itself():
    assert unused_packages("tensorflow") == ("sklearn", "matplotlib", "IPython", "jax")
    assert unused_packages("jax") == UNUSED_BY_MEMBERS == ("sklearn", "matplotlib", "IPython")


def loaded_after(module: str, args: list[str], tmp_path) -> set[str]:
    """The skipped packages loaded in a process after `python -m module args` ran (through runpy, as
    run.executors starts members before Python 3.11), with Keras loaded (else there was nothing to skip)."""
    code = ("import runpy, sys\n"
            f"sys.argv = [{module!r}, *{args!r}]\n"
            "try:\n"
            f"    runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
            "except SystemExit:\n"
            "    pass\n"
            "assert 'keras.src.backend' in sys.modules\n"
            f"print('LOADED', *[name for name in {SKIPPED!r} if sys.modules.get(name) is not None])\n")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return set(result.stdout.splitlines()[-1].split()[1:])


def installed_skipped() -> set[str]:
    installed = {name for name in SKIPPED if importlib.util.find_spec(name) is not None}
    assert installed, "the test environment has none of the skipped packages: nothing to check"
    return installed


@pytest.mark.parametrize("module, args", [("ensemble.member", ["--help"]),
                                          ("ensemble.member.worker", ["--home", ".", "--results-fd", "2"])],
                         ids=["member process", "worker"])
def test_member_entry_points_load_the_backend_without_the_unused_packages(module, args, tmp_path):
    installed_skipped()
    assert loaded_after(module, args, tmp_path) == set()


def test_the_library_imported_elsewhere_keeps_them(tmp_path):
    # the same modules imported by a notebook or a test, not run as an entry point: nothing is hidden from it
    assert loaded_after("ensemble.member.predict", [], tmp_path) == installed_skipped()
