"""`--time-limit`: how long things take and what still fits. Pure functions of measured times.

How the limit combines with the other options (README, "Fitting a time budget"):
- the job ends within the limit: members start only while the time left covers a whole member, as
  estimated from this job's measured times (before any is measured, the first members start: they
  calibrate); a running member stops at an epoch end when another epoch and its predictions would not
  fit, keeps its best weights (and finished snapshots), and is marked stopped early;
- `--n` is a cap on members (default: none, as many as fit); `--epochs` and `--snapshots` shape each
  member as usual (the schedules need a member's length up front), so the limit decides how many members,
  never how long one is planned to be;
- a rerun of the job with a new limit continues it: stopped members resume from their last epoch, then
  new members are added while time is left.
"""
from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field

UNLIMITED_MEMBERS = 100  # the member cap of a --time-limit job without --n
START_OVERHEAD_S = 30.0  # process start, data, model build: before one member has finished and told us
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def parse_duration(text: str, flag: str = "--time-limit") -> float:
    """'2h', '90m', '1h30m', '45s', '600' (seconds) -> seconds; ValueError (naming the flag) for anything else."""
    cleaned = text.strip().lower().replace(" ", "")
    match = _DURATION.match(cleaned)
    if not cleaned or not match or not any(match.groups()):
        raise ValueError(f"{flag} {text!r}: write a duration like 2h, 90m, 1h30m, 45s or 600 (seconds)")
    hours, minutes, seconds = (float(group) if group else 0.0 for group in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ValueError(f"{flag} {text!r}: must be more than 0")
    return total


def parse_stall_timeout(text: str) -> float:
    return parse_duration(text, "--stall-timeout")


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def member_seconds(finished_walls: list[float], epoch_seconds: list[float], epochs: int,
                   remaining_epochs: int) -> float | None:
    """Wall seconds a member with `remaining_epochs` of `epochs` left will take, or None before anything
    was measured. Whole members that finished in this job are the best evidence (start-up and predictions
    included); until one has, the epochs measured so far plus a start-up allowance."""
    share = remaining_epochs / epochs if epochs else 1.0
    if finished_walls:
        return statistics.median(finished_walls) * share
    if epoch_seconds:
        return statistics.median(epoch_seconds) * remaining_epochs + START_OVERHEAD_S
    return None


def end_margin(time_limit: float) -> float:
    """Seconds kept back from the limit for what the deadline cannot see: the command's own start-up before
    the clock starts, and members and the runner exiting after it (measured: 2-4 s)."""
    return min(2.0 + 0.02 * time_limit, 30.0)


def fits(now: float, deadline: float, estimate: float | None) -> bool:
    """Whether a member estimated at `estimate` seconds ends by the deadline; unknown: start it (it
    calibrates, and stops at an epoch end if it must)."""
    return now < deadline and (estimate is None or now + estimate <= deadline)


@dataclass
class TimeBudget:
    """One run's costs as its members report them, and what they say about the time left. Without a
    deadline it only measures (the ETA uses the prediction times)."""

    epochs: int
    deadline: float | None = None  # epoch seconds (--time-limit), else None
    cap: int | None = None         # members the run may grow to under a deadline
    epoch_seconds: dict[tuple[int, int], float] = field(default_factory=dict)  # (member, epoch) -> seconds
    member_walls: list[float] = field(default_factory=list)  # whole-member seconds of members finished here
    predict_measured: list[float] = field(default_factory=list)  # seconds finished members spent predicting

    def may_grow(self, members: int, now: float) -> bool:
        """Whether a new member may join: under a deadline, while the cap and the clock allow."""
        return self.deadline is not None and members < self.cap and now < self.deadline

    def covers(self, epochs_done: int, now: float) -> bool:
        """Without a deadline always; with one, whether a member with `epochs_done` behind it fits the time left."""
        if self.deadline is None:
            return True
        estimate = member_seconds(self.member_walls, list(self.epoch_seconds.values()), self.epochs,
                                  max(self.epochs - epochs_done, 1))
        return fits(now, self.deadline, estimate)

    def epoch_measured(self, index: int, epoch: int, seconds: float) -> None:
        self.epoch_seconds[(index, epoch)] = seconds

    def member_measured(self, wall_seconds: float, epochs_trained: int, predict_seconds: float | None,
                        models: int, complete: bool) -> None:
        """A member finished: its prediction time (validation and test, every TTA view, for each of its
        `models` kept weights and snapshots) and, for one that trained all its epochs, its whole wall time."""
        if predict_seconds:
            self.predict_measured.append(predict_seconds * models)
        if complete and epochs_trained > 0:
            self.member_walls.append(wall_seconds * self.epochs / epochs_trained)

    def predict_seconds(self) -> float:
        """A member's prediction time as the members that finished in this run measured it; 0 until one has."""
        return statistics.median(self.predict_measured) if self.predict_measured else 0.0
