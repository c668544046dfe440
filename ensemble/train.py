"""One member of a job: train, keep the best epoch, save everything that rebuilds and scores it.

Runs as its own process (`python -m ensemble.train --job J --member I`), so the runner can place members
on devices and survive their crashes without this code knowing. Everything lands in
`models/<job>/member-XX/`; metrics.json is written last and marks the member done. Live progress (epoch,
batch, latest val accuracy, pid) goes to `jobs/<job>/progress/member-XX.json` for the runner to show.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import keras
import numpy as np

from . import atomic
from .architectures import build_model, compile_model, get_recipe
from .augment import legacy_idg_flow
from .blend import accuracy, log_loss
from .jobs import (JobSpec, job_arrays, load_record, member_lock_path, progress_path, read_history,
                   resumable_epochs, save_model_outputs)
from .locks import LockHeld, PidLock
from .workspace import Workspace

PREDICT_BATCH = 1024
MONITOR = "val_accuracy"
PROGRESS_EVERY_S = 1.0
# A member process killed with its runner may take a moment to go; a new one waits that long for its lock.
MEMBER_LOCK_WAIT_S = 15.0


class EpochClock(keras.callbacks.Callback):
    """Adds epoch_seconds and the learning rate to the logs, so history.csv carries the cost of each epoch."""

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._started
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class EpochPrinter(keras.callbacks.Callback):
    """One flushed line per epoch: the runner relays these, and they make the member's log readable."""

    def __init__(self, label: str, epochs: int):
        super().__init__()
        self.label, self.epochs = label, epochs

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        print(f"{self.label} epoch {epoch + 1}/{self.epochs}  loss {logs.get('loss', math.nan):.4f}  "
              f"acc {logs.get('accuracy', math.nan):.4f}  val_loss {logs.get('val_loss', math.nan):.4f}  "
              f"val_acc {logs.get(MONITOR, math.nan):.4f}  lr {logs.get('learning_rate', math.nan):.1e}  "
              f"{logs.get('epoch_seconds', math.nan):.1f}s", flush=True)


class ProgressWriter:
    """One member's progress file: who runs it (pid, host) and how far it is."""

    def __init__(self, path: Path):
        self.path = path
        self.identity = {"pid": os.getpid(), "host": platform.node(),
                         "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
        self.state: dict = {}

    def write(self, phase: str, **fields) -> None:
        self.state.update(fields, phase=phase)
        atomic.write_json(self.path, {**self.identity, **self.state, "updated": time.time()})


class ProgressFile(keras.callbacks.Callback):
    """Keeps jobs/<job>/progress/member-XX.json current: the runner's live view reads it (so does Ray's
    driver, on another machine), and `ensemble status` shows it."""

    def __init__(self, reporter: ProgressWriter, epochs: int, history: list[dict]):
        super().__init__()
        self.reporter, self.epochs = reporter, epochs
        self.finished = len(history)
        self.val_accuracy = history[-1][MONITOR] if history else None
        self._written = 0.0

    def on_train_begin(self, logs=None):
        self.batches = self.params.get("steps")

    def on_epoch_begin(self, epoch, logs=None):
        self._write(epoch, batch=0)

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() - self._written >= PROGRESS_EVERY_S:
            self._write(self.finished, batch=batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        self.finished = epoch + 1
        self.val_accuracy = (logs or {}).get(MONITOR, self.val_accuracy)
        self._write(self.finished, batch=0)

    def _write(self, finished: int, batch: int) -> None:
        self.finished = finished
        self._written = time.monotonic()
        self.reporter.write("training", epoch=finished, epochs=self.epochs, batch=batch, batches=self.batches,
                            val_accuracy=self.val_accuracy)


class ResumableReduceLROnPlateau(keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau whose patience carries across a resume (the stock one restarts it at train begin).

    The learning rate itself comes back with the optimizer's weights; the best value and the epochs waited
    since are replayed from the finished epochs in history.csv.
    """

    def __init__(self, history: list[dict], **kwargs):
        super().__init__(**kwargs)
        self._history = history

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._history and self.monitor_op is None:
            self._set_monitor_op()
        for row in self._history:  # the same steps as on_epoch_end (cooldown is 0 in the recipe)
            if bool(self._is_improvement(row[self.monitor], self.best)):
                self.best, self.wait = row[self.monitor], 0
            else:
                self.wait += 1
                if self.wait >= self.patience and row.get("learning_rate", 0.0) > self.min_lr:
                    self.wait = 0  # the learning rate was reduced at this epoch


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint that writes a temp file and renames it: a kill mid-save never corrupts best.keras."""

    def __init__(self, filepath, **kwargs):
        super().__init__(filepath, **kwargs)
        self._final_path = Path(filepath)
        self._temp_path = self._final_path.with_name(".saving-" + self._final_path.name)

    def _get_file_path(self, epoch, batch, logs):
        return str(self._temp_path)

    def _save_model(self, epoch, batch, logs):
        super()._save_model(epoch, batch, logs)
        if self._temp_path.exists():
            os.replace(self._temp_path, self._final_path)


def member_config(record: dict, index: int) -> dict:
    spec = JobSpec.from_dict(record["spec"])
    return {"job": record["name"], "member": index, "seed": spec.member_seed(index),
            "data_dir": record["data_dir"], "spec": spec.to_dict(),
            "recipe": {"reduce_lr_on_plateau": {"monitor": MONITOR, "patience": 3, "factor": 0.5,
                                                "min_lr": 1e-5},
                       "loss": "sparse_categorical_crossentropy (probabilities)"}}


def runtime_description() -> dict:
    backend = keras.backend.backend()
    backend_package = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend, backend)
    versions = {"python": platform.python_version(), "keras": keras.__version__, "numpy": np.__version__}
    try:
        versions[backend_package] = importlib.metadata.version(backend_package)
    except importlib.metadata.PackageNotFoundError:
        pass
    devices = keras.distribution.list_devices()
    accelerators = [device for device in devices if not device.lower().startswith("cpu")]
    return {"backend": backend, "device": accelerators[0] if accelerators else "cpu",
            "visible_devices": devices, "host": platform.node(), "versions": versions}


def _callbacks(member_dir: Path, label: str, epochs: int, history: list[dict],
               progress: ProgressWriter | None = None) -> list:
    # Order matters: the clock fills logs before CSVLogger writes them; the backup goes last, so an epoch
    # is only ever marked finished after its checkpoint and history row exist.
    best_so_far = max((row[MONITOR] for row in history), default=None)
    live = [ProgressFile(progress, epochs, history)] if progress else []
    return [
        EpochClock(),
        ResumableReduceLROnPlateau(history, monitor=MONITOR, mode="max", patience=3, factor=0.5, min_lr=1e-5),
        AtomicModelCheckpoint(str(member_dir / "best.keras"), monitor=MONITOR, mode="max",
                              save_best_only=True, initial_value_threshold=best_so_far),
        keras.callbacks.CSVLogger(str(member_dir / "history.csv"), append=True),
        EpochPrinter(label, epochs),
        *live,
        keras.callbacks.BackupAndRestore(str(member_dir / "backup"), double_checkpoint=True),
    ]


def _reset_if_not_resumable(member_dir: Path, epochs: int) -> list[dict]:
    """Without a backup, a partial history cannot be continued: start the member clean."""
    history = read_history(member_dir / "history.csv")
    if len(history) != resumable_epochs(member_dir, epochs):
        for name in ("history.csv", "best.keras"):
            (member_dir / name).unlink(missing_ok=True)
        return []
    return history


def predict_probabilities(model: keras.Model, images: np.ndarray) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    probs = model.predict(images.astype("float32"), batch_size=PREDICT_BATCH, verbose=0)
    return np.asarray(probs, dtype=np.float32), time.perf_counter() - started


def build_member_model(spec: JobSpec, seed: int):
    """A member's compiled model: seeded, under the job's precision policy (set before any layer exists)."""
    keras.utils.set_random_seed(seed)
    keras.config.set_dtype_policy(spec.precision)
    model = build_model(spec.model, spec.augment, seed)
    return compile_model(model, get_recipe(spec.model), spec.learning_rate)


def fit_member_model(model, spec: JobSpec, arrays, seed: int, callbacks: list):
    """Train on the whole arrays at once (augmentation in the graph); legacy-idg feeds the old generator."""
    if spec.augment == "legacy-idg":
        return model.fit(legacy_idg_flow(arrays.x_train, arrays.y_train, spec.batch_size, seed),
                         epochs=spec.epochs, validation_data=(arrays.x_val, arrays.y_val),
                         callbacks=callbacks, verbose=0)
    return model.fit(arrays.x_train.astype("float32"), arrays.y_train, batch_size=spec.batch_size,
                     epochs=spec.epochs, validation_data=(arrays.x_val.astype("float32"), arrays.y_val),
                     shuffle=True, callbacks=callbacks, verbose=0)


def train_member(ws: Workspace, job: str, index: int) -> dict:
    """Train (or finish training) member `index` of `job` and write its artifacts; returns its metrics.

    Holds the member's lock throughout: no two processes ever write one member directory."""
    with PidLock(member_lock_path(ws, job, index), wait=MEMBER_LOCK_WAIT_S):
        return _train_member(ws, job, index)


def _train_member(ws: Workspace, job: str, index: int) -> dict:
    progress = ProgressWriter(progress_path(ws, job, index))
    record = load_record(ws, job)
    spec = JobSpec.from_dict(record["spec"])
    seed = spec.member_seed(index)
    member_dir = ws.member_dir(job, index)
    member_dir.mkdir(parents=True, exist_ok=True)
    config = member_config(record, index)
    atomic.write_json(member_dir / "config.json", config)  # now, so an unfinished member says what it is
    arrays = job_arrays(ws, record)

    history = _reset_if_not_resumable(member_dir, spec.epochs)
    label = member_dir.name
    progress.write("starting", epoch=len(history), epochs=spec.epochs, batch=0, batches=None,
                   val_accuracy=history[-1][MONITOR] if history else None)
    if len(history) < spec.epochs:  # else a crash came after the last epoch: only the outputs are missing
        if history:
            print(f"{label} resuming after epoch {len(history)}/{spec.epochs}", flush=True)
        model = build_member_model(spec, seed)
        fit_member_model(model, spec, arrays, seed, _callbacks(member_dir, label, spec.epochs, history, progress))
        history = read_history(member_dir / "history.csv")
    shutil.rmtree(member_dir / "backup", ignore_errors=True)
    progress.write("predicting", epoch=len(history), batch=0)

    best = keras.saving.load_model(member_dir / "best.keras", compile=False)
    val_probs, _ = predict_probabilities(best, arrays.x_val)
    test_probs, test_seconds = predict_probabilities(best, arrays.x_test)

    fit_seconds = sum(row.get("epoch_seconds", 0.0) for row in history)
    best_epoch = int(max(history, key=lambda row: row[MONITOR])["epoch"]) + 1
    metrics = {
        "member": index, "seed": seed, "model": spec.model, "kind": "member",
        "val_accuracy": accuracy(val_probs, arrays.y_val), "val_logloss": log_loss(val_probs, arrays.y_val),
        "best_epoch": best_epoch, "epochs": len(history),
        "fit_seconds": round(fit_seconds, 3),
        "images_per_second": round(len(arrays.x_train) * len(history) / fit_seconds, 1) if fit_seconds else None,
        "predict_ms_per_1k": round(test_seconds / max(len(arrays.x_test), 1) * 1e6, 3),
        "params": int(best.count_params()),
        "n_train": len(arrays.x_train), "n_val": len(arrays.x_val), "n_test": len(arrays.x_test),
        "precision": spec.precision,
        **runtime_description(),
    }
    save_model_outputs(member_dir, config, val_probs, test_probs, metrics)
    progress.write("done", val_accuracy=metrics["val_accuracy"])
    print(f"{label} done: val_acc {metrics['val_accuracy']:.4f} (best epoch {best_epoch}), "
          f"{fit_seconds:.0f}s fit", flush=True)
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ensemble.train",
                                     description="Train one member of a job (the runner starts this).")
    parser.add_argument("--home", help="workspace folder (default: ENSEMBLE_HOME or the current directory)")
    parser.add_argument("--job", required=True)
    parser.add_argument("--member", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        train_member(Workspace.resolve(args.home), args.job, args.member)
    except LockHeld as held:
        print(f"member {args.member} of job {args.job!r} is being trained by pid {held.holder.get('pid', '?')} "
              f"on {held.holder.get('host', '?')} (lock {held.path}); not starting a second copy", flush=True)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
