"""The job record: the frozen spec, the data it was made from, the validation split and per-member state.

`jobs/<job>/job.json` is written only by the runner that holds `jobs/<job>/lock`, always atomically.
A member process writes only its own member directory and its live progress file
`jobs/<job>/progress/member-XX.json`. A member counts as done only when its directory holds every artifact
(metrics.json is written last), whatever the record says.
"""
from __future__ import annotations

import json
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..store import atomic
from ..store.locks import LockHeld, PidLock
from ..store.workspace import Workspace, member_name
from .errors import JobError
from .layout import JobLayout
from .ledger import LastRun, MemberEntry
from .planner import BudgetSpend, Costs
from .rounds import PseudoRound, RefitRound
from .spec import JobSpec, spec_words

RECORD_VERSION = 1


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def default_job_name() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


@dataclass
class JobRecord:
    """jobs/<job>/job.json: the frozen spec, the data folder, the ledger and the latest run."""

    name: str
    spec: JobSpec
    data_dir: str
    created: str
    updated: str
    members: list[MemberEntry] = field(default_factory=list)
    last_run: LastRun | None = None
    rebuilt: str | None = None  # when the record was rebuilt from member folders (jobs.rebuild_record)
    costs: Costs | None = None  # what a member costs on one slot, as measured (--time-limit plans from it)
    epochs_asked: bool = False  # --epochs was given when the job was made: --time-limit keeps that length
    budget: BudgetSpend | None = None  # the latest --time-limit run's plan and what it used
    pseudo: PseudoRound | None = None  # the job's pseudo-label round (--pseudo-label), once made
    refit: RefitRound | None = None    # the job's refit round (--refit-full), once made
    version: int = RECORD_VERSION

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    def ensure_members(self, n: int) -> "JobRecord":
        """Grow the ledger to n members (never shrinks: finished members stay part of the job)."""
        for index in range(len(self.members), n):
            self.members.append(MemberEntry(index, member_name(index), self.spec.member_seed(index)))
        return self

    def to_dict(self) -> dict:
        return {"version": self.version, "name": self.name, "spec": self.spec.to_dict(), "data_dir": self.data_dir,
                "created": self.created, "updated": self.updated, "members": [m.to_dict() for m in self.members],
                "last_run": asdict(self.last_run) if self.last_run else None,
                **({"rebuilt": self.rebuilt} if self.rebuilt else {}),
                **({"costs": self.costs.to_dict()} if self.costs else {}),
                **({"epochs_asked": True} if self.epochs_asked else {}),
                **({"budget": self.budget.to_dict()} if self.budget else {}),
                **({"pseudo": self.pseudo.to_dict()} if self.pseudo else {}),
                **({"refit": self.refit.to_dict()} if self.refit else {})}

    @classmethod
    def from_dict(cls, values: dict) -> "JobRecord":
        """Raises KeyError, TypeError or ValueError for anything that is not a job record."""
        last_run = values.get("last_run")
        return cls(name=str(values["name"]), spec=JobSpec.from_dict(values["spec"]), data_dir=str(values["data_dir"]),
                   created=str(values.get("created", "")), updated=str(values.get("updated", "")),
                   members=[MemberEntry.from_dict(m) for m in values["members"]],
                   last_run=LastRun(**last_run) if last_run else None, rebuilt=values.get("rebuilt"),
                   costs=Costs.from_dict(values["costs"]) if values.get("costs") else None,
                   epochs_asked=bool(values.get("epochs_asked", False)),
                   budget=BudgetSpend.from_dict(values["budget"]) if values.get("budget") else None,
                   pseudo=PseudoRound.from_dict(values["pseudo"]) if values.get("pseudo") else None,
                   refit=RefitRound.from_dict(values["refit"]) if values.get("refit") else None,
                   version=int(values.get("version", RECORD_VERSION)))


def new_record(name: str, spec: JobSpec, data_dir: Path) -> JobRecord:
    return JobRecord(name, spec, str(data_dir), created=now(), updated=now())




def load_record(ws: Workspace, job: str) -> JobRecord | None:
    """A job's record, None when there is none; a damaged one is a JobError that names its file."""
    path = JobLayout(ws, job).record
    if not path.is_file():
        return None
    try:
        record = atomic.read_json(path)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise JobError(f"{path}: the job record is damaged ({type(error).__name__}: {error}); other jobs are "
                       f"unaffected. Its trained members are still in {ws.models_dir / job}; `ensemble train --job "
                       f"{shlex.quote(job)}` rebuilds the record from them") from None
    try:
        return JobRecord.from_dict(record)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise JobError(f"{path}: the job record is damaged (not a job record: {type(error).__name__} {error}); other "
                       f"jobs are unaffected; `ensemble train --job {shlex.quote(job)}` rebuilds it from its member "
                       "folders") from None


def rebuild_record(ws: Workspace, job: str) -> JobRecord | None:
    """A job record made again from its member folders: each member's config.json holds the job's whole spec
    and data folder, so the record is exact when they agree. None when no member says, or they disagree.
    Per-member state is left to the runner's reconcile, which reads it from the files."""
    configs, rounds, refits = {}, [], []  # a member that trained on pseudo-labels, or a twin, carries its round
    for path in JobLayout(ws, job).member_configs():
        try:
            config = atomic.read_json(path)
            configs[int(config["member"])] = (config["spec"], config["data_dir"], path.stat().st_mtime)
            if config.get("pseudo"):
                rounds.append(PseudoRound.from_dict(config["pseudo"]))
            if config.get("refit"):
                refits.append(RefitRound.from_dict(config["refit"]))
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
            continue
    try:  # compared as specs: a config written before a field existed reads as what it meant (SPEC_FIELD_DEFAULTS)
        described = {json.dumps([JobSpec.from_dict(spec).to_dict(), data_dir], sort_keys=True)
                     for spec, data_dir, _ in configs.values()}
    except (KeyError, TypeError, ValueError):
        return None
    if len(described) != 1:
        return None
    spec, data_dir, _ = next(iter(configs.values()))
    record = new_record(job, JobSpec.from_dict(spec), Path(data_dir))
    record.created = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(min(m for *_, m in configs.values())))
    record.rebuilt = now()
    record.pseudo = rounds[0] if rounds else None
    record.refit = refits[0] if refits else None
    return record.ensure_members(max(configs) + 1)


def recover_record(ws: Workspace, job: str, say) -> JobRecord | None:
    """The job's record; a damaged one is set aside and rebuilt from the member folders (saying so) where
    that is exact, else the JobError says what to do. None when the job does not exist."""
    try:
        return load_record(ws, job)
    except JobError as damaged:
        rebuilt = rebuild_record(ws, job)
        if rebuilt is None:
            raise JobError(f"{damaged}".split("; `ensemble train")[0] + ". Its member folders do not say how it was "
                           f"made, so it cannot be rebuilt: move {JobLayout(ws, job).dir} aside and train a new job") from None
    try:
        with PidLock(JobLayout(ws, job).lock):  # job.json has one writer at a time
            aside = JobLayout(ws, job).record.with_name(f"job.json.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            JobLayout(ws, job).record.rename(aside)
            save_record(ws, rebuilt)
    except LockHeld as held:
        raise JobError(f"job {job!r} is being trained by pid {held.holder.get('pid', '?')}; its record reads as "
                       "damaged: rerun once that process ends") from None
    say(f"{JobLayout(ws, job).record} was damaged: set aside as {aside.name} and rebuilt from "
        f"{len(rebuilt.members)} member folders ({ws.models_dir / job})")
    return rebuilt


def require_record(ws: Workspace, job: str | None) -> JobRecord:
    """The named job, or the most recent one; a clear error when there is none."""
    name = job or latest_job_name(ws)
    if name is None:
        raise JobError(f"no jobs in {ws.jobs_dir}; train one first: ensemble train --n 3 --data data/")
    record = load_record(ws, name)
    if record is None:
        known = ", ".join(job_names(ws)) or "none"
        raise JobError(f"no job named {name!r} in {ws.jobs_dir} (jobs: {known})")
    return record


def save_record(ws: Workspace, record: JobRecord) -> Path:
    record.updated = now()
    return atomic.write_json(JobLayout(ws, record.name).record, record.to_dict())


def readable_records(ws: Workspace) -> tuple[list[JobRecord], dict[str, str]]:
    """Every job's record, oldest first by creation time, and {job: what is wrong} for damaged records."""
    records, damaged = [], {}
    if not ws.jobs_dir.is_dir():
        return records, damaged
    for path in sorted(ws.jobs_dir.iterdir()):
        if not (path / "job.json").is_file():
            continue
        try:
            records.append(load_record(ws, path.name))
        except JobError as error:
            damaged[path.name] = str(error)
    return sorted(records, key=lambda r: (r.created, r.name)), damaged


def job_names(ws: Workspace) -> list[str]:
    """Jobs oldest first, by creation time in their record; a damaged record is left out (never fatal)."""
    return [record.name for record in readable_records(ws)[0]]


def latest_job_name(ws: Workspace) -> str | None:
    names = job_names(ws)
    return names[-1] if names else None


def latest_job_with_spec(ws: Workspace, spec: JobSpec) -> str | None:
    """Where a bare `ensemble train` rerun continues: the newest job with an identical spec."""
    for record in reversed(readable_records(ws)[0]):
        if record.spec.same_job(spec):
            return record.name
    return None


def data_changed(record: JobRecord, path: Path | str, recorded: str, current: str) -> str:
    """What to tell a user whose data file is not the one the job was created from."""
    return (f"{path} changed since job {record.name!r} was created from it on {record.created or 'an unknown date'} "
            f"(sha256 {recorded[:12]} then, {current[:12]} now)")


def resume_command(record: JobRecord) -> str:
    """The `ensemble train` command line that continues this job (same spec, same data, every member)."""
    return " ".join(["ensemble train", "--job", shlex.quote(record.name), "--n", str(len(record.members)),
                     "--data", shlex.quote(record.data_dir), *spec_words(record.spec)])
