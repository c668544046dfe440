"""A job's data exactly as its members see it: the split applied, labels as class indices."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.folder import class_indices, read_job_data
from ..data.layouts import LayoutError, data_files
from ..data.tables import read_test_csv
from ..store.workspace import Workspace
from .errors import JobError
from .record import JobRecord
from .split import load_split


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



def read_job_test(ws: Workspace, record: JobRecord):
    """A job's test file alone (its ids and, where the layout has them, labels), through the cache."""
    spec = record.spec
    try:
        test_path = data_files(spec.data_layout, record.data_path)[1]
    except LayoutError as error:
        raise JobError(str(error)) from None
    return read_test_csv(test_path, ws.cache_dir, spec.data_layout)


def job_test_labels(ws: Workspace, record: JobRecord) -> np.ndarray | None:
    """Class indices of the test rows where the layout labels test (Fashion-MNIST, Sign Language MNIST,
    EMNIST), else None."""
    test = read_job_test(ws, record)
    classes = record.spec.classes
    return class_indices(test.labels, classes) if test.labels is not None else None


def job_arrays(ws: Workspace, record: JobRecord) -> JobArrays:
    spec = record.spec
    train, test = read_job_data(ws, record.data_path, spec.limit_train, spec.data_layout)
    for kind, table, recorded in (("train", train, spec.train_sha256), ("test", test, spec.test_sha256)):
        if table.sha256 != recorded:
            raise JobError(f"{record.data_dir}/{kind}.csv changed since job {record.name!r} was "
                           "created (its content hash differs); train a new job for new data")
    y_test = class_indices(test.labels, spec.classes) if test.labels is not None else None
    return split_arrays(train.images, class_indices(train.labels, spec.classes), load_split(ws, record),
                        test.images, y_test)


def split_arrays(train_images: np.ndarray, train_labels: np.ndarray, split: dict[str, np.ndarray],
                 test_images: np.ndarray, y_test: np.ndarray | None) -> JobArrays:
    """Training and validation rows as the split says, with the channel axis the nets take."""
    images = train_images[..., None]
    return JobArrays(images[split["train_index"]], train_labels[split["train_index"]],
                     images[split["val_index"]], train_labels[split["val_index"]], test_images[..., None], y_test)
