"""ReduceLROnPlateau whose counters survive a resume."""
from __future__ import annotations

import keras

from ..checkpoints import PlateauState


class ResumableReduceLROnPlateau(keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau whose counters carry across a resume (the stock one restarts them at train begin).

    The learning rate itself comes back with the optimizer's weights; the best value, the epochs waited and
    the cooldown come back from the restored training state, exactly as they stood after its epoch.
    """

    def __init__(self, restored: PlateauState | None = None, **kwargs):
        super().__init__(**kwargs)
        self._restored = restored

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._restored is not None:
            self.best, self.wait, self.cooldown_counter = (self._restored.best, self._restored.wait,
                                                           self._restored.cooldown)

    def counters(self) -> PlateauState:
        best = None if self.best is None else float(self.best)
        return PlateauState(best, int(self.wait), int(self.cooldown_counter))
