"""Scores of softmax outputs against labels: pure functions, shared by training, blending and the report."""
from __future__ import annotations

import numpy as np

PROB_FLOOR = 1e-12


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(probs, axis=1) == labels))


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    picked = np.asarray(probs, dtype=np.float64)[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, PROB_FLOOR, 1.0))))
