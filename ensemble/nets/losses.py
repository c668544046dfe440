"""The training loss: cross-entropy on the softmax probabilities, optionally with label smoothing.

Labels stay class indices everywhere (the split, the outputs, the metrics); with smoothing the loss turns them
into smoothed one-hot targets itself: (1 - e) on the true class and e / K spread over all K classes, as
`keras.losses.CategoricalCrossentropy(label_smoothing=e)` defines it. From probabilities, never from logits
(seed 002's `from_logits=True` on a softmax output was a bug).
"""
from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="ensemble")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Sparse categorical cross-entropy against label-smoothed targets."""

    def __init__(self, smoothing: float = 0.0, classes: int = 10, name: str = "smoothed_sparse_crossentropy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.smoothing, self.classes = float(smoothing), int(classes)

    def call(self, y_true, y_pred):
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        targets = keras.ops.one_hot(labels, self.classes, dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(targets, y_pred, from_logits=False,
                                                     label_smoothing=self.smoothing)

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing, "classes": self.classes}


def training_loss(label_smoothing: float, classes: int):
    """The loss a member trains with: plain sparse cross-entropy unless smoothing is asked."""
    if label_smoothing:
        return SmoothedSparseCrossentropy(label_smoothing, classes)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=False)
