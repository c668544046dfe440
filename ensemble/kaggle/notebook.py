"""The notebooks `ensemble` pushes to Kaggle, and their kernel-metadata.json: pure functions of what to run.

Each notebook installs `ensemble` offline from the wheels dataset (`pip --no-index`: internet is off), copies
the job from its read-only inputs into /kaggle/working (`ensemble kernel restore`), and runs the same
commands a user would type. Shell cells are `%%bash` with `set -euo pipefail`, so a failing command fails the
cell and the session ends in ERROR instead of reporting COMPLETE over a half-done job.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from importlib import metadata

NOTEBOOK_FILE = "notebook.ipynb"
METADATA_FILE = "kernel-metadata.json"
WORKING = "/kaggle/working"
# Where the wheels are: the dataset's folder under /kaggle/input, found by its ensemble wheel (mount paths
# of datasets have changed before; the wheel's name has not)
FIND_WHEELS = ('WHEELS="$(dirname "$(ls /kaggle/input/*/ensemble-*.whl /kaggle/input/*/*/ensemble-*.whl '
               '2>/dev/null | head -n 1)")"')


def _version() -> str:
    try:
        return metadata.version("ensemble")
    except metadata.PackageNotFoundError:
        return "unknown version"


@dataclass(frozen=True)
class KernelMetadata:
    kernel: str                    # owner/slug
    title: str
    accelerator: str | None        # machine_shape; None: a CPU session
    datasets: tuple[str, ...] = ()
    competitions: tuple[str, ...] = ()
    kernels: tuple[str, ...] = ()  # owner/slug/version: an earlier version's output, read-only in the session

    def to_dict(self) -> dict:
        """The fields of Kaggle's kernels_metadata.md. Internet off is said outright: the service's default
        is on, and a code competition accepts only an offline notebook."""
        values = {"id": self.kernel, "title": self.title, "code_file": NOTEBOOK_FILE, "language": "python",
                  "kernel_type": "notebook", "is_private": True, "enable_gpu": self.accelerator is not None and
                  self.accelerator.startswith("Nvidia"), "enable_tpu": bool(self.accelerator and
                                                                          self.accelerator.startswith("Tpu")),
                  "enable_internet": False, "dataset_sources": list(self.datasets),
                  "competition_sources": list(self.competitions), "kernel_sources": list(self.kernels),
                  "model_sources": []}
        if self.accelerator:
            values["machine_shape"] = self.accelerator
        return values


def bash_cell(*commands: str) -> str:
    return "%%bash\nset -euo pipefail\n" + "\n".join(commands)


def install_cell() -> str:
    return bash_cell(FIND_WHEELS, 'echo "installing ensemble offline from $WHEELS"',
                     'pip install --quiet --no-index --find-links "$WHEELS" ensemble', "ensemble --version")


SESSION_CELL = ("import os, time\n"
                "# when the session began: `ensemble train` defaults --time-limit to what is left of its 12 hours\n"
                "os.environ.setdefault('ENSEMBLE_SESSION_STARTED', str(time.time()))\n"
                "os.chdir('/kaggle/working')")


def command(*words: str) -> str:
    return " ".join(shlex.quote(word) for word in words)


def train_cells(job: str, train_args: tuple[str, ...]) -> list[tuple[str, str]]:
    """(kind, source) of the training notebook's cells."""
    return [
        ("markdown", f"# ensemble: job `{job}` on Kaggle\n\nMade by `ensemble kernel train` (ensemble {_version()}). "
                     f"It installs ensemble from the wheels dataset (internet is off), copies job `{job}` from its "
                     "inputs into /kaggle/working (finished members are kept, an interrupted one resumes from its "
                     "last finished epoch), trains, blends and writes the report. /kaggle/working is this version's "
                     f"output: `ensemble kernel fetch --job {job}` brings it back, and `ensemble kernel train --job "
                     f"{job}` continues it in a new session."),
        ("code", SESSION_CELL),
        ("code", install_cell()),
        ("code", bash_cell(command("ensemble", "kernel", "restore", "--job", job),
                           command("ensemble", "train", "--job", job, *train_args))),
        ("code", bash_cell(command("ensemble", "blend", "--job", job, "--allow-partial"),
                           command("ensemble", "leaderboard", "--job", job, "--format", "md"))),
    ]


def predict_cells(job: str, test_file: str, data_folder: str, predict_args: tuple[str, ...]) -> list[tuple[str, str]]:
    """A code competition's notebook: predict the test file as the session finds it (Kaggle re-runs the
    notebook on the hidden test set, with other rows), write /kaggle/working/submission.csv, check it."""
    out = f"{WORKING}/submission.csv"
    return [
        ("markdown", f"# ensemble: submission of job `{job}`\n\nMade by `ensemble submit` (ensemble {_version()}) for a "
                     "code competition. It predicts the competition's test file with the job's finished members, as "
                     "it finds that file at run time, and writes submission.csv."),
        ("code", SESSION_CELL),
        ("code", install_cell()),
        ("code", bash_cell(command("ensemble", "kernel", "restore", "--job", job),
                           command("ensemble", "predict", test_file, "--job", job, "--out", out, *predict_args),
                           command("ensemble", "check", out, "--data", data_folder))),
    ]


def make_notebook(cells: list[tuple[str, str]]) -> str:
    """The notebook's JSON (nbformat v4, a Python 3 kernel)."""
    import nbformat
    from nbformat import v4

    notebook = v4.new_notebook()
    notebook.cells = [v4.new_markdown_cell(source) if kind == "markdown" else v4.new_code_cell(source)
                      for kind, source in cells]
    notebook.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                         "language_info": {"name": "python"}}
    nbformat.validate(notebook)
    return nbformat.writes(notebook)
