"""Pseudo-labels: a second round of members that also train on the test rows the first round is sure of.

`ensemble train --job J --pseudo-label 0.99 --n 10` on a job whose members so far are finished: the mean
blend of their test softmax (with test-time augmentation where the job has it) labels every test row it
gives at least 0.99 to one class; those rows and labels go to `jobs/<job>/pseudo-1.npz` (written once,
atomically) and the round is recorded with the job (threshold, rows, share of the test file, the models
that labelled them, the test file's hash). Members from the round's first index on train on the job's
training rows plus these; members before it never see them. Validation stays on the job's labelled rows, so
every score is as honest as before. Pseudo-labelling the competition's own unlabelled test images is legal
in these competitions (FIELD.md); the report says which members used them.

A rerun with the same threshold continues the round (resumable); one round per job.
"""
from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..store import atomic
from ..store.workspace import Workspace
from .errors import JobError
from .layout import JobLayout
from .outputs import OutputShape, ensemble_models, load_probs, survey_round_sources
from .rounds import PseudoRound

if TYPE_CHECKING:  # the record's type, without a cycle (record.py reads rounds from here)
    from .record import JobRecord


def select_confident(test_probs: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Test rows whose blended softmax gives one class at least `threshold`, and that class (its index)."""
    probs = np.asarray(test_probs)
    rows = np.flatnonzero(probs.max(axis=1) >= threshold)
    return rows.astype(np.int64), probs[rows].argmax(axis=1).astype(np.int64)


def pseudo_sha256(rows: np.ndarray, labels: np.ndarray) -> str:
    digest = hashlib.sha256()
    for values in (rows, labels):
        digest.update(np.ascontiguousarray(values, dtype="<i8").tobytes())
    return digest.hexdigest()


def write_pseudo(path: Path, rows: np.ndarray, labels: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.savez(buffer, rows=rows, labels=labels)
    atomic.write_bytes(path, buffer.getvalue())
    return pseudo_sha256(rows, labels)


def read_pseudo(path: Path, sha256: str) -> tuple[np.ndarray, np.ndarray]:
    """The round's rows and labels, checked against the hash the job recorded."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            rows, labels = arrays["rows"], arrays["labels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise JobError(f"{path}: the pseudo-labels are missing or damaged ({type(error).__name__}); the members "
                       "that trained on them cannot be matched to another set: train a new job with --pseudo-label") \
            from None
    if pseudo_sha256(rows, labels) != sha256:
        raise JobError(f"{path}: not the pseudo-labels the job recorded (its content hash differs)")
    return rows, labels


def pseudo_problem(round_: PseudoRound, threshold: float) -> str | None:
    """Why a job's recorded round does not fit the threshold asked, None when it does."""
    if abs(round_.threshold - threshold) > 1e-12:
        return (f"the job already has pseudo-label round {round_.round} at {round_.threshold:g} (one round per "
                f"job); rerun with --pseudo-label {round_.threshold:g} to continue it")
    return None


def add_pseudo_rows(arrays, rows: np.ndarray, labels: np.ndarray):
    """The member's arrays with the pseudo-labelled test rows appended to its training rows."""
    return replace(arrays, x_train=np.concatenate([arrays.x_train, arrays.x_test[rows]]),
                   y_train=np.concatenate([arrays.y_train, labels.astype(arrays.y_train.dtype)]))


def make_pseudo_round(ws: Workspace, record: JobRecord, threshold: float, shape: OutputShape, made: str) -> PseudoRound:
    """Label the test rows the job's finished members are sure of and write them (the round's file); every
    member so far must be finished, so the round's labellers are exactly the members before it."""
    survey = survey_round_sources(ws, record, shape, "--pseudo-label labels the test rows with the job's finished "
                                  "members", "add the round", stopped_early_counts=False)
    names = ensemble_models(survey.finished)
    if unsure := [name for name in names if name in survey.unbound or name in survey.damaged]:
        raise JobError(f"{', '.join(unsure)}: outputs that do not say which test file they came from, or damaged; "
                       f"`ensemble train --job {record.name}` predicts them again first")
    layout = JobLayout(ws, record.name)
    tta = record.spec.tta and all(layout.model(name).has_tta for name in names)
    test_probs = np.mean([load_probs(layout.model(name), tta)[1] for name in names], axis=0, dtype=np.float64)
    rows, labels = select_confident(test_probs, threshold)
    if not len(rows):
        raise JobError(f"no test row reaches {threshold:g} in the blend of {len(names)} models (its surest row has "
                       f"{test_probs.max():.3f}); lower --pseudo-label")
    round_ = PseudoRound(1, float(threshold), len(record.members), len(rows), len(test_probs), tuple(names), tta,
                         shape.test_sha256 or "", "", made)
    sha256 = write_pseudo(round_.path(ws, record.name), rows, labels)
    return replace(round_, sha256=sha256)
