"""A weight average that warms up: Keras' constant-momentum average, started on Karras et al.'s power function.

Keras' `use_ema` averages with one constant momentum from the first step, and so keeps the weights the net was
initialised with in the average: at 0.98 they still hold 5% of it after 150 steps (a 12000-row epoch), at 0.998
74%. The power-function average of Karras et al. ("Analyzing and Improving the Training Dynamics of Diffusion
Models", 2024, section 3.1) has momentum (1 - 1/t)^(gamma + 1) at step t (1-based): its first step takes the
weights whole, so nothing of the initial ones is kept, and after t steps it spans a constant share of them (gamma
16.97 is their relative width 0.05, 6.94 is 0.10). Here that profile is the average's warm-up: the momentum is
min(ema_momentum, (1 - 1/t)^(gamma + 1)), so early in a member the average is already the recent weights' mean,
and from the step where the profile reaches ema_momentum (about (gamma + 1) / (1 - ema_momentum) steps: 900 for
16.97 and 0.98) it is Keras' average, which forgets the warm-up's difference at that momentum a step. A momentum
near 1 (0.9999) leaves the pure power-function average. BENCHMARKS.md, "A power-function weight average
(--ema-power)", measures both.

It is Keras' own average with another momentum: the optimizer keeps it in the same slots, so the member's loop
swaps it in and out, checkpoints save it and a resumed member continues it, as they do Keras'. Keras reads the
momentum in one private method, `_update_model_variables_moving_average`, on every backend; the optimizers here
override it, and tests/test_train.py holds the average to its closed form, so a Keras that moved the call fails
there, not silently. A saved member loads without these classes (ensemble loads with compile=False, which never
reads the optimizer); `keras.saving.load_model(path)` with its optimizer needs this module imported first.
"""
from __future__ import annotations

import keras
from keras import ops


def power_momentum(step: int, gamma: float, cap: float = 1.0) -> float:
    """The average's momentum at 1-based step `step`, at most `cap`: 0 at the first (the weights are taken
    whole)."""
    return min(cap, (1.0 - 1.0 / step) ** (gamma + 1.0))


class PowerAverage:
    """Mixed in before a Keras optimizer: `use_ema` whose momentum rises along the power function to
    `ema_momentum`."""

    def __init__(self, *args, ema_power: float, **kwargs):
        if kwargs.get("gradient_accumulation_steps"):
            # Keras updates the average on every micro-step, the weights only on every Nth: the profile would bend
            raise ValueError("a power-function average counts steps that update the weights; it does not support "
                             "gradient_accumulation_steps")
        kwargs.pop("use_ema", None)
        super().__init__(*args, use_ema=True, **kwargs)
        self.ema_power = float(ema_power)

    def _update_model_variables_moving_average(self, trainable_variables):
        # Keras calls this after the step's update and before it counts the step: iterations + 1 is this step
        step = ops.cast(ops.add(self.iterations, 1), "float32")
        momentum = ops.minimum(ops.power(ops.subtract(1.0, ops.divide(1.0, step)), self.ema_power + 1.0),
                               self.ema_momentum)
        for weight, average in zip(trainable_variables, self._model_variables_moving_average):
            if average is not None:
                kept = ops.cast(momentum, average.dtype)
                average.assign(ops.add(ops.multiply(kept, average), ops.multiply(ops.subtract(1.0, kept), weight)))

    def get_config(self):
        return {**super().get_config(), "ema_power": self.ema_power}


@keras.saving.register_keras_serializable(package="ensemble")
class PowerAveragedAdam(PowerAverage, keras.optimizers.Adam):
    pass


@keras.saving.register_keras_serializable(package="ensemble")
class PowerAveragedAdadelta(PowerAverage, keras.optimizers.Adadelta):
    pass


@keras.saving.register_keras_serializable(package="ensemble")
class PowerAveragedRMSprop(PowerAverage, keras.optimizers.RMSprop):
    pass


POWER_AVERAGED = {"adam": PowerAveragedAdam, "adadelta": PowerAveragedAdadelta, "rmsprop": PowerAveragedRMSprop}
