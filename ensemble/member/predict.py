"""A member's predictions: softmax on validation and test (plain and test-time augmented) with the kept
weights and each finished snapshot, saved beside the model with its metrics."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import keras
import numpy as np

from ..job.layout import MemberFolder, ModelFolder
from ..job.outputs import Metrics, OutputShape, is_current, keras_file_problem, save_model_outputs
from ..job.spec import JobSpec
from ..nets.augment import TTA_VIEWS, tta_view, tta_views
from ..nets.metrics import accuracy, log_loss
from ..nets.schedules import cycle_end_epochs
from .loop import PREDICT_BATCH, predict_rows
from .model import MONITOR, runtime_description


def member_views(spec: JobSpec) -> tuple[tuple[float, ...], ...]:
    """The views a member predicts each output row under: the image alone, or with --tta its test-time views
    (each also mirrored for a net trained with --flip). Its deadline and probe count them."""
    return tta_views(spec.flip) if spec.tta else TTA_VIEWS[:1]


def predict_probabilities(model: keras.Model, images: np.ndarray, tta: bool = False, callbacks=(),
                          views: tuple[tuple[float, ...], ...] = TTA_VIEWS
                          ) -> tuple[np.ndarray, np.ndarray | None, float]:
    """Softmax on images, plain and (with tta) averaged over `views` (the identity first), and the seconds it
    took."""
    started = time.perf_counter()
    predict = lambda x: predict_rows(model, x, PREDICT_BATCH, list(callbacks))  # noqa: E731
    plain = np.asarray(predict(images), np.float32)
    augmented = None
    if tta:
        each_view = [plain] + [np.asarray(predict(tta_view(images, view))) for view in views[1:]]
        augmented = np.mean(each_view, axis=0, dtype=np.float64).astype(np.float32)
    return plain, augmented, time.perf_counter() - started


def write_member_outputs(folder: MemberFolder, config: dict, spec: JobSpec, index: int, arrays,
                         history: list[dict], callbacks=()) -> Metrics:
    """Predict validation and test with the kept weights (and each finished snapshot) and save them;
    `callbacks` see every prediction batch (the progress file keeps beating)."""
    runtime = runtime_description()
    shape = OutputShape(len(arrays.x_val), len(arrays.x_test), len(spec.classes), arrays.test_sha256 or None,
                        arrays.split_sha256 or None)
    sizes = {"n_train": len(arrays.x_train), "n_val": len(arrays.x_val), "n_test": len(arrays.x_test)}
    for cycle, end_epoch in enumerate(cycle_end_epochs(spec.epochs, spec.snapshots) if spec.snapshots > 1 else [], 1):
        path = folder.snapshot_model(cycle)
        target = folder.snapshot_outputs(cycle)
        if end_epoch > len(history) or is_current(target, shape):
            continue
        if problem := keras_file_problem(path):
            if target.path.exists():  # outputs that fail their checks, and no weights to make them again
                shutil.rmtree(target.path)
                print(f"note: {target.name} dropped: its outputs are damaged and {problem}", flush=True)
            continue
        described = {"kind": "snapshot", "member": index, "fold": config.get("fold"), "cycle": cycle,
                     "seed": spec.member_seed(index),
                     "model": spec.model, "precision": spec.precision, "tta": spec.tta}
        snapshot_metrics = _predict_and_save(path, target, {**config, "snapshot": cycle}, spec, arrays,
                                             history[:end_epoch], described, snapshot=True, callbacks=callbacks)
        print(f"{target.name} (cycle {cycle}, epoch {end_epoch}): val_acc {snapshot_metrics.val_accuracy:.4f}",
              flush=True)
    described = {"member": index, "fold": config.get("fold"), "refit_of": config.get("refit_of"), "kind": "member",
                 "seed": spec.member_seed(index),
                 "model": spec.model,
                 "epochs_planned": spec.epochs, **sizes, "precision": spec.precision, "tta": spec.tta}
    return _predict_and_save(folder.best, folder, config, spec, arrays, history, described, extra=runtime,
                             callbacks=callbacks)


def _predict_and_save(model_path: Path, folder: ModelFolder, config: dict, spec: JobSpec, arrays,
                      history: list[dict], described: dict, snapshot: bool = False, extra: dict | None = None,
                      callbacks=()) -> Metrics:
    """A snapshot's weights are those of its last epoch in `history`; a member's, its kept epoch's."""
    model = keras.saving.load_model(model_path, compile=False)
    views = member_views(spec)
    val_probs, val_tta, _ = predict_probabilities(model, arrays.x_val, spec.tta, callbacks, views)
    test_probs, test_tta, test_seconds = predict_probabilities(model, arrays.x_test, spec.tta, callbacks, views)
    fit_seconds = sum(row.get("epoch_seconds", 0.0) for row in history)
    weights_epoch = len(history) if snapshot or spec.keep == "last" \
        else int(max(history, key=lambda row: row[MONITOR])["epoch"]) + 1
    scores = {}
    if spec.tta:
        scores = {"val_accuracy_tta": accuracy(val_tta, arrays.y_val), "val_logloss_tta": log_loss(val_tta, arrays.y_val)}
    metrics = Metrics(
        **described, val_accuracy=accuracy(val_probs, arrays.y_val), val_logloss=log_loss(val_probs, arrays.y_val),
        best_epoch=weights_epoch, epochs=len(history), stopped_early=not snapshot and len(history) < spec.epochs,
        fit_seconds=round(fit_seconds, 3),
        images_per_second=round(len(arrays.x_train) * len(history) / fit_seconds, 1) if fit_seconds else None,
        predict_ms_per_1k=round(test_seconds / max(len(arrays.x_test), 1) * 1e6, 3),
        params=int(model.count_params()), **scores, test_sha256=arrays.test_sha256 or None,
        split_sha256=arrays.split_sha256 or None, extra=extra or {})
    save_model_outputs(folder, config, val_probs, test_probs, metrics, (val_tta, test_tta) if spec.tta else None)
    return metrics
