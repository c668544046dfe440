"""Run a job: create or continue its record, then train each unfinished member in a fresh process.

The runner is the only writer of jobs/<job>/job.json. Members know nothing about placement: a member is
`python -m ensemble.train --job J --member I` with an environment, which is where device pinning and
parallel workers plug in (`member_command`, `member_environment`).
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import atomic, jobs
from .data import stratified_split
from .jobs import JobError, JobSpec
from .workspace import Workspace

LOG_TAIL_LINES = 15


class MemberFailed(JobError):
    """A member process exited without finishing; the message carries its log tail."""


@dataclass(frozen=True)
class TrainRequest:
    n: int
    data_dir: Path
    job: str | None = None
    model: str = "cnn11"
    epochs: int | None = None
    batch_size: int | None = None
    augment: str = "idg"
    precision: str = "auto"
    seed: int = 0
    val_split: float = 0.1
    limit_train: int | None = None


@dataclass(frozen=True)
class TrainOutcome:
    job: str
    trained: list[int]
    skipped: list[int]
    created: bool


def prepare_job(ws: Workspace, request: TrainRequest) -> tuple[dict, bool]:
    """The job record to run (new or continued) with its split saved; refuses a changed spec."""
    if request.n < 1:
        raise JobError(f"--n must be at least 1, got {request.n}")
    train, test = jobs.read_job_data(ws, request.data_dir, request.limit_train)
    spec = JobSpec.from_options(model=request.model, epochs=request.epochs, batch_size=request.batch_size,
                                augment=request.augment, precision=request.precision, seed=request.seed,
                                val_split=request.val_split,
                                limit_train=request.limit_train, train_sha256=train.sha256,
                                test_sha256=test.sha256)
    name = request.job or jobs.latest_job_with_spec(ws, spec) or jobs.default_job_name()
    record = jobs.load_record(ws, name)
    created = record is None
    if created:
        record = jobs.new_record(name, spec, Path(request.data_dir).resolve())
        train_index, val_index = stratified_split(train.labels, spec.val_split, spec.seed)
        jobs.save_split(ws, name, train_index, val_index, train.labels[val_index])
    else:
        differences = jobs.spec_differences(JobSpec.from_dict(record["spec"]), spec)
        if differences:
            raise JobError(f"job {name!r} exists with a different spec:\n  " + "\n  ".join(differences)
                           + "\nRerun with the job's options, or pick a new name with --job.")
        record["data_dir"] = str(Path(request.data_dir).resolve())
    jobs.ensure_members(record, request.n)
    jobs.save_record(ws, record)
    return record, created


def member_command(ws: Workspace, job: str, index: int) -> list[str]:
    return [sys.executable, "-m", "ensemble.train", "--home", str(ws.home), "--job", job, "--member", str(index)]


def member_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of member logs
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_member(ws: Workspace, record: dict, index: int, echo: Callable[[str], None]) -> None:
    """Run one member process to the end, its output into jobs/<job>/logs/member-XX.log (appended, so
    a resumed member's log tells its whole story); echo its progress lines."""
    member = record["members"][index]
    log_path = ws.job_dir(record["name"]) / "logs" / f"{member['name']}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    member.update(state="running", attempts=member["attempts"] + 1, started=jobs.now(), device="cpu")
    tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
    with log_path.open("a", encoding="utf-8") as log:
        process = subprocess.Popen(member_command(ws, record["name"], index), env=member_environment(),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        member["pid"] = process.pid
        jobs.save_record(ws, record)
        try:
            for line in process.stdout:
                log.write(line)
                log.flush()
                tail.append(line.rstrip())
                if line.startswith(member["name"]):
                    echo(line.rstrip())
            returncode = process.wait()
        except KeyboardInterrupt:
            # The member keeps its last finished epoch in its backup; the ledger must not claim it runs.
            process.terminate()
            process.wait()
            member.update(state="interrupted", pid=None, ended=jobs.now())
            jobs.save_record(ws, record)
            raise
    member_dir = ws.member_dir(record["name"], index)
    member.update(pid=None, ended=jobs.now(), returncode=returncode)
    if returncode == 0 and jobs.member_is_complete(member_dir):
        metrics = atomic.read_json(member_dir / "metrics.json")
        member.update(state="done", val_accuracy=metrics["val_accuracy"], epochs=metrics["epochs"])
        jobs.save_record(ws, record)
        return
    member["state"] = "failed"
    jobs.save_record(ws, record)
    raise MemberFailed(f"{member['name']} of job {record['name']!r} failed (exit code {returncode}). "
                       f"Last lines of {log_path}:\n  " + "\n  ".join(tail)
                       + "\nFix the cause and rerun the same command: finished members are kept, "
                         "this one resumes from its last finished epoch.")


def run_job(ws: Workspace, request: TrainRequest, echo: Callable[[str], None] = print) -> TrainOutcome:
    record, created = prepare_job(ws, request)
    spec = record["spec"]
    echo(f"job {record['name']} ({'new' if created else 'continued'}): {request.n} x {spec['model']}, "
         f"{spec['epochs']} epochs, augment {spec['augment']}, precision {spec['precision']}")
    trained, skipped = [], []
    for member in record["members"][:request.n]:  # an earlier, larger --n leaves members this run skips
        index = member["index"]
        if jobs.member_is_complete(ws.member_dir(record["name"], index)):
            if member["state"] != "done":
                member["state"] = "done"
                jobs.save_record(ws, record)
            skipped.append(index)
            continue
        echo(f"{member['name']} (seed {member['seed']}) training; log: "
             f"{ws.job_dir(record['name']) / 'logs' / (member['name'] + '.log')}")
        run_member(ws, record, index, echo)
        trained.append(index)
    return TrainOutcome(record["name"], trained, skipped, created)
