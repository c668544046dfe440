"""The blend methods: mean, geometric and greedy (Caruana ensemble selection), registered in BLEND_METHODS.

Pure arithmetic: models' softmax in, blended softmax and its validation score out. Reading the outputs and
writing submissions happen in blend.blending and kaggle.submission.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..nets.metrics import PROB_FLOOR, accuracy, log_loss

if TYPE_CHECKING:  # the record's type, without importing jobs (and Keras) at module load
    pass


GREEDY_ROUNDS = 25  # AutoGluon's ensemble_size


def _as_stack(probs: np.ndarray) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 3 or len(probs) == 0:
        raise ValueError(f"expected (members, rows, classes) probabilities, got shape {probs.shape}")
    return probs


def mean_blend(probs: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(members, rows, classes) -> (rows, classes): the arithmetic mean (of the models that cover each row)."""
    probs = _as_stack(probs)
    return probs.mean(axis=0) if mask is None else weighted_blend(probs, np.ones(len(probs)), mask)


def geometric_blend(probs: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(members, rows, classes) -> (rows, classes): the normalised geometric mean (of the covering models)."""
    logs = np.log(np.clip(_as_stack(probs), PROB_FLOOR, 1.0))
    log_mean = logs.mean(axis=0) if mask is None else weighted_blend(logs, np.ones(len(logs)), mask, fill=0.0)
    unnormalised = np.exp(log_mean - log_mean.max(axis=1, keepdims=True))
    return unnormalised / unnormalised.sum(axis=1, keepdims=True)


def blend_probabilities(probs: np.ndarray, method: str = "mean") -> np.ndarray:
    """An unweighted blend by name (a registered UnweightedBlend: mean or geometric)."""
    blender = BLEND_METHODS.get(method)
    if not isinstance(blender, UnweightedBlend):
        unweighted = [name for name, m in BLEND_METHODS.items() if isinstance(m, UnweightedBlend)]
        raise ValueError(f"unknown blend method {method!r} for an unweighted blend; choose {' or '.join(unweighted)}")
    return blender.combine(probs)


def weighted_blend(probs: np.ndarray, weights: np.ndarray, mask: np.ndarray | None = None,
                   fill: float | None = None) -> np.ndarray:
    """Sum of weights x probabilities. With a coverage mask (models, rows; a k-fold job's member predicts
    only the rows of its fold out of fold), each row is the weighted mean of the models that cover it, and a
    row no weighted model covers is `fill` (default: the uniform distribution)."""
    weights = np.asarray(weights, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    if mask is None:
        return np.tensordot(weights, probs, axes=1)
    per_row = weights[:, None] * mask                      # (models, rows)
    total = per_row.sum(axis=0)
    summed = np.einsum("mr,mrc->rc", per_row, probs)
    fill = 1.0 / probs.shape[2] if fill is None else fill
    return np.where(total[:, None] > 0, summed / np.where(total > 0, total, 1.0)[:, None], fill)


def covered_rows(mask: np.ndarray | None, rows: int) -> np.ndarray:
    """The rows a job's models can score: those at least one model predicts out of fold (all without a mask)."""
    return np.ones(rows, dtype=bool) if mask is None else np.asarray(mask, dtype=bool).any(axis=0)


def greedy_weights(val_probs: np.ndarray, labels: np.ndarray, rounds: int = GREEDY_ROUNDS,
                   mask: np.ndarray | None = None) -> np.ndarray:
    """Caruana et al. (2004) ensemble selection with replacement, as AutoGluon does: each round adds the
    model that most lowers the blend's validation log-loss (smooth, where accuracy ties everywhere; the
    lower index wins a tie). With a coverage mask, a model counts only on the rows it covers (out of fold)
    and rows nothing picked covers yet score as uniform. Returns weights summing to 1."""
    val_probs = np.asarray(val_probs, dtype=np.float64)
    mask = np.ones(val_probs.shape[:2]) if mask is None else np.asarray(mask, dtype=np.float64)
    uniform = 1.0 / val_probs.shape[2]
    picks = np.zeros(len(val_probs))
    summed = np.zeros(val_probs.shape[1:])
    counted = np.zeros(val_probs.shape[1])
    for _ in range(rounds):
        losses = []
        for candidate, covers in zip(val_probs, mask):
            total = counted + covers
            blend = np.where(total[:, None] > 0, (summed + covers[:, None] * candidate)
                             / np.where(total > 0, total, 1.0)[:, None], uniform)
            losses.append(log_loss(blend, labels))
        best = int(np.argmin(losses))
        picks[best] += 1
        summed += mask[best][:, None] * val_probs[best]
        counted += mask[best]
    return picks / rounds


def _rows_of(mask: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    return None if mask is None else mask[:, rows]


def cross_fitted_greedy_accuracy(val_probs: np.ndarray, labels: np.ndarray, seed: int = 0,
                                 mask: np.ndarray | None = None) -> tuple[float, float]:
    """An honest validation score for greedy weights: fit on one half of the validation rows, score on the
    other, both ways round; returns (accuracy, log-loss) averaged over the two held-out halves. Only rows
    some model covers are scored."""
    rows = np.flatnonzero(covered_rows(mask, len(labels)))
    order = rows[np.random.default_rng(seed).permutation(len(rows))]
    halves = (order[: len(order) // 2], order[len(order) // 2:])
    scores = []
    for fit_rows, score_rows in (halves, halves[::-1]):
        weights = greedy_weights(val_probs[:, fit_rows], labels[fit_rows], mask=_rows_of(mask, fit_rows))
        held_out = weighted_blend(val_probs[:, score_rows], weights, _rows_of(mask, score_rows))
        scores.append((accuracy(held_out, labels[score_rows]), log_loss(held_out, labels[score_rows])))
    return float(np.mean([a for a, _ in scores])), float(np.mean([l for _, l in scores]))


@dataclass(frozen=True)
class ModelOutputs:
    names: list[str]
    val_probs: np.ndarray   # (models, n_val, 10)
    test_probs: np.ndarray  # (models, n_test, 10)
    tta: bool = False       # test-time augmented outputs, for every model that has them
    # k-fold jobs: (models, n_val) True where a model's validation output is its out-of-fold prediction (a
    # member covers its fold's rows, a baseline every row); None: every model covers every row
    val_mask: np.ndarray | None = None

    @property
    def scored_rows(self) -> np.ndarray:
        """The validation rows a blend of these models is scored on: every row some model covers."""
        return covered_rows(self.val_mask, self.val_probs.shape[1])

    def model_rows(self, index: int) -> np.ndarray:
        """The validation rows model `index` predicted out of fold (all rows without a mask)."""
        return covered_rows(None if self.val_mask is None else self.val_mask[index:index + 1], self.val_probs.shape[1])

    def model_accuracy(self, index: int, labels: np.ndarray) -> float:
        rows = self.model_rows(index)
        return accuracy(self.val_probs[index][rows], labels[rows])

    def scores(self, blended_val: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        """(accuracy, log-loss) of a blended validation softmax on the rows the models cover."""
        rows = self.scored_rows
        return accuracy(blended_val[rows], labels[rows]), log_loss(blended_val[rows], labels[rows])


@dataclass(frozen=True)
class Blended:
    """A blend method's result: the weights, the blended validation and test softmax, and the validation
    score that can be trusted (cross-fitted where the weights were fitted on validation)."""

    weights: np.ndarray
    val_probs: np.ndarray
    test_probs: np.ndarray
    val_accuracy: float
    val_logloss: float


class BlendMethod:
    """A way to combine models' softmax; registered in BLEND_METHODS, which the CLI and the report loop over."""

    name: str
    help: str
    fits_weights = False  # weights fitted on validation: its score there is cross-fitted, its weights shown
    min_models = 1        # below this, the method is the mean blend again (or undefined)

    def blend(self, outputs: ModelOutputs, y_val: np.ndarray, seed: int = 0) -> Blended:
        raise NotImplementedError


class UnweightedBlend(BlendMethod):
    def __init__(self, name: str, combine, help: str, min_models: int = 1):
        self.name, self.combine, self.help, self.min_models = name, combine, help, min_models

    def blend(self, outputs: ModelOutputs, y_val: np.ndarray, seed: int = 0) -> Blended:
        val_blend = self.combine(outputs.val_probs, outputs.val_mask)
        return Blended(np.full(len(outputs.names), 1 / len(outputs.names)), val_blend,
                       self.combine(outputs.test_probs), *outputs.scores(val_blend, y_val))


class GreedyBlend(BlendMethod):
    name = "greedy"
    help = "Caruana ensemble selection, weights fitted on validation (scored cross-fitted)"
    fits_weights = True
    min_models = 2

    def blend(self, outputs: ModelOutputs, y_val: np.ndarray, seed: int = 0) -> Blended:
        mask = outputs.val_mask
        rows = outputs.scored_rows
        weights = greedy_weights(outputs.val_probs[:, rows], y_val[rows], mask=_rows_of(mask, rows))
        honest_accuracy, honest_logloss = cross_fitted_greedy_accuracy(outputs.val_probs, y_val, seed, mask)
        return Blended(weights, weighted_blend(outputs.val_probs, weights, mask),
                       weighted_blend(outputs.test_probs, weights), honest_accuracy, honest_logloss)


BLEND_METHODS: dict[str, BlendMethod] = {method.name: method for method in (
    UnweightedBlend("mean", mean_blend, "average of softmax outputs"),
    UnweightedBlend("geometric", geometric_blend, "normalised product of softmax outputs", min_models=2),
    GreedyBlend(),
)}


def get_blend_method(name: str) -> BlendMethod:
    if name not in BLEND_METHODS:
        raise ValueError(f"unknown blend method {name!r}; choose one of {', '.join(BLEND_METHODS)}")
    return BLEND_METHODS[name]


def blend_arrays(outputs: ModelOutputs, y_val: np.ndarray, method: str, seed: int = 0) -> Blended:
    """Pure: a blend method applied to models' outputs."""
    return get_blend_method(method).blend(outputs, y_val, seed)
