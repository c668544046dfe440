"""Replan: a member that sized itself from a probe sizes itself again from the epochs it really trains.

The probe that calibrates a job's first member (member.calibrate) times a few batches; the member's epochs
then run 10-20% off that on a busy 2-core machine (BENCHMARKS.md, "A short warm-up"). A member planned too
long is cut at the deadline before its one-cycle anneals, one planned too short ends with time unused. So
after each epoch that traced nothing, the member plans its slot again (job.planner.replan_member) with the
mean of those epochs: the first time in full (how many members of how long still fit), and from then on,
when it is its slot's last member, only its own length to the deadline (lengthened only with half an epoch
to spare). A member with members after it keeps the length that first re-plan gave it: theirs are planned by
the runner from the same measured epochs.
A new length moves the end of the training loop (`params["epochs"]`, member.loop) and, through `resize`, the
member's schedule and its config.json, before the next epoch begins.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import replace

import keras

from ...job.plan import BudgetRules
from ...job.planner import Costs, replan_member


def planned_epochs(callback: keras.callbacks.Callback) -> int:
    """The run's length as it stands: what the loop was started with, or what a re-plan made it since (the
    callback's own `epochs` before the loop has set its params)."""
    return (callback.params or {}).get("epochs", callback.epochs)


# Once re-planned, a longer length must fit with half an epoch to spare: each change retraces the step, and the
# mean of a few epochs moves by more than the margin of a length that just fits.
GROW_SLACK = 0.5


class Replan(keras.callbacks.Callback):
    """Re-plans the member's length at the end of each epoch that did not trace; `resize(epochs, costs)` is
    called with each new length before the loop goes on, and says whether the next epoch traces again."""

    def __init__(self, deadline: float, costs: Costs, rules: BudgetRules, recipe_epochs: int, epochs: int,
                 resize, clock=time.time):
        super().__init__()
        self.deadline, self.costs, self.rules, self.recipe_epochs = deadline, costs, rules, recipe_epochs
        self.epochs = epochs
        self.resize, self.clock = resize, clock
        self.steady: list[float] = []  # seconds of the epochs that traced nothing, their commit included
        self.traces = True             # the next epoch traces: the first, and the first after a new schedule
        self.last: bool | None = None  # None: not re-planned yet
        self.changes: list[tuple[int, int]] = []  # (after epoch, new length)

    def on_epoch_begin(self, epoch, logs=None):
        self._began = self.clock()

    def on_epoch_end(self, epoch, logs=None):
        seconds = self.clock() - self._began
        if self.traces:
            self.traces = False
            return
        self.steady.append(seconds)
        if self.last is False or self.model.stop_training:
            return
        costs = replace(self.costs, epoch_s=statistics.fmean(self.steady))
        first = self.last is None
        planned = replan_member(epoch + 1, self.deadline - self.clock(), costs, self.recipe_epochs,
                                self.rules.cap_per_slot if first else 1, self.rules.stretch, self.epochs,
                                self.rules.multiple, grow_slack=0.0 if first else GROW_SLACK)
        self.last = planned.last
        if planned.epochs == self.epochs or planned.epochs <= epoch + 1:
            return  # no epoch left that fits: the deadline stops it, resumable at the length it has
        self.changes.append((epoch + 1, planned.epochs))
        self.epochs = self.params["epochs"] = planned.epochs
        self.traces = bool(self.resize(planned.epochs, costs))
