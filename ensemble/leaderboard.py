"""The leaderboard: blends, members and baselines of a job ranked on the same validation split.

Ranking and the plot data are pure (entries and arrays in, DataFrames and arrays out); `write_report` is
the one place that reads a job's outputs and writes submissions/<job>/leaderboard.{md,csv,html}.
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from . import atomic
from .blend import BLEND_METHODS, GREEDY_ROUNDS, ModelOutputs, load_outputs, read_blend_records
from .competition import read_submission_records
from .metrics import accuracy
from .outputs import ModelKind, read_metrics, survey_models

if TYPE_CHECKING:  # the record's type, without importing jobs (and Keras) at module load
    from .jobs import JobRecord

COLUMNS = ["rank", "model", "kind", "val_accuracy", "val_acc_tta", "test_accuracy", "val_logloss", "fit_s",
           "predict_ms_per_1k", "params", "seed", "epochs", "note"]
FORMATS = ("table", "md", "csv", "html")
RANDOM_ORDERS = 20


def rank_entries(entries: list[dict]) -> pd.DataFrame:
    """Rows sorted by validation accuracy (higher first), ties by log-loss (lower first), then by name."""
    frame = pd.DataFrame(entries, columns=COLUMNS[1:])
    frame = frame.sort_values(["val_accuracy", "val_logloss", "model"], ascending=[False, True, True],
                              kind="mergesort").reset_index(drop=True)
    frame.insert(0, "rank", np.arange(1, len(frame) + 1))
    return frame


def model_entry(name: str, metrics: dict) -> dict:
    stopped = metrics.get("stopped_early")
    return {"model": name, "kind": metrics.get("kind", "member"), "val_accuracy": metrics["val_accuracy"],
            "val_acc_tta": metrics.get("val_accuracy_tta"), "test_accuracy": None,
            "val_logloss": metrics["val_logloss"], "fit_s": metrics.get("fit_seconds"),
            "predict_ms_per_1k": metrics.get("predict_ms_per_1k"), "params": metrics.get("params"),
            "seed": metrics.get("seed"), "epochs": metrics.get("epochs"),
            "note": f"stopped early at epoch {metrics['epochs']}/{metrics.get('epochs_planned', '?')} (time limit)"
            if stopped else ""}


def read_entry(ws, job: str, name: str) -> dict:
    return model_entry(name, read_metrics(ws.model_dir(job, name)))


def blend_entries(plain: ModelOutputs, augmented: ModelOutputs | None, member_entries: list[dict],
                  y_val: np.ndarray, seed: int, y_test: np.ndarray | None = None) -> tuple[list[dict], dict[str, float]]:
    """A row per blend method (weighted ones only with two or more models; their validation scores
    cross-fitted), without and, where the models have TTA outputs, with test-time augmentation; returns
    them with the greedy weights of the plain outputs."""
    costs = {key: sum(entry[key] or 0 for entry in member_entries)
             for key in ("fit_s", "predict_ms_per_1k", "params")}
    rows, weights = [], {}
    for method in BLEND_METHODS.values():
        if method.name != "mean" and len(plain.names) < 2:
            continue
        blended = method.blend(plain, y_val, seed)
        with_tta = method.blend(augmented, y_val, seed).val_accuracy if augmented is not None else None
        rows.append({"model": f"blend-{method.name}", "kind": "blend", "val_accuracy": blended.val_accuracy,
                     "val_acc_tta": with_tta,
                     "test_accuracy": accuracy(blended.test_probs, y_test) if y_test is not None else None,
                     "val_logloss": blended.val_logloss, **costs, "seed": None,
                     "epochs": None, "note": f"{len(plain.names)} models"})
        if method.name == "greedy":
            weights = {name: float(w) for name, w in zip(plain.names, blended.weights)}
    return rows, weights


def accuracy_by_members_blended(val_probs: np.ndarray, y_val: np.ndarray, orders: int = RANDOM_ORDERS,
                                seed: int = 0) -> pd.DataFrame:
    """Mean-blend accuracy of the first m members, m = 1..M: in job order, and min/mean/max over random orders."""
    def curve(order):
        running = np.cumsum(val_probs[order], axis=0)
        return [accuracy(running[m], y_val) for m in range(len(order))]

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


# --- plots (matplotlib, rendered to PNG in memory) ---------------------------------------------------

def _png(figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def plot_confusion(y_val: np.ndarray, probs: np.ndarray, title: str, class_names: list[str]) -> bytes:
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(6.5, 0.35 * len(class_names))
    figure, axes = plt.subplots(figsize=(size, size * 0.85))
    ConfusionMatrixDisplay.from_predictions(y_val, np.argmax(probs, axis=1), labels=list(range(len(class_names))),
                                            display_labels=class_names, cmap="Blues", colorbar=False, ax=axes,
                                            xticks_rotation="vertical" if len(class_names) > 10 else "horizontal",
                                            include_values=len(class_names) <= 30)
    axes.set_title(title)
    return _png(figure)


def plot_members_curve(curve: pd.DataFrame) -> bytes:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.5, 4))
    if len(curve) >= 3:  # with two members there are only two orders: a band over "20 random orders" would lie
        axes.fill_between(curve["members"], curve["random_min"], curve["random_max"], alpha=0.25,
                          label=f"range over {RANDOM_ORDERS} random orders")
        axes.plot(curve["members"], curve["random_mean"], "--", label="mean over random orders")
    axes.plot(curve["members"], curve["in_order"], "o-", label="members added in order")
    axes.set(xlabel="members blended (mean of softmax)", ylabel="validation accuracy",
             title="Validation accuracy vs members blended")
    axes.set_xticks(curve["members"])
    axes.legend(loc="lower right")
    return _png(figure)


def plot_learning_curves(histories: dict[str, pd.DataFrame]) -> bytes:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(figsize=(6.5, 4))
    for name, history in histories.items():
        axes.plot(history["epoch"] + 1, history["val_accuracy"], marker=".", label=name)
    axes.set(xlabel="epoch", ylabel="validation accuracy", title="Learning curves")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no ticks at 1.2, 1.4
    if 0 < len(histories) <= 12:
        axes.legend(loc="lower right", fontsize="small")
    return _png(figure)


def plot_per_class(blend_accuracy: np.ndarray, other_accuracy: np.ndarray, other_name: str,
                   class_names: list[str], blend_name: str = "blend-mean") -> bytes:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(max(6.5, 0.3 * len(class_names)), 4))
    positions = np.arange(len(class_names))
    axes.bar(positions - 0.2, blend_accuracy, width=0.4, label=blend_name)
    axes.bar(positions + 0.2, other_accuracy, width=0.4, label=other_name)
    low = np.nanmin(np.concatenate([blend_accuracy, other_accuracy]))
    axes.set(xlabel="class", ylabel="validation accuracy", title="Per-class accuracy",
             ylim=(max(0.0, low - 0.05), 1.0))
    axes.set_xticks(positions, class_names, rotation="vertical" if len(class_names) > 10 else "horizontal")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, frameon=False)
    return _png(figure)


# --- the report ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Report:
    job: str
    frame: pd.DataFrame
    greedy_weights: dict[str, float]
    paths: dict[str, Path]
    damaged: dict[str, str] = field(default_factory=dict)  # model -> what is wrong with its files


def display_frame(frame: pd.DataFrame) -> pd.DataFrame:
    shown = frame.copy()
    for column, digits in (("val_accuracy", 4), ("val_acc_tta", 4), ("test_accuracy", 4), ("val_logloss", 4), ("fit_s", 1),
                           ("predict_ms_per_1k", 1)):
        shown[column] = shown[column].map(lambda v, d=digits: "" if pd.isna(v) else f"{v:.{d}f}")
    for column in ("params", "seed", "epochs"):
        shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{int(v):,}")
    return shown


def render_table(frame: pd.DataFrame, title: str = "") -> str:
    from .status import render_frame

    return render_frame(display_frame(frame)[COLUMNS], title, text_columns=("model", "kind", "note"))


def render_markdown(frame: pd.DataFrame) -> str:
    return display_frame(frame).to_markdown(index=False, disable_numparse=True,
                                            colalign=["right", "left", "left"] + ["right"] * 9 + ["left"])


def render_html(job: str, frame: pd.DataFrame, figures: dict[str, tuple[str, bytes]], notes: list[str]) -> str:
    images = "\n".join(
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
        for title, png in figures.values())
    notes_html = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
    table = display_frame(frame).to_html(index=False, border=0, classes="board")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ensemble leaderboard: {html.escape(job)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table.board {{ border-collapse: collapse; }} table.board th, table.board td {{ padding: .3rem .7rem; }}
table.board td {{ text-align: right; font-variant-numeric: tabular-nums; }}
table.board td:nth-child(2), table.board td:nth-child(3) {{ text-align: left; }}
table.board tr:nth-child(even) {{ background: #f3f5f8; }} table.board th {{ border-bottom: 2px solid #999; }}
figure {{ display: inline-block; margin: 1rem; vertical-align: top; }} figcaption {{ text-align: center; }}
</style></head><body>
<h1>Leaderboard: job {html.escape(job)}</h1>
{table}
<ul>{notes_html}</ul>
{images}
</body></html>
"""


def read_histories(ws, job: str, names: list[str]) -> dict[str, pd.DataFrame]:
    """Each model's member's history.csv: a snapshot is a moment of its member's run, shown once as that run."""
    members = dict.fromkeys(name.split("-snap")[0] for name in names)
    paths = {name: ws.model_dir(job, name) / "history.csv" for name in members}
    return {name: pd.read_csv(path).drop_duplicates("epoch", keep="last") for name, path in paths.items()
            if path.is_file()}


def write_report(ws, job: str | None = None) -> Report:
    """Rank every finished model of a job and write the report files; returns what it wrote."""
    from .jobs import JobError, job_test_labels, load_split, require_record

    record = require_record(ws, job)
    name = record.name
    seed = record.spec.seed
    y_val = load_split(ws, record)["val_labels"]
    survey = survey_models(ws, record)  # every model's files checked once; the damaged ones are left out, named
    models = survey.finished
    baselines = [model.name for model in models if model.kind is ModelKind.BASELINE]
    cnn_names = [model.name for model in models if model.kind is not ModelKind.BASELINE]
    if not cnn_names and not baselines:
        raise JobError(f"job {name!r} has nothing finished to rank yet: train members "
                       f"(`ensemble train --job {name}`) or fit baselines (`ensemble baselines --job {name}`)")
    y_test = job_test_labels(ws, record)
    cnn_entries = [read_entry(ws, name, n) for n in cnn_names]
    baseline_entries = [read_entry(ws, name, b) for b in baselines]
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
    figures = report_figures(ws, record, members, baselines, y_val, seed, shown, survey)
    notes = [f"{len(y_val)} validation rows, the same stratified split for every model."]
    if survey.damaged:
        notes.append(damaged_note(survey.damaged, name))
    if members is not None:
        notes.append(f"blends average {len(members.names)} models: " + ", ".join(members.names)
                     + (" (each member's snapshots stand in for it)" if any("-snap" in n for n in members.names) else ""))
    if y_test is not None:
        notes.append(f"test_accuracy: on the {len(y_test)} labelled rows of the test file, which no model trained "
                     "or was chosen on.")
    if augmented is not None:
        notes.append("val_acc_tta: the same model or blend predicting under the fixed test-time views "
                     "(augment.TTA_VIEWS), averaged; ranking uses plain validation accuracy.")
    if weights:
        notes += [f"blend-greedy: Caruana ensemble selection ({GREEDY_ROUNDS} rounds, with replacement, on log-loss); its "
                  "validation scores are cross-fitted (weights fitted on one half of the validation rows, "
                  "scored on the other, both ways), never scored on the rows its weights were fitted to.",
                  "greedy weights (fitted on all validation rows, used for a greedy submission): "
                  + ", ".join(f"{n} {w:.2f}" for n, w in weights.items() if w)]
    for entry in read_submission_records(ws, name):
        origin = (f"blend-{entry.blend['method']}{' with TTA' if entry.blend['tta'] else ''}, val accuracy "
                  f"{entry.blend['val_accuracy']:.4f}" if entry.blend else "not written by `ensemble blend`")
        score = f"public {entry.public_score:.5f}" if entry.public_score is not None else entry.status
        notes.append(f"Kaggle submission {entry.submitted}: {Path(entry.file).name} ({origin}) to "
                     f"{entry.competition}: {score}")
    if not baselines:
        notes.append("no baselines yet: `ensemble baselines` adds KNN, decision tree and random forest.")
    if not members:
        notes.append("no CNN members yet: `ensemble train` adds them, and the blends with them.")
    out = ws.report_dir(name)
    paths = {
        "md": atomic.write_text(out / "leaderboard.md", f"# Leaderboard: job {name}\n\n{render_markdown(frame)}\n\n"
                                + "\n".join(f"- {note}" for note in notes) + "\n"),
        "csv": atomic.write_text(out / "leaderboard.csv", frame.to_csv(index=False)),
        "html": atomic.write_text(out / "leaderboard.html", render_html(name, frame, figures, notes)),
    }
    return Report(name, frame, weights, paths, survey.damaged)


def damaged_note(damaged: dict[str, str], job: str) -> str:
    return ("damaged, left out: " + "; ".join(f"{model} ({problem})" for model, problem in damaged.items())
            + f". `ensemble train --job {job}` makes a member's outputs again; `ensemble baselines` a baseline's.")


def kaggle_scores(ws, job: str) -> dict[str, float]:
    """The latest public score of each blend row (blend-mean, ...) that was submitted and scored."""
    scores = {}
    for entry in read_submission_records(ws, job):
        if entry.blend and entry.public_score is not None:
            scores[f"blend-{entry.blend['method']}"] = entry.public_score
    return scores


def submitted_blend(ws, record: JobRecord, y_val: np.ndarray, survey=None) -> tuple[str, np.ndarray] | None:
    """The blend that wrote submissions/submission.csv, as (label, validation softmax), when one did."""
    from .jobs import JobError

    submission = str(ws.submissions_dir / "submission.csv")
    latest = next((entry for entry in reversed(read_blend_records(ws, record.name))
                   if submission in entry.get("files", [])), None)
    if latest is None:
        return None
    try:
        outputs = load_outputs(ws, record, tuple(latest["models"]), latest["tta"], survey)
    except (JobError, OSError, ValueError):  # a model it used is gone since: the report shows the mean blend
        return None
    blended = BLEND_METHODS[latest["method"]].blend(outputs, y_val, record.spec.seed)
    return f"blend-{latest['method']}{' with TTA' if latest['tta'] else ''} (in submission.csv)", blended.val_probs


def report_figures(ws, record: JobRecord, members: ModelOutputs | None, baselines: list[str], y_val: np.ndarray,
                   seed: int, shown: tuple[str, np.ndarray] | None = None, survey=None) -> dict[str, tuple[str, bytes]]:
    """The report's plots, each as (caption, PNG); member plots only when there are members. The confusion
    matrix and per-class plot show the blend in submissions/submission.csv (`shown`), else the mean blend."""


    spec = record.spec
    class_names = [spec.format.class_name(label) for label in spec.classes]
    figures = {}
    if members is not None:
        label, mean_blend = shown or ("blend-mean", members.val_probs.mean(axis=0))
        figures["confusion"] = (f"Confusion matrix of {label} (validation)",
                                plot_confusion(y_val, mean_blend, f"{label}, validation", class_names))
        figures["members"] = ("Validation accuracy vs number of members blended",
                              plot_members_curve(accuracy_by_members_blended(members.val_probs, y_val, seed=seed)))
        figures["curves"] = ("Learning curves: validation accuracy per epoch per member",
                             plot_learning_curves(read_histories(ws, record.name, members.names)))
    if members is not None and baselines:
        others = load_outputs(ws, record, tuple(baselines), survey=survey)
        best = int(np.argmax([accuracy(p, y_val) for p in others.val_probs]))
        figures["classes"] = (f"Per-class accuracy: {label} vs the best baseline ({others.names[best]})",
                              plot_per_class(per_class_accuracy(mean_blend, y_val),
                                             per_class_accuracy(others.val_probs[best], y_val), others.names[best],
                                             class_names, label))
    return figures

