"""The leaderboard: blends, members and baselines of a job ranked on the same validation split.

Ranking and the plot data are pure (entries and arrays in, DataFrames and arrays out); `write_report` is
the one place that reads a job's outputs and writes submissions/<job>/leaderboard.{md,csv,html}.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..blend.blending import finished_twins, load_outputs, refit_tests
from ..blend.methods import BLEND_METHODS, GREEDY_ROUNDS, ModelOutputs
from ..data.folder import read_job_data
from ..data.tables import DataError
from ..job.arrays import job_test_labels
from ..job.errors import JobError
from ..job.layout import JobLayout, ModelKind, member_of, model_kind
from ..job.outputs import job_output_shape, survey_models
from ..job.planner import BudgetSpend
from ..job.record import require_record
from ..job.records import read_blend_records, read_submission_records
from ..job.split import existing_split
from ..nets.metrics import accuracy
from ..run.budget import format_duration
from ..store import atomic
from ..store.workspace import member_name
from .plots import (plot_accuracy_vs_time, plot_confusion, plot_learning_curves, plot_members_curve, plot_mistakes,
                    plot_per_class)
from .rank import (accuracy_by_members_blended, blend_by_training_seconds, blend_entries, confident_mistakes,
                   per_class_accuracy, rank_entries, read_entry)
from .render import render_html, render_markdown

if TYPE_CHECKING:  # the record's type, without importing jobs (and Keras) at module load
    from ..job.record import JobRecord


@dataclass(frozen=True)
class Report:
    job: str
    frame: pd.DataFrame
    greedy_weights: dict[str, float]
    paths: dict[str, Path]
    damaged: dict[str, str] = field(default_factory=dict)  # model -> what is wrong with its files
    stale: dict[str, str] = field(default_factory=dict)    # model -> which other file its outputs came from
    unwritten: Path | None = None  # the report folder, when it could not be written (a read-only workspace)


def read_histories(ws, job: str, names: list[str]) -> dict[str, pd.DataFrame]:
    """Each model's member's history.csv: a snapshot is a moment of its member's run, shown once as that run."""
    layout = JobLayout(ws, job)
    members = dict.fromkeys(member_of(name) for name in names)
    paths = {name: layout.model(name).history for name in members}
    return {name: pd.read_csv(path).drop_duplicates("epoch", keep="last") for name, path in paths.items()
            if path.is_file()}


def write_report(ws, job: str | None = None) -> Report:
    """Rank every finished model of a job and write the report files; returns what it wrote. On a read-only
    workspace nothing is written: the ranking comes back with `unwritten` naming the folder."""
    record = require_record(ws, job)
    name = record.name
    seed = record.spec.seed
    split = existing_split(ws, record)  # a reader never makes it again (the workspace may be read-only)
    if split is None:
        raise JobError(f"job {name!r} has no readable split.npz; `ensemble train --job {name}` makes it again")
    y_val = split["val_labels"]
    shape = job_output_shape(ws, record, split)
    survey = survey_models(ws, record, shape)  # every model's files checked once; the damaged ones are left out, named
    models = survey.finished
    baselines = [model.name for model in models if model.kind is ModelKind.BASELINE]
    # a refit twin trained on its validation rows: it is not ranked, its test predictions stand in (refit_note)
    cnn_names = [model.name for model in models if model.kind is not ModelKind.BASELINE and not model.refit_of]
    if not cnn_names and not baselines:
        raise JobError(f"job {name!r} has nothing finished to rank yet: train members "
                       f"(`ensemble train --job {name}`) or fit baselines (`ensemble baselines --job {name}`)")
    y_test = job_test_labels(ws, record)
    cnn_entries = [read_entry(ws, name, n, shape) for n in cnn_names]
    baseline_entries = [read_entry(ws, name, b, shape) for b in baselines]
    if y_test is not None:  # a labelled test file: every model's test accuracy beside its validation accuracy
        everything = load_outputs(ws, record, tuple(cnn_names + baselines), survey=survey)
        for entry, test_probs in zip(cnn_entries + baseline_entries, everything.test_probs):
            entry["test_accuracy"] = accuracy(test_probs, y_test)
    members = load_outputs(ws, record, survey=survey) if cnn_names else None
    augmented = load_outputs(ws, record, tta=True, survey=survey) if members else None
    augmented = augmented if augmented is not None and augmented.tta else None
    blends, weights = blend_entries(members, augmented, [e for e in cnn_entries if e["model"] in members.names],
                                    y_val, seed, y_test) if members else ([], {})
    scored = kaggle_scores(ws, name)
    for row in blends:
        score = scored.get(row["model"])
        if score is not None:
            row["note"] += f"; public {score:.5f}"
    frame = rank_entries(blends + cnn_entries + baseline_entries)
    shown = submitted_blend(ws, record, y_val, survey) if members else None
    figures = report_figures(ws, record, members, baselines, y_val, seed, shown, survey, split)
    rows_scored = int(members.scored_rows.sum()) if members is not None else len(y_val)
    notes = [scoring_note(record.spec.folds, split, rows_scored) + " "
             + resolution_note(frame["val_accuracy"].max(), rows_scored)]
    if record.budget is not None:
        notes.append(budget_note(record.budget))
    if record.pseudo is not None:
        notes.append(record.pseudo.describe() + ".")
    if record.refit is not None:
        notes.append(refit_note(ws, record, members, survey, y_test))
    if survey.damaged:
        notes.append(damaged_note(survey.damaged, name))
    if survey.stale:
        notes.append(stale_note(survey.stale, name))
    if unbound := [model for model in survey.unbound if model in cnn_names + baselines]:
        notes.append(f"{', '.join(unbound)}: saved before outputs recorded which test file they came from; "
                     f"`ensemble train --job {name}` predicts them again if the test file changed since.")
    if members is not None:
        notes.append(f"blends average {len(members.names)} models: " + ", ".join(members.names)
                     + (" (each member's snapshots stand in for it)" if any(model_kind(n) is ModelKind.SNAPSHOT for n in members.names)
                        else ""))
    if y_test is not None:
        trained_on = (f"which no model was chosen on; {member_name(record.pseudo.first_member)} and later trained on "
                      "the pseudo-labelled images of some of them (labels from the blend, not from the answers)"
                      if record.pseudo else "which no model trained or was chosen on")
        notes.append(f"test_accuracy: on the {len(y_test)} labelled rows of the test file (or the answers in "
                     f"test_labels.csv beside it), {trained_on}.")
    if augmented is not None:
        notes.append("val_acc_tta: the same model or blend predicting under the fixed test-time views "
                     "(augment.TTA_VIEWS, each also mirrored for a net trained with --flip), averaged; ranking uses "
                     "plain validation accuracy.")
    if weights:
        notes += [f"blend-greedy: Caruana ensemble selection ({GREEDY_ROUNDS} rounds, with replacement, on log-loss); its "
                  "validation scores are cross-fitted (weights fitted on one half of the validation rows, "
                  "scored on the other, both ways), never scored on the rows its weights were fitted to.",
                  "greedy weights (fitted on all validation rows, used for a greedy submission): "
                  + ", ".join(f"{n} {w:.2f}" for n, w in weights.items() if w)]
    for entry in read_submission_records(ws, name):
        origin = entry.blend.describe() if entry.blend else "not written by `ensemble blend`"
        score = f"public {entry.public_score:.5f}" if entry.public_score is not None else entry.status
        notes.append(f"Kaggle submission {entry.submitted}: {Path(entry.file).name} ({origin}) to "
                     f"{entry.competition}: {score}")
    if not baselines:
        notes.append("no baselines yet: `ensemble baselines` adds KNN, decision tree and random forest.")
    if not members:
        notes.append("no CNN members yet: `ensemble train` adds them, and the blends with them.")
    out = JobLayout(ws, name).report_dir
    if not atomic.writable(out):
        return Report(name, frame, weights, {}, survey.damaged, survey.stale, unwritten=out)
    paths = {
        "md": atomic.write_text(out / "leaderboard.md", f"# Leaderboard: job {name}\n\n{render_markdown(frame)}\n\n"
                                + "\n".join(f"- {note}" for note in notes) + "\n"),
        "csv": atomic.write_text(out / "leaderboard.csv", frame.to_csv(index=False)),
        "html": atomic.write_text(out / "leaderboard.html", render_html(name, frame, figures, notes)),
    }
    return Report(name, frame, weights, paths, survey.damaged, survey.stale)


def scoring_note(folds: int | None, split: dict[str, np.ndarray], scored: int) -> str:
    """Which scoring the table shows: the shared split's rows, or out-of-fold predictions over every row."""
    rows = len(split["val_labels"])
    if not folds:
        return f"{rows} validation rows, the same stratified split for every model."
    covered = ("blends and baselines on every row" if scored == rows else
               f"blends on the {scored} rows of the folds that have a member, baselines on every row")
    return (f"Out-of-fold scores over {folds} stratified folds of the {rows} training rows: each member is scored "
            f"on the fold it held out (about {rows // folds} rows), {covered}, each row predicted only by models "
            "that never trained on it.")


def refit_note(ws, record: JobRecord, members: ModelOutputs | None, survey, y_test: np.ndarray | None) -> str:
    """The job's refit round, how many twins are finished, and where the test rows are labelled, what the mean
    blend's test accuracy is with the twins' test predictions against the fold members' own."""
    round_ = record.refit
    twins = finished_twins(survey, members.names) if members is not None else {}
    note = f"{round_.describe()}; {len(twins)} of {len(round_.parents)} twins finished (not ranked: they trained on every row)."
    if y_test is None or not twins:
        return note
    mean = BLEND_METHODS["mean"]
    own = accuracy(mean.combine(members.test_probs), y_test)
    refit = accuracy(mean.combine(refit_tests(ws, record, members, twins).test_probs), y_test)
    return note + f" Test accuracy of blend-mean with the twins' test predictions: {refit:.4f} (the fold members' own: {own:.4f})."


def resolution_note(best: float, rows: int) -> str:
    """What the ranking can tell apart: one validation error, and the standard error at the top accuracy."""
    standard_error = (best * (1 - best) / rows) ** 0.5 if rows else 0.0
    return (f"One error is {100 / rows:.2f} points; at the top accuracy ({best:.4f}, {round((1 - best) * rows)} "
            f"errors) its standard error is {100 * standard_error:.2f} points: accuracies less than about two "
            f"of those ({200 * standard_error:.1f} points) apart are within the noise of these rows.")


def budget_note(spend: BudgetSpend) -> str:
    """The latest --time-limit run: its plan and what it used."""
    parts = [f"time limit {format_duration(spend.time_limit)}"]
    if spend.plan is not None:
        parts.append(f"plan: {spend.plan.describe()}")
    if spend.used_s is not None:
        parts.append(f"used {spend.used_s:.0f} s ({100 * spend.used_share:.1f}% of the limit)")
    if spend.members_s is not None:
        parts.append(f"members ran {spend.members_s:.0f} s per slot")
    return "; ".join(parts) + "."


def stale_note(stale: dict[str, str], job: str) -> str:
    return ("predicted from other files, left out: " + "; ".join(f"{model} ({why})" for model, why in stale.items())
            + f". `ensemble train --job {job}` predicts members again (nothing is retrained); `ensemble baselines` "
              "fits baselines again.")


def damaged_note(damaged: dict[str, str], job: str) -> str:
    return ("damaged, left out: " + "; ".join(f"{model} ({problem})" for model, problem in damaged.items())
            + f". `ensemble train --job {job}` makes a member's outputs again; `ensemble baselines` a baseline's.")


def kaggle_scores(ws, job: str) -> dict[str, float]:
    """The latest public score of each blend row (blend-mean, ...) that was submitted and scored."""
    scores = {}
    for entry in read_submission_records(ws, job):
        if entry.blend and entry.public_score is not None:
            scores[entry.blend.label] = entry.public_score
    return scores


def submitted_blend(ws, record: JobRecord, y_val: np.ndarray, survey=None
                    ) -> tuple[str, np.ndarray, np.ndarray] | None:
    """The blend that wrote submissions/submission.csv, as (label, validation softmax, the rows its models
    cover: every row, except out of fold where members cover some folds only), when one did."""
    submission = str(ws.submissions_dir / "submission.csv")
    latest = next((entry for entry in reversed(read_blend_records(ws, record.name))
                   if submission in entry.files), None)
    if latest is None:
        return None
    try:
        outputs = load_outputs(ws, record, latest.models, latest.tta, survey)
    except (JobError, OSError, ValueError):  # a model it used is gone since: the report shows the mean blend
        return None
    blended = BLEND_METHODS[latest.method].blend(outputs, y_val, record.spec.seed)
    return (f"{latest.label}{' with TTA' if latest.tta else ''} (in submission.csv)", blended.val_probs,
            outputs.scored_rows)


def validation_images(ws, record: JobRecord, split: dict[str, np.ndarray], positions: np.ndarray) -> np.ndarray | None:
    """The images of validation rows (positions in the split's validation order), read through the cache;
    None when the job's training file cannot be read as it was (the report then goes without them)."""
    spec = record.spec
    try:
        train, _ = read_job_data(ws, record.data_path, spec.limit_train, spec.data_layout)
    except (DataError, JobError, OSError):
        return None
    if train.sha256 != spec.train_sha256:
        return None
    return train.images[split["val_index"][positions]]


def report_figures(ws, record: JobRecord, members: ModelOutputs | None, baselines: list[str], y_val: np.ndarray,
                   seed: int, shown: tuple[str, np.ndarray, np.ndarray] | None = None, survey=None,
                   split: dict[str, np.ndarray] | None = None) -> dict[str, tuple[str, bytes]]:
    """The report's plots, each as (caption, PNG); member plots only when there are members. The confusion
    matrix, per-class plot and mistakes show the blend in submissions/submission.csv (`shown`), else the mean
    blend."""
    spec = record.spec
    class_names = [spec.data_layout.class_name(label) for label in spec.classes]
    figures = {}
    if members is not None:
        label, mean_blend, rows = shown or ("blend-mean", BLEND_METHODS["mean"].blend(members, y_val).val_probs,
                                            members.scored_rows)
        every_label = y_val
        y_val, mean_blend = y_val[rows], mean_blend[rows]  # out of fold: the rows some model of the blend held out
        figures["confusion"] = (f"Confusion matrix of {label} (validation)",
                                plot_confusion(y_val, mean_blend, f"{label}, validation", class_names))
        curve = accuracy_by_members_blended(members.val_probs, every_label, seed=seed, mask=members.val_mask)
        figures["members"] = ("Validation accuracy vs number of members blended", plot_members_curve(curve))
        histories = read_histories(ws, record.name, members.names)
        figures["curves"] = ("Learning curves: validation accuracy per epoch per member", plot_learning_curves(histories))
        seconds = {member: float(history["epoch_seconds"].sum()) for member, history in histories.items()
                   if "epoch_seconds" in history}
        growing = blend_by_training_seconds(members.names, seconds, list(curve["in_order"]))
        figures["time"] = ("Accuracy vs training time: each member by its own seconds, the mean blend by its members'",
                           plot_accuracy_vs_time(histories, growing))
        mistakes = confident_mistakes(mean_blend, y_val)
        images = validation_images(ws, record, split, np.flatnonzero(rows)[[m.row for m in mistakes]]) \
            if mistakes and split is not None else None
        if images is not None:
            figures["mistakes"] = (f"The {len(mistakes)} validation images {label} got wrong with the most confidence: "
                                   "true class, predicted class and the probability it gave it",
                                   plot_mistakes(images, mistakes, class_names))
    if members is not None and baselines:
        others = load_outputs(ws, record, tuple(baselines), survey=survey)
        others = ModelOutputs(others.names, others.val_probs[:, rows], others.test_probs)
        best = int(np.argmax([accuracy(p, y_val) for p in others.val_probs]))
        figures["classes"] = (f"Per-class accuracy: {label} vs the best baseline ({others.names[best]})",
                              plot_per_class(per_class_accuracy(mean_blend, y_val),
                                             per_class_accuracy(others.val_probs[best], y_val), others.names[best],
                                             class_names, label))
    return figures
