"""Refit-full: after a k-fold job's members finish, a twin of each trains on every row for the final submission.

`ensemble train --folds 5 --n 5 --refit-full` trains the five fold members, then five twins. The folds choose
each twin's length: the epoch its fold member's kept weights came from (its best epoch, or its last under
--keep last), and the twin's schedule is sized to that length and it keeps its last epoch. The round is
recorded with the job (which members are twins, of which fold member, for how many epochs); a rerun continues
it, and `ensemble train --job J` trains whatever of it is left.

A twin trained on every row, so nothing scores it: blends are chosen and scored on the fold members'
out-of-fold predictions, and each twin's test predictions stand in for its fold member's in the submission
(blend.blending.refit_test_probs). Its validation files are its fold member's fold as the twin predicts
it, rows it trained on: they keep the member's files in the shape every check expects, and nothing reads them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..store.workspace import Workspace
from .errors import JobError
from .layout import JobLayout
from .outputs import OutputShape, read_metrics, survey_round_sources
from .rounds import RefitRound

if TYPE_CHECKING:  # the record's type, without a cycle (record.py reads rounds)
    from .record import JobRecord
    from .spec import JobSpec


def refit_spec_problem(spec: JobSpec) -> str | None:
    """Why a job of this spec cannot be refitted, None when it can."""
    if not spec.folds:
        return ("--refit-full refits a k-fold job's members on every row, once the folds have chosen their epochs: "
                "add --folds K (e.g. --folds 5 --n 5 --refit-full)")
    if spec.snapshots > 1:
        return (f"--refit-full refits whole members; with --snapshots {spec.snapshots} each member blends as its "
                "cycles' models, which a twin would not match: drop --snapshots")
    if spec.schedule == "plateau":
        return ("--refit-full trains a fixed length on every row, but the plateau schedule cuts its rate when "
                "validation stops improving, and a twin has no held-out rows: use --schedule onecycle, cosine or exp")
    return None


def twin_epochs(kept_epochs: list[int]) -> tuple[int, ...]:
    """Each twin's length: the epoch its fold member's kept weights came from (at least 1)."""
    return tuple(max(1, int(epochs)) for epochs in kept_epochs)


def make_refit_round(ws: Workspace, record: JobRecord, shape: OutputShape, made: str) -> RefitRound:
    """A twin for every member of the job so far, which must all be finished and current: their kept epochs
    size the twins."""
    # a member the time limit stopped is finished (blendable, its kept epoch known): its twin takes that length
    survey_round_sources(ws, record, shape, "--refit-full sizes each twin by its fold member's kept epoch",
                         "add the twins", stopped_early_counts=True)
    if len(record.members) < record.spec.folds:
        raise JobError(f"--refit-full refits fold members that together trained on every row: job {record.name!r} has "
                       f"{len(record.members)} of its {record.spec.folds} folds' members; train them first "
                       f"(`ensemble train --job {record.name} --n {record.spec.folds}`), then add the twins")
    layout = JobLayout(ws, record.name)
    kept = [read_metrics(layout.member(member.index)).best_epoch or member.epochs or record.spec.epochs
            for member in record.members]
    parents = tuple(member.index for member in record.members)
    return RefitRound(len(record.members), parents, twin_epochs(kept), made)

