"""Blend members' saved softmax outputs into a checked Kaggle submission.

The arithmetic (blending, scoring, the submission table and its check) is pure: arrays and DataFrames in
and out. Reading model outputs and writing CSVs happen in `load_outputs` and `write_submission`.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import atomic

BLEND_METHODS = ("mean", "geometric", "greedy")
GREEDY_ROUNDS = 25  # AutoGluon's ensemble_size
SUBMISSION_HEADER = ("ImageId", "Label")
_PROB_FLOOR = 1e-12


class SubmissionError(ValueError):
    """A submission that Kaggle would reject; the message names the line."""


def blend_probabilities(probs: np.ndarray, method: str = "mean") -> np.ndarray:
    """(members, rows, classes) -> (rows, classes). mean: arithmetic; geometric: normalised product."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 3 or len(probs) == 0:
        raise ValueError(f"expected (members, rows, classes) probabilities, got shape {probs.shape}")
    if method == "mean":
        return probs.mean(axis=0)
    if method == "geometric":
        log_mean = np.log(np.clip(probs, _PROB_FLOOR, 1.0)).mean(axis=0)
        unnormalised = np.exp(log_mean - log_mean.max(axis=1, keepdims=True))
        return unnormalised / unnormalised.sum(axis=1, keepdims=True)
    raise ValueError(f"unknown blend method {method!r}; choose one of {', '.join(BLEND_METHODS)}")


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


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(probs, axis=1) == labels))


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    picked = np.asarray(probs, dtype=np.float64)[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, _PROB_FLOOR, 1.0))))


def submission_frame(labels: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"ImageId": np.arange(1, len(labels) + 1), "Label": np.asarray(labels, dtype=int)})


def check_submission_text(text: str, n_rows: int) -> None:
    """Kaggle's rules, checked before upload: header, one row per test image, ImageId 1..N in order, 0..9."""
    lines = text.splitlines()
    if not lines:
        raise SubmissionError("line 1: the file is empty; expected the header 'ImageId,Label'")
    header = tuple(cell.strip() for cell in lines[0].lstrip("\ufeff").split(","))
    if header != SUBMISSION_HEADER:
        raise SubmissionError(f"line 1: header is {','.join(header)!r}, expected 'ImageId,Label'")
    rows = list(csv.reader(io.StringIO("\n".join(lines[1:]))))
    for number, row in enumerate(rows, start=2):
        expected_id = number - 1
        if len(row) != 2:
            raise SubmissionError(f"line {number}: {len(row)} fields, expected 2 (ImageId,Label)")
        image_id, label = (cell.strip() for cell in row)
        if not image_id.isdigit() or int(image_id) != expected_id:
            raise SubmissionError(f"line {number}: ImageId is {image_id!r}, expected {expected_id} "
                                  "(ImageIds run 1..N in order)")
        if not (label.isdigit() and int(label) <= 9):
            raise SubmissionError(f"line {number}: Label is {label!r}, expected a digit 0..9")
    if len(rows) != n_rows:
        raise SubmissionError(f"line {len(rows) + 2}: {len(rows)} rows, expected {n_rows} "
                              "(one per row of test.csv)")


@dataclass(frozen=True)
class ModelOutputs:
    names: list[str]
    val_probs: np.ndarray   # (models, n_val, 10)
    test_probs: np.ndarray  # (models, n_test, 10)


@dataclass(frozen=True)
class BlendResult:
    job: str
    method: str
    members: list[str]
    weights: list[float]
    val_accuracy: float
    val_logloss: float
    member_val_accuracy: dict[str, float]
    paths: list[Path]

    @property
    def best_member(self) -> tuple[str, float]:
        return max(self.member_val_accuracy.items(), key=lambda item: item[1])

    @property
    def mean_member_accuracy(self) -> float:
        return float(np.mean(list(self.member_val_accuracy.values())))


def blend_arrays(outputs: ModelOutputs, y_val: np.ndarray, method: str, seed: int = 0):
    """Pure: (weights, val blend, test blend, honest val accuracy and log-loss) for a blend method."""
    if method == "greedy":
        weights = greedy_weights(outputs.val_probs, y_val)
        honest = cross_fitted_greedy_accuracy(outputs.val_probs, y_val, seed)
        return weights, weighted_blend(outputs.val_probs, weights), weighted_blend(outputs.test_probs, weights), honest
    weights = np.full(len(outputs.names), 1 / len(outputs.names))
    val_blend = blend_probabilities(outputs.val_probs, method)
    return (weights, val_blend, blend_probabilities(outputs.test_probs, method),
            (accuracy(val_blend, y_val), log_loss(val_blend, y_val)))


def available_outputs(ws, record: dict) -> list[str]:
    """Names of a job's finished models: member-XX first, then baselines (knn, tree, forest)."""
    from .jobs import completed_members, finished_baselines

    return [ws.member_dir(record["name"], index).name for index in completed_members(ws, record)] \
        + finished_baselines(ws, record["name"])


def load_outputs(ws, record: dict, only: tuple[str, ...] | None = None) -> ModelOutputs:
    """Saved probabilities of the finished members (default) or of the named members/baselines."""
    from .jobs import JobError

    available = available_outputs(ws, record)
    members = [name for name in available if name.startswith("member-")]
    if only is None and not members:
        raise JobError(f"job {record['name']!r} has no finished members yet; "
                       f"run `ensemble train --job {record['name']}` first")
    missing = [name for name in only or () if name not in available]
    if missing:
        raise JobError(f"job {record['name']!r} has no finished {', '.join(map(repr, missing))} "
                       f"(finished: {', '.join(available) or 'none'}; baselines come from `ensemble baselines`)")
    names = list(only) if only else members
    dirs = [ws.model_dir(record["name"], name) for name in names]
    return ModelOutputs(names, np.stack([np.load(d / "val_probs.npy") for d in dirs]),
                        np.stack([np.load(d / "test_probs.npy") for d in dirs]))


def write_submission(path: Path, labels: np.ndarray) -> Path:
    text = submission_frame(labels).to_csv(index=False, lineterminator="\n")
    check_submission_text(text, len(labels))
    return atomic.write_text(path, text)


def unfinished_members(ws, record: dict) -> list[str]:
    """'member-03 (running)' for each ledger member whose directory is not complete, whatever the ledger says."""
    from .jobs import member_is_complete

    return [f"{member['name']} ({'pending' if member['state'] == 'done' else member['state']})"
            for member in record["members"] if not member_is_complete(ws.member_dir(record["name"], member["index"]))]


def blend_job(ws, job: str | None = None, method: str = "mean", out: Path | None = None,
              only: tuple[str, ...] | None = None, allow_partial: bool = False) -> BlendResult:
    """Blend a job's finished members (or the models named in `only`); write submissions/<job>.csv
    (<job>-<names>.csv with `only`) and the submission (default submissions/submission.csv).

    A job with unfinished members is refused unless allow_partial: a blend of 3 of 10 members submitted
    by mistake costs a Kaggle submission."""
    from .jobs import JobError, JobSpec, load_split, require_record, resume_command

    if method not in BLEND_METHODS:
        raise ValueError(f"unknown blend method {method!r}; choose one of {', '.join(BLEND_METHODS)}")
    record = require_record(ws, job)
    unfinished = unfinished_members(ws, record) if only is None else []
    if unfinished and not allow_partial:
        finished = len(record["members"]) - len(unfinished)
        raise JobError(f"job {record['name']!r} has {len(unfinished)} unfinished of {len(record['members'])} "
                       f"members: {', '.join(unfinished)}. Finish them with `{resume_command(record)}` "
                       f"(`ensemble status --job {record['name']}` shows where they are), or blend the "
                       f"{finished} finished ones with --allow-partial.")
    outputs = load_outputs(ws, record, only)
    y_val = load_split(ws, record["name"])["val_labels"]
    weights, _, test_blend, (val_accuracy, val_logloss) = blend_arrays(
        outputs, y_val, method, JobSpec.from_dict(record["spec"]).seed)
    test_labels = np.argmax(test_blend, axis=1)
    copy_name = record["name"] + (f"-{'+'.join(only)}" if only else "")
    targets = [ws.submissions_dir / f"{copy_name}.csv", Path(out) if out else ws.submissions_dir / "submission.csv"]
    paths = [write_submission(target, test_labels) for target in targets]
    return BlendResult(record["name"], method, outputs.names, [float(w) for w in weights], val_accuracy,
                       val_logloss,
                       {name: accuracy(p, y_val) for name, p in zip(outputs.names, outputs.val_probs)}, paths)


def check_submission_file(path: Path, data_dir: Path, cache_dir: Path | None = None) -> int:
    """Check a submission CSV against the row count of data_dir/test.csv; returns that count."""
    from .data import read_test_csv

    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"{path}: no such file")
    n_rows = len(read_test_csv(Path(data_dir) / "test.csv", cache_dir))
    try:
        check_submission_text(path.read_text(encoding="utf-8", errors="replace"), n_rows)
    except SubmissionError as error:
        raise SubmissionError(f"{path}, {error}") from None
    return n_rows
