"""A member's predictions: softmax on validation and test (plain and test-time augmented) with the kept
weights and each finished snapshot, saved beside the model with its metrics."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import keras
import numpy as np

from ..job.outputs import (
    ModelKind,
    OutputShape,
    keras_file_problem,
    output_problem,
    read_metrics,
    save_model_outputs,
    snapshot_name,
)
from ..job.spec import JobSpec
from ..nets.augment import TTA_VIEWS, tta_view
from ..nets.metrics import accuracy, log_loss
from ..nets.schedules import cycle_end_epochs
from .callbacks.commit import snapshot_path
from .model import MONITOR, runtime_description

PREDICT_BATCH = 1024


def predict_probabilities(model: keras.Model, images: np.ndarray, tta: bool = False
                          ) -> tuple[np.ndarray, np.ndarray | None, float]:
    """Softmax on images, plain and (with tta) averaged over TTA_VIEWS, and the seconds it took."""
    started = time.perf_counter()
    plain = np.asarray(model.predict(images.astype("float32"), batch_size=PREDICT_BATCH, verbose=0), np.float32)
    augmented = None
    if tta:
        views = [plain] + [np.asarray(model.predict(tta_view(images, view), batch_size=PREDICT_BATCH, verbose=0))
                           for view in TTA_VIEWS[1:]]
        augmented = np.mean(views, axis=0, dtype=np.float64).astype(np.float32)
    return plain, augmented, time.perf_counter() - started


def measured_predict_speed(member_dir: Path) -> float | None:
    """What a finished member measured predicting (ms per 1000 images); None when it has no readable metrics."""
    try:
        metrics = read_metrics(member_dir)
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return metrics.get("predict_ms_per_1k") if isinstance(metrics, dict) else None


def write_member_outputs(member_dir: Path, config: dict, spec: JobSpec, index: int, arrays,
                         history: list[dict]) -> dict:
    """Predict validation and test with the kept weights (and each finished snapshot) and save them."""
    runtime = runtime_description()
    common = {"seed": spec.member_seed(index), "model": spec.model, "epochs_planned": spec.epochs,
              "n_train": len(arrays.x_train), "n_val": len(arrays.x_val), "n_test": len(arrays.x_test),
              "precision": spec.precision, "tta": spec.tta, **runtime}
    shape = OutputShape(len(arrays.x_val), len(arrays.x_test), len(spec.classes))
    for cycle, end_epoch in enumerate(cycle_end_epochs(spec.epochs, spec.snapshots) if spec.snapshots > 1 else [], 1):
        path = snapshot_path(member_dir / "snapshots", cycle)
        target = member_dir.parent / snapshot_name(index, cycle)
        if end_epoch > len(history) or output_problem(target, shape, ModelKind.SNAPSHOT) is None:
            continue
        if problem := keras_file_problem(path):
            if target.exists():  # outputs that fail their checks, and no weights to make them again
                shutil.rmtree(target)
                print(f"note: {target.name} dropped: its outputs are damaged and {problem}", flush=True)
            continue
        target.mkdir(parents=True, exist_ok=True)
        snapshot_metrics = _predict_and_save(path, target, {**config, "snapshot": cycle}, spec, arrays,
                                             history[:end_epoch])
        print(f"{target.name} (cycle {cycle}, epoch {end_epoch}): val_acc {snapshot_metrics['val_accuracy']:.4f}",
              flush=True)
    return _predict_and_save(member_dir / "best.keras", member_dir, config, spec, arrays, history,
                             {"member": index, "kind": "member", **common})


def _predict_and_save(model_path: Path, model_dir: Path, config: dict, spec: JobSpec, arrays,
                      history: list[dict], metrics_base: dict | None = None) -> dict:
    """metrics_base None: a snapshot, whose weights are those of its last epoch in `history`."""
    model = keras.saving.load_model(model_path, compile=False)
    val_probs, val_tta, _ = predict_probabilities(model, arrays.x_val, spec.tta)
    test_probs, test_tta, test_seconds = predict_probabilities(model, arrays.x_test, spec.tta)
    fit_seconds = sum(row.get("epoch_seconds", 0.0) for row in history)
    snapshot = metrics_base is None
    metrics = dict(metrics_base or {"member": config["member"], "kind": "snapshot", "cycle": config["snapshot"],
                                    "seed": config["seed"], "model": spec.model, "precision": spec.precision,
                                    "tta": spec.tta})
    weights_epoch = len(history) if snapshot or spec.keep == "last" \
        else int(max(history, key=lambda row: row[MONITOR])["epoch"]) + 1
    metrics.update({
        "val_accuracy": accuracy(val_probs, arrays.y_val), "val_logloss": log_loss(val_probs, arrays.y_val),
        "best_epoch": weights_epoch, "epochs": len(history),
        "stopped_early": not snapshot and len(history) < spec.epochs,
        "fit_seconds": round(fit_seconds, 3),
        "images_per_second": round(len(arrays.x_train) * len(history) / fit_seconds, 1) if fit_seconds else None,
        "predict_ms_per_1k": round(test_seconds / max(len(arrays.x_test), 1) * 1e6, 3),
        "params": int(model.count_params()),
    })
    if spec.tta:
        metrics.update(val_accuracy_tta=accuracy(val_tta, arrays.y_val), val_logloss_tta=log_loss(val_tta, arrays.y_val))
    save_model_outputs(model_dir, config, val_probs, test_probs, metrics, (val_tta, test_tta) if spec.tta else None)
    return metrics
