"""Deadline: ends training at an epoch end when the job's --time-limit would not hold another epoch."""
from __future__ import annotations

import time

import keras

# Loading a saved model and tracing its predict step before predicting with it: cnn11's 20 MB best.keras (weights,
# optimizer state and weight average) loaded in 0.17-0.22 s and traced in 0.11 s on 2 CPU cores under TensorFlow
# (2026-12-06, BENCHMARKS.md "Member start-up without the unused imports"): kept back at about 2.5 times that. The
# 2.0 s guess before left 1.2% of a 137 s budget unused for every member.
MODEL_LOAD_S = 0.75
UNMEASURED_LOAD_S = 2.0  # other backends: JAX compiles the predict step on its first call, not measured yet
# Predicting measured 0.55x (quiet machine) to 1.9x (another process on the cores) of what a validation pass at the
# training batch of 64 suggested; validation now runs in the batch members predict in (member.loop.PREDICT_BATCH),
# so its time per image, like a finished member's or the probe's, measures predicting itself: the time limit
# plans for some slowdown on top of a measurement rather than overshoot.
PREDICT_MARGIN = 1.25


def model_load_seconds(backend: str) -> float:
    """What loading a saved model and its first prediction call cost on `backend`, kept back for each model."""
    return MODEL_LOAD_S if backend == "tensorflow" else UNMEASURED_LOAD_S


class Deadline(keras.callbacks.Callback):
    """Ends training at an epoch end when another epoch and the member's predictions would not finish
    before the job's --time-limit deadline; the member then keeps what it has and can be resumed.

    Estimates use the fastest epoch so far (the first one also traces the graph), its steps scaled down for a
    partial last epoch (member.loop's `final_steps`), and, for predicting, what finished members of the job
    measured or its probe timed (`predict_seconds_per_image`: per output row, every view), else the fastest
    validation pass of this one."""

    def __init__(self, deadline: float, n_val: int, n_outputs: int, views: int, snapshot_ends: tuple[int, ...] = (),
                 predict_seconds_per_image: float | None = None, clock=time.time):
        super().__init__()
        self.deadline, self.n_val, self.n_outputs, self.views = deadline, n_val, n_outputs, views
        self.snapshot_ends = snapshot_ends  # 1-based epochs after which a snapshot model is saved
        self.predict_seconds_per_image = predict_seconds_per_image
        self.clock = clock
        self.epoch_seconds: list[float] = []
        self.validation_seconds: list[float] = []
        self.steps_seconds: list[float] = []  # each epoch's training steps alone
        self.stopped_at: int | None = None
        self.load_s = model_load_seconds(keras.backend.backend())

    def models_after(self, epochs: int) -> int:
        """The member's kept weights and the snapshots it has after `epochs` epochs: what it must predict with."""
        return 1 + sum(end <= epochs for end in self.snapshot_ends)

    def seconds_needed(self, logs: dict, epochs_done: int) -> float:
        """Another epoch, then loading and predicting with every model the member will then have."""
        self.epoch_seconds.append(logs.get("epoch_seconds", 0.0))
        if "validation_seconds" in logs:
            self.validation_seconds.append(logs["validation_seconds"])
        self.steps_seconds.append(logs.get("steps_seconds",
                                           logs.get("epoch_seconds", 0.0) - logs.get("validation_seconds", 0.0)))
        per_image = self.predict_seconds_per_image
        if per_image is None:
            per_image = min(self.validation_seconds, default=0.0) / max(self.n_val, 1) * self.views
        next_epoch = min(self.epoch_seconds) - (1.0 - self.next_share(epochs_done)) * min(self.steps_seconds)
        return next_epoch + self.predictions_s(self.models_after(epochs_done + 1), per_image)

    def predictions_s(self, models: int, per_image: float) -> float:
        """What this callback keeps back for loading and predicting with `models` models at `per_image` seconds."""
        return models * (self.n_outputs * per_image * PREDICT_MARGIN + self.load_s)

    def measured_predictions_s(self) -> float | None:
        """What it keeps back for the member's kept weights, at the speed the job's finished members measured
        (None: none has finished yet, and it will use this member's own validation pass)."""
        per_image = self.predict_seconds_per_image
        return None if per_image is None else self.predictions_s(1, per_image)

    def next_share(self, epochs_done: int) -> float:
        """The share of an epoch's steps the next epoch trains: 1 but for a partial last epoch."""
        params = self.params or {}
        final, steps = params.get("final_steps"), params.get("steps")
        return final / steps if final and steps and epochs_done == params.get("epochs", 0) - 1 else 1.0

    def on_epoch_begin(self, epoch, logs=None):
        self._began = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        # the deadline runs after the epoch's commit and publication: its whole cost is what the next one needs
        whole = time.perf_counter() - self._began
        logs = logs or {}
        steps = logs.get("epoch_seconds", whole) - logs.get("validation_seconds", 0.0)  # EpochClock's timing
        logs = {**logs, "epoch_seconds": max(whole, logs.get("epoch_seconds", 0.0)),
                "steps_seconds": min(max(steps, 0.0), whole)}
        if self.clock() + self.seconds_needed(logs, epoch + 1) > self.deadline:
            self.stopped_at = epoch + 1
            self.model.stop_training = True
