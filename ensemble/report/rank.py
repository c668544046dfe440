"""Ranking and the numbers behind the plots: pure functions of entries and arrays."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..blend.methods import BLEND_METHODS, ModelOutputs
from ..job.layout import JobLayout, member_of
from ..job.outputs import Metrics, OutputShape, read_metrics
from ..nets.metrics import accuracy

if TYPE_CHECKING:  # the record's type, without importing jobs (and Keras) at module load
    pass


COLUMNS = ["rank", "model", "kind", "val_accuracy", "val_acc_tta", "test_accuracy", "val_logloss", "fit_s",
           "predict_ms_per_1k", "params", "seed", "epochs", "note", "val_rows"]
# what the tables show: val_rows is folded into the accuracy's cell (its errors and standard error)
SHOWN_COLUMNS = COLUMNS[:-1]
RANDOM_ORDERS = 20


def rank_entries(entries: list[dict]) -> pd.DataFrame:
    """Rows sorted by validation accuracy (higher first), ties by log-loss (lower first), then by name."""
    frame = pd.DataFrame(entries, columns=COLUMNS[1:])
    frame = frame.sort_values(["val_accuracy", "val_logloss", "model"], ascending=[False, True, True],
                              kind="mergesort").reset_index(drop=True)
    frame.insert(0, "rank", np.arange(1, len(frame) + 1))
    return frame


def model_entry(name: str, metrics: Metrics, val_rows: int | None = None) -> dict:
    planned = metrics.epochs_planned if metrics.epochs_planned is not None else "?"
    return {"model": name, "kind": metrics.kind, "val_accuracy": metrics.val_accuracy,
            "val_acc_tta": metrics.val_accuracy_tta, "test_accuracy": None,
            "val_logloss": metrics.val_logloss, "fit_s": metrics.fit_seconds,
            "predict_ms_per_1k": metrics.predict_ms_per_1k, "params": metrics.params,
            "seed": metrics.seed, "epochs": metrics.epochs,
            "note": f"stopped early at epoch {metrics.epochs}/{planned} (time limit)" if metrics.stopped_early else "",
            "val_rows": val_rows if val_rows is not None else metrics.n_val}


def read_entry(ws, job: str, name: str, shape: OutputShape | None = None) -> dict:
    """A model's row; `shape` says how many validation rows its accuracy rests on (a k-fold member: its fold's)."""
    metrics = read_metrics(JobLayout(ws, job).model(name))
    return model_entry(name, metrics, shape.val_rows(metrics) if shape is not None else None)


def blend_entries(plain: ModelOutputs, augmented: ModelOutputs | None, member_entries: list[dict],
                  y_val: np.ndarray, seed: int, y_test: np.ndarray | None = None) -> tuple[list[dict], dict[str, float]]:
    """A row per blend method (weighted ones only with two or more models; their validation scores
    cross-fitted), without and, where the models have TTA outputs, with test-time augmentation; returns
    them with the greedy weights of the plain outputs."""
    costs = {key: sum(entry[key] or 0 for entry in member_entries)
             for key in ("fit_s", "predict_ms_per_1k", "params")}
    rows, weights = [], {}
    for method in BLEND_METHODS.values():
        if len(plain.names) < method.min_models:
            continue
        blended = method.blend(plain, y_val, seed)
        with_tta = method.blend(augmented, y_val, seed).val_accuracy if augmented is not None else None
        rows.append({"model": f"blend-{method.name}", "kind": "blend", "val_accuracy": blended.val_accuracy,
                     "val_acc_tta": with_tta,
                     "test_accuracy": accuracy(blended.test_probs, y_test) if y_test is not None else None,
                     "val_logloss": blended.val_logloss, **costs, "seed": None,
                     "epochs": None, "note": f"{len(plain.names)} models", "val_rows": int(plain.scored_rows.sum())})
        if method.fits_weights:
            weights = {name: float(w) for name, w in zip(plain.names, blended.weights)}
    return rows, weights


def accuracy_by_members_blended(val_probs: np.ndarray, y_val: np.ndarray, orders: int = RANDOM_ORDERS,
                                seed: int = 0, mask: np.ndarray | None = None) -> pd.DataFrame:
    """Mean-blend accuracy of the first m members, m = 1..M: in job order, and min/mean/max over random orders.
    With a coverage mask (k-fold members), each row averages the first m members that hold it out, and is
    scored once one of them does."""
    mask = np.ones(val_probs.shape[:2], dtype=bool) if mask is None else np.asarray(mask, dtype=bool)

    def curve(order):
        running = np.cumsum(val_probs[order] * mask[order][..., None], axis=0)
        covered = np.cumsum(mask[order], axis=0) > 0
        return [accuracy(running[m][covered[m]], y_val[covered[m]]) for m in range(len(order))]

    rng = np.random.default_rng(seed)
    shuffled = np.array([curve(rng.permutation(len(val_probs))) for _ in range(orders)])
    return pd.DataFrame({"members": np.arange(1, len(val_probs) + 1), "in_order": curve(np.arange(len(val_probs))),
                         "random_min": shuffled.min(axis=0), "random_mean": shuffled.mean(axis=0),
                         "random_max": shuffled.max(axis=0)})


def per_class_accuracy(probs: np.ndarray, y_val: np.ndarray) -> np.ndarray:
    """Accuracy on the rows of each class (one per softmax column); NaN for a class with no rows."""
    predicted = np.argmax(probs, axis=1)
    return np.array([np.mean(predicted[y_val == c] == c) if np.any(y_val == c) else np.nan
                     for c in range(probs.shape[1])])


@dataclass(frozen=True)
class Mistake:
    row: int            # position among the validation rows shown
    true: int           # class index
    predicted: int
    probability: float  # the blend's probability of the class it predicted


def confident_mistakes(probs: np.ndarray, labels: np.ndarray, count: int = 12) -> list[Mistake]:
    """The `count` wrongly predicted rows the blend was surest of, surest first (ties: the earlier row), as seed
    000's "most important errors" picks them: mislabelled or truly ambiguous images are usually among them."""
    predicted = np.argmax(probs, axis=1)
    wrong = np.flatnonzero(predicted != labels)
    sureness = probs[wrong, predicted[wrong]]
    order = wrong[np.lexsort((wrong, -sureness))][:count]
    return [Mistake(int(row), int(labels[row]), int(predicted[row]), float(probs[row, predicted[row]])) for row in order]


def blend_by_training_seconds(names: list[str], member_seconds: dict[str, float],
                              in_order: list[float]) -> pd.DataFrame:
    """The growing blend against the training it cost: after the m-th model joins (in job order), the
    seconds its members trained (a member's snapshots count its seconds once) and the blend's accuracy."""
    seen, total, seconds = set(), 0.0, []
    for name in names:
        member = member_of(name)
        if member not in seen:
            seen.add(member)
            total += member_seconds.get(member, 0.0)
        seconds.append(total)
    return pd.DataFrame({"models": np.arange(1, len(names) + 1), "seconds": seconds, "accuracy": list(in_order)})
