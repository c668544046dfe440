"""Where a job's files live: the record, lock, progress, logs, and each member folder's history and states."""
from __future__ import annotations

import csv
from pathlib import Path

from ..store import atomic
from ..store.workspace import Workspace, member_name


def lock_path(ws: Workspace, job: str) -> Path:
    return ws.job_dir(job) / "lock"


def progress_path(ws: Workspace, job: str, index: int) -> Path:
    return ws.job_dir(job) / "progress" / f"{member_name(index)}.json"


def member_lock_path(ws: Workspace, job: str, index: int) -> Path:
    """Held by the process training the member: two processes never train one member at once."""
    return ws.job_dir(job) / "progress" / f"{member_name(index)}.lock"


def log_path(ws: Workspace, job: str, index: int) -> Path:
    return ws.job_dir(job) / "logs" / f"{member_name(index)}.log"


def read_progress(ws: Workspace, job: str, index: int) -> dict:
    """A member's live progress (epoch, batch, latest val accuracy, pid, host); {} before it starts."""
    path = progress_path(ws, job, index)
    try:
        return atomic.read_json(path)
    except (OSError, ValueError):
        return {}


def log_tail(path: Path, lines: int = 15) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return text.rstrip("\n").splitlines()[-lines:]


def read_history(path: Path) -> list[dict]:
    """history.csv rows, one per epoch: a resumed epoch appears twice in the file and the later row wins."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        rows = {int(row["epoch"]): {key: float(value) for key, value in row.items() if value != ""}
                for row in csv.DictReader(handle)}
    return [rows[epoch] for epoch in sorted(rows)]


def readable_history(path: Path) -> list[dict]:
    """read_history, or [] for a file that does not parse: a training state rewrites it, or the member restarts."""
    try:
        return read_history(path)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return []


def resumable_epochs(member_dir: Path, epochs: int) -> int:
    """Finished epochs the member's next attempt likely keeps (for estimates and messages; the member itself
    decides by loading): all of them when training ended, else those of its newest training state."""
    from ..member.checkpoints import committed_epochs

    finished = len(readable_history(member_dir / "history.csv"))
    if finished >= epochs and (member_dir / "best.keras").is_file():
        return finished
    return max(committed_epochs(member_dir / "backup"), default=0)
