"""The ledger as types: each member's line in `jobs/<job>/job.json`, and the only ways its state changes.

A member is pending, running, done or failed. The runner moves it with the transitions below (start, a
progress report, finish, retry, fail, interrupt) and reconcile() makes it agree with the files; each
transition checks the state it starts from, so an impossible sequence is a LedgerError rather than a ledger
that says something false. JSON keys and values are what earlier versions wrote, so old records read.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from enum import Enum


class LedgerError(Exception):
    """A transition that the member's state does not allow (a bug in the caller, never a user error)."""


class MemberState(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass
class MemberEntry:
    """One member's line in the ledger."""

    index: int
    name: str
    seed: int
    state: MemberState = MemberState.PENDING
    attempts: int = 0
    device: str | None = None       # cpu, gpu:1 ...
    slot: str | None = None         # the slot's label
    executor: str | None = None     # local or ray
    pid: int | None = None          # while running
    host: str | None = None
    ray_node_id: str | None = None  # the Ray node it ran on (Ray executor)
    started: str | None = None
    ended: str | None = None
    returncode: int | None = None
    epoch: int | None = None        # last finished epoch
    val_accuracy: float | None = None
    best_epoch: int | None = None
    stopped_early: bool = False     # the time limit stopped it before its last epoch
    epochs: int | None = None       # its own length, given by the --time-limit planner (None: the spec's)
    note: str | None = None         # why it is in its state, for a person

    def _expect(self, *states: MemberState) -> None:
        if self.state not in states:
            raise LedgerError(f"{self.name} is {self.state.value}; expected {' or '.join(s.value for s in states)}")

    # --- transitions ------------------------------------------------------------------------------
    def start(self, *, slot: str, device: str | None, executor: str, pid: int | None, host: str | None,
              epoch: int, when: str) -> None:
        """pending (or done but stopped early by a time limit) -> running: a new attempt."""
        if not (self.state is MemberState.DONE and self.stopped_early):
            self._expect(MemberState.PENDING, MemberState.FAILED)
        self.state, self.attempts = MemberState.RUNNING, self.attempts + 1
        self.slot, self.device, self.executor, self.pid, self.host = slot, device, executor, pid, host
        self.started, self.ended, self.epoch, self.note = when, None, epoch, None

    def placed(self, *, pid: int, host: str | None, device: str, ray_node_id: str | None) -> None:
        """Where a running member turned out to run (Ray chooses; the member reports it)."""
        self._expect(MemberState.RUNNING)
        self.pid, self.host, self.device, self.ray_node_id = pid, host, device, ray_node_id

    def report(self, epoch: int | None, val_accuracy: float | None) -> bool:
        """A running member's progress; whether anything changed."""
        self._expect(MemberState.RUNNING)
        changed = False
        for name, value in (("epoch", epoch), ("val_accuracy", val_accuracy)):
            if value is not None and value != getattr(self, name):
                setattr(self, name, value)
                changed = True
        return changed

    def finish(self, *, epoch: int, epochs: int, val_accuracy: float, best_epoch: int, returncode: int,
               when: str) -> None:
        """running -> done; a member the time limit stopped before `epochs` is done but resumable."""
        self._expect(MemberState.RUNNING)
        self.state, self.pid, self.ended, self.returncode = MemberState.DONE, None, when, returncode
        self.epoch, self.val_accuracy, self.best_epoch = epoch, val_accuracy, best_epoch
        self.stopped_early = epoch < epochs
        self.note = (f"stopped early by the time limit at epoch {epoch}/{epochs}; a rerun continues it"
                     if self.stopped_early else None)

    def retry(self, note: str, *, returncode: int | None, when: str) -> None:
        """running -> pending: its process ended without finishing; it will run again from its state."""
        self._expect(MemberState.RUNNING)
        self.state, self.pid, self.ended, self.returncode, self.note = MemberState.PENDING, None, when, returncode, note

    def fail(self, note: str, *, returncode: int, when: str) -> None:
        """running -> failed: out of retries for this run."""
        self._expect(MemberState.RUNNING)
        self.state, self.pid, self.ended, self.returncode, self.note = MemberState.FAILED, None, when, returncode, note

    def interrupt(self, when: str) -> None:
        """running -> pending: stopped by Ctrl-C or a full disk; it resumes from its last committed epoch."""
        self._expect(MemberState.RUNNING)
        self.state, self.pid, self.ended = MemberState.PENDING, None, when
        self.note = "interrupted; resumes from its last finished epoch"

    def reconcile(self, finished: bool, fault: str | None) -> str | None:
        """Before a run (the caller holds the job's lock, so nothing runs): agree with the files. Returns a
        note for the user when the ledger was wrong."""
        if fault:
            self.state, self.pid, self.note = MemberState.PENDING, None, f"damaged: {fault}"
            return f"{self.name}: {fault}; its outputs are made again (it retrains if its kept weights are lost)"
        if finished and self.state is not MemberState.DONE:
            self.state, self.pid = MemberState.DONE, None
        elif not finished and self.state is MemberState.DONE:
            self.state, self.note = MemberState.PENDING, "files incomplete (no metrics.json): will finish"
            return f"{self.name}: recorded done but its files are incomplete; it will finish"
        elif self.state is MemberState.RUNNING:
            self.state, self.pid, self.note = MemberState.PENDING, None, "its runner stopped; resumes"
            return f"{self.name}: its runner stopped while it trained; it resumes from its last epoch"
        return None

    def predict_again(self, why: str, retrain: bool = False) -> str:
        """Before a run: a member whose outputs are stale (or do not say where they came from) is pending
        again; its process finds its training complete and only predicts. One whose weights were trained on
        another validation split trains again (member.process), else its scores would count rows it trained on."""
        if retrain:
            self.state, self.pid, self.note = MemberState.PENDING, None, f"training again: {why}"
            return f"{self.name}: {why}; training it again from epoch 0"
        self.state, self.pid, self.note = MemberState.PENDING, None, f"predicting again: {why}"
        return f"{self.name}: {why}; predicting it again from its kept weights (nothing is retrained)"

    # --- JSON -------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {**asdict(self), "state": self.state.value}

    @classmethod
    def from_dict(cls, values: dict) -> "MemberEntry":
        known = {f.name for f in fields(cls)}
        entry = cls(**{key: value for key, value in values.items() if key in known})
        entry.state = MemberState(entry.state)
        return entry


@dataclass
class LastRun:
    """The latest `ensemble train` on the job: who ran it and with what budget."""

    pid: int
    host: str
    started: str
    executor: str
    members: int
    retries: int
    time_limit: float | None = None
    deadline: float | None = None  # epoch seconds the members must be done by (--time-limit), else None
    stall_timeout: float | None = None  # --stall-timeout seconds, None: the default
