"""Inside a Kaggle notebook session: where the work goes, which input is the data, how long is left, and
that progress is plain lines (the image's package versions: kaggle.session).

A session (FIELD.md) mounts its sources read-only under /kaggle/input/<slug>, runs in the writable
/kaggle/working (what is left there, up to 20 GB, becomes the version's output), has /kaggle/temp for scratch,
sets KAGGLE_KERNEL_RUN_TYPE, and is killed after about 12 hours. Everything here takes its facts as
arguments (the environment, the root folder, the clock) so the rules are tested without a session.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

KAGGLE_ROOT = Path("/kaggle")
RUN_TYPE_ENV = "KAGGLE_KERNEL_RUN_TYPE"          # Interactive or Batch, set inside every session
STARTED_ENV = "ENSEMBLE_SESSION_STARTED"         # the session's start (epoch seconds), set by our notebooks
SESSION_LIMIT_S = 12 * 3600                      # Kaggle ends a session after about 12 hours
OUTPUT_MARGIN_S = 20 * 60                        # kept back from the time left: predicting, blending, saving
OUTPUT_CAP_BYTES = 20 * 10**9                    # /kaggle/working beyond this is not kept as output
# Variables a Jupyter kernel gives its shell commands (`!cmd` runs under a pseudo-terminal, so isatty lies)
_NOTEBOOK_ENV = ("JPY_PARENT_PID", "JPY_SESSION_NAME")
_INLINE_BACKEND = "module://matplotlib_inline"


@dataclass(frozen=True)
class Session:
    """A Kaggle notebook session's folders and clock."""

    root: Path
    run_type: str | None
    started_at: float | None  # epoch seconds; None when nothing tells

    @property
    def input_dir(self) -> Path:
        return self.root / "input"

    @property
    def working_dir(self) -> Path:
        return self.root / "working"

    @property
    def temp_dir(self) -> Path:
        return self.root / "temp"

    def time_left(self, now: float) -> float | None:
        """Seconds until Kaggle ends the session, None when its start is unknown."""
        if self.started_at is None:
            return None
        return SESSION_LIMIT_S - (now - self.started_at)

    def default_time_limit(self, now: float) -> float | None:
        """What `--time-limit` defaults to here: the time left, less the margin that writes the output."""
        left = self.time_left(now)
        return None if left is None else max(60.0, left - OUTPUT_MARGIN_S)

    def is_input(self, path: Path) -> bool:
        resolved = Path(path).absolute()
        return resolved == self.input_dir or self.input_dir in resolved.parents


def detect_session(environ: Mapping[str, str] | None = None, root: Path = KAGGLE_ROOT,
                   proc: Path = Path("/proc")) -> Session | None:
    """The session we run in, or None on any other machine. KAGGLE_KERNEL_RUN_TYPE decides; without it the
    /kaggle/input and /kaggle/working folders together do (an image that does not set it)."""
    environ = os.environ if environ is None else environ
    run_type = environ.get(RUN_TYPE_ENV)
    if run_type is None and not ((root / "input").is_dir() and (root / "working").is_dir()):
        return None
    return Session(root, run_type, session_start(environ, proc))


def session_start(environ: Mapping[str, str], proc: Path = Path("/proc")) -> float | None:
    """When the session began: our notebooks record it; otherwise the start of the Jupyter kernel above us
    (a session starts its kernel first), found by walking up the process tree."""
    recorded = environ.get(STARTED_ENV)
    if recorded:
        try:
            return float(recorded)
        except ValueError:
            pass
    return kernel_process_start(proc)


def kernel_process_start(proc: Path = Path("/proc"), pid: int | None = None) -> float | None:
    """The start time (epoch seconds) of the nearest ancestor that is an IPython kernel, None if none is."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        boot = next(float(line.split()[1]) for line in (proc / "stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, ValueError, StopIteration):
        return None
    current = pid or os.getpid()
    for _ in range(64):
        try:
            stat = (proc / str(current) / "stat").read_text()
            command = (proc / str(current) / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            return None
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
        if b"ipykernel" in command:
            return boot + int(fields[19]) / ticks
        parent = int(fields[1])
        if parent <= 1:
            return None
        current = parent
    return None


def in_notebook(environ: Mapping[str, str] | None = None) -> bool:
    """A shell command of a notebook cell or a Kaggle session: progress must be plain lines, since a live
    view's cursor codes (ESC[2K ESC[1A) land in the saved log screen after screen."""
    environ = os.environ if environ is None else environ
    return (RUN_TYPE_ENV in environ or any(name in environ for name in _NOTEBOOK_ENV)
            or environ.get("MPLBACKEND", "").startswith(_INLINE_BACKEND))


class SessionError(Exception):
    """Something about the Kaggle session stops the command; the message says what to do."""


def input_data_folders(session: Session, fits) -> list[Path]:
    """The folders under /kaggle/input (a source, or one level inside it) whose files fit a layout;
    `fits(folder)` says whether one does."""
    if not session.input_dir.is_dir():
        return []
    found = []
    for source in sorted(path for path in session.input_dir.iterdir() if path.is_dir()):
        if fits(source):
            found.append(source)
            continue
        found.extend(inner for inner in sorted(source.iterdir()) if inner.is_dir() and fits(inner))
    return found


def session_data_dir(session: Session, fits) -> Path:
    """The one data folder of the session's inputs; refuses none or several, listing what is there."""
    found = input_data_folders(session, fits)
    if len(found) == 1:
        return found[0]
    sources = ", ".join(path.name for path in sorted(session.input_dir.iterdir())) if session.input_dir.is_dir() \
        else "none"
    if not found:
        raise SessionError(f"no input of this Kaggle session holds a known 28x28 CSV layout (inputs: {sources}); "
                           "add the competition or dataset in the notebook's Input panel, or pass --data")
    raise SessionError(f"several inputs of this Kaggle session hold training data ({', '.join(map(str, found))}); "
                       "choose one with --data")


def folder_bytes(path: Path) -> int:
    return sum(item.stat().st_size for item in Path(path).rglob("*") if item.is_file()) if Path(path).is_dir() else 0
