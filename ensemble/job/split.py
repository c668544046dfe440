"""The validation split, shared by every member of a job (jobs/<job>/split.npz), made again exactly when lost.

Two kinds. The shared split (the default): one stratified share of the rows validates every member, the
rest trains them all. K folds (--folds K): every row is a validation row, held out by exactly one fold;
`fold` names each validation row's fold, member i holds out fold i mod K and trains on the others, so its
validation outputs are its out-of-fold predictions, and K members score every row once."""
from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np

from ..data.folder import class_indices, read_job_data
from ..data.split import stratified_folds, stratified_split
from ..data.tables import DataError
from ..store import atomic
from ..store.workspace import Workspace
from .errors import JobError
from .layout import JobLayout
from .record import JobRecord


def save_split(ws: Workspace, job: str, train_index: np.ndarray, val_index: np.ndarray,
               val_labels: np.ndarray, fold: np.ndarray | None = None) -> Path:
    """Row indices of train.csv for training and validation, the validation rows' class indices and, for
    k-fold jobs, each validation row's fold."""
    buffer = io.BytesIO()
    folds = {} if fold is None else {"fold": np.asarray(fold, dtype=np.int64)}
    np.savez(buffer, train_index=train_index, val_index=val_index, val_labels=val_labels, **folds)
    return atomic.write_bytes(JobLayout(ws, job).split, buffer.getvalue())


def make_split(labels: np.ndarray, class_index: np.ndarray, val_split: float, folds: int | None,
               seed: int) -> dict[str, np.ndarray]:
    """The split of a job's training rows (labels as read, class_index their positions among the classes):
    a shared stratified share, or (folds) every row a validation row of one of K stratified folds."""
    if folds:
        rows = np.arange(len(labels))
        return {"train_index": rows, "val_index": rows, "val_labels": class_index,
                "fold": stratified_folds(labels, folds, seed)}
    train_index, val_index = stratified_split(labels, val_split, seed)
    return {"train_index": train_index, "val_index": val_index, "val_labels": class_index[val_index]}


def write_split(ws: Workspace, job: str, split: dict[str, np.ndarray]) -> Path:
    return save_split(ws, job, split["train_index"], split["val_index"], split["val_labels"], split.get("fold"))


def fold_sizes(split: dict[str, np.ndarray]) -> tuple[int, ...] | None:
    """Validation rows per fold of a k-fold split; None for a shared split."""
    if "fold" not in split:
        return None
    return tuple(int(n) for n in np.bincount(split["fold"]))


def fold_split(split: dict[str, np.ndarray], fold: int | None) -> dict[str, np.ndarray]:
    """What one member trains and validates on: a k-fold split's rows outside `fold`, and the fold's own rows;
    a shared split (or fold None) as it is."""
    if fold is None or "fold" not in split:
        return split
    held_out = split["fold"] == fold
    return {"train_index": split["val_index"][~held_out], "val_index": split["val_index"][held_out],
            "val_labels": split["val_labels"][held_out]}


SPLIT_KEYS = ("train_index", "val_index", "val_labels")


def split_sha256(split: dict[str, np.ndarray]) -> str:
    """The split's identity, which validation outputs are bound to: a hash of its rows and labels, the same
    when split.npz is made again (the file's own bytes are not: the archive stamps its write time)."""
    digest = hashlib.sha256()
    for key in SPLIT_KEYS + (("fold",) if "fold" in split else ()):  # a shared split's hash is as it always was
        digest.update(np.ascontiguousarray(split[key], dtype="<i8").tobytes())
    return digest.hexdigest()


def existing_split(ws: Workspace, record: JobRecord) -> dict[str, np.ndarray] | None:
    """The saved split as it is, None when it is missing or damaged: for readers, which never make it again."""
    return _job_split(JobLayout(ws, record.name).split, record)


def _job_split(path: Path, record: JobRecord) -> dict[str, np.ndarray] | None:
    """The saved split where it is the kind the job's spec makes (K folds, or a shared share), else None: a
    k-fold job's split without its folds would have members train on the rows they are scored on."""
    split = _read_split(path)
    if split is None:
        return None
    folds = record.spec.folds
    if ("fold" in split) != bool(folds):
        return None
    if folds and (int(split["fold"].max(initial=-1)) + 1 != folds
                  or not np.array_equal(split["train_index"], split["val_index"])):
        return None
    return split


def read_split_file(path: Path) -> dict[str, np.ndarray]:
    """A split file that must be whole (a member's: the runner made sure of it)."""
    split = _read_split(path)
    if split is None:
        raise JobError(f"{path}: missing or damaged; `ensemble train` makes it again")
    return split


def _read_split(path: Path) -> dict[str, np.ndarray] | None:
    """The saved split, None when it is missing or does not read as one."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            split = {key: arrays[key] for key in SPLIT_KEYS}
            if "fold" in arrays.files:
                split["fold"] = arrays["fold"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if "fold" in split and (len(split["fold"]) != len(split["val_index"]) or split["fold"].min(initial=0) < 0):
        return None
    return split if len(split["val_index"]) == len(split["val_labels"]) else None


def load_split(ws: Workspace, record: JobRecord, say=None) -> dict[str, np.ndarray]:
    """The job's validation split. A missing or damaged split.npz is made again, exactly: the split is a
    function of the recorded seed, share and training data (checked against its recorded hash)."""
    path = JobLayout(ws, record.name).split
    split = _job_split(path, record)
    if split is not None:
        return split
    spec = record.spec
    try:
        train, _ = read_job_data(ws, record.data_path, spec.limit_train, spec.data_layout)
    except DataError as error:
        raise JobError(f"{path} is missing or damaged, and the job's data to make it again cannot be read: "
                       f"{error}") from None
    if train.sha256 != spec.train_sha256:
        raise JobError(f"{path} is missing or damaged, and {record.data_dir} no longer holds the training data "
                       f"job {record.name!r} was made from (its hash differs): put that data back to recover it")
    write_split(ws, record.name, make_split(train.labels, class_indices(train.labels, spec.classes), spec.val_split,
                                            spec.folds, spec.seed))
    if say is not None:
        say(f"{path} was missing or damaged: made again from the job's seed ({spec.seed}) and data")
    return _read_split(path)
