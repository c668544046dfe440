"""Model outputs: what every finished model leaves, and the one rule for which models are finished.

A model is a member (`member-03`), a snapshot of a member (`member-03-snap2`, the weights at the end of
its second cosine cycle) or a baseline (`knn`, folder `baseline-knn`). Each folder holds config.json,
float32 softmax on validation and test (`val_probs.npy`, `test_probs.npy`; with test-time augmentation
also `val_probs_tta.npy`, `test_probs_tta.npy`) and metrics.json, written last: its presence is what
marks the model finished. Everything here reads or writes those files; callers never build the names.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from . import atomic
from .workspace import Workspace, member_name

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


def has_outputs(model_dir: Path) -> bool:
    return all((model_dir / name).is_file() for name in OUTPUT_FILES)


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


def finished_members(ws: Workspace, record: dict) -> list[int]:
    return [member["index"] for member in record["members"]
            if member_is_complete(ws.member_dir(record["name"], member["index"]))]


def finished_snapshots(ws: Workspace, job: str, index: int) -> list[str]:
    """Snapshot model names of a member, by cycle."""
    pattern = re.compile(rf"^{member_name(index)}-snap(\d+)$")
    folder = ws.models_dir / job
    found = [(int(match.group(1)), path.name) for path in folder.glob(f"{member_name(index)}-snap*")
             if (match := pattern.match(path.name)) and has_outputs(path)] if folder.is_dir() else []
    return [name for _, name in sorted(found)]


def finished_baselines(ws: Workspace, job: str) -> list[str]:
    job_models = ws.models_dir / job
    if not job_models.is_dir():
        return []
    return sorted(path.name.removeprefix("baseline-") for path in job_models.glob("baseline-*")
                  if has_outputs(path))


def finished_models(ws: Workspace, record: dict) -> list[ModelRef]:
    """Every finished model of a job: each finished member followed by its snapshots, then the baselines."""
    job = record["name"]
    models = []
    for index in finished_members(ws, record):
        stopped = bool(read_metrics(ws.member_dir(job, index)).get("stopped_early"))
        models.append(ModelRef(member_name(index), ModelKind.MEMBER, stopped_early=stopped))
        models += [ModelRef(name, ModelKind.SNAPSHOT, member_name(index))
                   for name in finished_snapshots(ws, job, index)]
    return models + [ModelRef(name, ModelKind.BASELINE) for name in finished_baselines(ws, job)]


def ensemble_models(models: list[ModelRef]) -> list[str]:
    """What a default blend averages: a member's snapshots where it has them (its best-epoch model comes
    from the same run, so it is not counted beside them), else the member itself; a member the time limit
    stopped mid-cycle also brings its best weights, which are newer than its last snapshot. Baselines only
    when named."""
    snapshotted = {model.member for model in models if model.kind is ModelKind.SNAPSHOT}
    return [model.name for model in models
            if model.kind is ModelKind.SNAPSHOT
            or (model.kind is ModelKind.MEMBER and (model.name not in snapshotted or model.stopped_early))]
