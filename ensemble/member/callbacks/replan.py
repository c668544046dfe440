"""Replan: a member that sized itself from a probe sizes itself again from the epochs it really trains.

The probe that calibrates a job's first member (member.calibrate) times a few batches; the member's epochs
then run 10-20% off that on a busy 2-core machine (BENCHMARKS.md, "A short warm-up"). A member planned too
long is cut at the deadline before its one-cycle anneals, one planned too short ends with time unused. So
after each epoch that traced nothing, the member plans its slot again (job.planner.replan_member) with the
mean of those epochs: the first time in full (how many members of how long still fit). When it is its slot's
last member, its length is then counted in steps (job.planner.replan_steps): whole epochs and a last, partial
one of the steps the time left holds, kept while it fits with at most half an epoch to spare and fitted
again when it leaves the band. When the epoch to come is its last, no re-plan follows to correct it: its
steps are then fitted to the time left with only a small spare (job.planner.LAST_SPARE), at the slower of its
mean epoch and its latest (the band left up to half an epoch unused: 41 s of a 645 s budget at 12000 rows on a float32
CPU, with the margins). A member with members after it keeps the whole epochs that first re-plan gave
it (theirs are planned by the runner, when it ends, from the same measured epochs) until its slot's plan no
longer has room for any of them: its epochs ran slower than planned, and what its length leaves is too short
for a member. It is then its slot's last, and fits its steps to the deadline: else that time went unused (at
12000 rows in 10 minutes, 29% of the budget, when a 24-epoch member ran 25% slow and the 12-epoch member
after it no longer fitted). Members the runner plans (job.plan.RunPlan.member_epochs) re-plan the same way
from their first epoch that traced nothing, the slot's last (RunPlan.last_members) at once: their whole epochs
were sized from the job's median epoch, not their own.
A member whose next epoch is its last (a short budget's, planned 2 epochs) re-plans after its first epoch
too, from that epoch, which traced: no steady epoch comes before its last one.
A new length moves the end of the training loop (`params["epochs"]` and `params["final_steps"]`, member.loop)
and, through `resize`, the member's schedule (from its next step: nothing is traced again) and its config.json,
before the next epoch begins.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import replace

import keras

from ...job.plan import BudgetRules
from ...job.planner import (FINAL_BAND, Costs, last_epoch_band, replan_member, replan_steps, split_steps,
                             steps_cap)


def planned_epochs(callback: keras.callbacks.Callback) -> int:
    """The run's length as it stands: what the loop was started with, or what a re-plan made it since (the
    callback's own `epochs` before the loop has set its params)."""
    return (callback.params or {}).get("epochs", callback.epochs)


def total_steps(epochs: int, final_steps: int | None, steps_per_epoch: int) -> int:
    return (epochs - 1) * steps_per_epoch + final_steps if final_steps else epochs * steps_per_epoch


# Once re-planned, a longer length in whole epochs must fit with half an epoch to spare: the mean of a few epochs
# moves by more than the margin of a length that just fits, and each change reshapes the rest of the schedule.
GROW_SLACK = 0.5


class Replan(keras.callbacks.Callback):
    """Re-plans the member's length at the end of each epoch but the first (which traces); `resize(epochs,
    final_steps, costs)` is called with each new length (`final_steps`: the last epoch's steps when it is partial,
    else None) before the loop goes on."""

    def __init__(self, deadline: float, costs: Costs, rules: BudgetRules, recipe_epochs: int, epochs: int,
                 resize, clock=time.time, last: bool | None = None, final_steps: int | None = None):
        super().__init__()
        self.deadline, self.costs, self.rules, self.recipe_epochs = deadline, costs, rules, recipe_epochs
        self.epochs, self.final_steps = epochs, final_steps
        self.resize, self.clock = resize, clock
        self.steady: list[float] = []    # seconds of the epochs that traced nothing, their commit included
        self.overheads: list[float] = []  # of those, what is not training steps: validation, commit, publication
        self.traces = True               # the next epoch traces: the first
        self.last = last  # its slot's last member: True when the runner planned it so; None: not re-planned yet
        self.changes: list[tuple[int, int, int | None]] = []  # (after epoch, new epochs, their last's steps)

    def on_epoch_begin(self, epoch, logs=None):
        self._began = self.clock()

    def on_epoch_end(self, epoch, logs=None):
        seconds = self.clock() - self._began
        logs = logs or {}
        # the member's EpochClock timed the epoch's steps and validation pass; without it all is steps
        steps_s = logs.get("epoch_seconds", seconds) - logs.get("validation_seconds", 0.0)
        overhead = min(max(seconds - steps_s, 0.0), seconds)
        params = self.params or {}
        if params.get("final_steps") and epoch + 1 == params.get("epochs"):
            return  # its partial last epoch: ended as fitted, and shorter than an epoch costs
        if self.traces:
            self.traces = False
            if planned_epochs(self) != epoch + 2:
                return
            # its next epoch is its last, so no epoch that traced nothing comes before it: this one sizes it, on the
            # safe side (a short budget's member planned 2 epochs from a probe otherwise lost the whole second one
            # to the deadline when its first ran slower than probed)
            epoch_s, overhead_s = seconds, overhead
        else:
            self.steady.append(seconds)
            self.overheads.append(overhead)
            epoch_s, overhead_s = statistics.fmean(self.steady), statistics.fmean(self.overheads)
        if self.model.stop_training:
            return
        costs = replace(self.costs, epoch_s=epoch_s)
        left = self.deadline - self.clock()
        if self.last is False:
            if not self.alone(epoch + 1, left, costs):
                return  # members after it are still planned to start when its length ends
            self.last = True  # none of them fits any more: the time left is its own
        first = self.last is None
        planned = replan_member(epoch + 1, left, costs, self.recipe_epochs,
                                self.rules.cap_per_slot if first else 1, self.rules.stretch, self.epochs,
                                self.rules.multiple, grow_slack=0.0 if first else GROW_SLACK)
        self.last = planned.last
        epochs, final_steps = planned.epochs, None
        if planned.last and self.rules.multiple <= 1:
            epochs, final_steps = self.fitted_steps(epoch + 1, left, costs, overhead_s, FINAL_BAND)
            if self.last_epoch_next(epoch + 1, self.epochs, self.final_steps) or self.last_epoch_next(
                    epoch + 1, epochs, final_steps):
                epochs, final_steps = self.last_epoch_fit(epoch + 1, left, costs, overhead_s)
        if (epochs, final_steps) == (self.epochs, self.final_steps) or total_steps(
                epochs, final_steps, self.params["steps"]) <= (epoch + 1) * self.params["steps"]:
            return  # no step left that fits: the deadline stops it, resumable at the length it has
        self.changes.append((epoch + 1, epochs, final_steps))
        self.epochs = self.params["epochs"] = epochs
        self.final_steps = self.params["final_steps"] = final_steps
        self.resize(epochs, final_steps, costs)

    def alone(self, done: int, left: float, costs: Costs) -> bool:
        """Whether its slot's plan made now has no member after it: its epochs ran slower than the plan that put
        members after it, and what is left after its own length no longer holds one of them."""
        return replan_member(done, left, costs, self.recipe_epochs, self.rules.cap_per_slot, self.rules.stretch,
                             self.epochs, self.rules.multiple).last

    def last_epoch_next(self, done: int, epochs: int, final_steps: int | None) -> bool:
        """Whether that length has one epoch, whole or partial, after the `done` ones (none after a whole last
        epoch: its one-cycle has annealed, and only the band reopens it)."""
        per_epoch = self.params["steps"]
        return done * per_epoch < total_steps(epochs, final_steps, per_epoch) <= (done + 1) * per_epoch

    def last_epoch_fit(self, done: int, left: float, costs: Costs, overhead_s: float) -> tuple[int, int | None]:
        """The length of a last member whose next epoch is its last. Nothing re-plans after that epoch: a small
        spare, not the band, and epochs that slow down must not carry it past the deadline, so the slower of the
        mean and the latest epoch sizes it."""
        slower = replace(costs, epoch_s=max(costs.epoch_s, self.steady[-1] if self.steady else 0.0))
        return self.fitted_steps(done, left, slower, overhead_s, last_epoch_band(slower.epoch_s))

    def fitted_steps(self, done: int, left: float, costs: Costs, overhead_s: float, band: float
                     ) -> tuple[int, int | None]:
        """The last member's length counted in steps, as (epochs, steps of a partial last one)."""
        per_epoch = self.params["steps"]
        current = total_steps(self.epochs, self.final_steps, per_epoch)
        total = replan_steps(done, left, costs, per_epoch, overhead_s, current,
                             steps_cap(current, self.rules.stretch, self.recipe_epochs, self.rules.multiple, per_epoch),
                             band=band)
        return split_steps(total, per_epoch)

