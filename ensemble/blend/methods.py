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


def mean_blend(probs: np.ndarray) -> np.ndarray:
    """(members, rows, classes) -> (rows, classes): the arithmetic mean."""
    return _as_stack(probs).mean(axis=0)


def geometric_blend(probs: np.ndarray) -> np.ndarray:
    """(members, rows, classes) -> (rows, classes): the normalised geometric mean."""
    log_mean = np.log(np.clip(_as_stack(probs), PROB_FLOOR, 1.0)).mean(axis=0)
    unnormalised = np.exp(log_mean - log_mean.max(axis=1, keepdims=True))
    return unnormalised / unnormalised.sum(axis=1, keepdims=True)


def blend_probabilities(probs: np.ndarray, method: str = "mean") -> np.ndarray:
    """An unweighted blend by name (a registered UnweightedBlend: mean or geometric)."""
    blender = BLEND_METHODS.get(method)
    if not isinstance(blender, UnweightedBlend):
        unweighted = [name for name, m in BLEND_METHODS.items() if isinstance(m, UnweightedBlend)]
        raise ValueError(f"unknown blend method {method!r} for an unweighted blend; choose {' or '.join(unweighted)}")
    return blender.combine(probs)


def greedy_weights(val_probs: np.ndarray, labels: np.ndarray, rounds: int = GREEDY_ROUNDS) -> np.ndarray:
    """Caruana et al. (2004) ensemble selection with replacement, as AutoGluon does: each round adds the
    model that most lowers the blend's validation log-loss (smooth, where accuracy ties everywhere; the
    lower index wins a tie). Returns weights summing to 1."""
    val_probs = np.asarray(val_probs, dtype=np.float64)
    picks = np.zeros(len(val_probs))
    running = np.zeros(val_probs.shape[1:])
    for done in range(rounds):
        losses = [log_loss((running + candidate) / (done + 1), labels) for candidate in val_probs]
        best = int(np.argmin(losses))
        picks[best] += 1
        running += val_probs[best]
    return picks / rounds


def weighted_blend(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.tensordot(np.asarray(weights, dtype=np.float64), np.asarray(probs, dtype=np.float64), axes=1)


def cross_fitted_greedy_accuracy(val_probs: np.ndarray, labels: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """An honest validation score for greedy weights: fit on one half of the validation rows, score on the
    other, both ways round; returns (accuracy, log-loss) averaged over the two held-out halves."""
    order = np.random.default_rng(seed).permutation(len(labels))
    halves = (order[: len(order) // 2], order[len(order) // 2:])
    scores = []
    for fit_rows, score_rows in (halves, halves[::-1]):
        weights = greedy_weights(val_probs[:, fit_rows], labels[fit_rows])
        held_out = weighted_blend(val_probs[:, score_rows], weights)
        scores.append((accuracy(held_out, labels[score_rows]), log_loss(held_out, labels[score_rows])))
    return float(np.mean([a for a, _ in scores])), float(np.mean([l for _, l in scores]))


@dataclass(frozen=True)
class ModelOutputs:
    names: list[str]
    val_probs: np.ndarray   # (models, n_val, 10)
    test_probs: np.ndarray  # (models, n_test, 10)
    tta: bool = False       # test-time augmented outputs, for every model that has them


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
        val_blend = self.combine(outputs.val_probs)
        return Blended(np.full(len(outputs.names), 1 / len(outputs.names)), val_blend,
                       self.combine(outputs.test_probs), accuracy(val_blend, y_val), log_loss(val_blend, y_val))


class GreedyBlend(BlendMethod):
    name = "greedy"
    help = "Caruana ensemble selection, weights fitted on validation (scored cross-fitted)"
    fits_weights = True
    min_models = 2

    def blend(self, outputs: ModelOutputs, y_val: np.ndarray, seed: int = 0) -> Blended:
        weights = greedy_weights(outputs.val_probs, y_val)
        honest_accuracy, honest_logloss = cross_fitted_greedy_accuracy(outputs.val_probs, y_val, seed)
        return Blended(weights, weighted_blend(outputs.val_probs, weights),
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
