"""Run a job: create or continue its record, then train every unfinished member on the slots it was given.

The runner holds `jobs/<job>/lock` for the whole run and is the only writer of `jobs/<job>/job.json`. It
starts member processes through an executor (local processes, or Ray tasks), polls them and their
progress files, retries the ones that die, and keeps the ledger current: per member its state, attempts,
device, pid, start and end times, last finished epoch and validation accuracy. Members know nothing about
placement: a member is `python -m ensemble.member --job J --member I` with an environment.
"""
from __future__ import annotations

import os
import platform
import signal
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..data.folder import class_indices, default_data_dir, read_job_data, resolve_layout
from ..data.layouts import Layout, data_files, is_own_name
from ..data.tables import DigitTable
from ..job.errors import JobError
from ..job.layout import JobLayout
from ..job.ledger import LastRun, MemberState
from ..job.outputs import OutputShape, read_metrics, survey_models
from ..job.plan import DataFile, RunPlan, predict_speed, write_plan
from ..job.planner import BudgetSpend
from ..job.record import (JobRecord, default_job_name, latest_job_with_spec, load_record, new_record, now,
                          data_changed, recover_record, resume_command, save_record)
from ..job.spec import JobSpec, spec_differences
from ..job.options import declared
from ..job.pseudo import make_pseudo_round, pseudo_problem
from ..job.refit import make_refit_round, refit_spec_problem
from ..job.rounds import PseudoRound, RefitRound
from ..job.split import fold_sizes, load_split, make_split, split_sha256, write_split
from ..job.state import member_status
from ..store.atomic import NoSpace
from ..store.hardware import list_gpus
from ..store.locks import LockHeld, PidLock
from ..store.workspace import Workspace, member_name
from . import budget
from .budget import TimeBudget
from .devices import check_backend, parse_gpus, plan_slots
from .executors import EXECUTORS, LocalExecutor, RayExecutor
from .progress import PlainReporter
from .request import TrainRequest
from .scheduler import JobRun, RunOrder


class MemberFailed(JobError):
    """Members exhausted their retries; the message carries each one's log tail."""


@dataclass(frozen=True)
class TrainOutcome:
    job: str
    trained: list[int]
    skipped: list[int]
    created: bool
    failed: list[int] = field(default_factory=list)
    interrupted: bool = False
    stopped_early: dict[int, int] = field(default_factory=dict)  # member -> epochs it trained (time limit)
    not_started: int = 0   # members the time limit left out of this run
    elapsed: float = 0.0   # seconds from the command's start

    def budget_summary(self, time_limit: float, epochs: dict[int, int]) -> str:
        """What a --time-limit run fitted into its budget; `epochs`: each member's own length."""
        complete = len(self.trained) - len(self.stopped_early)
        parts = [f"{complete} complete member{'s' if complete != 1 else ''}"]
        if self.stopped_early:
            parts.append("stopped early: " + ", ".join(f"member-{i:02d} at epoch {e}/{epochs[i]}"
                                                        for i, e in sorted(self.stopped_early.items())))
        if self.not_started:
            parts.append(f"{self.not_started} not started")
        return (f"time limit {budget.format_duration(time_limit)}: fitted {'; '.join(parts)} "
                f"in {budget.format_duration(self.elapsed)}")


def resolve_request(ws: Workspace, request: TrainRequest, say=print) -> tuple[TrainRequest, JobRecord | None]:
    """The request with nothing left to guess, and the named job's record (None for a new job): a bare
    `--job J` of an existing job takes the job's spec, data folder and member count; anything else gets the
    documented defaults. A named job's damaged record is rebuilt here, before anything reads it."""
    record = recover_record(ws, request.job, say) if request.job else None
    if record is not None and request.continues_as_recorded:
        n = request.n if request.n is not None or request.time_limit else len(record.members) or None
        return replace(request, n=n, data_dir=record.data_path, spec=record.spec), record
    data_dir = Path(request.data_dir) if request.data_dir is not None else default_data_dir(ws)
    return replace(request, data_dir=data_dir), record


@dataclass(frozen=True)
class AskedData:
    """What a request's data folder holds, read once: the resolved spec and the two tables."""

    spec: JobSpec
    train: DigitTable
    test: DigitTable
    layout: Layout
    train_path: Path
    test_path: Path

    @property
    def notes(self) -> list[str]:
        """What a user should know about how the folder was read: files of other names taken as the layout's."""
        if is_own_name(self.layout, self.train_path, self.test_path):
            return []
        return [f"--format {self.layout.name}: took {self.train_path.name} as its training file "
                f"({self.layout.train_file}) and {self.test_path.name} as its test file ({self.layout.test_file}); "
                "their headers fit the layout"]


def request_spec(ws: Workspace, request: TrainRequest, gpu_capabilities: list[float] | None) -> AskedData:
    for name, declaration in declared(TrainRequest):
        if problem := declaration.problem(getattr(request, name)):
            raise JobError(problem)
    if request.time_limit is not None and request.time_limit <= 0:
        raise JobError(f"--time-limit must be more than 0 seconds, got {request.time_limit}")
    asked = request.spec
    layout = resolve_layout(request.data_dir, asked.layout)
    train, test = read_job_data(ws, request.data_dir, asked.limit_train, layout)
    train_path, test_path = data_files(layout, request.data_dir)
    classes = np.unique(train.labels)
    if len(classes) < 2:
        raise JobError(f"{request.data_dir}: every training row has label {classes[0]}; a classifier needs at "
                       "least two classes")
    spec = type(asked).resolve(replace(asked, layout=layout.name), train_sha256=train.sha256,
                               test_sha256=test.sha256, classes=tuple(classes), gpu_capabilities=gpu_capabilities)
    return AskedData(spec, train, test, layout, train_path, test_path)


def check_spec(record: JobRecord | None, asked: AskedData) -> None:
    """A job continues only on its own training file and options; its test file may have changed."""
    if record is None:
        return
    spec = asked.spec
    if spec.train_sha256 != record.spec.train_sha256:
        raise JobError(data_changed(record, asked.train_path, record.spec.train_sha256, spec.train_sha256)
                       + ". Put the job's file back to continue it, or train a new job on this data with "
                         "--job NEW_NAME.")
    differences = spec_differences(record.spec, spec)
    if differences:
        raise JobError(f"job {record.name!r} exists with a different spec:\n  " + "\n  ".join(differences)
                       + "\nRerun with the job's options, or pick a new name with --job.")


@dataclass(frozen=True)
class PreparedJob:
    record: JobRecord
    created: bool
    plan: RunPlan  # what every member of this run reads (written to jobs/<job>/plan.json)


def prepare_job(ws: Workspace, request: TrainRequest, gpu_capabilities: list[float] | None = None
                ) -> PreparedJob:
    """The job to run (new or continued), its split and its run plan written; refuses a changed spec.
    Callers that run members hold the job's lock around open_job (see `run_job`)."""
    request, record = resolve_request(ws, request)
    asked = request_spec(ws, request, gpu_capabilities)
    name = request.job or latest_job_with_spec(ws, asked.spec) or default_job_name()
    record = record if request.job else load_record(ws, name)
    check_spec(record, asked)
    check_refit(record, request, asked.spec)
    return open_job(ws, name, asked, request, record)


def check_refit(record: JobRecord | None, request: TrainRequest, spec: JobSpec) -> None:
    """A --refit-full request on a spec that cannot be refitted is refused before anything is written."""
    if request.refit_full and (problem := refit_spec_problem(spec)):
        raise JobError(problem)


def open_job(ws: Workspace, name: str, asked: AskedData, request: TrainRequest, record: JobRecord | None,
             deadline: float | None = None, say=None, add_twins: bool = False) -> PreparedJob:
    """Create or continue the record (read, and its spec checked, once by the caller), its split (made once,
    checked, or made again) and the plan every member of this run reads; add_twins: the run that follows the
    fold members of a --refit-full request makes the job's refit round (once) and trains its twins."""
    created = record is None
    if created:
        record = new_record(name, asked.spec, Path(request.data_dir).resolve())
        record.epochs_asked = request.spec.epochs is not None
        write_split(ws, name, make_split(asked.train.labels, class_indices(asked.train.labels, asked.spec.classes),
                                         asked.spec.val_split, asked.spec.folds, asked.spec.seed))
    else:
        record.data_dir = str(Path(request.data_dir).resolve())
    split = load_split(ws, record, say=say)  # made again here when missing or damaged
    shape = OutputShape(len(split["val_index"]), len(asked.test), len(record.spec.classes), asked.test.sha256,
                        split_sha256(split), str(asked.test_path), record.spec.test_sha256 or None, fold_sizes(split))
    if request.pseudo_label is not None:
        record.pseudo = pseudo_round(ws, record, request, shape, say or print)
    if problem := pseudo_test_problem(record, request, asked.test.sha256):
        raise JobError(problem)
    if add_twins and record.refit is None:
        record.refit = make_refit_round(ws, record, shape, now())
        (say or print)(record.refit.describe())
    if request.time_limit is None:  # with a time limit, members join the ledger as they start
        record.ensure_members(request.members)
    if record.refit is not None:  # the twins are members of the job: every run that trains it trains them
        record.ensure_members(record.refit.end)
        for twin in record.members[record.refit.first_member:record.refit.end]:
            twin.epochs = record.refit.epochs_of(twin.index)
    save_record(ws, record)
    plan = run_plan(ws, record, asked, shape, deadline)
    write_plan(ws, plan)
    return PreparedJob(record, created, plan)


def pseudo_round(ws: Workspace, record: JobRecord, request: TrainRequest, shape: OutputShape, say) -> PseudoRound:
    """The job's pseudo-label round: the recorded one when the threshold fits it, else made now from the
    finished members (the members this run adds are the ones that train on it)."""
    if record.pseudo is not None:
        if problem := pseudo_problem(record.pseudo, request.pseudo_label):
            raise JobError(problem)
        return record.pseudo
    if record.spec.folds:
        raise JobError(f"--pseudo-label with folds ({record.spec.folds} in job {record.name!r}) would leak labels into "
                       "the out-of-fold scores: the members that label the test rows trained on every fold; pseudo-label "
                       "a job with the shared split, made with --folds 0")
    if (request.n is not None or request.time_limit is None) and request.members <= len(record.members):
        raise JobError(f"--pseudo-label adds members that train on the pseudo-labels: job {record.name!r} has "
                       f"{len(record.members)} members, so pass --n above that (e.g. --n {2 * len(record.members)})")
    made = make_pseudo_round(ws, record, request.pseudo_label, shape, now())
    record.costs = None  # its members train on more rows: the first of them measures its costs again
    say(made.describe())
    return made


def pseudo_test_problem(record: JobRecord, request: TrainRequest, test_sha256: str) -> str | None:
    """Why the members this run would train on the job's pseudo-labels cannot: the rows are rows of another
    test file than the one the run found. None when they can, or no such member is to train."""
    round_ = record.pseudo
    if round_ is None or round_.test_sha256 == test_sha256 or request.members <= round_.first_member:
        return None
    return (f"the job's pseudo-labels are rows of another test file (sha256 {round_.test_sha256[:12]}; the one found "
            f"has {test_sha256[:12]}): put that file back to train {member_name(round_.first_member)} and the later "
            f"members, or train only the first {round_.first_member} with --n {round_.first_member}")


def run_plan(ws: Workspace, record: JobRecord, asked: AskedData, shape: OutputShape,
             deadline: float | None) -> RunPlan:
    """Everything a member of this run needs, and nothing it would have to look up: the job's training file,
    the test file as it is now."""
    members = JobLayout(ws, record.name)
    measured = []
    for member in record.members:
        try:
            metrics = read_metrics(members.member(member.index))
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
            continue
        measured.append((metrics.predict_ms_per_1k or 0) / 1e6)
    spec = record.spec
    return RunPlan(record.name, record.data_dir, spec, DataFile(str(asked.train_path), spec.train_sha256),
                   DataFile(str(asked.test_path), asked.test.sha256), shape.split_sha256, shape, deadline,
                   predict_speed(measured), member_epochs=twin_lengths(record.refit), pseudo=record.pseudo,
                   refit=record.refit)


def twin_lengths(round_: RefitRound | None) -> dict[int, int]:
    """The epochs the plan gives each refit twin: those the folds chose."""
    if round_ is None:
        return {}
    return {twin: round_.epochs_of(twin) for twin in range(round_.first_member, round_.end)}


@contextmanager
def job_lock(ws: Workspace, job: str, reporter):
    """Exclusive right to run the job; a lock left by a killed runner is taken over with a note."""
    lock = PidLock(JobLayout(ws, job).lock)
    try:
        lock.acquire()
    except LockHeld as held:
        holder = held.holder
        raise JobError(f"job {job!r} is already being trained by pid {holder.get('pid', '?')} on "
                       f"{holder.get('host', '?')} (since {holder.get('since', '?')}). Watch it with "
                       f"`ensemble status --job {job}`, or stop that process and rerun.") from None
    try:
        if lock.previous:
            reporter.event(f"job {job}: took over the lock of pid {lock.previous['pid']} "
                           f"(since {lock.previous.get('since', '?')}), which is no longer running")
        yield lock
    finally:
        lock.release()


def reconcile(ws: Workspace, record: JobRecord, shape: OutputShape) -> list[str]:
    """Make the ledger agree with the disk before a run: the files decide what is done (every output checked,
    the member's snapshots' too); a member the ledger calls running belongs to a runner that is gone (we hold
    the lock), so it is pending again."""
    notes = []
    survey = survey_models(ws, record, shape)
    to_predict = survey.to_predict_again()
    for member in record.members:
        status = member_status(member, survey, runner_alive=False)  # the runner that recorded it is gone
        if member.name in to_predict and not status.fault:
            note = member.predict_again(to_predict[member.name], retrain=member.name in survey.retrain)
        else:
            note = member.reconcile(status.done, status.fault)
        if note:
            notes.append(note)
    return notes


def make_executor(ws: Workspace, request: TrainRequest) -> tuple[object, list[float] | None]:
    """The executor and the compute capabilities of the GPUs it will use (for --precision auto).
    Wrong GPU ids and impossible combinations fail here, before anything is written."""
    if request.executor not in EXECUTORS:
        raise JobError(f"unknown executor {request.executor!r}; choose one of {', '.join(EXECUTORS)}")
    if request.retries < 0:
        raise JobError(f"--retries must be 0 or more, got {request.retries}")
    check_backend()
    if request.executor == "ray" and request.time_limit:
        # Ray queues every task it is given, so members would start whenever the cluster frees up, past the
        # limit too; the budget needs to decide each start itself
        raise JobError("--time-limit runs members on this machine (--executor local); with Ray, give --n instead")
    if request.executor == "ray":
        return RayExecutor(ws, request.gpus, request.per_gpu, request.address), None
    if request.address:
        raise JobError("--address is for --executor ray")
    gpus, capabilities = local_gpus(request)
    return LocalExecutor(ws, plan_slots(gpus, request.per_gpu, request.workers)), capabilities


def local_gpus(request: TrainRequest) -> tuple[list[int], list[float]]:
    """The ids of this machine's GPUs that the request's members use ([] for the CPU), and their compute
    capabilities; wrong ids fail here."""
    available = list_gpus()
    gpus = parse_gpus(request.gpus, available)
    return gpus, [available[g] for g in gpus]


def member_gpu_capabilities(request: TrainRequest) -> list[float] | None:
    """The compute capabilities of the GPUs the request's members use ([] for the CPU), what --precision and
    --width auto resolve for; None under Ray, whose workers' GPUs are not known here (this machine's stand in)."""
    return None if request.executor == "ray" else local_gpus(request)[1]


@contextmanager
def sigterm_as_interrupt():
    """`kill <runner>` stops the job as cleanly as Ctrl-C does."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_job(ws: Workspace, request: TrainRequest, reporter=None) -> TrainOutcome:
    """Train the first n members of the job the request names (or implies); resumable at any point. With
    --refit-full, the fold members first, then (once they all finished) a twin of each on every row."""
    if not request.refit_full:
        return train_members(ws, request, reporter)
    reporter = reporter or PlainReporter()
    started = time.time()
    folds = train_members(ws, fold_pass(ws, request), reporter)
    if folds.interrupted:
        return folds
    left = None if request.time_limit is None else request.time_limit - (time.time() - started)
    if not folds_finished(ws, folds.job) or (left is not None and left <= budget.end_margin(left)):
        reporter.event(f"refit-full: the twins start once every fold member is finished and time is left; rerun "
                       f"`ensemble train --job {folds.job} --refit-full` (a new session continues it)")
        return folds
    twins = train_members(ws, replace(request, job=folds.job, time_limit=left), reporter, add_twins=True)
    return replace(twins, trained=sorted(set(folds.trained) | set(twins.trained)),
                   skipped=[index for index in twins.skipped if index not in folds.trained],
                   created=folds.created, elapsed=time.time() - started)


def folds_finished(ws: Workspace, job: str) -> bool:
    """Whether the job has its refit round, or members on every fold, each done (under a time limit members join
    as they start, so a run the budget ended may have left folds without one; one it stopped early is done:
    its kept epoch sizes its twin, and it is not continued once the round exists)."""
    record = load_record(ws, job)
    if record is None or record.refit is not None:
        return record is not None
    return len(record.members) >= (record.spec.folds or 0) and all(
        member.state is MemberState.DONE for member in record.members)


def fold_pass(ws: Workspace, request: TrainRequest) -> TrainRequest:
    """The first run of a --refit-full request: the fold members. Under a time limit, K of them (unless --n
    says) in the share of the time that leaves their twins as long: a fold member trains on (K-1)/K of the
    rows, its twin on all of them, for the same epochs."""
    if request.time_limit is None:
        return request
    record = load_record(ws, request.job) if request.job else None
    folds = record.spec.folds if record is not None else request.spec.folds_meant()
    if not folds:
        return request  # refused by check_refit, before anything is written
    if record is not None and record.refit is not None:
        return request  # the round exists: one run trains what is left of the folds and the twins
    share = (folds - 1) / folds
    return replace(request, n=request.n or folds, time_limit=request.time_limit * share / (share + 1))


def train_members(ws: Workspace, request: TrainRequest, reporter=None, add_twins: bool = False) -> TrainOutcome:
    """One run over the job's members: the first n, and the twins of its refit round where it has one (made
    first with add_twins)."""
    started = time.time()
    deadline = started + request.time_limit - budget.end_margin(request.time_limit) if request.time_limit else None
    reporter = reporter or PlainReporter()
    request, record = resolve_request(ws, request, reporter.event)
    executor, gpu_capabilities = make_executor(ws, request)
    try:
        executor.prestart(request.n)  # the workers' imports overlap reading the data and planning
        asked = request_spec(ws, request, gpu_capabilities)
        spec = asked.spec
        name = request.job or latest_job_with_spec(ws, spec) or default_job_name()
        if not request.job:
            record = load_record(ws, name)
        check_spec(record, asked)  # before taking the lock: a refused run writes nothing
        check_refit(record, request, spec)
        for note in asked.notes:
            reporter.event(note)
        read_at = record_stamp(ws, name)
        with job_lock(ws, name, reporter), sigterm_as_interrupt():
            if record_stamp(ws, name) != read_at:  # another runner wrote it between our read and our lock
                record = load_record(ws, name)
                check_spec(record, asked)
            prepared = open_job(ws, name, asked, request, record, deadline, say=reporter.event, add_twins=add_twins)
            record, created = prepared.record, prepared.created
            if record.refit is not None:  # the twins are the job's last members, unless --n asks for more
                request = replace(request, n=record.refit.end if add_twins or request.n is None
                                  else max(record.refit.end, request.n))
            for note in reconcile(ws, record, prepared.plan.shape):
                reporter.event(note)
            wanted = [member.index for member in record.members[:request.members]]
            # a member the time limit stopped early is finished but not complete: a rerun continues it, unless a
            # refit round has sized its twin from the epoch it kept
            todo = [index for index in wanted if record.members[index].state is not MemberState.DONE
                    or (record.members[index].stopped_early
                        and not (record.refit and index < record.refit.first_member))]
            record.last_run = LastRun(pid=os.getpid(), host=platform.node(), started=now(), executor=executor.name,
                                      members=request.members, retries=request.retries,
                                      time_limit=request.time_limit, deadline=deadline,
                                      stall_timeout=request.stall_timeout)
            save_record(ws, record)
            reporter.event(run_heading(name, created, request, spec, deadline, len(todo), len(wanted) - len(todo)))
            run = JobRun(ws, record, prepared.plan, executor, reporter, RunOrder(wanted, todo, request.retries,
                                                                                request.stall_timeout),
                         TimeBudget(spec.epochs, deadline, request.members, costs=record.costs,
                                    stretch=not record.epochs_asked, multiple=spec.snapshots, started=started,
                                    time_limit=request.time_limit,
                                    every=bool(request.refit_full) and not add_twins and record.refit is None),
                         request.time_limit)
            interrupted = False
            try:
                run.run()
            except KeyboardInterrupt:
                interrupted = True
                run.stop()
                reporter.event(f"interrupted: members stopped; rerun the same command to resume job {name}")
            except NoSpace:
                run.stop()
                reporter.close(run.overview())
                raise
            reporter.close(run.overview())
            if deadline is not None:  # a twin's costs are not a fold member's (all rows, no validation pass)
                keep_spend(ws, run, request.time_limit, time.time() - started, keep_costs=not add_twins)
    finally:
        executor.close()
    stopped = {i: run.member(i).epoch for i in run.trained if run.member(i).stopped_early}
    outcome = TrainOutcome(name, run.trained, [i for i in wanted if i not in todo], created,
                           sorted(run.failed), interrupted, stopped, run.not_started, time.time() - started)
    if run.failed and not interrupted:
        raise MemberFailed("\n".join(run.failed[index] for index in sorted(run.failed))
                           + "\nThe other members finished. Fix the cause and rerun the same command "
                             f"({resume_command(run.record)}): finished members are kept, failed ones resume "
                             "from their last finished epoch.")
    return outcome


def keep_spend(ws: Workspace, run: JobRun, time_limit: float, used_s: float, keep_costs: bool = True) -> None:
    """A --time-limit run's end: the job keeps the costs its members measured (a rerun plans from them) and
    what the run used of its budget."""
    record = run.record
    if keep_costs:
        record.costs = run.budget.measured_costs() or record.costs
    spend = record.budget or BudgetSpend(time_limit)
    record.budget = replace(spend, time_limit=time_limit, used_s=used_s, members_s=run.busy_seconds())
    with suppress(NoSpace):
        save_record(ws, record)


def record_stamp(ws: Workspace, job: str) -> int | None:
    """When job.json was last written (None: not yet)."""
    try:
        return JobLayout(ws, job).record.stat().st_mtime_ns
    except OSError:
        return None


def run_heading(name: str, created: bool, request: TrainRequest, spec: JobSpec, deadline: float | None,
                to_train: int, done: int) -> str:
    size = (f"up to {request.members}" if request.n else "as many") + " members in " \
        f"{budget.format_duration(request.time_limit)}" if deadline else f"{request.members}"
    return (f"job {name} ({'new' if created else 'continued'}): {size} x {spec.net_described} "
            f"(recipe {spec.recipe}), {spec.epochs} epochs, {spec.schedule} lr {spec.learning_rate:g}, "
            f"augment {spec.augment}, precision {spec.precision}"
            + (f", {spec.snapshots} snapshots" if spec.snapshots > 1 else "")
            + (", TTA" if spec.tta else "")
            + (f", {spec.folds} folds (member i holds out fold i mod {spec.folds})" if spec.folds
               else f", one shared {spec.val_split:g} validation split")
            + f"; {to_train} to train, {done} already done")
