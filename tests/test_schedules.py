"""Learning-rate schedules: exact rates per epoch, the optimizer training at the same numbers, cycles."""
import math

import keras
import numpy as np
import pytest

from ensemble.member.callbacks.rate import StepRate
from ensemble.member.loop import train_epochs
from ensemble.nets.schedules import (Schedule, ScheduledRate, cycle_end_epochs, plateau_rates, rate_at_step,
                                     rates_per_epoch)

LR = 1e-3


@pytest.mark.parametrize("kind, cycles, expected", [
    ("constant", 1, [LR, LR, LR, LR]),
    ("plateau", 1, [LR, LR, LR, LR]),   # the starting rate; ReduceLROnPlateau moves it from validation
    ("exp", 1, [LR, LR * 0.95, LR * 0.95 ** 2, LR * 0.95 ** 3]),
    # 40 steps, warm-up over the first 10 from LR/25; then half a cosine from LR down to LR/1e5
    ("onecycle", 1, [LR / 25, LR, 1e-8 + (LR - 1e-8) * 0.75, 1e-8 + (LR - 1e-8) * 0.25]),
    ("cosine", 1, [LR, LR * (1 + math.cos(math.pi / 4)) / 2, LR / 2, LR * (1 + math.cos(3 * math.pi / 4)) / 2]),
    ("cosine", 2, [LR, LR / 2, LR, LR / 2]),  # two cycles of two epochs: each restarts at LR
])
def test_rate_each_epoch_starts_with(kind, cycles, expected):
    schedule = Schedule(kind, LR, epochs=4, steps_per_epoch=10, cycles=cycles)
    assert rates_per_epoch(schedule) == pytest.approx(expected, rel=1e-12, abs=0)


def test_onecycle_rises_then_falls_within_its_bounds():
    schedule = Schedule("onecycle", LR, epochs=12, steps_per_epoch=50)
    rates = np.array([rate_at_step(schedule, step) for step in range(schedule.total_steps)])
    peak = int(np.argmax(rates))
    assert peak == 150 and rates[peak] == pytest.approx(LR)   # 25% of 600 steps
    assert (np.diff(rates[: peak + 1]) > 0).all() and (np.diff(rates[peak:]) < 0).all()
    assert rates[0] == pytest.approx(LR / 25, rel=1e-12) and rates[-1] < 3 * LR / 1e5
    assert rate_at_step(schedule, schedule.total_steps) == pytest.approx(LR / 1e5, rel=1e-12)


class RatesSeen(keras.callbacks.Callback):
    """The rate each optimizer step trained at, by step; and the train function each epoch ended with."""

    def __init__(self, change_at_epoch_end=None):
        super().__init__()
        self.rates, self.functions, self.change = {}, [], change_at_epoch_end or {}

    def on_train_batch_end(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) - 1  # the step just taken
        self.rates[step] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        self.functions.append(self.model.train_function)
        if epoch in self.change:
            self.change[epoch]()


def _tiny_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(1.0), loss="sparse_categorical_crossentropy")
    return model


ROWS = np.random.default_rng(0).random((21, 3)).astype("float32"), np.arange(21) % 2  # 7 steps of 3 rows


@pytest.mark.parametrize("kind, cycles", [("exp", 1), ("onecycle", 1), ("cosine", 1), ("cosine", 3)])
def test_each_optimizer_step_trains_at_the_schedules_rate_for_it(kind, cycles):
    schedule = Schedule(kind, LR, epochs=6, steps_per_epoch=7, cycles=cycles)
    model, seen = _tiny_model(), RatesSeen()
    train_epochs(model, *ROWS, batch_size=3, epochs=6, seed=0, callbacks=[StepRate(schedule), seen])
    assert sorted(seen.rates) == list(range(42))
    assert [seen.rates[step] for step in range(42)] == pytest.approx(
        [float(rate_at_step(schedule, step)) for step in range(42)], rel=1e-6)


def test_a_re_planned_schedule_takes_over_at_the_next_step_and_nothing_is_traced_again():
    """A re-plan (member.callbacks.replan) swaps the schedule between epochs: the steps taken keep their rates, the
    next ones follow the new length, and the train step compiled before it is the one that goes on."""
    short = Schedule("onecycle", LR, epochs=3, steps_per_epoch=7)
    longer = Schedule("onecycle", LR, epochs=5, steps_per_epoch=7, final_steps=4)
    stepper = StepRate(short)
    model = _tiny_model()
    seen = RatesSeen({0: lambda: setattr(stepper, "schedule", longer)})
    train_epochs(model, *ROWS, batch_size=3, epochs=3, seed=0, callbacks=[stepper, seen])
    assert [seen.rates[step] for step in range(7)] == pytest.approx(
        [float(rate_at_step(short, step)) for step in range(7)], rel=1e-6)
    assert [seen.rates[step] for step in range(7, 21)] == pytest.approx(
        [float(rate_at_step(longer, step)) for step in range(7, 21)], rel=1e-6)
    assert seen.functions[0] is not None and all(f is seen.functions[0] for f in seen.functions)
    assert rate_at_step(short, 10) != pytest.approx(rate_at_step(longer, 10), rel=1e-3)  # the change is visible


def test_only_plateau_and_constant_leave_the_rate_to_callbacks():
    assert [kind for kind in ("constant", "plateau", "exp", "onecycle", "cosine")
            if not Schedule(kind, LR, 4, 10).by_step] == ["constant", "plateau"]


def test_cycles_are_equal_and_only_for_cosine():
    assert cycle_end_epochs(12, 4) == [3, 6, 9, 12]
    assert cycle_end_epochs(5, 1) == [5]
    with pytest.raises(ValueError, match="12 epochs do not split into 5 equal cycles"):
        cycle_end_epochs(12, 5)
    with pytest.raises(ValueError, match="3 cycles need the cosine schedule, not 'onecycle'"):
        Schedule("onecycle", LR, 12, 10, cycles=3)
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        Schedule("step", LR, 12, 10)


def test_plateau_rates_halve_after_three_epochs_without_improvement():
    values = [0.5, 0.6, 0.6, 0.6, 0.6, 0.60005, 0.7, 0.7, 0.7, 0.7]
    assert plateau_rates(values, 1e-4) == pytest.approx(
        [1e-4, 1e-4, 1e-4, 1e-4, 1e-4, 5e-5, 5e-5, 5e-5, 5e-5, 5e-5], rel=1e-12)
    assert plateau_rates([0.5] * 8, 2e-5) == pytest.approx([2e-5] * 4 + [1e-5] * 4, rel=1e-12)  # floor at min_lr


def test_onecycle_warm_up_is_the_share_of_steps_it_is_given():
    # 40 steps, warm-up over the first 20: halfway up at step 10, the peak at 20, halfway down at 30
    schedule = Schedule("onecycle", LR, epochs=4, steps_per_epoch=10, warmup=0.5)
    assert rates_per_epoch(schedule) == pytest.approx(
        [LR / 25, (LR + LR / 25) / 2, LR, 1e-8 + (LR - 1e-8) * 0.5], rel=1e-12, abs=0)
    short = Schedule("onecycle", LR, epochs=12, steps_per_epoch=50, warmup=0.05)
    rates = np.array([rate_at_step(short, step) for step in range(short.total_steps)])
    assert int(np.argmax(rates)) == 30  # 5% of 600 steps
    with pytest.raises(ValueError, match="a warm-up of 1 of the steps is not a share from 0 to below 1"):
        Schedule("onecycle", LR, 12, 10, warmup=1.0)


def test_the_schedule_a_member_saved_before_the_rate_moved_out_of_its_optimizer_still_loads():
    """Older best.keras files hold a ScheduledRate in their optimizer: it computes rate_at_step in the graph, and
    a config saved before warm-up existed reads as the old fixed 25%."""
    schedule = Schedule("onecycle", LR, epochs=6, steps_per_epoch=7, warmup=0.1)
    rate = ScheduledRate(**{"kind": "onecycle", "learning_rate": LR, "epochs": 6, "steps_per_epoch": 7, "cycles": 1,
                            "warmup": 0.1, "final_steps": None})
    assert rate.schedule == schedule and ScheduledRate(**rate.get_config()).schedule == schedule
    for step in range(0, schedule.total_steps, 5):
        assert float(keras.ops.convert_to_numpy(rate(step))) == pytest.approx(float(rate_at_step(schedule, step)),
                                                                                rel=1e-5)
    older = {key: value for key, value in rate.get_config().items() if key != "warmup"}
    assert ScheduledRate(**older).schedule == Schedule("onecycle", LR, epochs=6, steps_per_epoch=7, warmup=0.25)
