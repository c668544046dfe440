"""A data folder as the job reads it: its layout (named or detected), its train and test tables."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..store.session import detect_session, session_data_dir
from ..store.workspace import Workspace
from .layouts import Layout, LayoutError, data_files, detect_layout, get_layout
from .tables import DataError, read_test_csv, read_train_csv


def resolve_layout(data_dir: Path, name: str | None = None) -> Layout:
    """The layout a data folder is read as: the one named, else the one its files and headers show."""
    data_dir = Path(data_dir)
    try:
        if name is not None:
            return get_layout(name)
        if not data_dir.is_dir() or not any(data_dir.glob("*.csv")):
            raise DataError(f"{data_dir}: no train.csv (make one with `ensemble data sample --out {data_dir}` "
                            "or put Kaggle's train.csv and test.csv there)")
        return detect_layout(data_dir)
    except LayoutError as error:
        raise DataError(str(error)) from None


def read_job_data(ws: Workspace, data_dir: Path, limit_train: int | None = None, fmt: Layout | None = None):
    """The train and test CSV of a data folder (train's first limit_train rows when given), through the cache."""
    fmt = fmt or resolve_layout(data_dir)
    try:
        train_path, test_path = data_files(fmt, data_dir)
    except LayoutError as error:
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


def layout_fits(folder: Path) -> bool:
    """Whether a folder's files fit exactly one layout of the family."""
    try:
        detect_layout(Path(folder))
    except (LayoutError, OSError):
        return False
    return True


def default_data_dir(ws: Workspace) -> Path:
    """The data folder when none is named: data/ of the workspace; in a Kaggle session that has none, the one
    input (competition or dataset) whose files fit a layout."""
    session = detect_session()
    if session is None or ws.data_dir.is_dir():
        return ws.data_dir
    return session_data_dir(session, layout_fits)

