"""A weight average whose reach grows with training: Karras et al.'s power-function average.

Keras' `use_ema` averages with one constant momentum, and keeps the first step's weights in the average: at 0.98
they still hold 5% of it after 150 steps, at 0.998 74%. The power-function average of Karras et al. ("Analyzing
and Improving the Training Dynamics of Diffusion Models", 2024, section 3.1) has momentum (1 - 1/t)^(gamma + 1)
at step t (1-based): its first step takes the weights whole, so nothing of the initial ones is kept, and after t
steps it spans a constant share of them (gamma 16.97 is their relative width 0.05, 6.94 is 0.10). Early in a
member, when a constant average is still mostly its start, it is already the recent weights' mean; late, its
momentum passes any constant one. BENCHMARKS.md, "A power-function weight average", measures it.

It is Keras' own average with another momentum: the optimizer keeps it in the same slots, so the member's loop
swaps it in and out, checkpoints save it and a resumed member continues it, as they do Keras'. Keras reads the
momentum in one private method, `_update_model_variables_moving_average`, on every backend; the optimizers here
override it, and tests/test_train.py holds the average to its closed form, so a Keras that moved the call fails
there, not silently.
"""
from __future__ import annotations

import keras
from keras import ops


def power_momentum(step: int, gamma: float) -> float:
    """The average's momentum at 1-based step `step`: 0 at the first (the weights are taken whole)."""
    return (1.0 - 1.0 / step) ** (gamma + 1.0)


class PowerAverage:
    """Mixed in before a Keras optimizer: `use_ema` with the power-function momentum in place of `ema_momentum`."""

    def __init__(self, *args, ema_power: float, **kwargs):
        kwargs.pop("use_ema", None)
        super().__init__(*args, use_ema=True, **kwargs)
        self.ema_power = float(ema_power)

    def _update_model_variables_moving_average(self, trainable_variables):
        # Keras calls this after the step's update and before it counts the step: iterations + 1 is this step
        step = ops.cast(ops.add(self.iterations, 1), "float32")
        momentum = ops.power(ops.subtract(1.0, ops.divide(1.0, step)), self.ema_power + 1.0)
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
