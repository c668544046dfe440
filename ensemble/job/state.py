"""What state a member is in: the one answer that `ensemble status`, `ensemble blend`, the runner's reconcile
and the leaderboard all give, from the ledger and the one artifact check (job.outputs.output_problem).

The files decide "done": a member is done only when its outputs (and its snapshots') pass the check,
whatever the ledger says; "running" needs a live runner holding the job's lock.
"""
from __future__ import annotations

from dataclasses import dataclass

from .ledger import MemberEntry, MemberState
from .outputs import JobModels

INCOMPLETE = "files incomplete (no metrics.json)"
RUNNER_GONE = "its runner is gone; rerun to resume"


@dataclass(frozen=True)
class MemberStatus:
    state: MemberState
    note: str = ""
    fault: str | None = None  # "path: what is wrong" when damaged files are why it is not done
    stale: str | None = None  # "path: which file it came from" when outputs of other files are why

    @property
    def done(self) -> bool:
        return self.state is MemberState.DONE

    def describe(self, name: str) -> str:
        """'member-03 (pending)', 'member-03 (damaged: <file>: <what>)' or 'member-03 (stale: <why>)'."""
        if self.fault:
            return f"{name} (damaged: {self.fault})"
        return f"{name} (stale: {self.stale})" if self.stale else f"{name} ({self.state.value})"


def member_status(member: MemberEntry, models: JobModels, runner_alive: bool) -> MemberStatus:
    fault = models.fault_of_member(member.name)
    if fault:
        return MemberStatus(MemberState.PENDING, f"damaged: {fault}", fault)
    if stale := models.stale_of_member(member.name):
        return MemberStatus(MemberState.PENDING, f"stale: {stale}; `ensemble train` predicts it again", stale=stale)
    ledger_note = member.note or ""
    if models.is_finished(member.name):
        keeps_note = member.stopped_early or member.state is not MemberState.DONE
        return MemberStatus(MemberState.DONE, ledger_note if keeps_note else "")
    if member.state is MemberState.DONE:
        return MemberStatus(MemberState.PENDING, INCOMPLETE)
    if member.state is MemberState.RUNNING and not runner_alive:
        return MemberStatus(MemberState.PENDING, RUNNER_GONE)
    return MemberStatus(member.state, ledger_note)
