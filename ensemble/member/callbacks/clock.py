"""EpochClock: each epoch's seconds, its validation pass's seconds, its starting learning rate and the wall
clock at its end, into the logs."""
from __future__ import annotations

import time

import keras


def current_learning_rate(model) -> float:
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class EpochClock(keras.callbacks.Callback):
    """Adds epoch_seconds, the validation pass's seconds, the learning rate the epoch started with and the
    time it ended (ended_at, Unix seconds) to the logs, so history.csv carries the cost of each epoch, the
    schedule as it ran, and when each score became available."""

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()
        self._rate = current_learning_rate(self.model)
        self._validation_started = None

    def on_test_begin(self, logs=None):
        self._validation_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            now = time.perf_counter()
            logs["epoch_seconds"] = now - self._started
            if self._validation_started is not None:
                logs["validation_seconds"] = now - self._validation_started
            logs["learning_rate"] = self._rate
            logs["ended_at"] = time.time()  # wall clock: a timeline across processes counts their start-up too
