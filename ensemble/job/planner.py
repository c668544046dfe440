"""The `--time-limit` planner: how many members of how many epochs fill the time left. Pure functions of
measured costs; the runner measures, records and applies them (scheduler.JobRun), a member sizes its
schedule to what it is given (member.process), and a running member re-plans its length from its own epochs
(replan_member, applied by member.callbacks.replan), a slot's last member in steps to the deadline
(replan_steps: a partial last epoch takes the time whole epochs leave).

The rule, from the benchmarks at equal wall time (BENCHMARKS.md, "Accuracy per compute" and "Members vs
epochs"): a longer member beats more members until it is about twice the recipe's length. Round 1 measured
one 12-epoch one-cycle member 2.5 points above a 6-epoch one; round 2, on 42000 rows in 20 minutes, two
members of 26 and 23 epochs 0.85 above four of about 12. So, unless --epochs was given:
- members train GROWTH x the recipe's epochs while such whole members fit, and a budget too short for one
  gets a single member as long as the time allows;
- the time a whole member no longer fits goes to a last, shorter member when it holds at least the
  recipe's epochs (its schedule sized to its own epochs, never a long one cut short), else to extra epochs
  for the members of that slot; once the job has a member, no member shorter than the recipe's epochs starts
  (on 42000 rows a 3-epoch member after a 20-epoch one took the mean blend from 0.9340 to 0.9288 with TTA).
With --epochs, members keep that length and a last member holds at least a quarter of it (a one-cycle run
that short still anneals). A member cap (--n with --time-limit) stretches the members to fill the time, up
to STRETCH_MAX x the recipe's epochs. Slots (GPUs, --workers) run side by side, so each slot's time is
planned on its own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

STRETCH_MAX = 4  # members of a capped job train at most this many times the recipe's epochs
GROWTH = 2       # without --epochs, members train this many times the recipe's epochs before another starts
MIN_SHARE = 4    # a shortened member of a fixed length (--epochs) has at least 1/MIN_SHARE of its epochs


@dataclass(frozen=True)
class Costs:
    """What one member costs on one slot, as the job measured it (seconds)."""

    startup_s: float   # process start, imports, data, model build and graph tracing: before the first epoch
    epoch_s: float     # one training epoch with its validation pass, as slots run side by side
    predict_s: float   # every prediction of a finished member: validation and test, each TTA view, each model

    def member_s(self, epochs: int) -> float:
        return self.startup_s + epochs * self.epoch_s + self.predict_s

    def finishing_s(self, epochs: int, done: int, final_share: float | None = None) -> float:
        """What a running member that has trained `done` of its `epochs` still needs: the epochs left (its last one
        only `final_share` of an epoch's steps when it is partial) and its predictions."""
        left = float(max(epochs - done, 0))
        if left and final_share and 0 < final_share < 1:
            left -= 1.0 - final_share
        return left * self.epoch_s + self.predict_s

    def epochs_in(self, seconds: float) -> int:
        """Whole epochs a member started now can train and still predict within `seconds`."""
        if self.epoch_s <= 0:
            return 0
        return max(0, math.floor((seconds - self.startup_s - self.predict_s) / self.epoch_s + 1e-9))

    def to_dict(self) -> dict:
        return {"startup_s": round(self.startup_s, 3), "epoch_s": round(self.epoch_s, 3),
                "predict_s": round(self.predict_s, 3)}

    @classmethod
    def from_dict(cls, values: dict) -> "Costs":
        return cls(float(values["startup_s"]), float(values["epoch_s"]), float(values["predict_s"]))


@dataclass(frozen=True)
class BudgetPlan:
    """Members to start, each with its epochs, per slot in start order; and what they will take."""

    slots: tuple[tuple[int, ...], ...]
    seconds: float            # the time planned for
    costs: Costs
    tta: bool = False
    elapsed_s: float = 0.0           # of the run, when the plan was made
    limit_s: float | None = None     # the --time-limit
    running_s: tuple[float, ...] = ()  # per slot: seconds its running member (its first entry) still needs

    @property
    def member_epochs(self) -> list[int]:
        """Every planned member's epochs in the order slots start them (round-robin over the slots)."""
        order = []
        for position in range(max((len(slot) for slot in self.slots), default=0)):
            order.extend(slot[position] for slot in self.slots if position < len(slot))
        return order

    @property
    def planned_s(self) -> float:
        """The busiest slot's seconds: when the last planned member ends."""
        def slot_s(position: int, slot: tuple[int, ...]) -> float:
            busy = self.running_s[position] if position < len(self.running_s) else 0.0
            new = slot[1:] if busy else slot
            return busy + sum(self.costs.member_s(epochs) for epochs in new)
        return max((slot_s(position, slot) for position, slot in enumerate(self.slots)), default=0.0)

    def describe(self) -> str:
        """'3 members x 9 epochs + 1 x 5, TTA, ~1180 s of 1200'."""
        epochs = self.member_epochs
        if not epochs:
            return f"no member fits in {max(self.seconds, 0):.0f} s (one takes ~{self.costs.member_s(1):.0f} s with 1 epoch)"
        groups: list[tuple[int, int]] = []  # (epochs, count), in order
        for value in sorted(epochs, reverse=True):
            if groups and groups[-1][0] == value:
                groups[-1] = (value, groups[-1][1] + 1)
            else:
                groups.append((value, 1))
        first_epochs, first_count = groups[0]
        text = f"{first_count} member{'s' if first_count != 1 else ''} x {first_epochs} epoch{'s' if first_epochs != 1 else ''}"
        text += "".join(f" + {count} x {value}" for value, count in groups[1:])
        if len(self.slots) > 1:
            text += f" on {len(self.slots)} slots"
        limit = self.limit_s if self.limit_s is not None else self.elapsed_s + self.seconds
        return f"{text}{', TTA' if self.tta else ''}, ~{self.elapsed_s + self.planned_s:.0f} s of {limit:.0f}"

    def to_dict(self) -> dict:
        return {"slots": [list(slot) for slot in self.slots], "seconds": round(self.seconds, 1),
                "costs": self.costs.to_dict(), "tta": self.tta, "planned_s": round(self.planned_s, 1),
                "elapsed_s": round(self.elapsed_s, 1), "limit_s": self.limit_s,
                "running_s": [round(value, 1) for value in self.running_s], "text": self.describe()}

    @classmethod
    def from_dict(cls, values: dict) -> "BudgetPlan":
        return cls(tuple(tuple(int(e) for e in slot) for slot in values["slots"]), float(values["seconds"]),
                   Costs.from_dict(values["costs"]), bool(values.get("tta", False)),
                   float(values.get("elapsed_s", 0.0)), values.get("limit_s"),
                   tuple(float(value) for value in values.get("running_s", ())))


def round_down(epochs: int, multiple: int) -> int:
    return epochs - epochs % multiple if multiple > 1 else epochs


def shortest(epochs: int, multiple: int = 1) -> int:
    """The fewest epochs a shortened member is planned with: a quarter of the recipe's, in whole cycles."""
    return max(1, math.ceil(epochs / MIN_SHARE), multiple)


def member_length(epochs: int, stretch: bool, multiple: int = 1) -> int:
    """The epochs a whole member is planned with: the recipe's grown GROWTH times, or --epochs as given."""
    return round_down(GROWTH * epochs, multiple) if stretch else epochs


def shortest_last(epochs: int, stretch: bool, multiple: int = 1) -> int:
    """The fewest epochs of a last member after whole ones: the recipe's own length when the rest could
    instead lengthen the members (a shorter member added nothing to a blend of longer ones), else a quarter."""
    return max(round_down(epochs, multiple), multiple, 1) if stretch else shortest(epochs, multiple)


def plan_slot(seconds: float, costs: Costs, epochs: int, cap: int, stretch: bool, multiple: int = 1,
              first: bool = True, every: bool = False) -> tuple[int, ...]:
    """One slot's members in start order: whole members (member_length), then the rest of the time as a
    shorter last member or (stretch) as longer members. `epochs`: the recipe's (or --epochs); `multiple`:
    epochs must split into this many equal cycles. `first`: nothing of the job is trained yet, so even a
    member shorter than `shortest` is worth starting. `every`: all `cap` members, the time shared out among
    them (a --refit-full job's fold members: every fold needs one), none longer than the recipe's epochs
    unless stretch."""
    if cap <= 0 or costs.epoch_s <= 0 or seconds <= 0:
        return ()
    if every:
        return share_out(seconds, costs, epochs, cap, stretch, multiple)
    length = member_length(epochs, stretch, multiple)
    alone = round_down(costs.epochs_in(seconds), multiple)
    whole = min(int(seconds // costs.member_s(length)) if costs.member_s(length) > 0 else cap, cap)
    if whole == 0:  # once the job has a member, a short one would only dilute the mean blend of longer ones
        return (alone,) if alone >= (max(1, multiple) if first else shortest_last(epochs, stretch, multiple)) else ()
    left = seconds - whole * costs.member_s(length)
    if whole < cap:
        last = round_down(costs.epochs_in(left), multiple)
        if last >= shortest_last(epochs, stretch, multiple):
            return (length,) * whole + (last,)
    if not stretch:
        return (length,) * whole
    # the leftover time as extra epochs, a cycle at a time, the first members first
    cycles = math.floor((seconds - whole * (costs.startup_s + costs.predict_s)) / costs.epoch_s / multiple + 1e-9)
    longest = round_down(STRETCH_MAX * epochs, multiple)
    return tuple(min((cycles // whole + (1 if position < cycles % whole else 0)) * multiple, longest)
                 for position in range(whole))


def share_out(seconds: float, costs: Costs, epochs: int, members: int, stretch: bool, multiple: int = 1
              ) -> tuple[int, ...]:
    """Up to `members` members in `seconds`, the epochs shared out a cycle at a time, the first members first (at
    most the recipe's epochs, or STRETCH_MAX times them with stretch): as many members as each get a cycle
    after all their start-ups and predictions."""
    longest = round_down(STRETCH_MAX * epochs if stretch else epochs, multiple)
    for count in range(members, 0, -1):
        cycles = math.floor((seconds - count * (costs.startup_s + costs.predict_s)) / costs.epoch_s / multiple + 1e-9)
        if cycles >= count:
            return tuple(min((cycles // count + (1 if position < cycles % count else 0)) * multiple, longest)
                         for position in range(count))
    return ()


def plan_budget(seconds: float, costs: Costs, epochs: int, slots: int = 1, cap: int = 100, stretch: bool = True,
                multiple: int = 1, tta: bool = False, running: tuple[tuple[int, float], ...] = (),
                elapsed_s: float = 0.0, limit_s: float | None = None, every: bool = False) -> BudgetPlan:
    """The plan for `seconds` on `slots` slots side by side, at most `cap` new members in all. `running`:
    (epochs, seconds it still needs) of a member already on each of the first slots; it is part of the plan."""
    slots = max(1, slots, len(running))
    caps = [cap // slots + (1 if position < cap % slots else 0) for position in range(slots)]
    planned = []
    for position, slot_cap in enumerate(caps):
        busy_epochs, busy_s = running[position] if position < len(running) else (None, 0.0)
        new = plan_slot(seconds - busy_s, costs, epochs, slot_cap, stretch, multiple, every=every)
        planned.append(((busy_epochs,) if busy_epochs else ()) + new)
    return BudgetPlan(tuple(planned), seconds, costs, tta, elapsed_s, limit_s,
                      tuple(busy_s for _, busy_s in running))


@dataclass(frozen=True)
class Replanned:
    """A running member's length re-planned from its own epochs, and whether it is its slot's last member (it
    then keeps fitting its length to the deadline; a member with others after it keeps the time it was given)."""

    epochs: int
    last: bool


def replan_member(done: int, seconds_left: float, costs: Costs, epochs: int, cap: int, stretch: bool,
                  current: int, multiple: int = 1, grow_slack: float = 0.0) -> Replanned:
    """The length of a member that has trained `done` of its `current` epochs, `seconds_left` before the deadline:
    the first entry of its slot's plan made now as if it started now, its start-up and its `done` epochs already
    paid (`costs` as it measured them). `epochs`, `cap`, `stretch`, `multiple`: as plan_slot's. Never fewer than
    `done` (then it stops now); with --epochs (not stretch) never more than `current`: a member is shortened to
    fit, never lengthened past what was asked. `grow_slack`: a longer length must still fit with that many epochs
    to spare (a member re-planned every epoch then does not swing between two lengths on its epochs' noise)."""
    def first(seconds: float) -> tuple[int, ...]:
        return plan_slot(seconds + costs.startup_s + done * costs.epoch_s, costs, epochs, cap, stretch, multiple)

    own = first(seconds_left)
    planned = own[0] if own else done
    if planned > current and grow_slack:
        cautious = first(seconds_left - grow_slack * costs.epoch_s)
        planned = max(current, cautious[0] if cautious else done)
    if not stretch:
        planned = min(planned, current)
    return Replanned(max(round_down(planned, multiple), done), len(own) <= 1)


# A last member fits its steps to the deadline within this band (in epochs of time to spare): a length that still
# fits with less than that to spare is kept, so its one-cycle does not move with each epoch's timing noise; one
# outside it is re-centred.
FINAL_BAND = 0.5
MIN_FINAL_SHARE = 0.1  # a partial last epoch trains at least this share of an epoch, or is left out
# Before its last epoch a member's steps are fitted with this to spare, in epochs and seconds (at most the band's
# quarter epoch): the deadline's own check, after the re-plan, counts the resize's writes and the fastest epoch's
# validation, which may exceed the mean's, and a fit with nothing to spare would lose the whole last epoch to it.
LAST_SPARE = (0.05, 1.0)


def last_epoch_band(epoch_s: float) -> float:
    """The band (replan_steps' `band`, in epochs) of a member whose next epoch is its last: nothing re-plans after
    it, so LAST_SPARE, not FINAL_BAND (which fits to half of it); never wider than FINAL_BAND."""
    spare_epochs, spare_s = LAST_SPARE
    return min(2 * (spare_epochs + spare_s / max(epoch_s, 1e-9)), FINAL_BAND)


def steps_cap(current: int, stretch: bool, recipe_epochs: int, multiple: int, steps_per_epoch: int) -> int:
    """The most steps a last member fitted to the deadline may train: with --epochs (not stretch) the `current` it
    was given (shortened, never lengthened), else what a lone member of a plan trains."""
    return round_down(STRETCH_MAX * recipe_epochs, multiple) * steps_per_epoch if stretch else current


def split_steps(total: int, steps_per_epoch: int) -> tuple[int, int | None]:
    """A run of `total` steps as (epochs, steps of its last epoch when that one is partial, else None)."""
    epochs = max(1, math.ceil(total / steps_per_epoch))
    final = total - (epochs - 1) * steps_per_epoch
    return epochs, final if 0 < final < steps_per_epoch else None


def fitted_steps(seconds_left: float, costs: Costs, done: int, steps_per_epoch: int, overhead_s: float) -> int:
    """The most steps, the `done` epochs' included, a member can train and still predict within `seconds_left`:
    whole epochs, then a last one of the steps the rest holds. An epoch costs `costs.epoch_s`, of which
    `overhead_s` (its validation pass and commit) does not shrink with its steps."""
    room = seconds_left - costs.predict_s
    if costs.epoch_s <= 0 or room <= 0:
        return done * steps_per_epoch
    whole = math.floor(room / costs.epoch_s + 1e-9)
    step_s = max(costs.epoch_s - overhead_s, 1e-9) / steps_per_epoch
    part = min(steps_per_epoch - 1, max(0, math.floor((room - whole * costs.epoch_s - overhead_s) / step_s + 1e-9)))
    if part < MIN_FINAL_SHARE * steps_per_epoch:
        part = 0  # a validation pass and a commit for a few steps: the time is not worth its epoch
    return (done + whole) * steps_per_epoch + part


def replan_steps(done: int, seconds_left: float, costs: Costs, steps_per_epoch: int, overhead_s: float,
                 current: int, cap: int | None = None, band: float = FINAL_BAND) -> int:
    """The total steps of its slot's last member that has trained `done` epochs and is planned for `current`
    steps, `seconds_left` before the deadline: `current` while it fits with at most `band` epochs of time to
    spare, else what fits with half the band to spare. Never past `cap` (--epochs: shortened, never
    lengthened), never fewer than the steps of the epochs done (it then stops now)."""
    def fits(spare: float) -> int:
        return fitted_steps(seconds_left - spare * costs.epoch_s, costs, done, steps_per_epoch, overhead_s)

    longest = fits(0.0) if cap is None else min(fits(0.0), cap)
    if current <= longest and (current >= fits(band) or current == cap):
        return current
    target = fits(band / 2)
    return max(min(target, cap) if cap is not None else target, done * steps_per_epoch)


@dataclass(frozen=True)
class BudgetSpend:
    """A --time-limit run's plan and what it used (job.json, for the report)."""

    time_limit: float
    plan: BudgetPlan | None = None  # as printed when the job's costs were known
    used_s: float | None = None     # the command's start to its end
    members_s: float | None = None  # seconds member processes ran, summed over members, per slot

    @property
    def used_share(self) -> float | None:
        return self.used_s / self.time_limit if self.used_s is not None and self.time_limit else None

    def to_dict(self) -> dict:
        return {"time_limit": self.time_limit, "plan": self.plan.to_dict() if self.plan else None,
                "used_s": None if self.used_s is None else round(self.used_s, 1),
                "members_s": None if self.members_s is None else round(self.members_s, 1)}

    @classmethod
    def from_dict(cls, values: dict) -> "BudgetSpend":
        plan = values.get("plan")
        return cls(float(values["time_limit"]), BudgetPlan.from_dict(plan) if plan else None,
                   values.get("used_s"), values.get("members_s"))
