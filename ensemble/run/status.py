"""`ensemble status` and `ensemble jobs`: the ledger as tables, checked against the disk and the lock.

The rows are built by pure functions from the record, the members' progress files and two facts read
from disk (which member directories are complete, whether a runner holds the job's lock).
"""
from __future__ import annotations

import pandas as pd

from ..job.layout import lock_path, read_progress
from ..job.ledger import MemberEntry, MemberState
from ..job.outputs import member_is_complete
from ..job.record import JobRecord, job_names, readable_records, require_record
from ..store.locks import is_held, read_holder
from ..store.workspace import Workspace
from .progress import val_text

STATUS_COLUMNS = ["member", "state", "attempts", "device", "pid", "epoch", "val_acc", "started", "ended", "note"]
STATUS_TEXT = ("member", "state", "device", "started", "ended", "note")  # left-aligned; numbers go right
JOBS_COLUMNS = ["job", "created", "model", "epochs", "done", "running", "failed", "pending", "best_val_acc",
                "runner"]
JOBS_TEXT = ("job", "created", "model", "runner")


def shown_state(member: MemberEntry, complete: bool, runner_alive: bool) -> tuple[str, str]:
    """The state a person should see, and why it differs from the ledger when it does: the files decide
    'done', and 'running' needs a live runner."""
    state, note = member.state.value, member.note or ""
    if complete:
        return "done", note if member.stopped_early or state != "done" else ""
    if state == "done":
        return "pending", "files incomplete (no metrics.json)"
    if state == "running" and not runner_alive:
        return "pending", "its runner is gone; rerun to resume"
    return state, note


def member_rows(record: JobRecord, progress: dict[int, dict], complete: dict[int, bool],
                runner_alive: bool) -> pd.DataFrame:
    epochs = record.spec.epochs
    rows = []
    for member in record.members:
        state, note = shown_state(member, complete[member.index], runner_alive)
        live = progress.get(member.index, {}) if state == "running" else {}
        epoch = member.epoch or 0
        if live.get("batches") and live.get("phase") == "training":
            epoch_text = f"{epoch}/{epochs} (+{live.get('batch', 0)}/{live['batches']})"
        else:
            epoch_text = f"{epoch}/{epochs}"
        rows.append({"member": member.name, "state": state, "attempts": member.attempts,
                     "device": member.device or "-", "pid": member.pid if state == "running" else None,
                     "epoch": epoch_text, "val_acc": val_text(member.val_accuracy),
                     "started": member.started or "-", "ended": member.ended or "-", "note": note})
    frame = pd.DataFrame(rows, columns=STATUS_COLUMNS)
    frame["pid"] = frame["pid"].map(lambda pid: "-" if pd.isna(pid) else str(int(pid)))
    return frame


def job_status(ws: Workspace, job: str | None = None) -> tuple[JobRecord, pd.DataFrame, dict]:
    """The record, its member table and the runner holding its lock ({} when none runs)."""
    record = require_record(ws, job)
    name = record.name
    lock = lock_path(ws, name)
    runner = read_holder(lock) if is_held(lock) else {}
    indices = [member.index for member in record.members]
    frame = member_rows(record, {i: read_progress(ws, name, i) for i in indices},
                        {i: member_is_complete(ws.member_dir(name, i)) for i in indices}, bool(runner))
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
