"""The validation split, shared by every member of a job (jobs/<job>/split.npz), made again exactly when lost."""
from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np

from ..data.folder import class_indices, read_job_data
from ..data.split import stratified_split
from ..data.tables import DataError
from ..store import atomic
from ..store.workspace import Workspace
from .errors import JobError
from .layout import JobLayout
from .record import JobRecord


def save_split(ws: Workspace, job: str, train_index: np.ndarray, val_index: np.ndarray,
               val_labels: np.ndarray) -> Path:
    """Row indices of train.csv for training and validation, and the validation rows' class indices."""
    buffer = io.BytesIO()
    np.savez(buffer, train_index=train_index, val_index=val_index, val_labels=val_labels)
    return atomic.write_bytes(JobLayout(ws, job).split, buffer.getvalue())


SPLIT_KEYS = ("train_index", "val_index", "val_labels")


def split_sha256(split: dict[str, np.ndarray]) -> str:
    """The split's identity, which validation outputs are bound to: a hash of its rows and labels, the same
    when split.npz is made again (the file's own bytes are not: the archive stamps its write time)."""
    digest = hashlib.sha256()
    for key in SPLIT_KEYS:
        digest.update(np.ascontiguousarray(split[key], dtype="<i8").tobytes())
    return digest.hexdigest()


def existing_split(ws: Workspace, record: JobRecord) -> dict[str, np.ndarray] | None:
    """The saved split as it is, None when it is missing or damaged: for readers, which never make it again."""
    return _read_split(JobLayout(ws, record.name).split)


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
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    return split if len(split["val_index"]) == len(split["val_labels"]) else None


def load_split(ws: Workspace, record: JobRecord, say=None) -> dict[str, np.ndarray]:
    """The job's validation split. A missing or damaged split.npz is made again, exactly: the split is a
    function of the recorded seed, share and training data (checked against its recorded hash)."""
    path = JobLayout(ws, record.name).split
    split = _read_split(path)
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
    train_index, val_index = stratified_split(train.labels, spec.val_split, spec.seed)
    save_split(ws, record.name, train_index, val_index, class_indices(train.labels, spec.classes)[val_index])
    if say is not None:
        say(f"{path} was missing or damaged: made again from the job's seed ({spec.seed}) and data")
    return _read_split(path)
