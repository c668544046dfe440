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


def coverage_positions(mask: np.ndarray, rows: np.ndarray) -> dict[bytes, np.ndarray]:
    """Positions in `rows` grouped by which models cover those rows (in a k-fold job: a group per fold, covered
    by that fold's members and by the baselines), in the order the rows come; rows no model covers are left out."""
    columns = np.asarray(mask, dtype=bool)[:, np.asarray(rows, dtype=np.int64)].T  # (rows, models)
    patterns, inverse = np.unique(columns, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    return {pattern.tobytes(): np.flatnonzero(inverse == index) for index, pattern in enumerate(patterns)
            if pattern.any()}


def coverage_groups(mask: np.ndarray, rows: np.ndarray) -> dict[bytes, np.ndarray]:
    """`rows` grouped by which models cover them; rows no model covers are left out."""
    rows = np.asarray(rows, dtype=np.int64)
    return {key: rows[positions] for key, positions in coverage_positions(mask, rows).items()}


def greedy_by_coverage(val_probs: np.ndarray, labels: np.ndarray, mask: np.ndarray,
                       rows: np.ndarray) -> dict[bytes, tuple[np.ndarray, int]]:
    """Greedy selection where models cover different rows (k-fold members): fitted separately on each
    coverage group among the models that cover it (a fold's members never compete with rows they trained on),
    as (weights over every model, rows fitted) per group. One fitted over all rows at once could not tell how
    much one fold's members weigh against another fold's: no validation row sees both."""
    fitted = {}
    mask, probs = np.asarray(mask, dtype=bool), np.asarray(val_probs)
    for key, group in coverage_groups(mask, rows).items():
        covering = np.flatnonzero(mask[:, group[0]])
        weights = np.zeros(len(probs))
        weights[covering] = greedy_weights(probs[covering][:, group], labels[group])
        fitted[key] = (weights, len(group))
    return fitted


def apply_by_coverage(val_probs: np.ndarray, mask: np.ndarray, rows: np.ndarray,
                      fitted: dict[bytes, tuple[np.ndarray, int]]) -> np.ndarray:
    """The blend of `rows`, each by its coverage group's weights; a group that was not fitted (absent from
    the rows weights were fitted on) takes the mean of the models that cover it."""
    mask = np.asarray(mask, dtype=bool)
    rows = np.asarray(rows, dtype=np.int64)
    probs = np.asarray(val_probs, dtype=np.float64)
    blended = np.zeros((len(rows), probs.shape[2]))  # a row no model covers stays all zeros
    for key, positions in coverage_positions(mask, rows).items():
        covers = mask[:, rows[positions[0]]]
        weights = fitted.get(key, (covers / covers.sum(), 0))[0]
        blended[positions] = np.tensordot(weights, probs[:, rows[positions]], axes=1)
    return blended


def overall_weights_by_coverage(fitted: dict[bytes, tuple[np.ndarray, int]]) -> np.ndarray:
    """What the groups' weights make of the test blend, where every model predicts every row: each group's
    weights in proportion to its rows (k folds: about 1/k each), so every fold's members count."""
    total = sum(rows for _, rows in fitted.values())
    return sum(weights * rows / total for weights, rows in fitted.values())


def cross_fitted_greedy_accuracy(val_probs: np.ndarray, labels: np.ndarray, seed: int = 0,
                                 mask: np.ndarray | None = None) -> tuple[float, float]:
    """An honest validation score for greedy weights: fit on one half of the validation rows, score on the
    other, both ways round; returns (accuracy, log-loss) averaged over the two held-out halves. With a coverage
    mask, only rows some model covers are scored, and weights are fitted per coverage group."""
    rows = np.flatnonzero(covered_rows(mask, len(labels)))
    order = rows[np.random.default_rng(seed).permutation(len(rows))]
    halves = (order[: len(order) // 2], order[len(order) // 2:])
    scores = []
    for fit_rows, score_rows in (halves, halves[::-1]):
        if mask is None:
            held_out = weighted_blend(val_probs[:, score_rows], greedy_weights(val_probs[:, fit_rows], labels[fit_rows]))
        else:
            held_out = apply_by_coverage(val_probs, mask, score_rows,
                                         greedy_by_coverage(val_probs, labels, mask, fit_rows))
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
        honest_accuracy, honest_logloss = cross_fitted_greedy_accuracy(outputs.val_probs, y_val, seed, mask)
        if mask is None:
            weights = greedy_weights(outputs.val_probs, y_val)
            val_blend = weighted_blend(outputs.val_probs, weights)
        else:  # k-fold members: fitted fold by fold, the test blend weighing every fold by its rows
            rows = np.flatnonzero(outputs.scored_rows)
            fitted = greedy_by_coverage(outputs.val_probs, y_val, mask, rows)
            weights = overall_weights_by_coverage(fitted)
            val_blend = np.full(outputs.val_probs.shape[1:], 1.0 / outputs.val_probs.shape[2])
            val_blend[rows] = apply_by_coverage(outputs.val_probs, mask, rows, fitted)
        return Blended(weights, val_blend, weighted_blend(outputs.test_probs, weights), honest_accuracy,
                       honest_logloss)


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
