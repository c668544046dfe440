"""`ensemble status` and `ensemble jobs`: the ledger as tables, checked against the disk and the lock.

The rows are built by pure functions from the record, the members' progress files and each member's state
(job.state.member_status: the ledger, the one artifact check, whether a runner holds the job's lock).
"""
from __future__ import annotations

import time
from datetime import datetime

import pandas as pd

from ..job.layout import JobLayout
from ..job.ledger import MemberState
from ..job.outputs import survey_models
from ..job.progress import NO_PROGRESS, Progress, read_progress
from ..job.record import JobRecord, job_names, readable_records, require_record
from ..job.state import MemberStatus, member_status
from ..store.locks import is_held, read_holder
from ..store.workspace import Workspace
from .progress import val_text
from .stall import stalled_text

STATUS_COLUMNS = ["member", "state", "attempts", "device", "pid", "epoch", "val_acc", "started", "ended", "note"]
STATUS_TEXT = ("member", "state", "device", "started", "ended", "note")  # left-aligned; numbers go right
JOBS_COLUMNS = ["job", "created", "model", "epochs", "done", "running", "failed", "pending", "best_val_acc",
                "runner"]
JOBS_TEXT = ("job", "created", "model", "runner")


def member_rows(record: JobRecord, progress: dict[int, Progress], statuses: dict[int, MemberStatus],
                now: float | None = None) -> pd.DataFrame:
    """A row per member: its state as job.state.member_status gives it, and the ledger's details; a running
    member whose progress file stopped changing is noted as stalled (run.stall)."""
    now = time.time() if now is None else now
    rows = []
    for member in record.members:
        epochs = member.epochs or record.spec.epochs  # a --time-limit member's own length
        status = statuses[member.index]
        running = status.state is MemberState.RUNNING
        live = progress.get(member.index, NO_PROGRESS) if running else NO_PROGRESS
        epoch = member.epoch or 0
        if live.batches and live.phase == "training":
            epoch_text = f"{epoch}/{epochs} (+{live.batch}/{live.batches})"
        else:
            epoch_text = f"{epoch}/{epochs}"
        timeout = record.last_run.stall_timeout if record.last_run else None
        this_attempt = live.known and live.updated >= started_at(member.started) - 1  # not an earlier attempt's
        stalled = stalled_text(live.updated, live.heartbeat_s, now, timeout) if running and this_attempt else None
        rows.append({"member": member.name, "state": status.state.value, "attempts": member.attempts,
                     "device": member.device or "-", "pid": member.pid if running else None,
                     "epoch": epoch_text, "val_acc": val_text(member.val_accuracy),
                     "started": member.started or "-", "ended": member.ended or "-",
                     "note": "; ".join(filter(None, [stalled, status.note]))})
    frame = pd.DataFrame(rows, columns=STATUS_COLUMNS)
    frame["pid"] = frame["pid"].map(lambda pid: "-" if pd.isna(pid) else str(int(pid)))
    return frame


def started_at(stamp: str | None) -> float:
    """Epoch seconds of a ledger time (job.record.now's format), 0 when there is none."""
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z").timestamp() if stamp else 0.0
    except ValueError:
        return 0.0


def job_status(ws: Workspace, job: str | None = None) -> tuple[JobRecord, pd.DataFrame, dict]:
    """The record, its member table and the runner holding its lock ({} when none runs)."""
    record = require_record(ws, job)
    name = record.name
    lock = JobLayout(ws, name).lock
    runner = read_holder(lock) if is_held(lock) else {}
    indices = [member.index for member in record.members]
    models = survey_models(ws, record)
    frame = member_rows(record, {i: read_progress(JobLayout(ws, name).progress(i)) for i in indices},
                        {m.index: member_status(m, models, bool(runner)) for m in record.members})
    return record, frame, runner


def job_row(record: JobRecord, states: pd.Series, runner: dict, best: float | None) -> dict:
    counts = states.value_counts()
    return {"job": record.name, "created": record.created, "model": record.spec.model,
            "epochs": record.spec.epochs, **{state.value: int(counts.get(state.value, 0)) for state in MemberState},
            "best_val_acc": val_text(best), "runner": f"pid {runner['pid']}" if runner else "-"}


def damaged_jobs(ws: Workspace) -> dict[str, str]:
    """Jobs whose record cannot be read, with the reason (naming the file)."""
    return readable_records(ws)[1]


def jobs_table(ws: Workspace) -> pd.DataFrame:
    rows = []
    for name in job_names(ws):
        record, frame, runner = job_status(ws, name)
        done = [m.val_accuracy for m, state in zip(record.members, frame["state"])
                if state == "done" and m.val_accuracy is not None]
        rows.append(job_row(record, frame["state"], runner, max(done) if done else None))
    return pd.DataFrame(rows, columns=JOBS_COLUMNS)
