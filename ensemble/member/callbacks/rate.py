"""StepRate: the member's learning rate, set before each of its steps from its schedule (nets.schedules.rate_at_step
at the optimizer's step count).

Given a LearningRateSchedule, Keras computes the rate inside the train step, with the schedule's length traced into
it: each re-planned length (member.callbacks.replan) traced and compiled the step again, which cost the next epoch
up to 6 s at 12000 rows on a 2-core CPU. Here the train step reads the rate from the optimizer's own learning-rate
variable (on every backend a variable the step takes as state), so a new length is only a new `schedule` here.
The step count is the optimizer's, which a training state restores: a resumed member continues its rates exactly.
"""
from __future__ import annotations

import keras

from ...nets.schedules import Schedule, rate_at_step


def optimizer_step(model) -> int:
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class StepRate(keras.callbacks.Callback):
    """Before every epoch (ahead of the callbacks that record its starting rate) and every batch, writes the rate of
    the optimizer's next step under `schedule` into the optimizer."""

    def __init__(self, schedule: Schedule):
        super().__init__()
        self.schedule = schedule

    def set_rate(self) -> None:
        self.model.optimizer.learning_rate = float(rate_at_step(self.schedule, optimizer_step(self.model)))

    def on_epoch_begin(self, epoch, logs=None):
        self.set_rate()

    def on_train_batch_begin(self, batch, logs=None):
        self.set_rate()
