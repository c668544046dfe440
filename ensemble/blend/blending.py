"""`ensemble blend`: a job's finished models, read through the one artifact check, blended into checked
submissions, recorded in blends.json."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.tables import file_sha256
from ..job.errors import JobError
from ..job.layout import JobLayout, ModelKind, model_kind
from ..job.outputs import (JobModels, OutputShape, ensemble_models, finished_models, job_output_shape, load_probs,
                           read_metrics, survey_models)
from ..job.record import now, require_record, resume_command
from ..job.records import BlendRecord, record_blend
from ..job.split import existing_split, load_split
from ..job.state import member_status
from ..kaggle.submission import job_submission_layout, write_submission
from ..store.locks import is_held
from .methods import ModelOutputs, get_blend_method

if TYPE_CHECKING:  # the record's type, without importing jobs (and Keras) at module load
    from ..job.record import JobRecord


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
    fitted_weights: bool = False               # the weights were fitted on validation (its score is cross-fitted)
    notes: tuple[str, ...] = ()                # what the user should know about the outputs blended
    scoring: str = ""                          # which rows the validation scores rest on, where not the shared split

    @property
    def best_member(self) -> tuple[str, float]:
        return max(self.member_val_accuracy.items(), key=lambda item: item[1])

    @property
    def mean_member_accuracy(self) -> float:
        return float(np.mean(list(self.member_val_accuracy.values())))


def default_blend_names(ws, record: JobRecord) -> list[str]:
    """The CNN models a plain `ensemble blend` averages (outputs.ensemble_models)."""
    return ensemble_models(finished_models(ws, record))


def load_outputs(ws, record: JobRecord, only: tuple[str, ...] | None = None, tta: bool = False,
                 survey: JobModels | None = None) -> ModelOutputs:
    """Saved probabilities of the job's ensemble (default) or of the named models; with tta, the test-time
    augmented outputs of every model that has them. Only models whose files passed the checks are read."""
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
    if twins := [model.name for model in models if model.refit_of and model.name in names]:
        parents = ", ".join(model.refit_of for model in models if model.name in twins)
        raise JobError(f"{', '.join(twins)}: refit on every row, so no held-out rows score or weigh them; blend "
                       f"{parents} instead, whose test predictions they make in every blend of the job")
    folders = [JobLayout(ws, record.name).model(name) for name in names]
    probs = [load_probs(folder, tta) for folder in folders]
    val_probs, mask = [val for val, _ in probs], None
    if record.spec.folds:
        split = existing_split(ws, record)
        if split is None or "fold" not in split:
            raise JobError(f"job {record.name!r} has no readable k-fold split.npz; `ensemble train --job "
                           f"{record.name}` makes it again")
        spread = [spread_fold(val, read_metrics(folder).fold, split["fold"]) for val, folder in zip(val_probs, folders)]
        val_probs, mask = [val for val, _ in spread], np.stack([covers for _, covers in spread])
    return ModelOutputs(names, np.stack(val_probs), np.stack([test for _, test in probs]),
                        tta and any(folder.has_tta for folder in folders), mask)


@dataclass(frozen=True)
class RefitTests:
    """A blend's test predictions with the job's refit twins standing in: the softmax per blended model, and
    which twin gave each model's (only the models that have a finished, current twin)."""

    test_probs: np.ndarray
    twins: dict[str, str]  # blended model -> its twin

    def note(self, blended: list[str]) -> str:
        if not self.twins:
            return ""
        left = [name for name in blended if name not in self.twins]
        return (f"test predictions from the refit twins ({', '.join(f'{twin} for {name}' for name, twin in self.twins.items())}"
                f"), each trained on every row; weights and scores from the fold members' out-of-fold predictions"
                + (f"; {', '.join(left)} without a finished twin predict test themselves" if left else ""))


def refit_test_probs(names: list[str], test_probs: np.ndarray, twin_tests: dict[str, np.ndarray]) -> np.ndarray:
    """The blended models' test softmax, each replaced by its twin's where `twin_tests` has one."""
    return np.stack([twin_tests[name] if name in twin_tests else probs for name, probs in zip(names, test_probs)])


def finished_twins(survey: JobModels, names: list[str]) -> dict[str, str]:
    """Each named model's refit twin, where the job has one, its files passed the checks and it trained its
    whole length (a twin the time limit stopped is still high on its schedule: the next run continues it)."""
    finished = {model.refit_of: model.name for model in survey.finished if model.refit_of and not model.stopped_early}
    return {name: finished[name] for name in names if name in finished}


def refit_tests(ws, record: JobRecord, outputs: ModelOutputs, twins: dict[str, str]) -> RefitTests:
    """What the refit twins predict for the blended models' test rows (their TTA outputs where the blend uses
    TTA), the models' own where `twins` names none."""
    layout = JobLayout(ws, record.name)
    twin_tests = {name: load_probs(layout.model(twin), outputs.tta)[1] for name, twin in twins.items()}
    return RefitTests(refit_test_probs(outputs.names, outputs.test_probs, twin_tests), twins)


def spread_fold(val_probs: np.ndarray, fold: int | None, fold_of_row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A model's validation softmax placed on a k-fold job's validation rows, and the rows it covers: a
    member's (fold given) are its fold's rows in split order; a baseline's (fold None) cover every row."""
    if fold is None:
        return val_probs, np.ones(len(fold_of_row), dtype=bool)
    covers = fold_of_row == fold
    full = np.zeros((len(fold_of_row), val_probs.shape[1]), dtype=val_probs.dtype)
    full[covers] = val_probs
    return full, covers


def stale_refusal(record: JobRecord, survey: JobModels, shape: OutputShape,
                  only: tuple[str, ...] | None) -> str | None:
    """Why a blend would attach labels to the wrong images: models (all of them, or those named) whose
    outputs came from another test file or split than the job's now. None when there are none."""
    # a default blend averages members and snapshots: a stale baseline it leaves out does not stop it
    stale = {name: why for name, why in survey.stale.items()
             if (name in only if only is not None else model_kind(name) is not ModelKind.BASELINE)}
    if not stale:
        return None
    baselines = [name for name in stale if model_kind(name) is ModelKind.BASELINE]
    members = [name for name in stale if name not in baselines]
    fix = []
    if members:
        fix.append(f"`ensemble train --job {record.name}` predicts {', '.join(members)} again on the files as they "
                   "are now, training nothing")
    if baselines:
        fix.append(f"`ensemble baselines --job {record.name} --only {','.join(baselines)}` fits them again")
    what = f"{shape.test_file} changed since" if shape.test_file else "the job's files changed since"
    return (f"{what} {len(stale)} model{'s' if len(stale) != 1 else ''} of job {record.name!r} predicted it: "
            f"{next(iter(stale.values()))}. Nothing was written: blending them would attach labels to the wrong "
            f"images. {'; '.join(fix)}; then blend again.")


def origin_notes(record: JobRecord, survey: JobModels, names: list[str]) -> tuple[str, ...]:
    """The offer for blended outputs that do not say which test file they came from (saved by an earlier
    version): predicting them again binds them."""
    unbound = [name for name in names if name in survey.unbound]
    if not unbound:
        return ()
    return (f"{', '.join(unbound)}: saved before outputs recorded which test file they came from; if the test "
            f"file changed since, `ensemble train --job {record.name}` predicts members again (nothing is "
            "retrained) and `ensemble baselines` fits baselines again",)


def unfinished_members(ws, record: JobRecord, survey: JobModels) -> list[str]:
    """'member-03 (pending)' for each member that is not done as job.state.member_status sees it (the ledger
    and the one artifact check, as `ensemble status` shows it); 'member-03 (damaged: <file>: <what>)' for one
    whose files, or its snapshots' files, fail their checks."""
    runner_alive = is_held(JobLayout(ws, record.name).lock)
    statuses = [(member.name, member_status(member, survey, runner_alive)) for member in record.members]
    return [status.describe(name) for name, status in statuses if not status.done]


def blend_job(ws, job: str | None = None, method: str = "mean", out: Path | None = None,
              only: tuple[str, ...] | None = None, allow_partial: bool = False,
              tta: bool | None = None) -> BlendResult:
    """Blend a job's finished members (their snapshots, where they have them) or the models named in
    `only`; write a file named after what produced it, submissions/<job>-<method>[-tta][-<names>].csv, and
    the submission (default submissions/submission.csv, always the latest); blends.json records which is which. tta None: test-time augmented outputs when the job made them.

    A job with unfinished members is refused unless allow_partial: a blend of 3 of 10 members submitted
    by mistake costs a Kaggle submission."""
    blender = get_blend_method(method)
    record = require_record(ws, job)
    spec = record.spec
    tta = spec.tta if tta is None else tta
    shape = job_output_shape(ws, record)
    survey = survey_models(ws, record, shape)  # every input checked before anything is blended or written
    if refusal := stale_refusal(record, survey, shape, only):
        raise JobError(refusal)
    unfinished = unfinished_members(ws, record, survey) if only is None else []
    if unfinished and not allow_partial:
        finished = len(record.members) - len(unfinished)
        raise JobError(f"job {record.name!r} has {len(unfinished)} unfinished of {len(record.members)} "
                       f"members: {', '.join(unfinished)}. Finish them with `{resume_command(record)}` "
                       f"(`ensemble status --job {record.name}` shows where they are), or blend the "
                       f"{finished} finished ones with --allow-partial.")
    outputs = load_outputs(ws, record, only, tta, survey)
    y_val = load_split(ws, record)["val_labels"]
    refit = refit_tests(ws, record, outputs, finished_twins(survey, outputs.names))
    blended = blender.blend(replace(outputs, test_probs=refit.test_probs), y_val, spec.seed)
    other = load_outputs(ws, record, only, not outputs.tta, survey)
    other_accuracy = blender.blend(other, y_val, spec.seed).val_accuracy if other.tta != outputs.tta else None
    test_labels = np.asarray(spec.classes)[np.argmax(blended.test_probs, axis=1)]
    layout = job_submission_layout(ws, record)
    copy_name = f"{record.name}-{method}" + ("-tta" if outputs.tta else "") + (f"-{'+'.join(only)}" if only else "")
    targets = [ws.submissions_dir / f"{copy_name}.csv", Path(out) if out else ws.submissions_dir / "submission.csv"]
    paths = [write_submission(target, test_labels, layout) for target in targets]
    test_models = tuple(refit.twins.get(name, name) for name in outputs.names) if refit.twins else ()
    # the test file the blended outputs came from; unknown when one of them does not say
    answered = None if any(name in survey.unbound for name in (*outputs.names, *test_models)) else shape.test_sha256
    record_blend(ws, record.name, BlendRecord(method, tuple(outputs.names), outputs.tta,
                                              tuple(float(w) for w in blended.weights), blended.val_accuracy,
                                              tuple(str(p) for p in paths), file_sha256(paths[0]), now(),
                                              answered, shape.split_sha256, test_models))
    return BlendResult(record.name, method, outputs.names, [float(w) for w in blended.weights],
                       blended.val_accuracy, blended.val_logloss,
                       {name: outputs.model_accuracy(i, y_val) for i, name in enumerate(outputs.names)}, paths,
                       outputs.tta, other_accuracy, blender.fits_weights,
                       origin_notes(record, survey, outputs.names) + ((refit.note(outputs.names),) if refit.twins else ()),
                       fold_scoring(spec.folds, outputs))


def fold_scoring(folds: int | None, outputs: ModelOutputs) -> str:
    """How a k-fold job's blend is scored, in a line; "" for a shared split."""
    if not folds:
        return ""
    rows, scored = outputs.val_probs.shape[1], int(outputs.scored_rows.sum())
    return (f"out of fold: {scored} of {rows} rows, each scored only by the models that held it out ({folds} folds); "
            "a member on its own fold")
