"""Learning-rate schedules as pure functions of the optimizer step.

A scheduled rate depends on nothing but the step, and the step (the optimizer's `iterations`) is part of
the training state a member restores, so a resumed member continues with exactly the rates it would have had.
The arithmetic is written once against an array namespace (numpy, or `keras.ops` on a tensor); a member's
optimizer gets each step's rate from member.callbacks.rate.StepRate, so its train step never holds the
schedule's length. `plateau` is the exception: ReduceLROnPlateau moves the rate from validation results
(member.callbacks.plateau.ResumableReduceLROnPlateau replays it on resume).

    constant   lr
    plateau    lr, halved by ReduceLROnPlateau(val acc, patience 3, factor 0.5, min_lr 1e-5) (seed 002)
    exp        lr * 0.95 ** epoch                                     (Deotte)
    onecycle   cosine warm-up from lr/25 to lr over the first 25% of steps (`warmup`; cnn11's recipe: 5%),
               cosine anneal to lr/1e5 (Smith & Topin 2017 with fastai's fit_one_cycle defaults)
    cosine     lr/2 * (1 + cos(pi * t)), t the position within the current cycle; with K cycles each
               restarts at lr and the weights at every cycle's end are a snapshot (Huang et al. 2017)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np

from .recipes import ONECYCLE_WARMUP, SCHEDULES

EXP_DECAY = 0.95
ONECYCLE_START_DIV = 25.0
ONECYCLE_FINAL_DIV = 1e5
PLATEAU = {"patience": 3, "factor": 0.5, "min_lr": 1e-5}  # seed 002's ReduceLROnPlateau


@dataclass(frozen=True)
class Schedule:
    kind: str
    learning_rate: float
    epochs: int
    steps_per_epoch: int
    cycles: int = 1
    warmup: float = ONECYCLE_WARMUP  # onecycle's share of steps spent rising to the peak
    final_steps: int | None = None   # steps of the last epoch when it is partial (a member fitted to a deadline)

    def __post_init__(self):
        if not 0 <= self.warmup < 1:
            raise ValueError(f"a warm-up of {self.warmup:g} of the steps is not a share from 0 to below 1")
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}; choose one of {', '.join(SCHEDULES)}")
        if self.cycles > 1 and self.kind != "cosine":
            raise ValueError(f"{self.cycles} cycles need the cosine schedule, not {self.kind!r}")
        if self.final_steps is not None and not (0 < self.final_steps < self.steps_per_epoch and self.cycles == 1):
            raise ValueError(f"a last epoch of {self.final_steps} steps is not part of one of "
                             f"{self.steps_per_epoch} in a single cycle")

    @property
    def total_steps(self) -> int:
        if self.final_steps:
            return (self.epochs - 1) * self.steps_per_epoch + self.final_steps
        return self.epochs * self.steps_per_epoch

    @property
    def by_step(self) -> bool:
        """Whether each step's rate comes from the schedule (all but plateau and constant, whose rate only callbacks
        move)."""
        return self.kind not in ("plateau", "constant")


def _half_cosine(start, end, t, xp):
    """From start (t=0) to end (t=1) along half a cosine."""
    return end + (start - end) * (1.0 + xp.cos(math.pi * t)) / 2.0


def rate_at_step(schedule: Schedule, step, xp=np):
    """The learning rate of optimizer step `step` (0-based; a number or a backend tensor)."""
    lr = schedule.learning_rate
    if schedule.kind in ("constant", "plateau"):
        return step * 0.0 + lr
    if schedule.kind == "exp":
        return lr * xp.power(EXP_DECAY, xp.floor(step / schedule.steps_per_epoch))
    total = float(schedule.total_steps)
    if schedule.kind == "onecycle":
        warm = max(1.0, round(schedule.warmup * total))
        rising = _half_cosine(lr / ONECYCLE_START_DIV, lr, xp.clip(step / warm, 0.0, 1.0), xp)
        falling = _half_cosine(lr, lr / ONECYCLE_FINAL_DIV, xp.clip((step - warm) / max(total - warm, 1.0), 0.0, 1.0), xp)
        return xp.where(step < warm, rising, falling)
    cycle = total / schedule.cycles
    position = step / cycle - xp.floor(step / cycle)
    return _half_cosine(lr, 0.0, position, xp)


def rates_per_epoch(schedule: Schedule) -> list[float]:
    """The rate each epoch starts with, as history.csv records it."""
    return [float(rate_at_step(schedule, epoch * schedule.steps_per_epoch)) for epoch in range(schedule.epochs)]


def plateau_rates(val_accuracies: list[float], learning_rate: float, patience: int = PLATEAU["patience"],
                  factor: float = PLATEAU["factor"], min_lr: float = PLATEAU["min_lr"],
                  min_delta: float = 1e-4) -> list[float]:
    """The rate each epoch ran at under Keras' ReduceLROnPlateau(mode max, cooldown 0), given the
    validation accuracy each epoch ended with: what an uninterrupted run does with that history."""
    rates, rate, best, wait = [], learning_rate, None, 0
    for value in val_accuracies:
        rates.append(rate)
        if best is None or value - min_delta > best:
            best, wait = value, 0
            continue
        wait += 1
        if wait >= patience and rate > min_lr:
            rate, wait = max(rate * factor, min_lr), 0
    return rates


def cycle_end_epochs(epochs: int, cycles: int) -> list[int]:
    """1-based epochs after which a snapshot is taken: the last epoch of each of `cycles` equal cycles."""
    if cycles < 1 or epochs % cycles:
        raise ValueError(f"{epochs} epochs do not split into {cycles} equal cycles; "
                         f"use --epochs a multiple of {cycles}")
    return [epochs // cycles * (k + 1) for k in range(cycles)]


@keras.saving.register_keras_serializable(package="ensemble")
class ScheduledRate(keras.optimizers.schedules.LearningRateSchedule):
    """`rate_at_step` inside the optimizer, computed from its own step count: what the optimizer of a member saved
    before the rate moved to member.callbacks.rate holds, so those .keras files still load with their optimizer."""

    def __init__(self, kind: str, learning_rate: float, epochs: int, steps_per_epoch: int, cycles: int = 1,
                 warmup: float = ONECYCLE_WARMUP, final_steps: int | None = None):
        # a model saved before warm-up or a partial last epoch existed had the defaults
        self.schedule = Schedule(kind, float(learning_rate), int(epochs), int(steps_per_epoch), int(cycles),
                                 float(warmup), None if final_steps is None else int(final_steps))

    def __call__(self, step):
        return rate_at_step(self.schedule, keras.ops.cast(step, "float32"), xp=keras.ops)

    def get_config(self):
        s = self.schedule
        return {"kind": s.kind, "learning_rate": s.learning_rate, "epochs": s.epochs,
                "steps_per_epoch": s.steps_per_epoch, "cycles": s.cycles, "warmup": s.warmup,
                "final_steps": s.final_steps}
