"""The poll loop of one run: start members on free slots, follow their progress, retry or fail the ones
that die, keep the ledger current. The time budget is budget.TimeBudget's, what is shown is view.py's."""
from __future__ import annotations

import math
import platform
import signal
import time
from collections import Counter, deque
from contextlib import suppress
from dataclasses import dataclass, replace

from ..job.layout import JobLayout, log_tail, resumable_epochs
from ..job.ledger import MemberEntry, MemberState
from ..job.outputs import Metrics, OutputShape, output_problem, read_metrics
from ..job.plan import BudgetRules, RunPlan, predict_speed, write_plan
from ..job.planner import BudgetSpend, Costs
from ..job.progress import NO_PROGRESS, Progress, read_progress
from ..job.record import JobRecord, now, save_record
from ..store.atomic import NO_SPACE_EXIT, NoSpace, low_on_space
from ..store.workspace import Workspace
from .budget import TimeBudget, format_duration, short_member_note
from .devices import Slot
from .executors import Launched
from .stall import StallWatch, stall_limits
from .progress import MemberLine, Overview, epochs_done
from .view import run_lines, run_overview

LOG_TAIL_LINES = 15
POLL_S = 0.25
STOP_GRACE_S = 5.0  # Ctrl-C: members get SIGTERM, then SIGKILL after this long


@dataclass(frozen=True)
class RunOrder:
    """What one run is asked to do: the members it answers for, those still to train, and how often a
    member whose process dies is tried again."""

    wanted: list[int]  # the first n of the ledger
    todo: list[int]
    retries: int
    stall_timeout: float | None = None  # --stall-timeout seconds; None: run.stall's default


class JobRun:
    """Trains the listed members on the executor's slots: the poll loop. Every change of a member goes
    through its ledger transition (ledger.MemberEntry) and is saved."""

    def __init__(self, ws: Workspace, record: JobRecord, plan: RunPlan, executor, reporter, order: RunOrder,
                 budget: TimeBudget, time_limit: float | None = None):
        self.ws, self.record, self.plan, self.executor, self.reporter = ws, record, plan, executor, reporter
        self.layout = JobLayout(ws, record.name)
        self.job, self.epochs, self.retries = record.name, record.spec.epochs, order.retries
        self.stall_timeout = order.stall_timeout
        self.time_limit = time_limit
        self.watches: dict[int, StallWatch] = {}  # each running member's updates, on this runner's clock
        self.stalled: dict[int, str] = {}        # running members shown as stalled: what was seen
        self.indices = list(order.wanted)
        self.queue = deque(order.todo)
        self.budget = budget
        self.free: list[Slot] = executor.slots_for(budget.cap if budget.deadline else len(order.todo))
        if budget.deadline is not None:
            budget.slots = max(len(self.free), 1)
            self.plan = replace(plan, budget=BudgetRules(math.ceil(self.members_left() / budget.slots),
                                                         budget.stretch, budget.multiple, budget.every))
            write_plan(ws, self.plan)
        self.not_started = 0
        self.running: dict[int, Launched] = {}
        self.progress: dict[int, Progress] = {}  # this attempt's progress file of each running member, read each poll
        self.tries: Counter[int] = Counter()
        self.trained: list[int] = []
        self.failed: dict[int, str] = {}
        self.started = time.monotonic()
        self.ended_attempts_s = 0.0  # seconds member processes of this run ran, those that ended
        self.epochs_at_start = epochs_done(self.wanted_members(), self.progress, self.epochs)

    @property
    def shape(self) -> OutputShape:
        return self.plan.shape

    # ledger
    def save(self) -> None:
        save_record(self.ws, self.record)

    def member(self, index: int) -> MemberEntry:
        return self.record.members[index]

    def wanted_members(self) -> list[MemberEntry]:
        return [self.member(index) for index in self.indices]

    def epochs_of(self, index: int) -> int:
        """A member's own length: the planner's under a time limit, else the spec's."""
        return self.member(index).epochs or self.epochs

    def members_left(self) -> int:
        """Members this run may still start: the queue, and the new ones a time limit may add."""
        return len(self.queue) + max((self.budget.cap or 0) - len(self.record.members), 0)

    # the loop
    def run(self) -> None:
        if self.budget.deadline is not None and self.budget.costs is not None:
            self.announce_plan(time.time())
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
        Under a time limit a member without a length of its own gets one from the planner, once the job
        has costs (before, it calibrates). When nothing runs and the next member does not fit, the rest are
        given up for this run."""
        while self.free and (self.queue or self.budget.may_grow(len(self.record.members), time.time())):
            index = self.queue[0] if self.queue else None
            done = 0 if index is None else resumable_epochs(self.layout.member(index), self.epochs_of(index))
            planned, last = None, False
            if done:  # it has a length of its own (its config.json) and epochs behind it
                fits = self.budget.covers(done, time.time(), self.epochs_of(index))
            elif self.plan.is_twin(index):  # a refit twin: its length is the one the folds chose; the job's
                # costs are a fold member's, on (K-1)/K of the rows a twin trains on
                folds = self.record.spec.folds
                fits = self.budget.covers(0, time.time(), math.ceil(self.epochs_of(index) * folds / (folds - 1)))
            else:
                first = not any(member.state is MemberState.DONE for member in self.record.members)
                own = self.budget.next_slot_plan(time.time(), self.members_left(), first)
                planned, last = (own[0] if own else 0, len(own) == 1) if own is not None else (None, False)
                fits = planned != 0 if planned is not None else self.budget.covers(0, time.time())
            if not fits:
                if not self.running:
                    self.not_started = len(self.queue)
                    self.queue.clear()
                return  # running members may finish sooner than estimated: ask again after the next poll
            if index is None:
                index = self.add_member()
            self.queue.remove(index)
            if planned:
                self.give_length(index, planned, last)
            self.start(index, self.free.pop(0))

    def busy_seconds(self) -> float:
        """Seconds member processes ran in this run, per slot: what the budget was spent on."""
        running = sum(time.time() - launched.started for launched in self.running.values())
        return (self.ended_attempts_s + running) / max(self.budget.slots, 1)

    def give_length(self, index: int, epochs: int, last: bool = False) -> None:
        """The planner's length for a member about to start: in the ledger and in the plan it reads. `last`: its
        slot's plan has no member after it, so it fits its length to the deadline from the job's costs."""
        self.member(index).epochs = epochs
        others = tuple(member for member in self.plan.last_members if member != index)
        self.plan = replace(self.plan, member_epochs={**self.plan.member_epochs, index: epochs},
                            last_members=tuple(sorted({*others, index})) if last else others,
                            costs=self.budget.measured_costs())
        write_plan(self.ws, self.plan)

    def announce_plan(self, when: float, running: tuple[tuple[int, float], ...] = ()) -> None:
        """The whole plan for the time left, as the job's costs say: printed and recorded."""
        plan = self.budget.plan(when, self.members_left(), self.record.spec.tta, running)
        if plan is None:
            return
        if self.queue and all(self.plan.is_twin(index) for index in self.queue):  # their lengths are fixed
            slots = max(self.budget.slots, 1)
            lengths = [self.epochs_of(index) for index in self.queue]
            plan = replace(plan, slots=tuple(tuple(lengths[position::slots]) for position in range(slots)))
        self.record.budget = BudgetSpend(self.time_limit, plan)
        self.save()
        self.reporter.event(f"budget plan: {plan.describe()} (start-up {plan.costs.startup_s:.0f} s, "
                            f"{plan.costs.epoch_s:.1f} s an epoch, predictions {plan.costs.predict_s:.0f} s a member)")

    def calibrated(self, index: int, launched: Launched, progress: Progress) -> None:
        """The job's first member measured its costs and chose its own length: the job keeps the estimate."""
        costs = self.budget.costs = self.record.costs = Costs.from_dict(progress.costs)
        now = time.time()
        self.announce_plan(now, ((progress.epochs, costs.finishing_s(progress.epochs, 0, progress.final_share)),))
        if progress.epochs == 1 and progress.final_share:  # the plan's "1 epoch" is only part of one
            self.reporter.event(f"{self.member(index).name}: {short_member_note(costs, progress.final_share)}")

    def replanned(self, progress: Progress) -> None:
        """A member sized itself again from the epochs it trained (member.callbacks.replan): the job keeps the
        costs it re-planned with (its epochs as measured, in place of the probe's), and the plan for the time
        left is printed and recorded again."""
        own = Costs.from_dict(progress.costs) if progress.costs else None
        if own:
            self.budget.costs = self.record.costs = own
        costs = own or self.budget.measured_costs()
        if self.budget.deadline is None or costs is None:
            return
        # what the member still needs as it planned it: its own epochs' seconds, its partial last epoch's steps
        left = costs.finishing_s(progress.epochs, progress.epoch or 0, progress.final_share)
        self.announce_plan(time.time(), ((progress.epochs, left),))

    def add_member(self) -> int:
        """A new member under a time limit: it joins the ledger as it starts."""
        self.record.ensure_members(len(self.record.members) + 1)
        index = len(self.record.members) - 1
        self.indices.append(index)
        self.queue.append(index)
        self.save()
        return index

    def start(self, index: int, slot: Slot) -> None:
        member = self.member(index)
        finished = resumable_epochs(self.layout.member(index), self.epochs_of(index))
        launched = self.executor.start(self.job, index, slot)
        launched.resumed_from = finished
        self.tries[index] += 1
        self.running[index] = launched
        self.watches[index] = StallWatch(time.monotonic(), may_queue=self.executor.may_queue)
        member.start(slot=slot.label, device=slot.device, executor=self.executor.name, pid=launched.pid,
                     host=platform.node() if launched.pid else None, epoch=finished, when=now())
        self.save()
        self.reporter.event(start_text(member, finished, self.epochs_of(index), self.executor.where(slot),
                                       self.layout.log(index)))

    def follow(self, index: int) -> None:
        launched = self.running[index]
        member = self.member(index)
        progress = read_progress(self.layout.progress(index))
        if progress.updated < launched.started - 1:  # an earlier attempt's file: nothing yet
            progress = NO_PROGRESS
        self.progress[index] = progress
        for note in progress.notes[launched.notes_seen:]:  # what the member found and did about it: damaged files
            self.reporter.event(f"{member.name}: {note}")
        launched.notes_seen = len(progress.notes)
        if progress.known:
            # the epoch first: a re-plan at its end is announced with it counted. A partial last epoch is no
            # measure of a whole one (at 12000 rows, 2.7 s against 12)
            partial = bool(progress.final_share) and progress.epoch == progress.epochs
            if progress.epoch_seconds and progress.epoch and not partial:
                if progress.epoch > (launched.resumed_from or 0):  # not the epoch an earlier attempt ended with
                    self.budget.epoch_measured(index, progress.epoch, progress.epoch_seconds,
                                               first=progress.epoch == (launched.resumed_from or 0) + 1)
            if progress.epochs and progress.epochs != member.epochs:  # what it trains, as it says
                replanned = bool(member.epochs and progress.epoch)  # changed mid-training: it re-planned itself
                member.epochs = progress.epochs
                self.save()
                if replanned:
                    self.replanned(progress)
            if progress.costs and progress.epochs and self.budget.costs is None and self.budget.deadline:
                self.calibrated(index, launched, progress)
            if ledger_from_progress(member, launched, progress):
                self.save()
        returncode = self.executor.poll(launched)
        if returncode is None:
            returncode = self.watch(index, launched, progress)
        if returncode is not None:
            del self.running[index], self.progress[index], self.watches[index]
            self.stalled.pop(index, None)
            self.free.append(launched.slot)
            self.ended_attempts_s += time.time() - launched.started
            self.finish(index, returncode, launched)

    def watch(self, index: int, launched: Launched, progress: Progress) -> int | None:
        """A running member whose progress stopped: shown as stalled, then killed (its exit code returned,
        the kill having made it exit) so that it is retried from its last committed epoch."""
        watch, now_s = self.watches[index], time.monotonic()
        if progress.known:
            watch.saw(progress.updated, now_s)
        verdict = watch.verdict(now_s, self.stall_timeout)
        name = self.member(index).name
        if verdict is None:
            if self.stalled.pop(index, None):
                self.reporter.event(f"{name} moves again")
            return None
        seen = watch.describe(now_s)
        if index not in self.stalled:
            kill_after = format_duration(stall_limits(watch.longest_gap, self.stall_timeout)[1])
            self.reporter.event(f"{name} stalled: {seen}; it is killed and retried after {kill_after} without "
                                "progress (--stall-timeout)")
        self.stalled[index] = seen
        if verdict != "kill":
            return None
        self.executor.stop([launched], STOP_GRACE_S)
        launched.stalled = seen
        returncode = self.executor.poll(launched)
        return returncode if returncode is not None else -signal.SIGKILL

    def finish(self, index: int, returncode: int, launched: Launched) -> None:
        member = self.member(index)
        folder = self.layout.member(index)
        member_dir = folder.path
        if returncode == 0 and output_problem(folder, self.shape) is None:
            self.finished(index, member, read_metrics(folder), launched)
            return
        if returncode == NO_SPACE_EXIT or (returncode != 0 and low_on_space(member_dir)):
            # retrying cannot help; the member keeps its committed epochs for the rerun after space is freed
            member.retry("stopped: the disk is full; resumes from its last committed epoch", returncode=returncode,
                         when=now())
            with suppress(NoSpace):
                self.save()
            raise NoSpace(member_dir, what=f"for {member.name} in")
        why = describe_exit(returncode)
        if launched.stalled:
            why = f"stalled ({launched.stalled}) and was killed"
        if self.tries[index] <= self.retries:
            member.retry(f"attempt {member.attempts} {why}; retrying", returncode=returncode, when=now())
            self.save()
            self.queue.appendleft(index)  # its slot is free now; it resumes from its training state
            self.reporter.event(f"{member.name} {why} on attempt {member.attempts}; "
                                f"retry {self.tries[index]} of {self.retries}, from its last finished epoch")
            return
        member.fail(f"{why} after {self.tries[index]} attempts in this run", returncode=returncode, when=now())
        self.save()
        self.failed[index] = failure_text(member.name, why, self.tries[index], self.layout.log(index))
        self.reporter.event(self.failed[index])

    def finished(self, index: int, member: MemberEntry, metrics: Metrics, launched: Launched) -> None:
        # a refit twin's validation rows are rows it trained on: the ledger keeps no score for it
        member.finish(epoch=metrics.epochs, epochs=metrics.epochs_planned or self.epochs_of(index),
                      val_accuracy=None if metrics.refit_of else metrics.val_accuracy,
                      best_epoch=metrics.best_epoch, returncode=0, when=now())
        if metrics.refit_of:
            member.note = f"refit of {metrics.refit_of} on every row"
        self.save()
        self.trained.append(index)
        snapshots = self.record.spec.snapshots
        self.budget.member_measured(time.time() - launched.started, metrics.epochs - (launched.resumed_from or 0),
                                    metrics.predict_seconds, 1 + (snapshots if snapshots > 1 else 0),
                                    complete=not member.stopped_early, epochs=self.epochs_of(index))
        self.tell_members_the_predict_speed(metrics)
        self.reporter.event(finish_text(member, metrics, self.epochs_of(index)))

    def tell_members_the_predict_speed(self, metrics: Metrics) -> None:
        """Under a time limit, members started from now on plan their last epoch with what this one measured."""
        if self.plan.deadline is None or not metrics.predict_ms_per_1k:
            return
        fastest = predict_speed([metrics.predict_ms_per_1k / 1e6, self.plan.predict_seconds_per_image or 0])
        if fastest != self.plan.predict_seconds_per_image:
            self.plan = replace(self.plan, predict_seconds_per_image=fastest)
            write_plan(self.ws, self.plan)

    def stop(self) -> None:
        """Ctrl-C (or a full disk): stop every member, leave each pending with its training state, so a rerun
        resumes. The ledger is saved where the disk allows; the next run reconciles it with the files anyway."""
        running = list(self.running.values())
        self.executor.stop(running, STOP_GRACE_S)
        for launched in running:
            self.member(launched.index).interrupt(when=now())
        self.running.clear()
        self.progress.clear()
        self.watches.clear()
        self.stalled.clear()
        with suppress(NoSpace):
            self.save()

    # what the reporter shows (view.py builds it)
    def lines(self) -> list[MemberLine]:
        return run_lines(self)

    def overview(self) -> Overview:
        return run_overview(self)


def start_text(member: MemberEntry, finished: int, epochs: int, where: str, log) -> str:
    resumed = ("writes its outputs (all epochs trained)" if finished >= epochs
               else f"resumes after epoch {finished}/{epochs}" if finished else "starts")
    return f"{member.name} (seed {member.seed}) {resumed} {where}, attempt {member.attempts}; log {log}"


def finish_text(member: MemberEntry, metrics: Metrics, epochs: int) -> str:
    how = f"stopped early at epoch {metrics.epochs}/{epochs} (time limit)" if member.stopped_early else "done"
    if metrics.refit_of:
        return (f"{member.name} {how}: refit of {metrics.refit_of} on all {metrics.n_train} rows, {metrics.epochs} "
                f"epochs, {metrics.fit_seconds:.0f}s fit")
    return (f"{member.name} {how}: val_acc {metrics.val_accuracy:.4f} (best epoch {metrics.best_epoch}), "
            f"{metrics.fit_seconds:.0f}s fit")


def failure_text(name: str, why: str, tries: int, log) -> str:
    """A member out of retries, with the last lines of its log: what the user reads to fix the cause."""
    return f"{name} {why} after {tries} attempts. Last lines of {log}:\n  " + "\n  ".join(log_tail(log, LOG_TAIL_LINES))


def ledger_from_progress(member: MemberEntry, launched: Launched, progress: Progress) -> bool:
    """What a running member's progress file tells the ledger: where it runs (Ray picks the node and the
    member reports it), its epoch and latest validation accuracy. Whether the entry changed."""
    changed = False
    if launched.pid is None and progress.pid:
        launched.pid = progress.pid
        device = progress.cuda_visible_devices
        member.placed(pid=progress.pid, host=progress.host, device=f"gpu:{device}" if device else "cpu",
                      ray_node_id=progress.ray_node_id)
        changed = True
    return member.report(progress.epoch, progress.val_accuracy) or changed


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"
