"""Where a job's files live. `JobLayout` owns every path of a job (jobs/<job>/ and models/<job>/), and
`ModelFolder` / `MemberFolder` every file of a model's folder: nothing else builds these names.

    jobs/<job>/job.json, lock, split.npz, plan.json, blends.json, submissions.json, kernel.json
    jobs/<job>/progress/member-XX.json (.lock), logs/member-XX.log
    models/<job>/member-XX/            a member: config.json, best.keras, history.csv, backup/, snapshots/,
                                       val_probs.npy, test_probs.npy (+ _tta), metrics.json (last)
    models/<job>/member-XX-snapK/      the member's weights at the end of cosine cycle K: outputs only
    models/<job>/baseline-<name>/      a baseline (knn, tree, forest): outputs only
    submissions/<job>/                 the leaderboard report
"""
from __future__ import annotations

import csv
import re
import shutil
from contextlib import suppress
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from ..store.workspace import Workspace, check_job_name, member_name

STATE_PREFIX = "epoch-"         # backup/epoch-0005: the training state committed after epoch 5
INCOMING_PREFIX = ".incoming-"  # backup/.incoming-epoch-N: a state being written; never counted
SET_ASIDE_DIR = "set-aside"     # beside backup/, so it outlives the backup a finished member drops
_SNAPSHOT = re.compile(r"^(member-\d+)-snap(\d+)$")
_MEMBER = re.compile(r"^member-(\d+)$")


class ModelKind(str, Enum):
    MEMBER = "member"
    SNAPSHOT = "snapshot"
    BASELINE = "baseline"


def snapshot_name(index: int, cycle: int) -> str:
    """The model name of member `index`'s snapshot after cycle `cycle` (1-based)."""
    return f"{member_name(index)}-snap{cycle}"


def model_kind(name: str) -> ModelKind:
    if _SNAPSHOT.match(name):
        return ModelKind.SNAPSHOT
    return ModelKind.MEMBER if name.startswith("member-") else ModelKind.BASELINE


def snapshot_parts(name: str) -> tuple[str, int]:
    """member-03-snap2 -> ("member-03", 2)."""
    match = _SNAPSHOT.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a snapshot's name")
    return match.group(1), int(match.group(2))


def member_of(name: str) -> str | None:
    """The member a model belongs to: itself, the member a snapshot was taken from, None for a baseline."""
    kind = model_kind(name)
    return name if kind is ModelKind.MEMBER else snapshot_parts(name)[0] if kind is ModelKind.SNAPSHOT else None


@dataclass(frozen=True)
class ModelFolder:
    """A finished model's outputs: config.json, softmax on validation and test (plain, and with test-time
    augmentation), and metrics.json, written last."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    def probs(self, tta: bool = False) -> tuple[Path, Path]:
        """(validation, test) softmax files, plain or test-time augmented."""
        suffix = "_tta" if tta else ""
        return self.path / f"val_probs{suffix}.npy", self.path / f"test_probs{suffix}.npy"

    @property
    def output_files(self) -> tuple[Path, ...]:
        """What every finished model has (test-time augmented probabilities come on top, both or neither)."""
        return (self.config, *self.probs(), self.metrics)

    @property
    def has_outputs(self) -> bool:
        return all(path.is_file() for path in self.output_files)

    @property
    def has_tta(self) -> bool:
        return all(path.is_file() for path in self.probs(tta=True))


@dataclass(frozen=True)
class MemberFolder(ModelFolder):
    """A member's folder: its outputs, and what trains and rebuilds it."""

    @property
    def index(self) -> int:
        return int(_MEMBER.match(self.path.name).group(1))

    @property
    def best(self) -> Path:
        """The kept weights (best validation epoch, or the last): the model that predicts."""
        return self.path / "best.keras"

    @property
    def history(self) -> Path:
        return self.path / "history.csv"

    @property
    def backup(self) -> Path:
        """Training states, one folder per committed epoch (member.checkpoints)."""
        return self.path / "backup"

    @property
    def set_aside(self) -> Path:
        return self.path / SET_ASIDE_DIR

    @property
    def snapshots(self) -> Path:
        return self.path / "snapshots"

    def snapshot_model(self, cycle: int) -> Path:
        """The weights at the end of cosine cycle `cycle` (1-based)."""
        return self.snapshots / f"cycle-{cycle}.keras"

    def snapshot_outputs(self, cycle: int) -> ModelFolder:
        return ModelFolder(self.path.parent / snapshot_name(self.index, cycle))

    def snapshot_folders(self) -> list[ModelFolder]:
        """This member's snapshot output folders on disk, by cycle."""
        pattern = re.compile(rf"^{re.escape(self.name)}-snap(\d+)$")
        found = sorted((int(match.group(1)), path) for path in self.path.parent.glob(f"{self.name}-snap*")
                       if (match := pattern.match(path.name)))
        return [ModelFolder(path) for _, path in found]

    @property
    def output_files(self) -> tuple[Path, ...]:
        return (self.config, self.best, *self.probs(), self.metrics)

    def committed_epochs(self) -> list[int]:
        return committed_epochs(self.backup)


def state_dir(backup: Path, epoch: int) -> Path:
    """backup/epoch-0005: the training state committed after epoch 5."""
    return backup / f"{STATE_PREFIX}{epoch:04d}"


def committed_epochs(backup: Path) -> list[int]:
    """Epochs with a committed state folder, newest first (from the names; nothing is loaded)."""
    if not backup.is_dir():
        return []
    found = []
    for path in backup.iterdir():
        suffix = path.name.removeprefix(STATE_PREFIX)
        if path.is_dir() and path.name.startswith(STATE_PREFIX) and suffix.isdigit():
            found.append(int(suffix))
    return sorted(found, reverse=True)


@dataclass(frozen=True)
class JobLayout:
    """Every path of one job."""

    ws: Workspace
    job: str

    def __post_init__(self):
        check_job_name(self.job)

    @property
    def dir(self) -> Path:
        return self.ws.jobs_dir / self.job

    @property
    def record(self) -> Path:
        return self.dir / "job.json"

    @property
    def lock(self) -> Path:
        """Held by the runner for a whole run: the only writer of job.json."""
        return self.dir / "lock"

    @property
    def split(self) -> Path:
        return self.dir / "split.npz"

    @property
    def plan(self) -> Path:
        """What the runner hands every member of the current run (job.plan)."""
        return self.dir / "plan.json"

    def pseudo(self, round_: int) -> Path:
        """A pseudo-label round's test rows and labels (job.pseudo)."""
        return self.dir / f"pseudo-{round_}.npz"

    @property
    def blends(self) -> Path:
        return self.dir / "blends.json"

    @property
    def submissions(self) -> Path:
        return self.dir / "submissions.json"

    @property
    def kernels(self) -> Path:
        """Which Kaggle notebook versions worked on the job, and what each one's fetch brought."""
        return self.dir / "kernel.json"

    def progress(self, index: int) -> Path:
        return self.dir / "progress" / f"{member_name(index)}.json"

    def member_lock(self, index: int) -> Path:
        """Held by the process training the member: two processes never train one member at once."""
        return self.dir / "progress" / f"{member_name(index)}.lock"

    def log(self, index: int) -> Path:
        return self.dir / "logs" / f"{member_name(index)}.log"

    @property
    def models_dir(self) -> Path:
        return self.ws.models_dir / self.job

    def member(self, index: int) -> MemberFolder:
        return MemberFolder(self.models_dir / member_name(index))

    def baseline(self, name: str) -> ModelFolder:
        return ModelFolder(self.models_dir / f"baseline-{name}")

    def model(self, name: str) -> ModelFolder:
        """A model's folder by its leaderboard name: member-XX, member-XX-snapK, or a baseline's name."""
        kind = model_kind(name)
        if kind is ModelKind.BASELINE:
            return self.baseline(name)
        return MemberFolder(self.models_dir / name) if kind is ModelKind.MEMBER else ModelFolder(self.models_dir / name)

    def model_file(self, name: str) -> Path:
        """The saved Keras model behind a member's or a snapshot's name (baselines keep none)."""
        if model_kind(name) is ModelKind.SNAPSHOT:
            member, cycle = snapshot_parts(name)
            return MemberFolder(self.models_dir / member).snapshot_model(cycle)
        return MemberFolder(self.models_dir / name).best

    def baseline_names(self) -> list[str]:
        if not self.models_dir.is_dir():
            return []
        return sorted(path.name.removeprefix("baseline-") for path in self.models_dir.glob("baseline-*"))

    def member_configs(self) -> list[Path]:
        """Every member folder's config.json (not the snapshots'): what rebuilds a damaged record."""
        return sorted(path for path in self.models_dir.glob("member-*/config.json") if _MEMBER.match(path.parent.name))

    @property
    def report_dir(self) -> Path:
        return self.ws.submissions_dir / self.job


def move_into_log(source: Path, log_path: Path) -> None:
    """The text of `source` (what a worker started ahead printed before a member's log took its output) at the end
    of that member's log, and `source` removed."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with suppress(FileNotFoundError), source.open("rb") as text, log_path.open("ab") as log:
        shutil.copyfileobj(text, log)
    source.unlink(missing_ok=True)


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


def resumable_epochs(folder: MemberFolder, epochs: int) -> int:
    """Finished epochs the member's next attempt likely keeps (for estimates and messages; the member itself
    decides by loading): all of them when training ended, else those of its newest training state."""
    finished = len(readable_history(folder.history))
    if finished >= epochs and folder.best.is_file():
        return finished
    return max(folder.committed_epochs(), default=0)
