"""Blend members' saved softmax outputs into a checked Kaggle submission.

The arithmetic (blending, scoring, the submission table and its check) is pure: arrays and DataFrames in
and out. Reading model outputs and writing CSVs happen in `load_outputs` and `write_submission`.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from . import atomic
from .ledger import MemberState
from .metrics import PROB_FLOOR, accuracy, log_loss
from .outputs import JobModels, ModelKind, ensemble_models, finished_models, has_tta, load_probs, survey_models

if TYPE_CHECKING:  # the record's type, without importing jobs (and Keras) at module load
    from .jobs import JobRecord

GREEDY_ROUNDS = 25  # AutoGluon's ensemble_size


class SubmissionError(ValueError):
    """A submission that Kaggle would reject; the message names the line."""


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


def label_ranges(labels) -> str:
    """0..9, or 0..8, 10..24 for a sparse set: how a person reads a set of whole numbers."""
    values = sorted(int(v) for v in labels)
    runs, start = [], values[0]
    for previous, current in zip(values, values[1:] + [None]):
        if current != previous + 1:
            runs.append(f"{start}..{previous}" if previous > start else f"{start}")
            start = current
    return ", ".join(runs)


@dataclass(frozen=True)
class SubmissionLayout:
    """What a competition accepts: two columns, the id of each test row in order, and the labels."""

    columns: tuple[str, str]
    ids: np.ndarray
    labels: tuple[int, ...]
    ids_from_test: bool = False  # the ids are the test file's id column (else 1..N)

    @classmethod
    def for_format(cls, fmt, test_ids: np.ndarray | None, n_rows: int, labels) -> "SubmissionLayout":
        ids = np.asarray(test_ids) if fmt.ids_from_test else np.arange(1, n_rows + 1)
        return cls(tuple(fmt.submission), ids, tuple(int(label) for label in labels), fmt.ids_from_test)

    @property
    def id_rule(self) -> str:
        id_column = self.columns[0]
        return (f"{id_column}s follow the test file's id column, in order" if self.ids_from_test
                else f"{id_column}s run 1..N in order")


def submission_frame(labels: np.ndarray, layout: SubmissionLayout) -> pd.DataFrame:
    id_column, label_column = layout.columns
    return pd.DataFrame({id_column: layout.ids, label_column: np.asarray(labels, dtype=int)})


def check_submission_text(text: str, layout: SubmissionLayout) -> None:
    """The competition's rules, checked before upload: header, one row per test image, the ids in order,
    labels from the classes."""
    id_column, label_column = layout.columns
    expected_header = f"{id_column},{label_column}"
    allowed = set(layout.labels)
    lines = text.splitlines()
    if not lines:
        raise SubmissionError(f"line 1: the file is empty; expected the header '{expected_header}'")
    header = tuple(cell.strip() for cell in lines[0].lstrip("\ufeff").split(","))
    if header != layout.columns:
        raise SubmissionError(f"line 1: header is {','.join(header)!r}, expected '{expected_header}'")
    rows = list(csv.reader(io.StringIO("\n".join(lines[1:]))))
    for number, row in enumerate(rows, start=2):
        if len(row) != 2:
            raise SubmissionError(f"line {number}: {len(row)} fields, expected 2 ({expected_header})")
        if number - 2 >= len(layout.ids):
            break  # more rows than test images: reported below with the count
        expected_id = layout.ids[number - 2]
        image_id, label = (cell.strip() for cell in row)
        if not image_id.isdigit() or int(image_id) != expected_id:
            raise SubmissionError(f"line {number}: {id_column} is {image_id!r}, expected {expected_id} "
                                  f"({layout.id_rule})")
        if not (label.isdigit() and int(label) in allowed):
            raise SubmissionError(f"line {number}: {label_column} is {label!r}, expected one of "
                                  f"{label_ranges(layout.labels)}")
    if len(rows) != len(layout.ids):
        raise SubmissionError(f"line {len(rows) + 2}: {len(rows)} rows, expected {len(layout.ids)} "
                              "(one per row of the test file)")


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

    def blend(self, outputs: ModelOutputs, y_val: np.ndarray, seed: int = 0) -> Blended:
        raise NotImplementedError


class UnweightedBlend(BlendMethod):
    def __init__(self, name: str, combine, help: str):
        self.name, self.combine, self.help = name, combine, help

    def blend(self, outputs: ModelOutputs, y_val: np.ndarray, seed: int = 0) -> Blended:
        val_blend = self.combine(outputs.val_probs)
        return Blended(np.full(len(outputs.names), 1 / len(outputs.names)), val_blend,
                       self.combine(outputs.test_probs), accuracy(val_blend, y_val), log_loss(val_blend, y_val))


class GreedyBlend(BlendMethod):
    name = "greedy"
    help = "Caruana ensemble selection, weights fitted on validation (scored cross-fitted)"

    def blend(self, outputs: ModelOutputs, y_val: np.ndarray, seed: int = 0) -> Blended:
        weights = greedy_weights(outputs.val_probs, y_val)
        honest_accuracy, honest_logloss = cross_fitted_greedy_accuracy(outputs.val_probs, y_val, seed)
        return Blended(weights, weighted_blend(outputs.val_probs, weights),
                       weighted_blend(outputs.test_probs, weights), honest_accuracy, honest_logloss)


BLEND_METHODS: dict[str, BlendMethod] = {method.name: method for method in (
    UnweightedBlend("mean", mean_blend, "average of softmax outputs"),
    UnweightedBlend("geometric", geometric_blend, "normalised product of softmax outputs"),
    GreedyBlend(),
)}


def get_blend_method(name: str) -> BlendMethod:
    if name not in BLEND_METHODS:
        raise ValueError(f"unknown blend method {name!r}; choose one of {', '.join(BLEND_METHODS)}")
    return BLEND_METHODS[name]


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
    tta: bool = False                          # the submission came from test-time augmented outputs
    other_val_accuracy: float | None = None    # the same blend the other way (without TTA, or with it)

    @property
    def best_member(self) -> tuple[str, float]:
        return max(self.member_val_accuracy.items(), key=lambda item: item[1])

    @property
    def mean_member_accuracy(self) -> float:
        return float(np.mean(list(self.member_val_accuracy.values())))


def blend_arrays(outputs: ModelOutputs, y_val: np.ndarray, method: str, seed: int = 0) -> Blended:
    """Pure: a blend method applied to models' outputs."""
    return get_blend_method(method).blend(outputs, y_val, seed)


def default_blend_names(ws, record: JobRecord) -> list[str]:
    """The CNN models a plain `ensemble blend` averages (outputs.ensemble_models)."""
    return ensemble_models(finished_models(ws, record))


def load_outputs(ws, record: JobRecord, only: tuple[str, ...] | None = None, tta: bool = False,
                 survey: JobModels | None = None) -> ModelOutputs:
    """Saved probabilities of the job's ensemble (default) or of the named models; with tta, the test-time
    augmented outputs of every model that has them. Only models whose files passed the checks are read."""
    from .jobs import JobError

    survey = survey or survey_models(ws, record)
    models = survey.finished
    available = [model.name for model in models]
    if only is None and not any(model.kind is not ModelKind.BASELINE for model in models):
        raise JobError(f"job {record.name!r} has no finished members yet; "
                       f"run `ensemble train --job {record.name}` first")
    damaged = [f"{name}: {survey.damaged[name]}" for name in only or () if name in survey.damaged]
    if damaged:
        raise JobError("damaged: " + "; ".join(damaged) + f". `ensemble train --job {record.name}` rebuilds a "
                       "member's outputs; `ensemble baselines` a baseline's")
    missing = [name for name in only or () if name not in available]
    if missing:
        raise JobError(f"job {record.name!r} has no finished {', '.join(map(repr, missing))} "
                       f"(finished: {', '.join(available) or 'none'}; baselines come from `ensemble baselines`)")
    names = list(only) if only else ensemble_models(models)
    dirs = [ws.model_dir(record.name, name) for name in names]
    probs = [load_probs(d, tta) for d in dirs]
    return ModelOutputs(names, np.stack([val for val, _ in probs]), np.stack([test for _, test in probs]),
                        tta and any(has_tta(d) for d in dirs))


def write_submission(path: Path, labels: np.ndarray, layout: SubmissionLayout) -> Path:
    """Checked before it is written: a submission on disk is always one the competition accepts."""
    text = submission_frame(labels, layout).to_csv(index=False, lineterminator="\n")
    check_submission_text(text, layout)
    return atomic.write_text(path, text)


def job_submission_layout(ws, record: JobRecord) -> SubmissionLayout:
    """The submission layout of a job: its format's columns, its test file's ids, its classes."""
    from .jobs import read_job_test

    spec = record.spec
    test = read_job_test(ws, record)  # the train file is not needed: ids and row count are the test file's
    return SubmissionLayout.for_format(spec.format, test.ids, len(test), spec.classes)


def blends_path(ws, job: str) -> Path:
    return ws.job_dir(job) / "blends.json"


def read_blend_records(ws, job: str) -> list[dict]:
    """Which blend wrote which submission file, oldest first (jobs/<job>/blends.json)."""
    path = blends_path(ws, job)
    return atomic.read_json(path) if path.is_file() else []


def record_blend(ws, job: str, entry: dict) -> Path:
    return atomic.write_json(blends_path(ws, job), read_blend_records(ws, job) + [entry])


def unfinished_members(record: JobRecord, survey: JobModels) -> list[str]:
    """'member-03 (running)' for each ledger member whose files are not finished, whatever the ledger says;
    'member-03 (damaged: <file>: <what>)' for one whose files, or its snapshots' files, fail their checks."""
    finished = {model.name for model in survey.finished if model.kind is ModelKind.MEMBER}
    unfinished = []
    for member in record.members:
        name = member.name
        faults = [survey.damaged[model] for model in survey.damaged
                  if model == name or model.startswith(f"{name}-snap")]
        if faults:
            unfinished.append(f"{name} (damaged: {faults[0]})")
        elif name not in finished:
            unfinished.append(f"{name} ({'pending' if member.state is MemberState.DONE else member.state.value})")
    return unfinished


def blend_job(ws, job: str | None = None, method: str = "mean", out: Path | None = None,
              only: tuple[str, ...] | None = None, allow_partial: bool = False,
              tta: bool | None = None) -> BlendResult:
    """Blend a job's finished members (their snapshots, where they have them) or the models named in
    `only`; write a file named after what produced it, submissions/<job>-<method>[-tta][-<names>].csv, and
    the submission (default submissions/submission.csv, always the latest); blends.json records which is which. tta None: test-time augmented outputs when the job made them.

    A job with unfinished members is refused unless allow_partial: a blend of 3 of 10 members submitted
    by mistake costs a Kaggle submission."""
    from .data import file_sha256
    from .jobs import JobError, load_split, now, require_record, resume_command

    blender = get_blend_method(method)
    record = require_record(ws, job)
    spec = record.spec
    tta = spec.tta if tta is None else tta
    survey = survey_models(ws, record)  # every input checked before anything is blended or written
    unfinished = unfinished_members(record, survey) if only is None else []
    if unfinished and not allow_partial:
        finished = len(record.members) - len(unfinished)
        raise JobError(f"job {record.name!r} has {len(unfinished)} unfinished of {len(record.members)} "
                       f"members: {', '.join(unfinished)}. Finish them with `{resume_command(record)}` "
                       f"(`ensemble status --job {record.name}` shows where they are), or blend the "
                       f"{finished} finished ones with --allow-partial.")
    outputs = load_outputs(ws, record, only, tta, survey)
    y_val = load_split(ws, record)["val_labels"]
    blended = blender.blend(outputs, y_val, spec.seed)
    other = load_outputs(ws, record, only, not outputs.tta, survey)
    other_accuracy = blender.blend(other, y_val, spec.seed).val_accuracy if other.tta != outputs.tta else None
    test_labels = np.asarray(spec.classes)[np.argmax(blended.test_probs, axis=1)]
    layout = job_submission_layout(ws, record)
    copy_name = f"{record.name}-{method}" + ("-tta" if outputs.tta else "") + (f"-{'+'.join(only)}" if only else "")
    targets = [ws.submissions_dir / f"{copy_name}.csv", Path(out) if out else ws.submissions_dir / "submission.csv"]
    paths = [write_submission(target, test_labels, layout) for target in targets]
    record_blend(ws, record.name, {"method": method, "models": outputs.names, "tta": outputs.tta,
                                      "weights": [float(w) for w in blended.weights],
                                      "val_accuracy": blended.val_accuracy, "files": [str(p) for p in paths],
                                      "sha256": file_sha256(paths[0]),
                                      "written": now()})
    return BlendResult(record.name, method, outputs.names, [float(w) for w in blended.weights],
                       blended.val_accuracy, blended.val_logloss,
                       {name: accuracy(p, y_val) for name, p in zip(outputs.names, outputs.val_probs)}, paths,
                       outputs.tta, other_accuracy)


def check_submission_file(path: Path, data_dir: Path, cache_dir: Path | None = None,
                          format_name: str | None = None) -> tuple[int, SubmissionLayout]:
    """Check a submission CSV against the test file of a data folder (its layout detected, or named);
    labels may be any the layout allows. Returns the row count and the layout."""
    from .data import read_test_csv
    from .formats import data_files
    from .jobs import resolve_format

    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"{path}: no such file")
    fmt = resolve_format(data_dir, format_name)
    test = read_test_csv(data_files(fmt, data_dir)[1], cache_dir, fmt)
    layout = SubmissionLayout.for_format(fmt, test.ids, len(test), range(fmt.max_label + 1))
    try:
        check_submission_text(path.read_text(encoding="utf-8", errors="replace"), layout)
    except SubmissionError as error:
        raise SubmissionError(f"{path}, {error}") from None
    return len(test), layout
