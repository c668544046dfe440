"""Stalled members: a member whose progress file stops changing for much longer than its own updates ever
took (a GPU driver hang, a stalled network file system, SIGSTOP). Pure: times in, verdicts out.

A training member writes its progress file at least every second while batches run, through validation and
while predicting; the gaps it showed while healthy are the measure. Start-up (imports, data, the first
compile, the wait for the member's lock) writes nothing for a while, so before its first update a member is
held to the default timeout at least, and a member whose executor may queue it (Ray waits for a free GPU)
is not held at all.
"""
from __future__ import annotations

from dataclasses import dataclass

from .budget import format_duration

# a member is shown as stalled after this many of its longest healthy gaps without an update (at least
# STALL_FLOOR_S), and killed and retried after the stall timeout
STALL_GAPS = 20
STALL_FLOOR_S = 60.0
# --stall-timeout's default: far past any healthy silence (start-up and a first compile take a minute or two),
# and longer still for a member whose own updates were slow
DEFAULT_STALL_TIMEOUT_S = 600.0
TIMEOUT_GAPS = 50


def stall_limits(longest_gap: float | None, timeout: float | None) -> tuple[float, float]:
    """(shown as stalled after, killed after) seconds without an update. longest_gap: the longest healthy gap
    seen (None before the first update: start-up is held to the default at least); timeout: --stall-timeout,
    None for the default."""
    if longest_gap is None:
        kill = max(timeout or 0.0, DEFAULT_STALL_TIMEOUT_S)
        return kill, kill
    kill = timeout if timeout is not None else max(DEFAULT_STALL_TIMEOUT_S, TIMEOUT_GAPS * longest_gap)
    return min(kill, max(STALL_FLOOR_S, STALL_GAPS * longest_gap)), kill


@dataclass
class StallWatch:
    """One attempt's updates as the runner saw them, on the runner's own clock (a Ray member's host clock
    may differ): when its progress stamp last changed, and the longest gap between changes so far."""

    last_change: float               # the runner's time.monotonic() of the last change (or the launch)
    stamp: float | None = None       # the progress file's `updated` last seen
    longest_gap: float | None = None
    may_queue: bool = False          # the executor may hold the attempt back before it starts (Ray)

    def saw(self, stamp: float, now: float) -> None:
        if stamp == self.stamp:
            return
        if self.stamp is not None:  # the gap from launch to the first update is start-up, not a heartbeat
            self.longest_gap = max(self.longest_gap or 0.0, now - self.last_change)
        self.stamp, self.last_change = stamp, now

    def silent_for(self, now: float) -> float:
        return now - self.last_change

    def verdict(self, now: float, timeout: float | None) -> str | None:
        """None (healthy), "stalled" (shown) or "kill"."""
        if self.may_queue and self.stamp is None:  # perhaps waiting for a free slot, not stalled
            return None
        shown, kill = stall_limits(self.longest_gap, timeout)
        silent = self.silent_for(now)
        return "kill" if silent >= kill else "stalled" if silent >= shown else None

    def describe(self, now: float) -> str:
        gap = f"; its updates came at most {self.longest_gap:.1f}s apart" if self.longest_gap else ""
        return f"no progress for {format_duration(self.silent_for(now))}{gap}"


def stalled_text(updated: float, heartbeat_s: float | None, now: float, timeout: float | None = None) -> str | None:
    """For a reader of the progress file alone (`ensemble status`): 'stalled: no progress for 2m10s' when
    the member's last update is older than its own heartbeat allows, None when it is not."""
    silent = now - updated
    shown, _ = stall_limits(heartbeat_s, timeout)
    if updated <= 0 or silent < shown:
        return None
    return f"stalled: no progress for {format_duration(silent)}"
