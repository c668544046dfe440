"""The member's live progress file (jobs/<job>/progress/member-XX.json) and the callback that keeps it current."""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import keras

from ...store import atomic
from ..loop import epoch_steps
from ..model import MONITOR
from .replan import planned_epochs

PROGRESS_EVERY_S = 1.0


class ProgressWriter:
    """One member's progress file: who runs it (pid, host) and how far it is."""

    def __init__(self, path: Path):
        self.path = path
        self.identity = {"pid": os.getpid(), "host": platform.node(),
                         "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                         "ray_node_id": os.environ.get("ENSEMBLE_RAY_NODE_ID")}  # executors.RAY_NODE_ENV
        self.state: dict = {}
        self._beating_since: float | None = None  # monotonic time of the last write once batches run

    def write(self, phase: str, **fields) -> None:
        self.state.update(fields, phase=phase)
        atomic.write_json(self.path, {**self.identity, **self.state, "updated": time.time()})

    def beat(self, phase: str, **fields) -> None:
        """A write while batches run (training, validating, predicting): the gaps between beats are what
        this member's silence is measured against (run.stall)."""
        now = time.monotonic()
        if self._beating_since is not None:
            gap = now - self._beating_since
            self.state["heartbeat_s"] = round(max(self.state.get("heartbeat_s") or 0.0, gap), 3)
        self._beating_since = now
        self.write(phase, **fields)

    def note(self, message: str) -> None:
        """Something the user should know (a damaged file set aside, a restart): in the member's log, and in
        its progress file for the runner to show."""
        print(f"note: {message}", flush=True)
        self.state["notes"] = self.state.get("notes", []) + [message]
        self.write(self.state.get("phase", "starting"))


class ProgressFile(keras.callbacks.Callback):
    """Keeps jobs/<job>/progress/member-XX.json current: the runner's live view reads it (so does Ray's
    driver, on another machine), and `ensemble status` shows it."""

    def __init__(self, reporter: ProgressWriter, epochs: int, history: list[dict]):
        super().__init__()
        self.reporter, self.epochs = reporter, epochs
        self.finished = len(history)
        self.val_accuracy = history[-1].get(MONITOR) if history else None
        self.epoch_seconds = history[-1].get("epoch_seconds") if history else None
        self._written = 0.0

    def on_train_begin(self, logs=None):
        self.batches = self.params.get("steps")

    def on_epoch_begin(self, epoch, logs=None):
        if self.batches is not None:
            self.batches = epoch_steps(self.params, epoch)  # a partial last epoch has fewer
        self._write(epoch, batch=0)

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() - self._written >= PROGRESS_EVERY_S:
            self._write(self.finished, batch=batch + 1)

    def on_test_batch_end(self, batch, logs=None):  # validation at an epoch's end: still alive
        if time.monotonic() - self._written >= PROGRESS_EVERY_S:
            self._write(self.finished, batch=self.batches or 0)

    def on_epoch_end(self, epoch, logs=None):
        self.finished = epoch + 1
        self.val_accuracy = (logs or {}).get(MONITOR, self.val_accuracy)
        self.epoch_seconds = (logs or {}).get("epoch_seconds")
        self._write(self.finished, batch=0)

    def _write(self, finished: int, batch: int) -> None:
        self.finished = finished
        self._written = time.monotonic()
        self.reporter.beat("training", epoch=finished, epochs=planned_epochs(self), batch=batch, batches=self.batches,
                            val_accuracy=self.val_accuracy, epoch_seconds=self.epoch_seconds)


class PredictProgress(keras.callbacks.Callback):
    """Keeps the progress file beating while a member predicts (every TTA view of validation and test)."""

    def __init__(self, reporter: ProgressWriter):
        super().__init__()
        self.reporter = reporter
        self._written = 0.0

    def on_predict_batch_end(self, batch, logs=None):
        if time.monotonic() - self._written >= PROGRESS_EVERY_S:
            self._written = time.monotonic()
            self.reporter.beat("predicting")
