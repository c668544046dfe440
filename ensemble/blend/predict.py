"""`ensemble predict`: a job's finished models applied to a new CSV of the job's layout, blended as
`ensemble blend` would, written in the layout's submission format.

The blend method is fitted exactly as `blend` fits it (on the models' saved validation softmax); only its
test side is the new CSV's predictions. Models load with Keras' safe_mode on.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.tables import DataError, read_test_csv
from ..job.errors import JobError
from ..job.layout import JobLayout, ModelKind, model_kind
from ..job.outputs import job_output_shape, keras_file_problem, survey_models
from ..job.record import require_record
from ..job.split import load_split
from ..kaggle.submission import SubmissionLayout, write_submission
from ..store.workspace import Workspace
from .blending import finished_twins, load_outputs
from .methods import ModelOutputs, get_blend_method


@dataclass(frozen=True)
class Prediction:
    job: str
    models: list[str]
    method: str
    tta: bool
    rows: int
    path: Path
    twins: dict[str, str] | None = None  # blended model -> the refit twin that predicted for it


def model_file(ws: Workspace, job: str, name: str) -> Path:
    """The saved Keras model behind a model name: a member's kept weights, or a snapshot's cycle file."""
    if model_kind(name) is ModelKind.BASELINE:
        raise JobError(f"{name!r} is a baseline: baselines keep no model to predict with; "
                       "predict with the job's CNN members (the default) or name members with --only")
    return JobLayout(ws, job).model_file(name)


def predict_csv(ws: Workspace, job: str | None, csv_path: Path, out: Path | None = None,
                only: tuple[str, ...] | None = None, method: str = "mean", tta: bool | None = None) -> Prediction:
    """Predict every row of a CSV in the job's test layout with the job's finished models, blend, write."""
    # Keras loads here, when models are loaded: `ensemble blend` and the rest of this stage never need it
    import keras

    from ..member.predict import predict_probabilities  # imports Keras too
    from ..nets.augment import tta_views  # imports Keras too

    record = require_record(ws, job)
    spec = record.spec
    tta = spec.tta if tta is None else tta
    blender = get_blend_method(method)
    # every saved output checked before anything is predicted or written; the test side is not, since the new
    # CSV is predicted from the kept weights: a code competition's hidden test.csv replaces the job's own
    shape = job_output_shape(ws, record).weights_only()
    survey = survey_models(ws, record, shape)
    damaged = [f"{name}: {problem}" for name, problem in survey.damaged.items() if name.startswith("member-")]
    if damaged and only is None:
        raise JobError("damaged: " + "; ".join(damaged) + f". `ensemble train --job {record.name}` makes them again")
    stale = [f"{name}: {why}" for name, why in survey.stale.items() if model_kind(name) is not ModelKind.BASELINE
             and (only is None or name in only)]
    if stale:  # their validation side, which the blend is fitted on, may not be what `blend` would use
        raise JobError("predicted from other files: " + "; ".join(stale)
                       + f". `ensemble train --job {record.name}` predicts them again (nothing is retrained)")
    saved = load_outputs(ws, record, only, tta, survey)  # the validation side, as `blend` uses it
    twins = finished_twins(survey, saved.names)  # a refit twin predicts for its fold member, as in `blend`
    paths = [model_file(ws, record.name, twins.get(name, name)) for name in saved.names]
    problems = [problem for path in paths if (problem := keras_file_problem(path))]
    if problems:
        raise JobError(f"job {record.name!r}: {'; '.join(problems)}")
    table = read_test_csv(Path(csv_path), ws.cache_dir, spec.data_layout)
    if len(table) == 0:
        raise DataError(f"{csv_path}: no rows to predict")
    images = table.images[..., None]
    new_probs = []
    for path in paths:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
        plain, augmented, _ = predict_probabilities(model, images, tta, views=tta_views(spec.flip))
        new_probs.append(augmented if tta else plain)
    y_val = load_split(ws, record)["val_labels"]
    blended = blender.blend(ModelOutputs(saved.names, saved.val_probs, np.stack(new_probs), tta, saved.val_mask), y_val,
                            spec.seed)
    labels = np.asarray(spec.classes)[np.argmax(blended.test_probs, axis=1)]
    layout = SubmissionLayout.for_layout(spec.data_layout, table.ids, len(table), spec.classes)
    target = Path(out) if out else ws.submissions_dir / f"{record.name}-predict-{Path(csv_path).stem}.csv"
    return Prediction(record.name, saved.names, method, tta, len(table), write_submission(target, labels, layout),
                      twins)
