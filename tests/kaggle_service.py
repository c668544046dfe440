"""Fixtures for tests against Kaggle's service, played offline by tests/standin/kaggle_standin.py.

`kaggle_image`: a "Kaggle image" python env (TensorFlow, Keras, pandas, ... but neither ensemble nor
its small dependencies), built once per test session. `kaggle_service`: a `kaggle` executable first on
PATH, credentials for user `tester`, and a helper to set up competitions and read the service's state.
tests/conftest.py imports them, so any test can name them.
"""
from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
STANDIN = TESTS / "standin" / "kaggle_standin.py"
sys.path.insert(0, str(STANDIN.parent))
import kaggle_standin as formats  # noqa: E402  the CLI's output lines and the service's texts

USER = "tester"
# Not in the image: ensemble and the small packages a notebook has to bring as wheels; and the kaggle
# client, so that nothing a session needs can come from our test tools. rich (with markdown_it, mdurl)
# stays: Keras 3 imports it, so every image with Keras has it.
LEFT_OUT_OF_IMAGE = {"ensemble", "click", "tabulate", "mlxtend", "kaggle", "kagglesdk",
                     # the image's venv has its own pip and setuptools (with _distutils_hack)
                     "pip", "setuptools", "pkg_resources", "_distutils_hack", "distutils_precedence.pth", "__pycache__"}
ENDED = ("COMPLETE", "ERROR")
WRAPPER = """#!{python}
import sys
sys.path.insert(0, {standin_dir!r})
from kaggle_standin import main
sys.exit(main(sys.argv[1:]))
"""


# ---- the image --------------------------------------------------------------------------------------------
def project_of(entry: str) -> str:
    """'markdown_it_py-4.3.0.dist-info' -> 'markdown_it_py', 'Click' -> 'click': names compared as pip does."""
    name = entry.lower().replace("-", "_") if not entry.endswith((".dist-info", ".egg-info")) else \
        entry.lower().split("-")[0].replace(".", "_")
    return re.sub(r"_+", "_", name)


def left_out(entry: str) -> bool:
    lowered = entry.lower()
    if lowered.startswith("__editable__") or (lowered.endswith(".pth") and "ensemble" in lowered):
        return True
    return project_of(entry) in LEFT_OUT_OF_IMAGE or lowered.replace("-", "_") in LEFT_OUT_OF_IMAGE


def build_symlink_farm(site_packages: Path, farm: Path) -> None:
    farm.mkdir(parents=True)
    for entry in sorted(os.listdir(site_packages)):
        if not left_out(entry):
            (farm / entry).symlink_to(site_packages / entry)


def build_image(root: Path) -> Path:
    """A venv (pip from ensurepip, offline) that sees our site-packages through a symlink farm, less some."""
    image = root / "image"
    subprocess.run([sys.executable, "-m", "venv", str(image)], check=True, capture_output=True)
    farm = root / "image-site-packages"
    build_symlink_farm(Path(sysconfig.get_paths()["purelib"]), farm)
    image_site = Path(subprocess.run([str(image / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     check=True, capture_output=True, text=True).stdout.strip())
    # an `import` line in a .pth runs: addsitedir also processes the farm's own .pth files
    (image_site / "kaggle-image-farm.pth").write_text(f"import site; site.addsitedir({str(farm)!r})\n")
    return image


def check_image(image: Path) -> None:
    python = str(image / "bin/python")
    env = {"PATH": f"{image}/bin:/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2", "HOME": str(image)}
    run = functools.partial(subprocess.run, env=env, cwd=image, capture_output=True)  # not our checkout's cwd
    run([python, "-c", "import tensorflow, keras, ipykernel, pandas, sklearn, scipy, matplotlib, joblib"], check=True)
    missing = run([python, "-c", "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in "
                   "('click', 'tabulate', 'mlxtend', 'ensemble', 'kaggle')))"])
    assert missing.returncode == 0, "the image must not have ensemble or its small dependencies"
    listed = run([python, "-m", "pip", "list", "--disable-pip-version-check"], check=True, text=True).stdout.lower()
    assert re.search(r"^tensorflow\s", listed, re.M), "pip in the image must see the installed tensorflow"


@pytest.fixture(scope="session")
def kaggle_image(tmp_path_factory) -> Path:
    image = build_image(tmp_path_factory.mktemp("kaggle-image"))
    check_image(image)
    return image


# ---- the service ------------------------------------------------------------------------------------------
@dataclass
class KaggleService:
    root: Path
    home: Path  # STANDIN_HOME
    bin: Path
    competitions: Path
    hidden: Path
    image: Path
    user: str = USER

    def run(self, *args, check: bool = False, **kwargs) -> subprocess.CompletedProcess:
        """`kaggle ARGS` as a user would run it; stdout and stderr as text."""
        return subprocess.run(["kaggle", *map(str, args)], capture_output=True, text=True, check=check, **kwargs)

    def state(self) -> dict:
        return formats.read_json(self.home / "state.json", {"kernels": {}, "datasets": {}, "submissions": {}})

    def calls(self) -> list[list[str]]:
        return formats.read_json(self.home / "calls.json", [])

    def kernel(self, ref: str) -> dict | None:
        """{'ref', 'versions': [{'number', 'status', 'failure_message', 'request': {...}, 'mounts', 'dir', ...}]}"""
        return self.state()["kernels"].get(ref)

    def dataset(self, ref: str) -> dict | None:
        """{'ref', 'title', 'versions': [{'number', 'notes', 'files': [relative paths], 'dir', 'unpacked_dirs'}]}"""
        return self.state()["datasets"].get(ref)

    def submissions(self, competition: str) -> list[dict]:
        return self.state()["submissions"].get(competition, [])

    def output_dir(self, ref: str, version: int | None = None) -> Path:
        kernel = self.kernel(ref)
        return Path(formats.latest_version(kernel, str(version) if version else None)["dir"]) / "output"

    def add_competition(self, slug: str, files: dict, code: bool = False, hidden: dict | None = None,
                        title: str | None = None) -> Path:
        """files/hidden: name -> Path (copied) or str/bytes (written). hidden holds solution.csv and the
        files that replace public ones on a code competition's re-run (e.g. a test.csv with other rows)."""
        folder = self.competitions / slug
        write_files(folder, files)
        if code:
            (folder / ".code_competition").touch()
        if title:
            (folder / ".title").write_text(title)
        if hidden is not None:
            write_files(self.hidden / slug, hidden)
        return folder

    def wait(self, ref: str, timeout: float = 60) -> dict:
        """Poll until the latest version's session ended; its version record."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            version = (self.kernel(ref) or {}).get("versions", [{}])[-1]
            if version.get("status") in ENDED and "ended" in version or version.get("request", {}).get("quick_save"):
                return version
            time.sleep(0.1)
        raise TimeoutError(f"{ref}: session still {version.get('status')} after {timeout} s; "
                           f"log: {self.log_text(ref)[-2000:]}")

    def wait_submission(self, competition: str, ref: int, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = next((r for r in self.submissions(competition) if r["ref"] == ref), {})
            if row.get("kind") == "code" and "ended" in row.get("rerun", {}):
                return row
            time.sleep(0.1)
        raise TimeoutError(f"submission {ref} still pending after {timeout} s")

    def log_text(self, ref: str) -> str:
        version = ((self.kernel(ref) or {}).get("versions") or [None])[-1]
        log = Path(version["dir"]) / f"{ref.split('/')[1]}.log" if version else None
        return log.read_text() if log and log.is_file() else ""

    def stop_sessions(self) -> None:
        """Kill every session still running (the controller kills its namespace on SIGTERM) and wait."""
        for session in formats.read_json(self.home / "sessions.json", []):
            try:
                os.killpg(session["pid"], signal.SIGTERM)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + 10
        for session in formats.read_json(self.home / "sessions.json", []):
            while alive(session["pid"]) and time.monotonic() < deadline:
                time.sleep(0.05)
            if alive(session["pid"]):
                os.killpg(session["pid"], signal.SIGKILL)


def alive(pid: int) -> bool:
    """Running, not a zombie (a session's controller is not our child, so we cannot reap it)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def write_files(folder: Path, files: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            target.write_bytes(content.read_bytes())
        elif isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)


def install_wrapper(bin_dir: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / "kaggle"
    exe.write_text(WRAPPER.format(python=sys.executable, standin_dir=str(STANDIN.parent)))
    exe.chmod(0o755)


@pytest.fixture
def kaggle_service(tmp_path, monkeypatch, kaggle_image):
    root = tmp_path / "kaggle-service"
    service = KaggleService(root=root, home=root / "home", bin=root / "bin", competitions=root / "competitions",
                            hidden=root / "hidden", image=kaggle_image)
    install_wrapper(service.bin)
    for folder in (service.home, service.competitions, service.hidden):
        folder.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("PATH", f"{service.bin}:{os.environ['PATH']}")
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", "k")
    monkeypatch.setenv("STANDIN_HOME", str(service.home))
    monkeypatch.setenv("STANDIN_IMAGE", str(kaggle_image))
    monkeypatch.setenv("STANDIN_COMPETITIONS", str(service.competitions))
    monkeypatch.setenv("STANDIN_HIDDEN", str(service.hidden))
    for name in ("STANDIN_CUT_WHEN", "STANDIN_UNPACK_DIRS", "STANDIN_PLAIN_STATUS", "STANDIN_REFUSE_ACCELERATOR",
                 "STANDIN_SESSION_S", "STANDIN_POLLS_TO_SCORE", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    yield service
    service.stop_sessions()


def write_kernel(folder: Path, cells: list[str], ref: str, title: str | None = None, **metadata) -> Path:
    """A notebook folder for `kaggle kernels push -p`: notebook.ipynb + kernel-metadata.json.
    metadata: kernel-metadata.json fields (enable_internet, competition_sources, ...); None drops a field."""
    import nbformat
    folder.mkdir(parents=True, exist_ok=True)
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbformat.write(notebook, folder / "notebook.ipynb")
    fields = {"id": ref, "title": title or ref.split("/")[1].replace("-", " "), "code_file": "notebook.ipynb",
              "language": "python", "kernel_type": "notebook", "is_private": True, "enable_gpu": False,
              "enable_internet": False, "dataset_sources": [], "competition_sources": [], "kernel_sources": []}
    fields.update(metadata)
    (folder / "kernel-metadata.json").write_text(json.dumps({k: v for k, v in fields.items() if v is not None}))
    return folder
