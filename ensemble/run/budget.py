"""`--time-limit`: how long things take and what still fits. Pure functions of measured times.

How the limit combines with the other options (README, "Fitting a time budget"):
- the job ends within the limit. Its first member calibrates: a probe of a few batches says what start-up,
  an epoch and the predictions cost (member.calibrate); the job keeps that estimate, refined by what its
  members measure, in job.json. From it the planner (job.planner) gives every member its length before it
  starts, so a member's schedule is sized to the epochs it will get: recipe-length members, the last one
  shortened to the time left (or the members made longer when the rest would be too short for a member);
  every member plans itself again from the epochs it trains (member.callbacks.replan): a slot's last
  member counts its length in steps to the deadline, and one with members after it becomes the last once
  none of them fits any more;
- a running member still stops at an epoch end when another epoch and its predictions would not fit (an
  estimate can be wrong), keeps its best weights (and finished snapshots), and is marked stopped early;
- `--n` caps the members (default: none, as many as fit), and they train longer to fill the time;
  `--epochs` fixes the length of all but a shortened last member; `--snapshots` keeps whole cycles;
- a rerun of the job with a new limit continues it with the job's recorded costs: stopped members resume
  from their last epoch, then new members are planned into the time left.
"""
from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field

from ..job.planner import BudgetPlan, Costs, plan_budget, plan_slot

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


# end_margin: these seconds, this share of the limit, at most MARGIN_MAX_S
MARGIN_S, MARGIN_SHARE, MARGIN_MAX_S = 2.0, 0.02, 30.0


def end_margin(time_limit: float) -> float:
    """Seconds kept back from the limit for what the deadline cannot see: the command's own start-up before
    the clock starts, and members and the runner exiting after it (measured: 2-4 s)."""
    return min(MARGIN_S + MARGIN_SHARE * time_limit, MARGIN_MAX_S)


def one_epoch_limit(costs: Costs) -> int:
    """The --time-limit, in whole seconds, that holds a member of one whole epoch at these costs once the end
    margin is kept back: end_margin inverted, on each side of its cap."""
    need = costs.member_s(1)
    return math.ceil(min((need + MARGIN_S) / (1.0 - MARGIN_SHARE), need + MARGIN_MAX_S) - 1e-9)


def short_member_note(costs: Costs, final_share: float) -> str:
    """What a user is told when the job's first member gets less than one epoch: the time limit is mostly
    start-up and predictions, and what limit trains one epoch."""
    return (f"the time limit holds {final_share:.0%} of one epoch after start-up ({costs.startup_s:.0f} s) and "
            f"predictions ({costs.predict_s:.0f} s), far from the recipe's accuracy; --time-limit "
            f"{one_epoch_limit(costs)}s or more trains one whole epoch")


def fits(now: float, deadline: float, estimate: float | None) -> bool:
    """Whether a member estimated at `estimate` seconds ends by the deadline; unknown: start it (it
    calibrates, and stops at an epoch end if it must)."""
    return now < deadline and (estimate is None or now + estimate <= deadline)


@dataclass
class TimeBudget:
    """One run's costs as its members report them, and what they say about the time left. Without a
    deadline it only measures (the ETA uses the prediction times). Under a deadline, members without a
    length of their own get one from the planner (job.planner) once the job has costs: kept in the record
    from earlier runs, or measured by the first member's calibration."""

    epochs: int
    deadline: float | None = None  # epoch seconds (--time-limit), else None
    cap: int | None = None         # members the run may grow to under a deadline
    costs: Costs | None = None     # the job's estimate, as recorded or calibrated; refined by what this run measures
    stretch: bool = True           # members may train longer than `epochs` (--epochs was not given)
    multiple: int = 1              # epochs come in this many equal cycles (--snapshots)
    every: bool = False            # every member of the cap, the time shared out (a --refit-full fold pass)
    slots: int = 1
    started: float = 0.0           # epoch seconds the run started (plans say what they take of the limit)
    time_limit: float | None = None
    epoch_seconds: dict[tuple[int, int], float] = field(default_factory=dict)  # (member, epoch) -> seconds
    steady_epochs: list[float] = field(default_factory=list)  # epoch seconds but each attempt's first (it traces)
    first_epochs: list[float] = field(default_factory=list)   # each attempt's first epoch: slower, a bound until then
    startups: list[float] = field(default_factory=list)   # seconds before the first epoch, per finished member
    member_walls: list[float] = field(default_factory=list)  # whole-member seconds of members finished here
    predict_measured: list[float] = field(default_factory=list)  # seconds finished members spent predicting

    def may_grow(self, members: int, now: float) -> bool:
        """Whether a new member may join: under a deadline, while the cap and the clock allow."""
        return self.deadline is not None and members < self.cap and now < self.deadline

    def measured_costs(self) -> Costs | None:
        """The job's costs with what this run measured in place of the estimate, where it has."""
        base = self.costs
        epoch = self.epoch_estimate()
        if epoch is None:
            return None
        startup = statistics.median(self.startups) if self.startups else (base.startup_s if base else START_OVERHEAD_S)
        predict = statistics.median(self.predict_measured) if self.predict_measured else (base.predict_s if base else 0.0)
        return Costs(startup, epoch, predict)

    def covers(self, epochs_done: int, now: float, epochs: int | None = None) -> bool:
        """Without a deadline always; with one, whether a member of `epochs` (default: the spec's) with
        `epochs_done` behind it fits the time left."""
        if self.deadline is None:
            return True
        epochs = epochs or self.epochs
        costs = self.measured_costs()
        if costs is not None:
            return fits(now, self.deadline, costs.member_s(max(epochs - epochs_done, 1)))
        estimate = member_seconds(self.member_walls, list(self.epoch_seconds.values()), epochs,
                                  max(epochs - epochs_done, 1))
        return fits(now, self.deadline, estimate)

    def next_slot_plan(self, now: float, members_left: int, first: bool = False) -> tuple[int, ...] | None:
        """The plan of a free slot from now, in start order: its first entry is the member about to start; ():
        none fits; None: the job has no costs yet (the member calibrates and chooses). `first`: the job has no
        member trained yet, so a short one is still worth starting."""
        costs = self.measured_costs()
        if costs is None or self.deadline is None:
            return None
        return plan_slot(self.deadline - now, costs, self.epochs, math.ceil(members_left / self.slots),
                         self.stretch, self.multiple, first, self.every)

    def next_member_epochs(self, now: float, members_left: int, first: bool = False) -> int | None:
        """The epochs of the member about to start on a free slot, as its slot's plan starts it; 0: none fits;
        None: the job has no costs yet."""
        own = self.next_slot_plan(now, members_left, first)
        return None if own is None else own[0] if own else 0

    def plan(self, now: float, members_left: int, tta: bool, running: tuple[tuple[int, float], ...] = ()
             ) -> BudgetPlan | None:
        """The whole plan for the time left; `running`: (epochs, seconds still needed) of members on slots."""
        costs = self.measured_costs()
        if costs is None or self.deadline is None:
            return None
        return plan_budget(self.deadline - now, costs, self.epochs, self.slots, members_left, self.stretch,
                           self.multiple, tta, running, now - self.started if self.started else 0.0, self.time_limit,
                           self.every)

    def epoch_estimate(self) -> float | None:
        """An epoch's seconds: the median of this run's steady epochs; before any, the job's estimate, but never
        less than the first epochs this run has seen (an estimate from an earlier run, or a wrong one, would
        otherwise start members the time left cannot hold)."""
        if self.steady_epochs:
            return statistics.median(self.steady_epochs)
        if self.costs is None:
            return None  # a member calibrates first, or a steady epoch will say
        return max(self.costs.epoch_s, statistics.median(self.first_epochs) if self.first_epochs else 0.0)

    def epoch_measured(self, index: int, epoch: int, seconds: float, first: bool = False) -> None:
        if (index, epoch) not in self.epoch_seconds:
            (self.first_epochs if first else self.steady_epochs).append(seconds)
        self.epoch_seconds[(index, epoch)] = seconds

    def member_measured(self, wall_seconds: float, epochs_trained: int, predict_seconds: float | None,
                        models: int, complete: bool, epochs: int | None = None) -> None:
        """A member finished: its prediction time (validation and test, every TTA view, for each of its
        `models` kept weights and snapshots) and, for one that trained all its `epochs`, its whole wall time
        and, for any that trained an epoch (one the time limit stopped too), what of it came before the first."""
        if predict_seconds:
            self.predict_measured.append(predict_seconds * models)
        if complete and epochs_trained > 0:
            self.member_walls.append(wall_seconds * (epochs or self.epochs) / epochs_trained)
        epoch = self.epoch_estimate()
        if epochs_trained > 0 and epoch is not None:
            startup = wall_seconds - epochs_trained * epoch - (predict_seconds or 0.0) * models
            self.startups.append(max(startup, 0.0))

    def predict_seconds(self) -> float:
        """A member's prediction time as the members that finished in this run measured it; 0 until one has."""
        return statistics.median(self.predict_measured) if self.predict_measured else 0.0
