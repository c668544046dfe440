"""The job record: the frozen spec, the data it was made from, the validation split and per-member state.

`jobs/<job>/job.json` is written only by the runner that holds `jobs/<job>/lock`, always atomically.
A member process writes only its own member directory and its live progress file
`jobs/<job>/progress/member-XX.json`. A member counts as done only when its directory holds every artifact
(metrics.json is written last), whatever the record says.
"""
from __future__ import annotations

import csv
import io
import json
import shlex
import time
import zipfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from . import atomic
from .architectures import NETS
from .devices import resolve_precision
from .formats import DEFAULT_FORMAT, FormatError, TaskFormat, data_files, detect_format, get_format
from .ledger import LastRun, MemberEntry
from .recipes import AUGMENTATIONS, KEEP, SCHEDULES, Augmentation, recipe_for
from .workspace import Workspace, member_name

RECORD_VERSION = 1
# What a record written before a field existed meant by it (the first recipes had one fixed schedule,
# augmentation and checkpoint rule for every net).
SPEC_FIELD_DEFAULTS = {"recipe": None, "schedule": "plateau", "zoom": 0.1, "shift": 0.1, "rotation": 0.0,
                       "keep": "best", "snapshots": 1, "tta": False, "task": DEFAULT_FORMAT,
                       "classes": tuple(range(10))}


class JobError(Exception):
    """A job cannot be created, resumed or read as asked; the message says what to do instead."""


@dataclass(frozen=True)
class JobSpec:
    """Everything that decides what a member learns. Two runs with equal specs build the same ensemble."""

    model: str          # the net
    epochs: int
    batch_size: int
    optimizer: str
    learning_rate: float
    augment: str        # idg, legacy-idg or none, with the ranges below
    precision: str      # resolved: float32, mixed_bfloat16 or mixed_float16, never "auto"
    seed: int
    val_split: float
    limit_train: int | None
    train_sha256: str
    test_sha256: str
    recipe: str | None = None   # the recipe the defaults came from (None: a record older than recipes)
    schedule: str = "plateau"
    zoom: float = 0.1
    shift: float = 0.1
    rotation: float = 0.0
    keep: str = "best"          # best: the best validation epoch's weights; last: the final epoch's
    snapshots: int = 1          # K > 1: K cosine cycles, each cycle's end saved as a model of its own
    tta: bool = False           # also predict under the fixed test-time views (augment.TTA_VIEWS)
    task: str = DEFAULT_FORMAT  # the data layout (formats.FORMATS)
    classes: tuple[int, ...] = tuple(range(10))  # the training labels, sorted: output k of a net is classes[k]

    @classmethod
    def from_options(cls, *, recipe=None, model=None, epochs=None, batch_size=None, learning_rate=None,
                     schedule=None, augment=None, rotation=None, keep=None, snapshots=None, tta=None,
                     precision=None, seed=0, val_split=0.1, limit_train=None, train_sha256="", test_sha256="",
                     task=DEFAULT_FORMAT, classes=tuple(range(10)),
                     gpu_capabilities: list[float] | None = None) -> "JobSpec":
        """Fill what the user left out from the recipe (--recipe, else the net's own) and the hardware the
        members use (gpu_capabilities: the chosen GPUs, [] for the CPU, None to ask nvidia-smi)."""
        try:
            base = recipe_for(recipe, model)
        except KeyError as error:
            raise JobError(error.args[0]) from None
        net = model or base.net
        if net not in NETS:
            raise JobError(f"unknown net {net!r}; choose one of {', '.join(NETS)}")
        for name, value in (("epochs", epochs), ("batch", batch_size), ("limit-train", limit_train),
                            ("snapshots", snapshots)):
            if value is not None and value < 1:
                raise JobError(f"--{name} must be at least 1, got {value}")
        if learning_rate is not None and not learning_rate > 0:
            raise JobError(f"--lr must be positive, got {learning_rate}")
        if rotation is not None and not 0 <= rotation <= 180:
            raise JobError(f"--rotation is in degrees, 0 to 180, got {rotation}")
        for name, value, choices in (("augment", augment, AUGMENTATIONS), ("schedule", schedule, SCHEDULES),
                                     ("keep", keep, KEEP)):
            if value is not None and value not in choices:
                raise JobError(f"unknown --{name} {value!r}; choose one of {', '.join(choices)}")
        snapshots = snapshots or 1
        epochs = epochs or base.epochs
        if snapshots > 1:
            if schedule not in (None, "cosine"):
                raise JobError(f"--snapshots {snapshots} trains cosine cycles; drop --schedule {schedule} "
                               "(or pass --schedule cosine)")
            schedule = "cosine"
            if epochs % snapshots:
                fits = max(snapshots, round(epochs / snapshots) * snapshots)
                raise JobError(f"--snapshots {snapshots} needs epochs in equal cycles: {epochs} epochs do not "
                               f"split into {snapshots}; use --epochs {fits}")
        augmentation = base.augmentation
        try:
            precision = resolve_precision(precision or base.precision, gpus=gpu_capabilities)
        except ValueError as error:
            raise JobError(str(error)) from None
        return cls(model=net, epochs=epochs, batch_size=batch_size or base.batch_size,
                   optimizer=base.optimizer, learning_rate=learning_rate or base.learning_rate,
                   augment=augment or augmentation.kind, precision=precision, seed=seed, val_split=val_split,
                   limit_train=limit_train, train_sha256=train_sha256, test_sha256=test_sha256,
                   recipe=base.name, schedule=schedule or base.schedule, zoom=augmentation.zoom,
                   shift=augmentation.shift,
                   rotation=float(augmentation.rotation if rotation is None else rotation),
                   keep=keep or base.keep, snapshots=snapshots, tta=base.tta if tta is None else bool(tta), task=task,
                   classes=tuple(int(c) for c in classes))

    @classmethod
    def from_dict(cls, values: dict) -> "JobSpec":
        spec = cls(**{field.name: values.get(field.name, SPEC_FIELD_DEFAULTS.get(field.name))
                      for field in fields(cls)})
        return replace(spec, classes=tuple(int(c) for c in spec.classes))  # JSON gives a list

    def to_dict(self) -> dict:
        return asdict(self)

    def member_seed(self, index: int) -> int:
        return self.seed + index

    @property
    def augmentation(self) -> Augmentation:
        return Augmentation(self.augment, self.zoom, self.shift, self.rotation)

    @property
    def format(self) -> TaskFormat:
        return get_format(self.task)


def spec_differences(recorded: JobSpec, requested: JobSpec) -> list[str]:
    return [f"{name}: job has {value!r}, this run asks {getattr(requested, name)!r}"
            for name, value in recorded.to_dict().items() if getattr(requested, name) != value]


def resume_command(record: "JobRecord") -> str:
    """The `ensemble train` command line that continues this job (same spec, same data, every member)."""
    spec = record.spec
    parts = ["ensemble train", f"--job {shlex.quote(record.name)}", f"--n {len(record.members)}",
             f"--data {shlex.quote(record.data_dir)}", f"--format {spec.task}"]
    if spec.recipe is not None:
        parts.append(f"--recipe {spec.recipe}")
    parts += [f"--model {spec.model}", f"--epochs {spec.epochs}", f"--batch {spec.batch_size}",
              f"--lr {spec.learning_rate:g}", f"--schedule {spec.schedule}", f"--augment {spec.augment}",
              f"--rotation {spec.rotation:g}", f"--keep {spec.keep}", f"--snapshots {spec.snapshots}",
              "--tta" if spec.tta else "--no-tta", f"--precision {spec.precision}", f"--seed {spec.seed}",
              f"--val-split {spec.val_split}"]
    if spec.limit_train is not None:
        parts.append(f"--limit-train {spec.limit_train}")
    return " ".join(parts)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def default_job_name() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


@dataclass
class JobRecord:
    """jobs/<job>/job.json: the frozen spec, the data folder, the ledger and the latest run."""

    name: str
    spec: JobSpec
    data_dir: str
    created: str
    updated: str
    members: list[MemberEntry] = field(default_factory=list)
    last_run: LastRun | None = None
    rebuilt: str | None = None  # when the record was rebuilt from member folders (jobs.rebuild_record)
    version: int = RECORD_VERSION

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    def ensure_members(self, n: int) -> "JobRecord":
        """Grow the ledger to n members (never shrinks: finished members stay part of the job)."""
        for index in range(len(self.members), n):
            self.members.append(MemberEntry(index, member_name(index), self.spec.member_seed(index)))
        return self

    def to_dict(self) -> dict:
        return {"version": self.version, "name": self.name, "spec": self.spec.to_dict(), "data_dir": self.data_dir,
                "created": self.created, "updated": self.updated, "members": [m.to_dict() for m in self.members],
                "last_run": asdict(self.last_run) if self.last_run else None,
                **({"rebuilt": self.rebuilt} if self.rebuilt else {})}

    @classmethod
    def from_dict(cls, values: dict) -> "JobRecord":
        """Raises KeyError, TypeError or ValueError for anything that is not a job record."""
        last_run = values.get("last_run")
        return cls(name=str(values["name"]), spec=JobSpec.from_dict(values["spec"]), data_dir=str(values["data_dir"]),
                   created=str(values.get("created", "")), updated=str(values.get("updated", "")),
                   members=[MemberEntry.from_dict(m) for m in values["members"]],
                   last_run=LastRun(**last_run) if last_run else None, rebuilt=values.get("rebuilt"),
                   version=int(values.get("version", RECORD_VERSION)))


def new_record(name: str, spec: JobSpec, data_dir: Path) -> JobRecord:
    return JobRecord(name, spec, str(data_dir), created=now(), updated=now())


def record_path(ws: Workspace, job: str) -> Path:
    return ws.job_dir(job) / "job.json"


def load_record(ws: Workspace, job: str) -> JobRecord | None:
    """A job's record, None when there is none; a damaged one is a JobError that names its file."""
    path = record_path(ws, job)
    if not path.is_file():
        return None
    try:
        record = atomic.read_json(path)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise JobError(f"{path}: the job record is damaged ({type(error).__name__}: {error}); other jobs are "
                       f"unaffected. Its trained members are still in {ws.models_dir / job}; `ensemble train --job "
                       f"{shlex.quote(job)}` rebuilds the record from them") from None
    try:
        return JobRecord.from_dict(record)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise JobError(f"{path}: the job record is damaged (not a job record: {type(error).__name__} {error}); other "
                       f"jobs are unaffected; `ensemble train --job {shlex.quote(job)}` rebuilds it from its member "
                       "folders") from None


def rebuild_record(ws: Workspace, job: str) -> JobRecord | None:
    """A job record made again from its member folders: each member's config.json holds the job's whole spec
    and data folder, so the record is exact when they agree. None when no member says, or they disagree.
    Per-member state is left to the runner's reconcile, which reads it from the files."""
    configs = {}
    for path in sorted((ws.models_dir / job).glob("member-*/config.json")):
        if "-snap" in path.parent.name:
            continue
        try:
            config = atomic.read_json(path)
            configs[int(config["member"])] = (config["spec"], config["data_dir"], path.stat().st_mtime)
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
            continue
    described = {json.dumps([spec, data_dir], sort_keys=True) for spec, data_dir, _ in configs.values()}
    if len(described) != 1:
        return None
    spec, data_dir, _ = next(iter(configs.values()))
    record = new_record(job, JobSpec.from_dict(spec), Path(data_dir))
    record.created = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(min(m for *_, m in configs.values())))
    record.rebuilt = now()
    return record.ensure_members(max(configs) + 1)


def recover_record(ws: Workspace, job: str, say) -> JobRecord | None:
    """The job's record; a damaged one is set aside and rebuilt from the member folders (saying so) where
    that is exact, else the JobError says what to do. None when the job does not exist."""
    from .locks import LockHeld, PidLock

    try:
        return load_record(ws, job)
    except JobError as damaged:
        rebuilt = rebuild_record(ws, job)
        if rebuilt is None:
            raise JobError(f"{damaged}".split("; `ensemble train")[0] + ". Its member folders do not say how it was "
                           f"made, so it cannot be rebuilt: move {ws.job_dir(job)} aside and train a new job") from None
    try:
        with PidLock(lock_path(ws, job)):  # job.json has one writer at a time
            aside = record_path(ws, job).with_name(f"job.json.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            record_path(ws, job).rename(aside)
            save_record(ws, rebuilt)
    except LockHeld as held:
        raise JobError(f"job {job!r} is being trained by pid {held.holder.get('pid', '?')}; its record reads as "
                       "damaged: rerun once that process ends") from None
    say(f"{record_path(ws, job)} was damaged: set aside as {aside.name} and rebuilt from "
        f"{len(rebuilt.members)} member folders ({ws.models_dir / job})")
    return rebuilt


def require_record(ws: Workspace, job: str | None) -> JobRecord:
    """The named job, or the most recent one; a clear error when there is none."""
    name = job or latest_job_name(ws)
    if name is None:
        raise JobError(f"no jobs in {ws.jobs_dir}; train one first: ensemble train --n 3 --data data/")
    record = load_record(ws, name)
    if record is None:
        known = ", ".join(job_names(ws)) or "none"
        raise JobError(f"no job named {name!r} in {ws.jobs_dir} (jobs: {known})")
    return record


def save_record(ws: Workspace, record: JobRecord) -> Path:
    record.updated = now()
    return atomic.write_json(record_path(ws, record.name), record.to_dict())


def readable_records(ws: Workspace) -> tuple[list[JobRecord], dict[str, str]]:
    """Every job's record, oldest first by creation time, and {job: what is wrong} for damaged records."""
    records, damaged = [], {}
    if not ws.jobs_dir.is_dir():
        return records, damaged
    for path in sorted(ws.jobs_dir.iterdir()):
        if not (path / "job.json").is_file():
            continue
        try:
            records.append(load_record(ws, path.name))
        except JobError as error:
            damaged[path.name] = str(error)
    return sorted(records, key=lambda r: (r.created, r.name)), damaged


def job_names(ws: Workspace) -> list[str]:
    """Jobs oldest first, by creation time in their record; a damaged record is left out (never fatal)."""
    return [record.name for record in readable_records(ws)[0]]


def latest_job_name(ws: Workspace) -> str | None:
    names = job_names(ws)
    return names[-1] if names else None


def latest_job_with_spec(ws: Workspace, spec: JobSpec) -> str | None:
    """Where a bare `ensemble train` rerun continues: the newest job with an identical spec."""
    for record in reversed(readable_records(ws)[0]):
        if record.spec == spec:
            return record.name
    return None


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
    from .checkpoints import committed_epochs

    finished = len(readable_history(member_dir / "history.csv"))
    if finished >= epochs and (member_dir / "best.keras").is_file():
        return finished
    return max(committed_epochs(member_dir / "backup"), default=0)


# --- the validation split, shared by every member of a job ----------------------------------------

def split_path(ws: Workspace, job: str) -> Path:
    return ws.job_dir(job) / "split.npz"


def save_split(ws: Workspace, job: str, train_index: np.ndarray, val_index: np.ndarray,
               val_labels: np.ndarray) -> Path:
    """Row indices of train.csv for training and validation, and the validation rows' class indices."""
    buffer = io.BytesIO()
    np.savez(buffer, train_index=train_index, val_index=val_index, val_labels=val_labels)
    return atomic.write_bytes(split_path(ws, job), buffer.getvalue())


SPLIT_KEYS = ("train_index", "val_index", "val_labels")


def _read_split(path: Path) -> dict[str, np.ndarray] | None:
    """The saved split, None when it is missing or does not read as one."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            split = {key: arrays[key] for key in SPLIT_KEYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    return split if len(split["val_index"]) == len(split["val_labels"]) else None


def load_split(ws: Workspace, record: JobRecord, say=None) -> dict[str, np.ndarray]:
    """The job's validation split. A missing or damaged split.npz is made again, exactly: the split is a
    function of the recorded seed, share and training data (checked against its recorded hash)."""
    from .data import DataError, stratified_split

    path = split_path(ws, record.name)
    split = _read_split(path)
    if split is not None:
        return split
    spec = record.spec
    try:
        train, _ = read_job_data(ws, record.data_path, spec.limit_train, spec.format)
    except DataError as error:
        raise JobError(f"{path} is missing or damaged, and the job's data to make it again cannot be read: "
                       f"{error}") from None
    if train.sha256 != spec.train_sha256:
        raise JobError(f"{path} is missing or damaged, and {record.data_dir} no longer holds the training data "
                       f"job {record.name!r} was made from (its hash differs): put that data back to recover it")
    train_index, val_index = stratified_split(train.labels, spec.val_split, spec.seed)
    save_split(ws, record.name, train_index, val_index, class_indices(train.labels, spec.classes)[val_index])
    if say is not None:
        say(f"{path} was missing or damaged: made again from the job's seed ({spec.seed}) and data")
    return _read_split(path)


@dataclass(frozen=True)
class JobArrays:
    """A job's data exactly as its members see it: raw uint8 pixels with a channel axis, labels as class
    indices (position in the job's classes); y_test only where the layout labels test (-1: a class
    that training never saw)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray | None = None


def resolve_format(data_dir: Path, name: str | None = None) -> TaskFormat:
    """The layout a data folder is read as: the one named, else the one its files and headers show."""
    from .data import DataError

    data_dir = Path(data_dir)
    try:
        if name is not None:
            return get_format(name)
        if not data_dir.is_dir() or not any(data_dir.glob("*.csv")):
            raise DataError(f"{data_dir}: no train.csv (make one with `ensemble data sample --out {data_dir}` "
                            "or put Kaggle's train.csv and test.csv there)")
        return detect_format(data_dir)
    except FormatError as error:
        raise DataError(str(error)) from None


def read_job_data(ws: Workspace, data_dir: Path, limit_train: int | None = None, fmt: TaskFormat | None = None):
    """The train and test CSV of a data folder (train's first limit_train rows when given), through the cache."""
    from .data import DataError, read_test_csv, read_train_csv

    fmt = fmt or resolve_format(data_dir)
    try:
        train_path, test_path = data_files(fmt, data_dir)
    except FormatError as error:
        raise DataError(str(error)) from None
    for path in (train_path, test_path):
        if not path.is_file():
            raise DataError(f"{Path(data_dir)}: no {path.name}, which the {fmt.name} layout needs beside "
                            f"{train_path.name if path == test_path else test_path.name}")
    train = read_train_csv(train_path, ws.cache_dir, fmt, limit=limit_train)  # only the rows it uses
    test = read_test_csv(test_path, ws.cache_dir, fmt)
    return train, test


def class_indices(labels: np.ndarray, classes: tuple[int, ...]) -> np.ndarray:
    """Labels as positions in the sorted classes; -1 for a label outside them."""
    classes_array = np.asarray(classes)
    positions = np.clip(np.searchsorted(classes_array, labels), 0, len(classes_array) - 1)
    return np.where(classes_array[positions] == labels, positions, -1).astype(np.int64)


def read_job_test(ws: Workspace, record: JobRecord):
    """A job's test file alone (its ids and, where the layout has them, labels), through the cache."""
    from .data import read_test_csv

    spec = record.spec
    try:
        test_path = data_files(spec.format, record.data_path)[1]
    except FormatError as error:
        raise JobError(str(error)) from None
    return read_test_csv(test_path, ws.cache_dir, spec.format)


def job_test_labels(ws: Workspace, record: JobRecord) -> np.ndarray | None:
    """Class indices of the test rows where the layout labels test (Fashion-MNIST, Sign Language MNIST,
    EMNIST), else None."""
    test = read_job_test(ws, record)
    classes = record.spec.classes
    return class_indices(test.labels, classes) if test.labels is not None else None


def job_arrays(ws: Workspace, record: JobRecord) -> JobArrays:
    spec = record.spec
    train, test = read_job_data(ws, record.data_path, spec.limit_train, spec.format)
    for kind, table, recorded in (("train", train, spec.train_sha256), ("test", test, spec.test_sha256)):
        if table.sha256 != recorded:
            raise JobError(f"{record.data_dir}/{kind}.csv changed since job {record.name!r} was "
                           "created (its content hash differs); train a new job for new data")
    split = load_split(ws, record)
    images = train.images[..., None]
    labels = class_indices(train.labels, spec.classes)
    y_test = class_indices(test.labels, spec.classes) if test.labels is not None else None
    return JobArrays(images[split["train_index"]], labels[split["train_index"]],
                     images[split["val_index"]], labels[split["val_index"]], test.images[..., None], y_test)
