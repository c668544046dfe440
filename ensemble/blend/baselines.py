"""Classical baselines on exactly a job's split: KNN, a decision tree, a random forest (seed 002's loops).

Same predictions as the seed's loops, much less work:
- KNN: one neighbour search at the largest k serves every k (the first k of the 19 nearest are the k
  nearest), voted as `KNeighborsClassifier` votes (argmax of class counts, ties to the smaller class).
  Queries run in chunks, so memory stays bounded (28000 x 42000 float32 distances at once would be 4.7 GB).
- Forest: one forest grown with warm_start from 100 to 500 trees; scikit-learn draws the same per-tree
  seeds as separate fits with the same random_state, and class probabilities are summed tree by tree, so
  each size is scored without predicting again with the trees already counted.
Each baseline is saved like a member (config.json, val/test probabilities, metrics.json last) under
`models/<job>/baseline-<name>/`, so it can be blended, submitted and ranked the same way.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
from joblib import Parallel, delayed

from ..job.arrays import job_arrays
from ..job.errors import JobError
from ..job.layout import JobLayout
from ..job.outputs import Metrics, save_model_outputs
from ..job.record import require_record
from ..nets.metrics import accuracy, log_loss
from ..store import atomic

if TYPE_CHECKING:  # scikit-learn's estimators are imported where they fit: every CLI command imports this module
    from sklearn.neighbors import NearestNeighbors

BASELINES = ("knn", "tree", "forest")
KNN_KS = tuple(range(1, 20, 2))
FOREST_SIZES = (100, 200, 300, 400, 500)
QUERY_CHUNK = 2000  # rows of queries per neighbour search: 2000 x 37800 float32 distances = 0.3 GB
LOO_ROWS = 5000     # training rows whose leave-one-out votes choose k (about the validation search's cost)
TREE_CHUNK = 25     # trees whose probabilities are held at once while summing


@dataclass(frozen=True)
class BaselineResult:
    name: str
    val_probs: np.ndarray
    test_probs: np.ndarray
    choice: dict                       # the hyperparameter picked without the validation rows, e.g. {"k": 3}
    sweep: dict = field(default_factory=dict)  # validation accuracy of every candidate (reported, not chosen on)
    fit_seconds: float = 0.0
    predict_seconds: float = 0.0       # on the test set
    params: int = 0
    selection: dict = field(default_factory=dict)  # what the choice was made on: training rows only


def flat_pixels(images: np.ndarray) -> np.ndarray:
    """(n, 28, 28[, 1]) uint8 -> (n, 784) float32 in 0..1, the scale the CNN members see."""
    return np.ascontiguousarray(images.reshape(len(images), -1), dtype=np.float32) / np.float32(255)


def knn_vote_probabilities(neighbour_labels: np.ndarray, k: int, n_classes: int) -> np.ndarray:
    """Class shares among the first k neighbours of each row (neighbour_labels sorted nearest first)."""
    votes = neighbour_labels[:, :k]
    counts = np.zeros((len(votes), n_classes), dtype=np.float64)
    np.add.at(counts, (np.repeat(np.arange(len(votes)), k), votes.ravel()), 1.0)
    return counts / k


def nearest_labels(index: NearestNeighbors, y_train: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    chunks = [index.kneighbors(queries[start:start + QUERY_CHUNK], n_neighbors=k, return_distance=False)
              for start in range(0, len(queries), QUERY_CHUNK)]
    return y_train[np.concatenate(chunks)]


def leave_one_out_labels(index: NearestNeighbors, x_train: np.ndarray, y_train: np.ndarray, rows: np.ndarray,
                         k: int) -> np.ndarray:
    """Labels of the k nearest other training rows of each of `rows` (the row itself left out)."""
    chunks = [index.kneighbors(x_train[rows[start:start + QUERY_CHUNK]], n_neighbors=k + 1, return_distance=False)
              for start in range(0, len(rows), QUERY_CHUNK)]
    neighbours = np.concatenate(chunks)
    is_self = neighbours == rows[:, None]
    # a stable sort moves the row itself (when found) to the end; else the farthest of the k + 1 is dropped
    order = np.argsort(is_self, axis=1, kind="stable")[:, :k]
    return y_train[np.take_along_axis(neighbours, order, axis=1)]


def knn_sweep(x_train, y_train, x_val, y_val, x_test, *, n_classes: int, ks=KNN_KS,
              n_jobs: int | None = None, seed: int = 0) -> BaselineResult:
    """k chosen by leave-one-out votes on training rows; validation accuracy of every k reported beside."""
    from sklearn.neighbors import NearestNeighbors

    started = time.perf_counter()
    index = NearestNeighbors(n_neighbors=max(ks), algorithm="brute", n_jobs=n_jobs).fit(x_train)
    rows = np.sort(np.random.default_rng(seed).permutation(len(x_train))[:LOO_ROWS])
    loo_labels = leave_one_out_labels(index, x_train, y_train, rows, max(ks))
    selection = {k: accuracy(knn_vote_probabilities(loo_labels, k, n_classes), y_train[rows]) for k in ks}
    best_k = max(ks, key=lambda k: (selection[k], -k))  # the seed's stable sort: first (smallest) k wins ties
    val_labels = nearest_labels(index, y_train, x_val, max(ks))
    sweep = {k: accuracy(knn_vote_probabilities(val_labels, k, n_classes), y_val) for k in ks}
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    test_probs = knn_vote_probabilities(nearest_labels(index, y_train, x_test, best_k), best_k, n_classes)
    return BaselineResult("knn", knn_vote_probabilities(val_labels, best_k, n_classes), test_probs, {"k": best_k},
                          {str(k): value for k, value in sweep.items()}, fit_seconds,
                          time.perf_counter() - started, params=int(x_train.size),
                          selection={str(k): value for k, value in selection.items()})


def all_class_columns(probs: np.ndarray, classes: np.ndarray, n_classes: int) -> np.ndarray:
    """scikit-learn gives a column per class seen in training; place them among all of the job's classes."""
    full = np.zeros((len(probs), n_classes))
    full[:, np.asarray(classes, dtype=int)] = probs
    return full


def tree_baseline(x_train, y_train, x_val, y_val, x_test, *, n_classes: int, seed: int = 0) -> BaselineResult:
    from sklearn.tree import DecisionTreeClassifier

    started = time.perf_counter()
    tree = DecisionTreeClassifier(random_state=seed).fit(x_train, y_train)
    val_probs = all_class_columns(tree.predict_proba(x_val), tree.classes_, n_classes)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    test_probs = all_class_columns(tree.predict_proba(x_test), tree.classes_, n_classes)
    return BaselineResult("tree", val_probs, test_probs, {"max_depth": int(tree.get_depth())},
                          {}, fit_seconds, time.perf_counter() - started, params=int(tree.tree_.node_count))


def summed_tree_probabilities(trees, classes: np.ndarray, x: np.ndarray, n_jobs: int | None,
                              n_classes: int) -> np.ndarray:
    """Sum of predict_proba over a forest's trees (columns = the forest's classes_), TREE_CHUNK trees at a
    time, in threads (trees release the GIL)."""
    total = np.zeros((len(x), len(classes)))
    for start in range(0, len(trees), TREE_CHUNK):
        parts = Parallel(n_jobs=n_jobs, prefer="threads")(
            delayed(tree.predict_proba)(x, check_input=False) for tree in trees[start:start + TREE_CHUNK])
        total += np.sum(parts, axis=0)
    return all_class_columns(total, classes, n_classes)


def forest_sweep(x_train, y_train, x_val, y_val, x_test, *, n_classes: int, sizes=FOREST_SIZES, seed: int = 0,
                 n_jobs: int | None = None) -> BaselineResult:
    """The tree count chosen by out-of-bag accuracy (training rows only); validation accuracy reported beside."""
    import warnings

    from sklearn.ensemble import RandomForestClassifier

    started = time.perf_counter()
    forest = RandomForestClassifier(n_estimators=sizes[0], random_state=seed, warm_start=True, n_jobs=n_jobs,
                                    oob_score=True)
    val_sum, sweep, kept_val, selection = np.zeros((len(x_val), n_classes)), {}, {}, {}
    for size in sizes:
        grown = len(getattr(forest, "estimators_", []))
        with warnings.catch_warnings():  # few trees leave some rows without out-of-bag votes: scored on the rest
            warnings.filterwarnings("ignore", message="Some inputs do not have OOB scores")
            forest.set_params(n_estimators=size).fit(x_train, y_train)
        selection[size] = float(forest.oob_score_)
        val_sum += summed_tree_probabilities(forest.estimators_[grown:], forest.classes_, x_val, n_jobs, n_classes)
        kept_val[size] = val_sum / size
        sweep[size] = accuracy(kept_val[size], y_val)
    best = max(sizes, key=lambda size: (selection[size], -size))  # the seed keeps the first strictly better
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    test_probs = summed_tree_probabilities(forest.estimators_[:best], forest.classes_, x_test, n_jobs,
                                           n_classes) / best
    nodes = sum(tree.tree_.node_count for tree in forest.estimators_[:best])
    return BaselineResult("forest", kept_val[best], test_probs, {"n_estimators": best},
                          {str(size): value for size, value in sweep.items()}, fit_seconds,
                          time.perf_counter() - started, params=int(nodes),
                          selection={str(size): value for size, value in selection.items()})


def out_of_fold(fit: Callable[..., BaselineResult], x: np.ndarray, y: np.ndarray, x_test: np.ndarray,
                fold_of_row: np.ndarray) -> BaselineResult:
    """A baseline on a k-fold job's folds, as scikit-learn's cross_val_predict runs an estimator: for each fold,
    fit on the other folds (the choice of k or trees made there too) and predict the fold, so every row is
    predicted once, by a fit that never saw it; the test prediction averages the K fits, as the members' blend
    averages the members. `fit(x_train, y_train, x_val, y_val, x_test)` is one of the sweeps above."""
    oof, tests, fits = None, [], []
    for fold in range(int(fold_of_row.max()) + 1):
        held_out = fold_of_row == fold
        result = fit(x[~held_out], y[~held_out], x[held_out], y[held_out], x_test)
        if oof is None:
            oof = np.zeros((len(x), result.val_probs.shape[1]))
        oof[held_out] = result.val_probs
        tests.append(result.test_probs)
        fits.append(result)
    return BaselineResult(fits[0].name, oof, np.mean(tests, axis=0), _per_fold([f.choice for f in fits]),
                          _mean_per_fold([f.sweep for f in fits]), sum(f.fit_seconds for f in fits),
                          sum(f.predict_seconds for f in fits), params=fits[0].params,
                          selection=_mean_per_fold([f.selection for f in fits]))


def _per_fold(choices: list[dict]) -> dict:
    """Each fold's choice, per key: {"k": [3, 3, 5]}."""
    return {key: [choice[key] for choice in choices] for key in choices[0]}


def _mean_per_fold(scores: list[dict]) -> dict:
    """A candidate's score averaged over the folds (they hold near-equal rows); {} when there are none."""
    return {key: float(np.mean([score[key] for score in scores])) for key in scores[0]} if scores[0] else {}


def baseline_metrics(result: BaselineResult, y_val: np.ndarray, seed: int, n_test: int) -> dict:
    return {
        "model": result.name, "kind": "baseline", "seed": seed, "epochs": None,
        "val_accuracy": accuracy(result.val_probs, y_val), "val_logloss": log_loss(result.val_probs, y_val),
        "choice": result.choice, "sweep": result.sweep, "chosen_on": result.selection,
        "fit_seconds": round(result.fit_seconds, 3),
        "predict_ms_per_1k": round(result.predict_seconds / max(n_test, 1) * 1e6, 3), "params": result.params,
    }


def run_baselines(ws, job: str | None = None, only: tuple[str, ...] = BASELINES, n_jobs: int | None = -1,
                  echo: Callable[[str], None] = print) -> list[dict]:
    """Fit the chosen baselines on a job's split and save each like a member; returns their metrics."""
    unknown = [name for name in only if name not in BASELINES]
    if unknown:
        raise JobError(f"unknown baseline {', '.join(map(repr, unknown))}; choose from {', '.join(BASELINES)}")
    record = require_record(ws, job)
    spec = record.spec
    atomic.require_writable(JobLayout(ws, record.name).baseline(only[0]).path)  # before the fitting, not after
    arrays = job_arrays(ws, record)
    x_train, x_val, x_test = (flat_pixels(x) for x in (arrays.x_train, arrays.x_val, arrays.x_test))
    n_classes = len(spec.classes)
    fits = {
        "knn": lambda *rows: knn_sweep(*rows, n_classes=n_classes, n_jobs=n_jobs, seed=spec.seed),
        "tree": lambda *rows: tree_baseline(*rows, n_classes=n_classes, seed=spec.seed),
        "forest": lambda *rows: forest_sweep(*rows, n_classes=n_classes, seed=spec.seed, n_jobs=n_jobs),
    }
    all_metrics = []
    for name in only:
        if arrays.folds is not None:  # every row a validation row of one fold: fitted fold by fold
            echo(f"baseline {name}: fitting {spec.folds} folds of {len(x_val)} rows, scoring each row out of fold")
            result = out_of_fold(fits[name], x_val, arrays.y_val, x_test, arrays.folds)
        else:
            echo(f"baseline {name}: fitting on {len(x_train)} rows, scoring {len(x_val)} validation rows")
            result = fits[name](x_train, arrays.y_train, x_val, arrays.y_val, x_test)
        metrics = {**baseline_metrics(result, arrays.y_val, spec.seed, len(x_test)),
                   "test_sha256": arrays.test_sha256, "split_sha256": arrays.split_sha256}
        config = {"job": record.name, "baseline": name, "seed": spec.seed, "data_dir": record.data_dir,
                  "candidates": list(result.sweep) or None, "spec": spec.to_dict()}
        save_model_outputs(JobLayout(ws, record.name).baseline(name), config, result.val_probs, result.test_probs,
                           Metrics.from_dict(metrics))
        echo(f"baseline {name}: val accuracy {metrics['val_accuracy']:.4f} with {result.choice} "
             f"({result.fit_seconds:.1f}s)")
        all_metrics.append(metrics)
    return all_metrics
