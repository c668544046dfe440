"""The stratified validation split: a pure function of the labels, the share and the seed."""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from .tables import DataError


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation), stratified by label; the same seed gives the same split for every member."""
    if not 0 < val_fraction < 1:
        raise DataError(f"validation split must be between 0 and 1, got {val_fraction}")
    indices = np.arange(len(labels))
    try:
        train, val = train_test_split(indices, test_size=val_fraction, stratify=labels, random_state=seed)
    except ValueError as error:
        raise DataError(f"cannot make a stratified {val_fraction:.0%} validation split of "
                        f"{len(labels)} rows: {error}") from None
    return np.sort(train), np.sort(val)
