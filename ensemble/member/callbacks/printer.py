"""One flushed line per epoch for the member's log."""
from __future__ import annotations

import math

import keras

from ..model import MONITOR
from .replan import planned_epochs


class EpochPrinter(keras.callbacks.Callback):
    """One flushed line per epoch: the runner relays these, and they make the member's log readable."""

    def __init__(self, label: str, epochs: int):
        super().__init__()
        self.label, self.epochs = label, epochs

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        print(f"{self.label} epoch {epoch + 1}/{planned_epochs(self)}  loss {logs.get('loss', math.nan):.4f}  "
              f"acc {logs.get('accuracy', math.nan):.4f}  val_loss {logs.get('val_loss', math.nan):.4f}  "
              f"val_acc {logs.get(MONITOR, math.nan):.4f}  lr {logs.get('learning_rate', math.nan):.1e}  "
              f"{logs.get('epoch_seconds', math.nan):.1f}s", flush=True)
