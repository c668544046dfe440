"""Learning-rate schedules: exact rates per epoch, the optimizer computing the same numbers, cycles."""
import math

import keras
import numpy as np
import pytest

from ensemble.nets.schedules import (Schedule, ScheduledRate, cycle_end_epochs, optimizer_rate, plateau_rates,
                                     rate_at_step, rates_per_epoch)

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


@pytest.mark.parametrize("kind, cycles", [("exp", 1), ("onecycle", 1), ("cosine", 1), ("cosine", 3)])
def test_the_optimizer_computes_the_same_rates_from_its_step(kind, cycles):
    schedule = Schedule(kind, LR, epochs=6, steps_per_epoch=7, cycles=cycles)
    in_optimizer = optimizer_rate(schedule)
    assert isinstance(in_optimizer, ScheduledRate)
    for step in range(0, schedule.total_steps, 5):
        got = float(keras.ops.convert_to_numpy(in_optimizer(step)))
        assert got == pytest.approx(float(rate_at_step(schedule, step)), rel=1e-5)
    assert ScheduledRate(**in_optimizer.get_config()).schedule == schedule  # round-trips through a saved model


def test_plateau_and_constant_hand_the_optimizer_a_plain_rate():
    assert optimizer_rate(Schedule("plateau", LR, 4, 10)) == LR
    assert optimizer_rate(Schedule("constant", LR, 4, 10)) == LR


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


def test_a_saved_rate_keeps_its_warm_up_and_one_saved_before_it_had_one_reads_as_the_default():
    rate = optimizer_rate(Schedule("onecycle", LR, epochs=6, steps_per_epoch=7, warmup=0.1))
    assert rate.get_config()["warmup"] == 0.1 and ScheduledRate(**rate.get_config()).schedule.warmup == 0.1
    older = {key: value for key, value in rate.get_config().items() if key != "warmup"}
    assert ScheduledRate(**older).schedule == Schedule("onecycle", LR, epochs=6, steps_per_epoch=7, warmup=0.25)
