"""Model outputs: what every finished model leaves, and the one rule for which models are finished.

A model is a member (`member-03`), a snapshot of a member (`member-03-snap2`, the weights at the end of
its second cosine cycle) or a baseline (`knn`, folder `baseline-knn`). Each folder holds config.json,
float32 softmax on validation and test (with test-time augmentation also a second pair) and metrics.json,
written last: its presence is what marks the model finished. metrics.json also binds the outputs to what they
came from: the sha256 of the test file the test outputs were predicted from and of the split the validation
outputs were scored on. The names are job.layout's; this module reads and writes the files and holds
`output_problem`, the one check behind "finished": whole files, the job's shapes, and outputs of the files
the job has now (a model predicted from another test file is stale, and never blended).
"""
from __future__ import annotations

import zipfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.tables import DataError
from ..store import atomic
from ..store.workspace import Workspace, member_name
from .arrays import job_test_file, read_job_test
from .errors import JobError
from .layout import JobLayout, MemberFolder, ModelFolder, ModelKind, member_of
from .split import existing_split, fold_sizes, split_sha256

if TYPE_CHECKING:
    from .record import JobRecord


@dataclass(frozen=True)
class ModelRef:
    name: str
    kind: ModelKind
    member: str | None = None  # the member a snapshot was taken from
    stopped_early: bool = False  # a member the time limit stopped before its last epoch (and last cycle)
    refit_of: str | None = None  # a refit twin (--refit-full): the fold member whose test predictions it makes


# keys a model's metrics.json has only where they apply (a snapshot has a cycle, a member sizes, TTA scores)
ONLY_WHERE_IT_APPLIES = {"member", "fold", "refit_of", "cycle", "epochs_planned", "best_epoch", "val_accuracy_tta", "val_logloss_tta",
                         "images_per_second", "n_train", "n_val", "n_test", "test_sha256", "split_sha256"}


@dataclass(frozen=True)
class Metrics:
    """metrics.json of a model. A member's and a snapshot's come from member.predict, a baseline's from
    blend.baselines; keys this type does not name are kept in `extra`, so every file reads and writes back."""

    val_accuracy: float
    val_logloss: float
    kind: str = "member"                   # member, snapshot or baseline
    model: str | None = None               # the net (a baseline: its name)
    member: int | None = None
    fold: int | None = None                # the fold a k-fold job's member held out: its validation rows
    refit_of: str | None = None            # a refit twin: the fold member it refits on every row (its
                                           # validation rows are that member's fold, trained on: never scored)
    cycle: int | None = None               # a snapshot's cosine cycle
    seed: int | None = None
    epochs: int | None = None              # epochs trained
    epochs_planned: int | None = None
    best_epoch: int | None = None          # the epoch whose weights predict
    stopped_early: bool = False            # the time limit stopped the member before its last epoch
    precision: str | None = None
    tta: bool = False
    val_accuracy_tta: float | None = None
    val_logloss_tta: float | None = None
    fit_seconds: float | None = None
    images_per_second: float | None = None
    predict_ms_per_1k: float | None = None
    params: int | None = None
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    test_sha256: str | None = None         # the test file the test outputs were predicted from (None: before
    split_sha256: str | None = None        # outputs recorded it); the split the validation outputs come from
    extra: dict[str, Any] = field(default_factory=dict)  # runtime, a baseline's sweep, ...

    def to_dict(self) -> dict:
        values = asdict(self)
        return {**{key: value for key, value in values.items()
                   if key != "extra" and not (value is None and key in ONLY_WHERE_IT_APPLIES)}, **self.extra}

    @classmethod
    def from_dict(cls, values: dict) -> "Metrics":
        """Raises KeyError or TypeError for a file that is not a model's metrics."""
        named = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{key: value for key, value in values.items() if key in named},
                   extra={key: value for key, value in values.items() if key not in named})

    @property
    def predict_seconds(self) -> float | None:
        """Seconds to predict the validation and test rows (with every TTA view), as measured on test."""
        if not self.predict_ms_per_1k or self.n_val is None or self.n_test is None:
            return None
        return self.predict_ms_per_1k / 1e6 * (self.n_val + self.n_test)


def save_model_outputs(folder: ModelFolder, config: dict, val_probs: np.ndarray, test_probs: np.ndarray,
                       metrics: Metrics, tta: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    """Write a model's outputs; metrics.json goes last, so a crash never leaves a model looking finished."""
    folder.metrics.unlink(missing_ok=True)  # rewriting: unfinished until the new metrics land
    folder.path.mkdir(parents=True, exist_ok=True)
    atomic.write_json(folder.config, config)
    for path, probs in zip(folder.probs(), (val_probs, test_probs)):
        atomic.save_npy(path, np.asarray(probs, dtype=np.float32))
    if tta is not None:
        for path, probs in zip(folder.probs(tta=True), tta):
            atomic.save_npy(path, np.asarray(probs, dtype=np.float32))
    return atomic.write_json(folder.metrics, metrics.to_dict())


def keras_file_problem(path: Path) -> str | None:
    """What is wrong with a saved .keras model, None when it is whole: a .keras file is a zip archive, and
    every member's checksum is verified (a truncated or overwritten file fails), without building the model."""
    if not path.is_file():
        return f"{path}: missing"
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            corrupt = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as error:
        return f"{path}: not a complete .keras file ({error})"
    if corrupt is not None:
        return f"{path}: {corrupt} inside it is corrupt"
    if not {"config.json", "model.weights.h5"} <= names:
        return f"{path}: not a Keras model file (no config.json and model.weights.h5 inside)"
    return None


@dataclass(frozen=True)
class OutputShape:
    """What a job's saved outputs must be: a row per validation and test image, a column per class, and
    predicted from the job's test file and split as they are now (by content hash)."""

    n_val: int | None   # None: the split cannot be read now (the next `ensemble train` makes it again)
    n_test: int | None  # None: the test file cannot be read now, so its row count is not checked
    n_classes: int
    test_sha256: str | None = None   # None: the test file cannot be read now, so where outputs came from is not checked
    split_sha256: str | None = None  # None: the split cannot be read now
    test_file: str | None = None     # the test file's path, to name it
    # the test file the job was created from: where outputs that do not say came from (versions before outputs
    # recorded it refused any other test file); None for a record without it, whose old outputs are of unknown origin
    created_test_sha256: str | None = None
    fold_rows: tuple[int, ...] | None = None  # a k-fold job: validation rows per fold (a member's outputs cover one)

    def val_rows(self, metrics: Metrics) -> int | None:
        """The validation rows a model's outputs must have: its fold's (a k-fold job's member or snapshot), else
        every validation row (a shared split's models, and a k-fold job's baselines, which predict every fold)."""
        if self.fold_rows is not None and metrics.fold is not None:
            return self.fold_rows[metrics.fold]  # a fold the job has (output_problem checks that first)
        return self.n_val

    def test_origin(self, metrics: Metrics) -> str | None:
        """The test file outputs came from: what they say, else what the job was created from, else None."""
        return metrics.test_sha256 or self.created_test_sha256

    def split_differs(self, metrics: Metrics) -> bool:
        return bool(self.split_sha256 and metrics.split_sha256 and metrics.split_sha256 != self.split_sha256)

    def origin_problem(self, metrics: Metrics) -> str | None:
        """Why outputs recorded as `metrics` describes them came from other files than the job's now; None
        when they came from these, or their origin is unknown (old outputs of a record without a test hash)."""
        test_file = self.test_file or "the test file"
        origin = self.test_origin(metrics)
        if self.test_sha256 and origin and origin != self.test_sha256:
            said = "" if metrics.test_sha256 else ", the file the job was created from"
            return (f"predicted from another {Path(test_file).name} (sha256 {origin[:12]}{said}); "
                    f"{test_file} now has sha256 {self.test_sha256[:12]}")
        if self.split_differs(metrics):
            return (f"its weights were trained and scored on another validation split (sha256 "
                    f"{metrics.split_sha256[:12]}; the job's split has {self.split_sha256[:12]})")
        return None

    def weights_only(self) -> "OutputShape":
        """The shape held to the split but not to the test file: for using a model's kept weights (predicting
        another CSV, carrying a job to a session that sees another test file), not its saved test outputs."""
        return replace(self, n_test=None, test_sha256=None)

    def binds(self, metrics: Metrics) -> bool:
        """Whether outputs say they came from exactly these files (a prediction may be skipped)."""
        return bool(metrics.test_sha256) and (metrics.test_sha256, metrics.split_sha256) == \
            (self.test_sha256, self.split_sha256)


def _json_object_problem(path: Path) -> str | None:
    try:
        value = atomic.read_json(path)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return f"{path}: not readable JSON ({type(error).__name__}: {error})"
    return None if isinstance(value, dict) else f"{path}: not a JSON object"


def _probs_problem(path: Path, rows: int | None, classes: int) -> str | None:
    try:
        probs = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        return f"{path}: not a readable .npy array ({error})"
    if probs.ndim != 2 or probs.shape[1] != classes or (rows is not None and probs.shape[0] != rows):
        return f"{path}: shape {probs.shape}, expected ({rows if rows is not None else 'rows'}, {classes})"
    if not np.issubdtype(probs.dtype, np.floating) or not np.isfinite(probs).all():
        return f"{path}: not finite probabilities ({probs.dtype})"
    return None


def output_problem(folder: ModelFolder, shape: OutputShape) -> str | None:
    """The first thing wrong with a model's saved outputs, None when every file a later stage reads is
    whole: present, parsing, the job's shapes, and for a member a best.keras that is a complete model file.
    The one check behind "finished": a model that fails it is not finished, whatever else says so."""
    for path in folder.output_files:
        if not path.is_file():
            return f"{folder.path}: no {path.name}"
    for path in (folder.config, folder.metrics):
        if problem := _json_object_problem(path):
            return problem
    values = atomic.read_json(folder.metrics)  # an object: checked just above
    accuracy = values.get("val_accuracy")
    if not isinstance(accuracy, (int, float)) or isinstance(accuracy, bool):
        return f"{folder.metrics}: no val_accuracy"
    try:
        metrics = Metrics.from_dict(values)
    except (KeyError, TypeError) as error:
        return f"{folder.metrics}: not a model's metrics ({type(error).__name__}: {error})"
    if origin := shape.origin_problem(metrics):  # before the shapes: a new test file may have other rows
        return f"{folder.path}: {origin}"
    if shape.fold_rows is not None and metrics.kind != "baseline" and metrics.fold is None:
        return f"{folder.path}: trained on no fold of this k-fold job (its metrics name none)"
    if shape.fold_rows is not None and metrics.fold is not None and not 0 <= metrics.fold < len(shape.fold_rows):
        return f"{folder.path}: fold {metrics.fold} is not one of this job's {len(shape.fold_rows)} folds"
    val_path, test_path = folder.probs()
    val_rows = shape.val_rows(metrics)
    present_tta = [path for path in folder.probs(tta=True) if path.is_file()]
    tta_rows = dict(zip(folder.probs(tta=True), (val_rows, shape.n_test)))
    for path, rows in ((val_path, val_rows), (test_path, shape.n_test), *((p, tta_rows[p]) for p in present_tta)):
        if problem := _probs_problem(path, rows, shape.n_classes):
            return problem
    if len(present_tta) == 1:
        return f"{folder.path}: {present_tta[0].name} without its other half"
    if isinstance(folder, MemberFolder):
        return keras_file_problem(folder.best)
    return None


def is_current(folder: ModelFolder, shape: OutputShape) -> bool:
    """Whether a model's outputs are whole and say they came from exactly the files of `shape`: a member
    predicting again skips what is current and makes everything else again (older outputs included)."""
    return output_problem(folder, shape) is None and shape.binds(read_metrics(folder))


def read_metrics(folder: ModelFolder) -> Metrics:
    return Metrics.from_dict(atomic.read_json(folder.metrics))


def load_probs(folder: ModelFolder, tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(val, test) softmax of a finished model; its TTA outputs when asked and present."""
    val_path, test_path = folder.probs(tta=tta and folder.has_tta)
    return np.load(val_path), np.load(test_path)


def job_output_shape(ws: Workspace, record: JobRecord, split: dict | None = None) -> OutputShape:
    """What every output of a job must be now: its split's validation rows, its test file's rows (when the
    file can be read), its classes, and both files' hashes."""
    split = split if split is not None else existing_split(ws, record)  # a reader never makes it again
    n_val = len(split["val_index"]) if split is not None else None
    try:
        test = read_job_test(ws, record)
        n_test, test_hash = len(test), test.sha256
    except (DataError, JobError, OSError):
        n_test, test_hash = None, None
    try:
        test_file = str(job_test_file(record))
    except JobError:
        test_file = None
    return OutputShape(n_val, n_test, len(record.spec.classes), test_hash,
                       split_sha256(split) if split is not None else None, test_file,
                       record.spec.test_sha256 or None, fold_sizes(split) if split is not None else None)


@dataclass(frozen=True)
class JobModels:
    """A job's models as found on disk: the finished ones, in order, and the damaged ones with what is wrong."""

    finished: list[ModelRef]
    damaged: dict[str, str]  # model name -> "path: what is wrong"
    stale: dict[str, str] = field(default_factory=dict)  # model name -> "path: which file it came from instead"
    unbound: list[str] = field(default_factory=list)     # finished, of unknown origin (old outputs, old record)
    retrain: list[str] = field(default_factory=list)     # members whose weights were trained on another split

    @property
    def names(self) -> list[str]:
        return [model.name for model in self.finished]

    def is_finished(self, name: str) -> bool:
        return name in self.names

    def fault_of_member(self, name: str) -> str | None:
        """What is wrong with a member's files or its snapshots' files, None when nothing is."""
        return next((problem for model, problem in self.damaged.items() if member_of(model) == name), None)

    def stale_of_member(self, name: str) -> str | None:
        """Which other file a member's (or its snapshots') outputs came from, None when they are current."""
        return next((problem for model, problem in self.stale.items() if member_of(model) == name), None)

    def to_predict_again(self) -> dict[str, str]:
        """member -> why `ensemble train` makes its outputs again from its kept weights, training nothing:
        they came from another test file or split, or do not say which (saved before outputs recorded it)."""
        reasons = {member_of(name): problem for name, problem in self.stale.items()}
        for name in self.unbound:
            reasons.setdefault(member_of(name), f"{name}'s outputs do not say which test file they came from "
                                                "(saved by an earlier version, its job recorded none)")
        return {member: why for member, why in reasons.items() if member is not None}


def _model_folders(layout: JobLayout, record: JobRecord) -> list[tuple[ModelFolder, ModelKind, str | None]]:
    """(folder, kind, member of a snapshot) of every model folder a job has, members first with their snapshots."""
    found = []
    for member in record.members:
        folder = layout.member(member.index)
        if folder.path.is_dir():
            found.append((folder, ModelKind.MEMBER, None))
        found += [(snapshot, ModelKind.SNAPSHOT, member_name(member.index)) for snapshot in folder.snapshot_folders()]
    return found + [(layout.baseline(name), ModelKind.BASELINE, None) for name in layout.baseline_names()]


def survey_models(ws: Workspace, record: JobRecord, shape: OutputShape | None = None) -> JobModels:
    """Every model of a job, each checked once (output_problem): a snapshot counts only beside a finished
    member; a folder without metrics.json is simply unfinished, one with it and a fault is damaged."""
    shape = shape or job_output_shape(ws, record)
    finished, damaged, stale, unbound, retrain = [], {}, {}, [], []
    for folder, kind, member in _model_folders(JobLayout(ws, record.name), record):
        name = folder.name if kind is not ModelKind.BASELINE else folder.name.removeprefix("baseline-")
        if kind is ModelKind.SNAPSHOT and member not in {model.name for model in finished}:
            continue
        problem = output_problem(folder, shape)
        if problem is None:
            metrics = read_metrics(folder)
            finished.append(ModelRef(name, kind, member, kind is ModelKind.MEMBER and metrics.stopped_early,
                                     metrics.refit_of))
            if shape.test_origin(metrics) is None:
                unbound.append(name)
        elif folder.metrics.is_file():
            origin = _recorded_origin(folder)
            if origin is not None and problem == f"{folder.path}: {shape.origin_problem(origin)}":
                stale[name] = problem
                if shape.split_differs(origin) and member_of(name):
                    retrain.append(member_of(name))
            else:
                damaged[name] = problem
    return JobModels(finished, damaged, stale, unbound, sorted(set(retrain)))


def survey_round_sources(ws: Workspace, record: JobRecord, shape: OutputShape, needs: str, then: str,
                         stopped_early_counts: bool) -> JobModels:
    """The job's models, for a round made from every member so far (pseudo-labels, refit twins), which must
    all be finished and none predicted from another test file; `needs` says what the round needs them for and
    `then` what the user does once they are (both in the refusal). stopped_early_counts: a member the time
    limit stopped counts as finished."""
    survey = survey_models(ws, record, shape)
    unfinished = [member.name for member in record.members if not survey.is_finished(member.name)
                  or (member.stopped_early and not stopped_early_counts)]
    if not record.members or unfinished:
        waiting = ", ".join(unfinished) if unfinished else "none trained yet"
        raise JobError(f"{needs}; not finished: {waiting}. Finish them first (`ensemble train --job {record.name}`), "
                       f"then {then}.")
    if stale := [name for name in survey.stale if name.startswith("member-")]:
        raise JobError(f"{', '.join(stale)}: predicted from another test file; `ensemble train --job {record.name}` "
                       "predicts them again first")
    return survey


def _recorded_origin(folder: ModelFolder) -> Metrics | None:
    try:
        return read_metrics(folder)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None


def finished_models(ws: Workspace, record: JobRecord) -> list[ModelRef]:
    """Every finished model of a job: each finished member followed by its snapshots, then the baselines."""
    return survey_models(ws, record).finished


def ensemble_models(models: list[ModelRef]) -> list[str]:
    """What a default blend averages: a member's snapshots where it has them (its best-epoch model comes
    from the same run, so it is not counted beside them), else the member itself; a member the time limit
    stopped mid-cycle also brings its best weights, which are newer than its last snapshot. Baselines only
    when named. A refit twin never: it has no held-out rows, and its test predictions stand in for its fold
    member's (blend.blending.refit_test_probs)."""
    snapshotted = {model.member for model in models if model.kind is ModelKind.SNAPSHOT}
    return [model.name for model in models if model.refit_of is None and (
            model.kind is ModelKind.SNAPSHOT
            or (model.kind is ModelKind.MEMBER and (model.name not in snapshotted or model.stopped_early)))]
