"""The poll loop of one run: start members on free slots, follow their progress, retry or fail the ones
that die, keep the ledger current."""
from __future__ import annotations

import platform
import signal
import statistics
import time
from collections import Counter, deque
from contextlib import suppress

from ..job.layout import log_path, log_tail, read_progress, resumable_epochs
from ..job.ledger import MemberEntry
from ..job.outputs import ModelKind, OutputShape, output_problem, read_metrics
from ..job.record import JobRecord, now, save_record
from ..store.atomic import NO_SPACE_EXIT, NoSpace, low_on_space
from ..store.workspace import Workspace
from . import budget
from .devices import Slot
from .executors import Launched
from .progress import MemberLine, Overview, epochs_done, job_overview, member_lines

LOG_TAIL_LINES = 15
POLL_S = 0.25
STOP_GRACE_S = 5.0  # Ctrl-C: members get SIGTERM, then SIGKILL after this long


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
        save_record(self.ws, self.record)

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
        done = 0 if index is None else resumable_epochs(self.ws.member_dir(self.job, index), self.epochs)
        remaining = self.epochs - done
        estimate = budget.member_seconds(self.member_walls, list(self.epoch_seconds.values()), self.epochs,
                                         max(remaining, 1))
        return budget.fits(time.time(), self.deadline, estimate)

    def start(self, index: int, slot: Slot) -> None:
        member = self.member(index)
        finished = resumable_epochs(self.ws.member_dir(self.job, index), self.epochs)
        launched = self.executor.start(self.job, index, slot)
        launched.resumed_from = finished
        self.tries[index] += 1
        self.running[index] = launched
        member.start(slot=slot.label, device=slot.device, executor=self.executor.name, pid=launched.pid,
                     host=platform.node() if launched.pid else None, epoch=finished, when=now())
        self.save()
        where = f"on {slot.label}" if self.executor.name == "local" else f"as a Ray task ({slot.label})"
        resumed = ("writes its outputs (all epochs trained)" if finished >= self.epochs
                   else f"resumes after epoch {finished}/{self.epochs}" if finished else "starts")
        self.reporter.event(f"{member.name} (seed {member.seed}) {resumed} {where}, attempt "
                            f"{member.attempts}; log {log_path(self.ws, self.job, index)}")

    def follow(self, index: int) -> None:
        launched = self.running[index]
        member = self.member(index)
        progress = read_progress(self.ws, self.job, index)
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
                         when=now())
            with suppress(NoSpace):
                self.save()
            raise NoSpace(member_dir, what=f"for {member.name} in")
        why = describe_exit(returncode)
        if self.tries[index] <= self.retries:
            member.retry(f"attempt {member.attempts} {why}; retrying", returncode=returncode, when=now())
            self.save()
            self.queue.appendleft(index)  # its slot is free now; it resumes from its training state
            self.reporter.event(f"{member.name} {why} on attempt {member.attempts}; "
                                f"retry {self.tries[index]} of {self.retries}, from its last finished epoch")
            return
        log = log_path(self.ws, self.job, index)
        tail = log_tail(log, LOG_TAIL_LINES)
        member.fail(f"{why} after {self.tries[index]} attempts in this run", returncode=returncode, when=now())
        self.save()
        self.failed[index] = (f"{member.name} {why} after {self.tries[index]} attempts. Last lines of {log}:\n  "
                              + "\n  ".join(tail))
        self.reporter.event(self.failed[index])

    def finished(self, index: int, member: MemberEntry, metrics: dict, launched: Launched) -> None:
        member.finish(epoch=metrics["epochs"], epochs=self.epochs, val_accuracy=metrics["val_accuracy"],
                      best_epoch=metrics["best_epoch"], returncode=0, when=now())
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
            self.member(launched.index).interrupt(when=now())
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
