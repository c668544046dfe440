"""A job's data exactly as its members see it: the split applied, labels as class indices."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.folder import class_indices, read_job_data
from ..data.layouts import LayoutError, data_files
from ..data.tables import DataError, read_answers_csv, read_test_csv
from ..store.workspace import Workspace
from .errors import JobError
from .record import JobRecord, data_changed
from .split import fold_split, load_split, split_sha256


@dataclass(frozen=True)
class JobArrays:
    """A job's data exactly as its members see it: raw uint8 pixels with a channel axis, labels as class
    indices (position in the job's classes); y_test only where the layout labels test (-1: a class
    that training never saw). The hashes name where the rows came from: every output predicted from
    them records them (job.outputs)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray | None = None
    test_sha256: str = ""   # the test file's content hash
    split_sha256: str = ""  # the validation split's (job.split.split_sha256)
    folds: np.ndarray | None = None  # k-fold jobs, all folds at once: the fold of each validation row



def job_test_file(record: JobRecord) -> Path:
    try:
        return data_files(record.spec.data_layout, record.data_path)[1]
    except LayoutError as error:
        raise JobError(str(error)) from None


def read_job_test(ws: Workspace, record: JobRecord):
    """A job's test file alone, as it is now (its ids and, where the layout has them, labels; its hash),
    through the cache."""
    return read_test_csv(job_test_file(record), ws.cache_dir, record.spec.data_layout)


# the answers beside an unlabelled test file, in the submission's format (the sample, `ensemble data idx`)
ANSWERS_FILE = "test_labels.csv"


def job_test_labels(ws: Workspace, record: JobRecord) -> np.ndarray | None:
    """Class indices of the test rows where they are known, else None: the layout labels test (Fashion-MNIST,
    Sign Language MNIST, EMNIST), or test_labels.csv beside the test file holds one answer per test row. A
    class that training never saw is -1 (always wrong)."""
    test = read_job_test(ws, record)
    classes = record.spec.classes
    if test.labels is not None:
        return class_indices(test.labels, classes)
    answers = job_test_file(record).parent / ANSWERS_FILE
    if not answers.is_file():
        return None
    layout = record.spec.data_layout
    try:
        ids, labels = read_answers_csv(answers, layout)
    except (DataError, OSError, ValueError):
        return None
    # an answer per test row, in the test file's order: the ids a submission of this file would carry
    expected = np.asarray(test.ids) if layout.ids_from_test else np.arange(1, len(test) + 1)
    if len(ids) != len(expected) or not np.array_equal(ids.astype(str), expected.astype(str)):
        return None
    return class_indices(labels, classes)


def job_arrays(ws: Workspace, record: JobRecord) -> JobArrays:
    """The job's rows as they are now: the training file it was made from (refused when it changed), the
    test file as it is (a changed one is simply predicted)."""
    spec = record.spec
    train, test = read_job_data(ws, record.data_path, spec.limit_train, spec.data_layout)
    if train.sha256 != spec.train_sha256:
        train_path = data_files(spec.data_layout, record.data_path)[0]
        raise JobError(data_changed(record, train_path, spec.train_sha256, train.sha256)
                       + "; put that file back, or train a new job on the new data")
    y_test = class_indices(test.labels, spec.classes) if test.labels is not None else None
    split = load_split(ws, record)
    return split_arrays(train.images, class_indices(train.labels, spec.classes), split, test.images, y_test,
                        test.sha256, split_sha256(split))


def every_row(split: dict[str, np.ndarray]) -> np.ndarray:
    """Every training row a split has, in order: a k-fold split's validation rows are all of them."""
    if "fold" in split:
        return split["val_index"]
    return np.sort(np.concatenate([split["train_index"], split["val_index"]]))


def split_arrays(train_images: np.ndarray, train_labels: np.ndarray, split: dict[str, np.ndarray],
                 test_images: np.ndarray, y_test: np.ndarray | None, test_sha256: str = "",
                 split_hash: str = "", fold: int | None = None, train_all: bool = False) -> JobArrays:
    """Training and validation rows as the split says, with the channel axis the nets take; with a fold (a
    k-fold job's member), the rows outside that fold and the fold's own; train_all (a refit twin) trains on
    every row of the split, and predicts the fold's rows as its validation."""
    whole = split
    split = fold_split(split, fold)
    images = train_images[..., None]
    folds = whole.get("fold") if fold is None else None
    trained = every_row(whole) if train_all else split["train_index"]
    return JobArrays(images[trained], train_labels[trained],
                     images[split["val_index"]], train_labels[split["val_index"]], test_images[..., None], y_test,
                     test_sha256, split_hash, folds)
