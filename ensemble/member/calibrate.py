"""A member's own length under `--time-limit`: the epochs its run's plan gives it, the ones it was started with
(a resumed member keeps its schedule), or, in a job that has measured nothing yet, what a short probe of its
own training says fits (run.planner decides from the costs).

The probe fits a few batches (through the member's own loop, as it trains) on the member's own model and predicts a
slice of the validation rows; the model is then put back as it was built (its weights, its random streams, its
optimizer's state) and trains as the member, its steps already traced, so what it learns does not depend on having
probed (a test holds its probabilities equal to an unprobed member's).
"""
from __future__ import annotations

import math
import os
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from ..job.layout import MemberFolder
from ..job.plan import RunPlan
from ..job.spec import JobSpec
from ..job.planner import (MIN_FINAL_SHARE, Costs, last_epoch_band, plan_slot, replan_steps, split_steps,
                           steps_cap)
from ..store import atomic
from .callbacks.deadline import PREDICT_MARGIN, model_load_seconds
from .loop import PREDICT_BATCH, predict_rows, train_epochs
from .model import build_member_model, rate_callbacks, steps_per_epoch
from .predict import member_views

PROBE_STEPS = 4    # batches a probe pass fits
PROBE_PASSES = 3   # timed passes after the one that traces: their median is the step's cost
PROBE_PREDICT_ROWS = 1024


def process_age() -> float:
    """Seconds since this process started (Linux: from /proc), else 0: start-up before Python runs counts."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return max(0.0, time.time() - (boot + ticks / os.sysconf("SC_CLK_TCK")))
    except (OSError, ValueError, IndexError, StopIteration):
        return 0.0


def recorded_epochs(folder: MemberFolder, job_epochs: int) -> int | None:
    """The epochs a member was started with, once it has trained any: its config.json says (one written
    before members had lengths of their own trained the job's)."""
    if not folder.committed_epochs() and not folder.history.is_file():
        return None
    try:
        value = atomic.read_json(folder.config).get("epochs", job_epochs)
    except (OSError, ValueError, AttributeError):
        value = None
    if not isinstance(value, int) or value < 1:  # unreadable: what its metrics say it was planned for, else the job's
        try:
            value = int(atomic.read_json(folder.metrics).get("epochs_planned") or job_epochs)
        except (OSError, ValueError, AttributeError, TypeError):
            value = job_epochs
    return value


def recorded_final_steps(folder: MemberFolder, steps_per_epoch: int) -> int | None:
    """The steps of the partial last epoch a member was fitted to (its config.json says), once it has trained
    any; None: its last epoch is whole, or it has not started."""
    if not folder.committed_epochs() and not folder.history.is_file():
        return None
    try:
        value = atomic.read_json(folder.config).get("final_steps")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and 0 < value < steps_per_epoch else None


def models_per_member(spec: JobSpec) -> int:
    """The kept weights and every snapshot: each predicts validation and test."""
    return 1 + (spec.snapshots if spec.snapshots > 1 else 0)


class PassClock(keras.callbacks.Callback):
    """Each pass's seconds in its steps within one training run: what a pass of a few steps spends between them
    (swapping a weight average in and out: 8 ms a pass of 4 steps at 33 ms) is not a step's cost."""

    def __init__(self, clock=time.perf_counter):
        super().__init__()
        self.clock = clock
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.seconds.append(0.0)

    def on_train_batch_begin(self, batch, logs=None):
        self._began = self.clock()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds[-1] += self.clock() - self._began


def state_variables(model) -> list:
    """Everything a model's training changes: its variables (weights and random streams) and its optimizer's (under
    a loss-scale wrapper, the wrapper's and the inner optimizer's)."""
    optimizers = [model.optimizer, getattr(model.optimizer, "inner_optimizer", None)]
    variables, seen = [], set()
    for variable in [*model.variables, *(v for o in optimizers if o is not None for v in o.variables)]:
        if id(variable) not in seen:
            seen.add(id(variable))
            variables.append(variable)
    return variables


@dataclass(frozen=True)
class Probe:
    costs: Costs
    ahead_s: float  # what the member still spends before its first step: its validation step's first trace
    model: object   # the member's model, as built, its train and predict steps traced
    predict_row_s: float = 0.0  # predicting one output row, every TTA view of it: the deadline's keep-back
    overhead_s: float = 0.0     # of an epoch, what does not shrink with its steps: the validation pass, the commit


def measure_costs(spec: JobSpec, arrays, seed: int) -> Probe:
    """Start-up, epoch and prediction seconds of a member of this spec, from a probe on its own model, which is
    handed back as it was built."""
    n_train = len(arrays.x_train)
    model = build_member_model(spec, seed, n_train)
    model.optimizer.build(model.trainable_variables)  # its state exists, to be put back after the probe
    as_built = [(variable, keras.ops.convert_to_numpy(variable)) for variable in state_variables(model)]
    streams = random.getstate(), np.random.get_state()
    batch = min(spec.batch_size, n_train)
    rng = np.random.default_rng(seed)
    # steps through the member's own loop, as it trains: one run of several passes pays its set-up once
    pick = rng.choice(n_train, size=min(n_train, batch * PROBE_STEPS), replace=False)
    x, y = arrays.x_train[pick], arrays.y_train[pick]
    steps_per_pass = math.ceil(len(pick) / batch)
    clock = PassClock()
    train_epochs(model, x, y, batch_size=batch, epochs=1 + PROBE_PASSES, seed=seed, whole_batches=True,
                 callbacks=[clock, *rate_callbacks(model)])  # the rates' cost too
    started_up = process_age()
    step = statistics.median(clock.seconds[1:]) / steps_per_pass  # the first pass traces
    # validation and test rows, as many as make a full prediction batch: per-image time is not per-call overhead
    rows = np.concatenate([arrays.x_val[:PROBE_PREDICT_ROWS], arrays.x_test[:PROBE_PREDICT_ROWS]])
    rows = rows[:PROBE_PREDICT_ROWS]
    began = time.perf_counter()
    predict_rows(model, rows, PREDICT_BATCH)  # traces
    predict_trace = time.perf_counter() - began
    began = time.perf_counter()
    predict_rows(model, rows, PREDICT_BATCH)
    per_image = (time.perf_counter() - began) / max(len(rows), 1)
    with tempfile.TemporaryDirectory() as scratch:  # each epoch ends in a commit: training state and best.keras
        began = time.perf_counter()
        model.save(Path(scratch) / "probe.keras")
        commit = 2 * (time.perf_counter() - began)
    for variable, value in as_built:
        variable.assign(value)
    # and Python's and NumPy's global streams where the member's build left them. Not keras.utils.set_random_seed:
    # it also sets TensorFlow's global seed, which clears the runtime's caches, and the member's first step then
    # instantiated its traced function again (0.3 s on a 2-core CPU)
    random.setstate(streams[0])
    np.random.set_state(streams[1])
    epoch = step * steps_per_epoch(spec, n_train) + per_image * len(arrays.x_val) + commit
    views = len(member_views(spec))
    outputs = len(arrays.x_val) + len(arrays.x_test)
    load = model_load_seconds(keras.backend.backend())
    predict = models_per_member(spec) * (outputs * per_image * views * PREDICT_MARGIN + load)
    # a later member's start-up: the process's until here (its train step traced), its prediction and validation traces
    costs = Costs(startup_s=started_up + 2 * predict_trace, epoch_s=epoch, predict_s=predict)
    return Probe(costs, predict_trace, model, predict_row_s=per_image * views,
                 overhead_s=per_image * len(arrays.x_val) + commit)


def slot_plan(plan: RunPlan, spec: JobSpec, costs: Costs, ahead_s: float, clock=time.time) -> tuple[int, ...]:
    """Its slot's plan as if this member started now with only `ahead_s` ahead of it; later members start up."""
    rules = plan.budget
    return plan_slot(plan.deadline - clock() + costs.startup_s - ahead_s, costs, spec.epochs, rules.cap_per_slot,
                     rules.stretch, rules.multiple, every=rules.every)


def calibrated_epochs(plan: RunPlan, spec: JobSpec, costs: Costs, ahead_s: float, clock=time.time) -> int:
    """This member's epochs as its slot's plan would start it now (its start-up is behind it but `ahead_s`); at
    least one cycle even when nothing fits: the job's first member always trains."""
    own = slot_plan(plan, spec, costs, ahead_s, clock)
    multiple = plan.budget.multiple
    return max(own[0] if own else multiple, multiple, 1)


def calibrated_length(plan: RunPlan, spec: JobSpec, probe: Probe, n_train: int, clock=time.time
                      ) -> tuple[int, int | None]:
    """This member's length from its probe: (epochs, steps of a partial last epoch, else None). Its epochs as
    calibrated_epochs gives them; when its slot's plan has no member after it, counted in steps as a re-plan
    counts a last member's (job.planner.replan_steps): whole epochs, then a last, partial one of the steps the
    time left holds. Else a short budget's member of 1 epoch left the rest of its time unused (a 40 s job at
    12000 rows: 9 s of 40), since the re-plan that fits a last member's steps comes after an epoch. When not even
    one epoch and its predictions fit, the job's first member still trains, the steps the time holds (at least
    MIN_FINAL_SHARE of an epoch), where a whole epoch took a 52 s job at 12000 rows to 65 s. A length of one
    epoch has no re-plan after it, so it keeps the last epoch's small spare (job.planner.last_epoch_band)."""
    epochs = calibrated_epochs(plan, spec, probe.costs, probe.ahead_s, clock)
    rules = plan.budget
    if rules.multiple > 1 or rules.every or len(slot_plan(plan, spec, probe.costs, probe.ahead_s, clock)) > 1:
        return epochs, None
    per_epoch = steps_per_epoch(spec, n_train)
    current = epochs * per_epoch
    cap = steps_cap(current, rules.stretch, spec.epochs, rules.multiple, per_epoch)
    left = plan.deadline - clock() - probe.ahead_s
    total = replan_steps(0, left, probe.costs, per_epoch, probe.overhead_s, current, cap)
    if total <= per_epoch:  # and it stays one epoch: a second, partial one sized from the probe alone would be
        # fitted with nothing re-planned before it but that epoch's own end, which may find it no longer fits
        total = min(replan_steps(0, left, probe.costs, per_epoch, probe.overhead_s, current, cap,
                                 band=last_epoch_band(probe.costs.epoch_s)), per_epoch)
    return split_steps(max(total, math.ceil(MIN_FINAL_SHARE * per_epoch)), per_epoch)  # per_epoch: 1 or more


def member_epochs(plan: RunPlan, index: int, folder: MemberFolder) -> int | None:
    """What the member trains for: its own length once started, else its plan's; None: calibrate."""
    recorded = recorded_epochs(folder, plan.spec.epochs)
    if recorded is not None:
        return recorded
    given = plan.member_epochs.get(index)
    if given is not None:
        return given
    if plan.deadline is None or plan.budget is None or plan.spec.augment == "legacy-idg":
        return plan.spec.epochs  # the legacy generator is not probed: its first epoch calibrates the job
    return None
