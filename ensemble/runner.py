"""Run a job: create or continue its record, then train every unfinished member on the slots it was given.

The runner holds `jobs/<job>/lock` for the whole run and is the only writer of `jobs/<job>/job.json`. It
starts member processes through an executor (local processes, or Ray tasks), polls them and their
progress files, retries the ones that die, and keeps the ledger current: per member its state, attempts,
device, pid, start and end times, last finished epoch and validation accuracy. Members know nothing about
placement: a member is `python -m ensemble.train --job J --member I` with an environment.
"""
from __future__ import annotations

import os
import platform
import signal
import statistics
import time
from collections import Counter, deque
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import budget, jobs
from .atomic import NO_SPACE_EXIT, NoSpace, low_on_space
from .data import stratified_split
from .devices import Slot, check_backend, list_gpus, parse_gpus, plan_slots
from .executors import EXECUTORS, Launched, LocalExecutor, RayExecutor
from .jobs import JobError, JobRecord, JobSpec
from .ledger import LastRun, MemberEntry, MemberState
from .locks import LockHeld, PidLock
from .outputs import ModelKind, OutputShape, job_output_shape, output_problem, read_metrics, survey_models
from .progress import MemberLine, Overview, PlainReporter, epochs_done, job_overview, member_lines
from .workspace import Workspace

LOG_TAIL_LINES = 15
POLL_S = 0.25
STOP_GRACE_S = 5.0  # Ctrl-C: members get SIGTERM, then SIGKILL after this long
DEFAULT_MEMBERS = 10


class MemberFailed(JobError):
    """Members exhausted their retries; the message carries each one's log tail."""


@dataclass(frozen=True)
class TrainRequest:
    n: int | None              # members; None: 10, or with a time limit as many as fit
    data_dir: Path | None      # None: the workspace's data/ (or, continuing a named job, the job's folder)
    job: str | None = None
    recipe: str | None = None  # None: the model's own recipe (cnn11's by default)
    model: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    schedule: str | None = None
    augment: str | None = None
    rotation: float | None = None
    keep: str | None = None
    snapshots: int | None = None
    tta: bool | None = None
    precision: str | None = None
    seed: int | None = None         # None: 0
    val_split: float | None = None  # None: 0.1
    limit_train: int | None = None
    gpus: str | None = None        # "0,1", "all", "cpu"; None: every GPU there is, else the CPU
    per_gpu: int | None = None     # members sharing one GPU at once
    workers: int | None = None     # members at once on the CPU
    retries: int = 2               # further attempts for a member whose process dies
    executor: str = "local"
    address: str | None = None     # Ray cluster address
    time_limit: float | None = None  # seconds (budget.parse_duration)
    task: str | None = None          # the data layout (formats.FORMATS); None: detected from the folder

    @property
    def members(self) -> int:
        """The member count, or with a time limit the cap on it."""
        if self.n is not None:
            return self.n
        return budget.UNLIMITED_MEMBERS if self.time_limit else DEFAULT_MEMBERS


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

    def budget_summary(self, time_limit: float, epochs: int) -> str:
        """What a --time-limit run fitted into its budget."""
        complete = len(self.trained) - len(self.stopped_early)
        parts = [f"{complete} complete member{'s' if complete != 1 else ''}"]
        if self.stopped_early:
            parts.append("stopped early: " + ", ".join(f"member-{i:02d} at epoch {e}/{epochs}"
                                                        for i, e in sorted(self.stopped_early.items())))
        if self.not_started:
            parts.append(f"{self.not_started} not started")
        return (f"time limit {budget.format_duration(time_limit)}: fitted {'; '.join(parts)} "
                f"in {budget.format_duration(self.elapsed)}")


# What decides a job's spec and data. A request naming an existing job and none of these continues that
# job exactly as it was created: `ensemble train --job J` is all a rerun needs.
SPEC_OPTIONS = ("data_dir", "recipe", "model", "epochs", "batch_size", "learning_rate", "schedule", "augment",
                "rotation", "keep", "snapshots", "tta", "precision", "seed", "val_split", "limit_train", "task")


def resolve_request(ws: Workspace, request: TrainRequest, say=print) -> TrainRequest:
    """The request with nothing left to guess: a bare `--job J` of an existing job takes the job's spec, data
    folder and member count; anything else gets the documented defaults. A named job's damaged record is
    rebuilt here, before anything reads it (jobs.recover_record)."""
    record = jobs.recover_record(ws, request.job, say) if request.job else None
    if record is not None and all(getattr(request, name) is None for name in SPEC_OPTIONS):
        spec = record.spec
        n = request.n if request.n is not None or request.time_limit else len(record.members) or None
        return replace(request, n=n, data_dir=record.data_path, recipe=spec.recipe, model=spec.model,
                       epochs=spec.epochs, batch_size=spec.batch_size, learning_rate=spec.learning_rate,
                       schedule=spec.schedule, augment=spec.augment, rotation=spec.rotation, keep=spec.keep,
                       snapshots=spec.snapshots, tta=spec.tta, precision=spec.precision, seed=spec.seed,
                       val_split=spec.val_split, limit_train=spec.limit_train, task=spec.task)
    return replace(request, data_dir=Path(request.data_dir) if request.data_dir is not None else ws.data_dir,
                   seed=0 if request.seed is None else request.seed,
                   val_split=0.1 if request.val_split is None else request.val_split)


# --- the job record -----------------------------------------------------------------------------

def request_spec(ws: Workspace, request: TrainRequest, gpu_capabilities: list[float] | None) -> tuple[JobSpec, object]:
    if request.members < 1:
        raise JobError(f"--n must be at least 1, got {request.n}")
    if request.time_limit is not None and request.time_limit <= 0:
        raise JobError(f"--time-limit must be more than 0 seconds, got {request.time_limit}")
    fmt = jobs.resolve_format(request.data_dir, request.task)
    train, test = jobs.read_job_data(ws, request.data_dir, request.limit_train, fmt)
    classes = np.unique(train.labels)
    if len(classes) < 2:
        raise JobError(f"{request.data_dir}: every training row has label {classes[0]}; a classifier needs at "
                       "least two classes")
    spec = JobSpec.from_options(recipe=request.recipe, model=request.model, epochs=request.epochs,
                                batch_size=request.batch_size, learning_rate=request.learning_rate,
                                schedule=request.schedule, augment=request.augment, rotation=request.rotation,
                                keep=request.keep, snapshots=request.snapshots, tta=request.tta,
                                precision=request.precision, seed=request.seed, val_split=request.val_split,
                                limit_train=request.limit_train, train_sha256=train.sha256,
                                test_sha256=test.sha256, task=fmt.name, classes=tuple(classes),
                                gpu_capabilities=gpu_capabilities)
    return spec, train


def check_spec(record: JobRecord | None, spec: JobSpec) -> None:
    if record is None:
        return
    differences = jobs.spec_differences(record.spec, spec)
    if differences:
        raise JobError(f"job {record.name!r} exists with a different spec:\n  " + "\n  ".join(differences)
                       + "\nRerun with the job's options, or pick a new name with --job.")


def prepare_job(ws: Workspace, request: TrainRequest, gpu_capabilities: list[float] | None = None
                ) -> tuple[JobRecord, bool]:
    """The job record to run (new or continued) with its split saved; refuses a changed spec.
    Callers that run members hold the job's lock around this (see `run_job`)."""
    request = resolve_request(ws, request)
    spec, train = request_spec(ws, request, gpu_capabilities)
    name = request.job or jobs.latest_job_with_spec(ws, spec) or jobs.default_job_name()
    return open_record(ws, name, spec, train, request)


def open_record(ws: Workspace, name: str, spec: JobSpec, train, request: TrainRequest) -> tuple[JobRecord, bool]:
    record = jobs.load_record(ws, name)
    check_spec(record, spec)
    created = record is None
    if created:
        record = jobs.new_record(name, spec, Path(request.data_dir).resolve())
        train_index, val_index = stratified_split(train.labels, spec.val_split, spec.seed)
        jobs.save_split(ws, name, train_index, val_index, jobs.class_indices(train.labels, spec.classes)[val_index])
    else:
        record.data_dir = str(Path(request.data_dir).resolve())
    if request.time_limit is None:  # with a time limit, members join the ledger as they start
        record.ensure_members(request.members)
    jobs.save_record(ws, record)
    return record, created


@contextmanager
def job_lock(ws: Workspace, job: str, reporter):
    """Exclusive right to run the job; a lock left by a killed runner is taken over with a note."""
    lock = PidLock(jobs.lock_path(ws, job))
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
    finished = {model.name for model in survey.finished if model.kind is ModelKind.MEMBER}
    for member in record.members:
        faults = [problem for model, problem in survey.damaged.items()
                  if model == member.name or model.startswith(f"{member.name}-snap")]
        note = member.reconcile(member.name in finished, faults[0] if faults else None)
        if note:
            notes.append(note)
    return notes


# --- placement ----------------------------------------------------------------------------------

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
    available = list_gpus()
    gpus = parse_gpus(request.gpus, available)
    return LocalExecutor(ws, plan_slots(gpus, request.per_gpu, request.workers)), [available[g] for g in gpus]


# --- one run ------------------------------------------------------------------------------------

class JobRun:
    """Trains the listed members on the executor's slots: the poll loop. Every change of a member goes
    through its ledger transition (ledger.MemberEntry) and is saved; what the user sees is progress.py's."""

    def __init__(self, ws: Workspace, record: JobRecord, executor, reporter, retries: int, wanted: list[int],
                 todo: list[int], shape: OutputShape, deadline: float | None = None, cap: int | None = None):
        self.ws, self.record, self.executor, self.reporter, self.retries = ws, record, executor, reporter, retries
        self.job = record.name
        self.epochs = record.spec.epochs
        self.indices = wanted  # the members this run answers for (the first n of the ledger)
        self.queue = deque(todo)
        self.deadline, self.cap = deadline, cap  # --time-limit: members are added while time is left
        self.free: list[Slot] = executor.slots_for(cap if deadline else len(todo))
        self.epoch_seconds: dict[tuple[int, int], float] = {}  # (member, epoch) -> seconds, as members report
        self.member_walls: list[float] = []  # whole-member seconds of members finished in this run
        self.predict_measured: list[float] = []  # seconds finished members spent predicting
        self.not_started = 0
        self.running: dict[int, Launched] = {}
        self.progress: dict[int, dict] = {}  # this attempt's progress file of each running member, read each poll
        self.tries: Counter[int] = Counter()
        self.trained: list[int] = []
        self.failed: dict[int, str] = {}
        self.started = time.monotonic()
        self.epochs_at_start = epochs_done(self.wanted_members(), self.progress, self.epochs)
        self.shape = shape  # what a finished member's outputs must be

    # ledger
    def save(self) -> None:
        jobs.save_record(self.ws, self.record)

    def member(self, index: int) -> MemberEntry:
        return self.record.members[index]

    def wanted_members(self) -> list[MemberEntry]:
        return [self.member(index) for index in self.indices]

    # the loop
    def run(self) -> None:
        while True:
            self.fill_slots()
            if not self.running:
                return
            time.sleep(POLL_S)
            for index in list(self.running):
                self.follow(index)
            self.reporter.update(self.lines(), self.overview())

    def fill_slots(self) -> None:
        """Start queued members (then, under a time limit, new ones) on free slots while time covers them.
        When nothing runs and the next member does not fit, the rest are given up for this run."""
        while self.free and (self.queue or self.may_grow()):
            index = self.queue[0] if self.queue else None
            if not self.time_covers(index):
                if not self.running:
                    self.not_started = len(self.queue)
                    self.queue.clear()
                return  # running members may finish sooner than estimated: ask again after the next poll
            if index is None:
                index = self.add_member()
            self.queue.remove(index)
            self.start(index, self.free.pop(0))

    # the time budget
    def may_grow(self) -> bool:
        return self.deadline is not None and len(self.record.members) < self.cap and time.time() < self.deadline

    def add_member(self) -> int:
        self.record.ensure_members(len(self.record.members) + 1)
        index = len(self.record.members) - 1
        self.indices.append(index)
        self.queue.append(index)
        self.save()
        return index

    def time_covers(self, index: int | None) -> bool:
        """Without a time limit always; with one, whether the member's (None: a new member's) estimated time
        fits what is left."""
        if self.deadline is None:
            return True
        done = 0 if index is None else jobs.resumable_epochs(self.ws.member_dir(self.job, index), self.epochs)
        remaining = self.epochs - done
        estimate = budget.member_seconds(self.member_walls, list(self.epoch_seconds.values()), self.epochs,
                                         max(remaining, 1))
        return budget.fits(time.time(), self.deadline, estimate)

    def start(self, index: int, slot: Slot) -> None:
        member = self.member(index)
        finished = jobs.resumable_epochs(self.ws.member_dir(self.job, index), self.epochs)
        launched = self.executor.start(self.job, index, slot)
        launched.resumed_from = finished
        self.tries[index] += 1
        self.running[index] = launched
        member.start(slot=slot.label, device=slot.device, executor=self.executor.name, pid=launched.pid,
                     host=platform.node() if launched.pid else None, epoch=finished, when=jobs.now())
        self.save()
        where = f"on {slot.label}" if self.executor.name == "local" else f"as a Ray task ({slot.label})"
        resumed = ("writes its outputs (all epochs trained)" if finished >= self.epochs
                   else f"resumes after epoch {finished}/{self.epochs}" if finished else "starts")
        self.reporter.event(f"{member.name} (seed {member.seed}) {resumed} {where}, attempt "
                            f"{member.attempts}; log {jobs.log_path(self.ws, self.job, index)}")

    def follow(self, index: int) -> None:
        launched = self.running[index]
        member = self.member(index)
        progress = jobs.read_progress(self.ws, self.job, index)
        if progress.get("updated", 0) < launched.started - 1:  # an earlier attempt's file: nothing yet
            progress = {}
        self.progress[index] = progress
        notes = progress.get("notes") or []
        for note in notes[launched.notes_seen:]:  # what the member found and did about it: damaged files
            self.reporter.event(f"{member.name}: {note}")
        launched.notes_seen = len(notes)
        if progress:
            changed = False
            if launched.pid is None and progress.get("pid"):  # Ray: the member says where it runs
                launched.pid = progress["pid"]
                device = progress.get("cuda_visible_devices")
                member.placed(pid=progress["pid"], host=progress.get("host"),
                              device=f"gpu:{device}" if device else "cpu", ray_node_id=progress.get("ray_node_id"))
                changed = True
            changed = member.report(progress.get("epoch"), progress.get("val_accuracy")) or changed
            if progress.get("epoch_seconds") and progress.get("epoch"):
                self.epoch_seconds[(index, progress["epoch"])] = progress["epoch_seconds"]
            if changed:
                self.save()
        returncode = self.executor.poll(launched)
        if returncode is not None:
            del self.running[index], self.progress[index]
            self.free.append(launched.slot)
            self.finish(index, returncode, launched)

    def finish(self, index: int, returncode: int, launched: Launched) -> None:
        member = self.member(index)
        member_dir = self.ws.member_dir(self.job, index)
        if returncode == 0 and output_problem(member_dir, self.shape, ModelKind.MEMBER) is None:
            self.finished(index, member, read_metrics(member_dir), launched)
            return
        if returncode == NO_SPACE_EXIT or (returncode != 0 and low_on_space(member_dir)):
            # retrying cannot help; the member keeps its committed epochs for the rerun after space is freed
            member.retry("stopped: the disk is full; resumes from its last committed epoch", returncode=returncode,
                         when=jobs.now())
            with suppress(NoSpace):
                self.save()
            raise NoSpace(member_dir, what=f"for {member.name} in")
        why = describe_exit(returncode)
        if self.tries[index] <= self.retries:
            member.retry(f"attempt {member.attempts} {why}; retrying", returncode=returncode, when=jobs.now())
            self.save()
            self.queue.appendleft(index)  # its slot is free now; it resumes from its training state
            self.reporter.event(f"{member.name} {why} on attempt {member.attempts}; "
                                f"retry {self.tries[index]} of {self.retries}, from its last finished epoch")
            return
        log = jobs.log_path(self.ws, self.job, index)
        tail = jobs.log_tail(log, LOG_TAIL_LINES)
        member.fail(f"{why} after {self.tries[index]} attempts in this run", returncode=returncode, when=jobs.now())
        self.save()
        self.failed[index] = (f"{member.name} {why} after {self.tries[index]} attempts. Last lines of {log}:\n  "
                              + "\n  ".join(tail))
        self.reporter.event(self.failed[index])

    def finished(self, index: int, member: MemberEntry, metrics: dict, launched: Launched) -> None:
        member.finish(epoch=metrics["epochs"], epochs=self.epochs, val_accuracy=metrics["val_accuracy"],
                      best_epoch=metrics["best_epoch"], returncode=0, when=jobs.now())
        self.save()
        self.trained.append(index)
        snapshots = self.record.spec.snapshots
        if metrics.get("predict_ms_per_1k"):  # measured on test (all TTA views); validation costs alike
            self.predict_measured.append(metrics["predict_ms_per_1k"] / 1e6 * (metrics["n_val"] + metrics["n_test"])
                                         * (1 + (snapshots if snapshots > 1 else 0)))
        trained_now = metrics["epochs"] - (launched.resumed_from or 0)
        if not member.stopped_early and trained_now > 0:
            self.member_walls.append((time.time() - launched.started) * self.epochs / trained_now)
        how = (f"stopped early at epoch {metrics['epochs']}/{self.epochs} (time limit)" if member.stopped_early
               else "done")
        self.reporter.event(f"{member.name} {how}: val_acc {metrics['val_accuracy']:.4f} "
                            f"(best epoch {metrics['best_epoch']}), {metrics['fit_seconds']:.0f}s fit")

    def stop(self) -> None:
        """Ctrl-C (or a full disk): stop every member, leave each pending with its training state, so a rerun
        resumes. The ledger is saved where the disk allows; the next run reconciles it with the files anyway."""
        running = list(self.running.values())
        self.executor.stop(running, STOP_GRACE_S)
        for launched in running:
            self.member(launched.index).interrupt(when=jobs.now())
        self.running.clear()
        self.progress.clear()
        with suppress(NoSpace):
            self.save()

    # what the reporter shows (progress.py draws it)
    def lines(self) -> list[MemberLine]:
        running = [(self.member(index), launched.slot.label) for index, launched in sorted(self.running.items())]
        return member_lines(running, self.progress, self.epochs)

    def predict_seconds(self) -> float:
        """A member's prediction time (validation and test, its TTA views and snapshots) as the members that
        finished in this run measured it; 0 until one has."""
        return statistics.median(self.predict_measured) if self.predict_measured else 0.0

    def overview(self) -> Overview:
        slots = max(len(self.free) + len(self.running), 1)
        return job_overview(self.job, self.wanted_members(), len(self.failed), self.progress, self.epochs,
                            time.monotonic() - self.started, self.epochs_at_start,
                            predicted_s=len(self.trained) * self.predict_seconds() / slots,
                            predict_each_s=self.predict_seconds() / slots)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


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
    """Train the first n members of the job the request names (or implies); resumable at any point."""
    started = time.time()
    deadline = started + request.time_limit - budget.end_margin(request.time_limit) if request.time_limit else None
    reporter = reporter or PlainReporter()
    request = resolve_request(ws, request, reporter.event)
    executor, gpu_capabilities = make_executor(ws, request)
    try:
        spec, train = request_spec(ws, request, gpu_capabilities)
        name = request.job or jobs.latest_job_with_spec(ws, spec) or jobs.default_job_name()
        check_spec(jobs.load_record(ws, name), spec)  # before taking the lock: a refused run writes nothing
        with job_lock(ws, name, reporter), sigterm_as_interrupt():
            record, created = open_record(ws, name, spec, train, request)
            jobs.load_split(ws, record, say=reporter.event)  # made again here when missing or damaged
            shape = job_output_shape(ws, record)  # what every finished output of the job must be
            for note in reconcile(ws, record, shape):
                reporter.event(note)
            wanted = [member.index for member in record.members[:request.members]]
            # a member the time limit stopped early is finished but not complete: a rerun continues it
            todo = [index for index in wanted if record.members[index].state is not MemberState.DONE
                    or record.members[index].stopped_early]
            record.last_run = LastRun(pid=os.getpid(), host=platform.node(), started=jobs.now(), executor=executor.name,
                                      members=request.members, retries=request.retries,
                                      time_limit=request.time_limit, deadline=deadline)
            jobs.save_record(ws, record)
            size = (f"up to {request.members}" if request.n else "as many") + " members in " \
                f"{budget.format_duration(request.time_limit)}" if deadline else f"{request.members}"
            reporter.event(f"job {name} ({'new' if created else 'continued'}): {size} x {spec.model} "
                           f"(recipe {spec.recipe}), {spec.epochs} epochs, {spec.schedule} lr {spec.learning_rate:g}, "
                           f"augment {spec.augment}, precision {spec.precision}"
                           + (f", {spec.snapshots} snapshots" if spec.snapshots > 1 else "")
                           + (", TTA" if spec.tta else "")
                           + f"; {len(todo)} to train, {len(wanted) - len(todo)} already done")
            run = JobRun(ws, record, executor, reporter, request.retries, list(wanted), todo, shape, deadline,
                         request.members)
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
    finally:
        executor.close()
    stopped = {i: run.member(i).epoch for i in run.trained if run.member(i).stopped_early}
    outcome = TrainOutcome(name, run.trained, [i for i in wanted if i not in todo], created,
                           sorted(run.failed), interrupted, stopped, run.not_started, time.time() - started)
    if run.failed and not interrupted:
        raise MemberFailed("\n".join(run.failed[index] for index in sorted(run.failed))
                           + "\nThe other members finished. Fix the cause and rerun the same command "
                             f"({jobs.resume_command(run.record)}): finished members are kept, failed ones resume "
                             "from their last finished epoch.")
    return outcome
