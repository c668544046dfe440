"""A member's net as it trains: seeded and compiled under the job's precision, its schedule sized to its
rows and applied step by step (member.callbacks.rate), fitted step by step on the arrays (augmentation in the
graph) or through the legacy generator."""
from __future__ import annotations

import importlib.metadata
import math
import platform
from dataclasses import replace

import keras
import numpy as np

from ..job.spec import JobSpec
from ..nets.architectures import build_model, compile_model
from ..nets.augment import legacy_idg_flow
from ..nets.schedules import Schedule, rate_at_step
from .callbacks.rate import StepRate
from .loop import PREDICT_BATCH, train_epochs

MONITOR = "val_accuracy"


def runtime_description() -> dict:
    backend = keras.backend.backend()
    backend_package = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend, backend)
    versions = {"python": platform.python_version(), "keras": keras.__version__, "numpy": np.__version__}
    try:
        versions[backend_package] = importlib.metadata.version(backend_package)
    except importlib.metadata.PackageNotFoundError:
        pass
    devices = keras.distribution.list_devices() or []
    accelerators = [device for device in devices if not device.lower().startswith("cpu")]
    return {"backend": backend, "device": accelerators[0] if accelerators else "cpu",
            "visible_devices": devices, "host": platform.node(), "versions": versions}


def steps_per_epoch(spec: JobSpec, n_train: int) -> int:
    return math.ceil(n_train / spec.batch_size)


def member_schedule(spec: JobSpec, n_train: int, final_steps: int | None = None) -> Schedule:
    """The member's schedule over its spec's epochs, the last of them `final_steps` long where given."""
    return Schedule(spec.schedule, spec.learning_rate, spec.epochs, steps_per_epoch(spec, n_train), spec.snapshots,
                    spec.warmup, final_steps)


def build_member_model(spec: JobSpec, seed: int, n_train: int, final_steps: int | None = None):
    """A member's compiled model: seeded, under the job's precision policy (set before any layer exists). Its
    schedule rides along as `model.member_rate` (a StepRate, None for the rates only callbacks move: constant and
    plateau), which fit_member_model applies and resize_schedule re-sizes."""
    keras.utils.set_random_seed(seed)
    keras.config.set_dtype_policy(spec.precision)
    model = build_model(spec.model, len(spec.classes), spec.augmentation, seed, spec.width)
    schedule = member_schedule(spec, n_train, final_steps)
    compile_model(model, spec.optimizer, float(rate_at_step(schedule, 0)), spec.label_smoothing, len(spec.classes),
                  spec.ema, spec.weight_decay, spec.ema_power)
    model.member_rate = StepRate(schedule) if schedule.by_step else None
    return model


def rate_callbacks(model) -> list:
    """The callback that sets the member's rate before each step, where its schedule has one: first in any run."""
    return [model.member_rate] if model.member_rate is not None else []


def resize_schedule(model, spec: JobSpec, n_train: int, epochs: int, final_steps: int | None = None) -> None:
    """The member's schedule made the one of a run of `epochs` epochs, the last `final_steps` long where given (a
    re-plan: the steps it has taken keep their place), from its next step on; nothing is traced again."""
    if model.member_rate is not None:
        model.member_rate.schedule = member_schedule(replace(spec, epochs=epochs), n_train, final_steps)


def fit_member_model(model, spec: JobSpec, arrays, seed: int, callbacks: list, initial_epoch: int = 0,
                     validate: bool = True, final_steps: int | None = None):
    """Train on the arrays (augmentation in the graph) step by step (member.loop: no input pipeline to stall),
    every batch whole (one traced step), validation in the batches members predict in; legacy-idg feeds the old
    generator to `fit`, as seed 002 did, short last batch and all (validating at fit's default, the training
    batch). validate False (a refit twin, whose validation rows are training rows): no validation pass per
    epoch. `final_steps`: the last epoch's steps, when partial.
    The member's schedule sets each step's rate ahead of every other callback."""
    callbacks = [*rate_callbacks(model), *callbacks]
    if spec.augment == "legacy-idg":
        return model.fit(legacy_idg_flow(arrays.x_train, arrays.y_train, spec.batch_size, seed, spec.augmentation),
                         epochs=spec.epochs, initial_epoch=initial_epoch,
                         validation_data=(arrays.x_val, arrays.y_val) if validate else None,
                         callbacks=callbacks, verbose=0)
    return train_epochs(model, arrays.x_train, arrays.y_train, batch_size=spec.batch_size, epochs=spec.epochs,
                        seed=seed, initial_epoch=initial_epoch, final_steps=final_steps, whole_batches=True,
                        validation=(arrays.x_val, arrays.y_val) if validate else None, callbacks=callbacks,
                        validation_batch_size=PREDICT_BATCH)
