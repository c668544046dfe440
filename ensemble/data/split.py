"""The stratified validation split: a pure function of the labels, the share and the seed."""
from __future__ import annotations

import numpy as np

from .tables import DataError


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation), stratified by label; the same seed gives the same split for every member."""
    # imported here: scikit-learn (0.8 s with scipy) is for making a split, and a member process only reads one
    from sklearn.model_selection import train_test_split

    if not 0 < val_fraction < 1:
        raise DataError(f"validation split must be between 0 and 1, got {val_fraction}")
    indices = np.arange(len(labels))
    try:
        train, val = train_test_split(indices, test_size=val_fraction, stratify=labels, random_state=seed)
    except ValueError as error:
        raise DataError(f"cannot make a stratified {val_fraction:.0%} validation split of "
                        f"{len(labels)} rows: {error}") from None
    return np.sort(train), np.sort(val)


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold (0..folds-1) of each row: scikit-learn's StratifiedKFold, shuffled with the job seed, so every
    row is held out by exactly one fold and each fold keeps the class shares."""
    from sklearn.model_selection import StratifiedKFold

    fold_of_row = np.full(len(labels), -1, dtype=np.int64)
    try:
        splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels)
        for fold, (_, held_out) in enumerate(splits):
            fold_of_row[held_out] = fold
    except ValueError as error:
        raise DataError(f"cannot make {folds} stratified folds of {len(labels)} rows: {error}; ask for fewer with "
                        "--folds K, or for one shared split with --folds 0") from None
    return fold_of_row
