"""Model outputs: what every finished model leaves, and the one rule for which models are finished.

A model is a member (`member-03`), a snapshot of a member (`member-03-snap2`, the weights at the end of
its second cosine cycle) or a baseline (`knn`, folder `baseline-knn`). Each folder holds config.json,
float32 softmax on validation and test (`val_probs.npy`, `test_probs.npy`; with test-time augmentation
also `val_probs_tta.npy`, `test_probs_tta.npy`) and metrics.json, written last: its presence is what
marks the model finished. Everything here reads or writes those files; callers never build the names.
"""
from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.tables import DataError
from ..store import atomic
from ..store.workspace import Workspace, member_name
from .arrays import read_job_test
from .errors import JobError
from .split import load_split

if TYPE_CHECKING:  # the record's type, without importing jobs (and Keras) at module load
    from .record import JobRecord


OUTPUT_FILES = ("config.json", "val_probs.npy", "test_probs.npy", "metrics.json")
MEMBER_FILES = ("config.json", "best.keras", "val_probs.npy", "test_probs.npy", "metrics.json")
TTA_FILES = ("val_probs_tta.npy", "test_probs_tta.npy")
_SNAPSHOT = re.compile(r"^(member-\d+)-snap(\d+)$")


class ModelKind(str, Enum):
    MEMBER = "member"
    SNAPSHOT = "snapshot"
    BASELINE = "baseline"


@dataclass(frozen=True)
class ModelRef:
    name: str
    kind: ModelKind
    member: str | None = None  # the member a snapshot was taken from
    stopped_early: bool = False  # a member the time limit stopped before its last epoch (and last cycle)


def snapshot_name(index: int, cycle: int) -> str:
    """The model name of member `index`'s snapshot after cycle `cycle` (1-based)."""
    return f"{member_name(index)}-snap{cycle}"


def model_kind(name: str) -> ModelKind:
    if _SNAPSHOT.match(name):
        return ModelKind.SNAPSHOT
    return ModelKind.MEMBER if name.startswith("member-") else ModelKind.BASELINE


def save_model_outputs(model_dir: Path, config: dict, val_probs: np.ndarray, test_probs: np.ndarray,
                       metrics: dict, tta: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    """Write a model's outputs; metrics.json goes last, so a crash never leaves a model looking finished."""
    (model_dir / "metrics.json").unlink(missing_ok=True)  # rewriting: unfinished until the new metrics land
    atomic.write_json(model_dir / "config.json", config)
    atomic.save_npy(model_dir / "val_probs.npy", np.asarray(val_probs, dtype=np.float32))
    atomic.save_npy(model_dir / "test_probs.npy", np.asarray(test_probs, dtype=np.float32))
    if tta is not None:
        for name, probs in zip(TTA_FILES, tta):
            atomic.save_npy(model_dir / name, np.asarray(probs, dtype=np.float32))
    return atomic.write_json(model_dir / "metrics.json", metrics)


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


def has_outputs(model_dir: Path) -> bool:
    return all((model_dir / name).is_file() for name in OUTPUT_FILES)


@dataclass(frozen=True)
class OutputShape:
    """What a job's saved outputs must be: a row per validation and test image, a column per class."""

    n_val: int
    n_test: int | None  # None: the test file cannot be read now, so its row count is not checked
    n_classes: int


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


def output_problem(model_dir: Path, shape: OutputShape, kind: ModelKind) -> str | None:
    """The first thing wrong with a model's saved outputs, None when every file a later stage reads is
    whole: present, parsing, the job's shapes, and for a member a best.keras that is a complete model file.
    The one check behind "finished": a model that fails it is not finished, whatever else says so."""
    for name in MEMBER_FILES if kind is ModelKind.MEMBER else OUTPUT_FILES:
        if not (model_dir / name).is_file():
            return f"{model_dir}: no {name}"
    for name in ("config.json", "metrics.json"):
        if problem := _json_object_problem(model_dir / name):
            return problem
    accuracy = read_metrics(model_dir).get("val_accuracy")
    if not isinstance(accuracy, (int, float)) or isinstance(accuracy, bool):
        return f"{model_dir / 'metrics.json'}: no val_accuracy"
    present_tta = [name for name in TTA_FILES if (model_dir / name).is_file()]
    for name, rows in (("val_probs.npy", shape.n_val), ("test_probs.npy", shape.n_test),
                       *((name, shape.n_val if name.startswith("val") else shape.n_test) for name in present_tta)):
        if problem := _probs_problem(model_dir / name, rows, shape.n_classes):
            return problem
    if len(present_tta) == 1:
        return f"{model_dir}: {present_tta[0]} without its other half"
    if kind is ModelKind.MEMBER:
        return keras_file_problem(model_dir / "best.keras")
    return None


def has_tta(model_dir: Path) -> bool:
    return all((model_dir / name).is_file() for name in TTA_FILES)


def member_is_complete(member_dir: Path) -> bool:
    return all((member_dir / name).is_file() for name in MEMBER_FILES)


def read_metrics(model_dir: Path) -> dict:
    return atomic.read_json(model_dir / "metrics.json")


def load_probs(model_dir: Path, tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(val, test) softmax of a finished model; its TTA outputs when asked and present."""
    names = TTA_FILES if tta and has_tta(model_dir) else ("val_probs.npy", "test_probs.npy")
    return np.load(model_dir / names[0]), np.load(model_dir / names[1])


def job_output_shape(ws: Workspace, record: JobRecord) -> OutputShape:
    """The shape every output of a job must have: its split's validation rows, its test file's rows (when
    the file can be read), its classes."""
    n_val = len(load_split(ws, record)["val_index"])
    try:
        n_test = len(read_job_test(ws, record))
    except (DataError, JobError, OSError):
        n_test = None
    return OutputShape(n_val, n_test, len(record.spec.classes))


@dataclass(frozen=True)
class JobModels:
    """A job's models as found on disk: the finished ones, in order, and the damaged ones with what is wrong."""

    finished: list[ModelRef]
    damaged: dict[str, str]  # model name -> "path: what is wrong"

    @property
    def names(self) -> list[str]:
        return [model.name for model in self.finished]


def _model_folders(ws: Workspace, record: JobRecord) -> list[tuple[str, ModelKind, str | None]]:
    """(name, kind, member of a snapshot) of every model folder a job has, members first with their snapshots."""
    job = record.name
    folder = ws.models_dir / job
    found = []
    for member in record.members:
        index = member.index
        if ws.member_dir(job, index).is_dir():
            found.append((member_name(index), ModelKind.MEMBER, None))
        pattern = re.compile(rf"^{member_name(index)}-snap(\d+)$")
        snapshots = sorted((int(match.group(1)), path.name) for path in folder.glob(f"{member_name(index)}-snap*")
                           if (match := pattern.match(path.name))) if folder.is_dir() else []
        found += [(name, ModelKind.SNAPSHOT, member_name(index)) for _, name in snapshots]
    baselines = sorted(path.name.removeprefix("baseline-") for path in folder.glob("baseline-*")) \
        if folder.is_dir() else []
    return found + [(name, ModelKind.BASELINE, None) for name in baselines]


def survey_models(ws: Workspace, record: JobRecord, shape: OutputShape | None = None) -> JobModels:
    """Every model of a job, each checked once (output_problem): a snapshot counts only beside a finished
    member; a folder without metrics.json is simply unfinished, one with it and a fault is damaged."""
    shape = shape or job_output_shape(ws, record)
    job = record.name
    finished, damaged = [], {}
    for name, kind, member in _model_folders(ws, record):
        if kind is ModelKind.SNAPSHOT and member not in {model.name for model in finished}:
            continue
        model_dir = ws.model_dir(job, name)
        problem = output_problem(model_dir, shape, kind)
        if problem is None:
            stopped = kind is ModelKind.MEMBER and bool(read_metrics(model_dir).get("stopped_early"))
            finished.append(ModelRef(name, kind, member, stopped))
        elif (model_dir / "metrics.json").is_file():
            damaged[name] = problem
    return JobModels(finished, damaged)


def finished_models(ws: Workspace, record: JobRecord) -> list[ModelRef]:
    """Every finished model of a job: each finished member followed by its snapshots, then the baselines."""
    return survey_models(ws, record).finished


def ensemble_models(models: list[ModelRef]) -> list[str]:
    """What a default blend averages: a member's snapshots where it has them (its best-epoch model comes
    from the same run, so it is not counted beside them), else the member itself; a member the time limit
    stopped mid-cycle also brings its best weights, which are newer than its last snapshot. Baselines only
    when named."""
    snapshotted = {model.member for model in models if model.kind is ModelKind.SNAPSHOT}
    return [model.name for model in models
            if model.kind is ModelKind.SNAPSHOT
            or (model.kind is ModelKind.MEMBER and (model.name not in snapshotted or model.stopped_early))]
