"""One member of a job: train, keep the best epoch, save everything that rebuilds and scores it.

Runs as its own process (`python -m ensemble.train --job J --member I`), so the runner can place members
on devices and survive their crashes without this code knowing. Everything lands in
`models/<job>/member-XX/`; metrics.json is written last and marks the member done.
"""
from __future__ import annotations

import argparse
import csv
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
from .jobs import JobSpec, job_arrays, load_record, save_model_outputs
from .workspace import Workspace

PREDICT_BATCH = 1024
MONITOR = "val_accuracy"


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


def read_history(path: Path) -> list[dict]:
    """history.csv rows, one per epoch: a resumed epoch appears twice in the file and the later row wins."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        rows = {int(row["epoch"]): {key: float(value) for key, value in row.items() if value != ""}
                for row in csv.DictReader(handle)}
    return [rows[epoch] for epoch in sorted(rows)]


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


def _callbacks(member_dir: Path, label: str, epochs: int, history: list[dict]) -> list:
    # Order matters: the clock fills logs before CSVLogger writes them; the backup goes last, so an epoch
    # is only ever marked finished after its checkpoint and history row exist.
    best_so_far = max((row[MONITOR] for row in history), default=None)
    return [
        EpochClock(),
        ResumableReduceLROnPlateau(history, monitor=MONITOR, mode="max", patience=3, factor=0.5, min_lr=1e-5),
        AtomicModelCheckpoint(str(member_dir / "best.keras"), monitor=MONITOR, mode="max",
                              save_best_only=True, initial_value_threshold=best_so_far),
        keras.callbacks.CSVLogger(str(member_dir / "history.csv"), append=True),
        EpochPrinter(label, epochs),
        keras.callbacks.BackupAndRestore(str(member_dir / "backup"), double_checkpoint=True),
    ]


def _reset_if_not_resumable(member_dir: Path, epochs: int) -> list[dict]:
    """Without a backup, a partial history cannot be continued: start the member clean."""
    history = read_history(member_dir / "history.csv")
    finished = len(history) >= epochs and (member_dir / "best.keras").is_file()
    if not finished and not (member_dir / "backup").is_dir():
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
    """Train (or finish training) member `index` of `job` and write its artifacts; returns its metrics."""
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
    if len(history) < spec.epochs:  # else a crash came after the last epoch: only the outputs are missing
        if history:
            print(f"{label} resuming after epoch {len(history)}/{spec.epochs}", flush=True)
        model = build_member_model(spec, seed)
        fit_member_model(model, spec, arrays, seed, _callbacks(member_dir, label, spec.epochs, history))
        history = read_history(member_dir / "history.csv")
    shutil.rmtree(member_dir / "backup", ignore_errors=True)

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
    train_member(Workspace.resolve(args.home), args.job, args.member)
    return 0


if __name__ == "__main__":
    sys.exit(main())
