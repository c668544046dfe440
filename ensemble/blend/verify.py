"""`ensemble check --job`: a submission held against the job that wrote it. Its format as Kaggle checks it,
the blend that wrote it (blends.json, by the file's sha256), the test file that blend answered, and its
labels made again from the members' outputs as they are now: a file that passes answers today's test file
with today's models."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..job.errors import JobError
from ..job.outputs import job_output_shape, survey_models
from ..job.record import require_record
from ..job.records import BlendRecord
from ..job.split import existing_split
from ..kaggle.submission import (SubmissionError, blend_origin_problem, check_submission_text,
                                 job_submission_layout, submission_blend)
from .blending import load_outputs, refit_tests, stale_refusal
from .methods import get_blend_method


@dataclass(frozen=True)
class JobSubmissionCheck:
    rows: int
    blend: BlendRecord


def check_job_submission(ws, job: str | None, path: Path) -> JobSubmissionCheck:
    """Raise JobError naming what is wrong with a submission of the job; the check's findings otherwise."""
    record = require_record(ws, job)
    path = Path(path)
    if not path.is_file():
        raise JobError(f"{path}: no such file; write one with `ensemble blend --job {record.name}`")
    layout = job_submission_layout(ws, record)
    try:
        check_submission_text(path.read_text(encoding="utf-8", errors="replace"), layout)
    except SubmissionError as error:
        raise JobError(f"{path}, {error}") from None
    blend = submission_blend(ws, record, path)
    if blend is None:
        raise JobError(f"{path}: no blend of job {record.name!r} wrote this file (no entry in its blends.json has "
                       f"its sha256); `ensemble blend --job {record.name}` writes one")
    shape = job_output_shape(ws, record)
    if problem := blend_origin_problem(blend, shape, record.name):
        raise JobError(f"{path}: {problem}")
    survey = survey_models(ws, record, shape)
    if refusal := stale_refusal(record, survey, shape, blend.models):
        raise JobError(refusal)
    outputs = load_outputs(ws, record, blend.models, blend.tta, survey)
    split = existing_split(ws, record)  # a reader never makes it again (the workspace may be read-only)
    if split is None:
        raise JobError(f"job {record.name!r} has no readable split.npz; `ensemble train --job {record.name}` makes "
                       "it again")
    if twins := {name: twin for name, twin in zip(blend.models, blend.test_models) if twin != name}:
        if gone := [twin for twin in twins.values() if not survey.is_finished(twin)]:
            raise JobError(f"{path}: its test predictions came from {', '.join(gone)}, which the job no longer has "
                           f"finished; `ensemble train --job {record.name}` trains it again, then blend again")
        outputs = replace(outputs, test_probs=refit_tests(ws, record, outputs, twins).test_probs)
    blended = get_blend_method(blend.method).blend(outputs, split["val_labels"], record.spec.seed)
    expected = np.asarray(record.spec.classes)[np.argmax(blended.test_probs, axis=1)]
    written = pd.read_csv(path)[layout.columns[1]].to_numpy()
    differ = int(np.sum(written != expected))
    if differ:
        raise JobError(f"{path}: {differ} of {len(expected)} labels differ from the {blend.method} blend of "
                       f"{', '.join(blend.models)} as their outputs are now; `ensemble blend --job {record.name}` "
                       "writes it again")
    return JobSubmissionCheck(len(expected), blend)
