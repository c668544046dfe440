"""Augmentation with ImageDataGenerator's semantics, in the graph, on any Keras backend.

The recipe is `ImageDataGenerator(zoom_range=0.1, width_shift_range=0.1, height_shift_range=0.1)`.
For every image Keras 3's IDG draws zx, zy ~ U[0.9, 1.1] independently and shifts
tx ~ U[-0.1, 0.1] * height, ty ~ U[-0.1, 0.1] * width, and resamples once (order 1, fill 'nearest')
through the affine map, in IDG's own (x = column, y = row) order:

    input_col = c_col + zx * (out_col - c_col) + tx
    input_row = c_row + zy * (out_row - c_row) + ty        with c = (side - 1) / 2.

(tx comes from height_shift_range but moves columns: IDG's quirk, kept; with the recipe's equal ranges
on square images it changes nothing.)
`IDGAugment` applies exactly that map with `keras.ops.image.affine_transform`: one interpolation, as IDG
does, where chaining RandomTranslation and RandomZoom would blur twice and (in the other order) scale
the shift by the zoom. It is active in training only. `legacy_idg_flow` is the deprecated generator
itself, for side-by-side runs.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from .architectures import AUGMENTATIONS
ZOOM_RANGE = 0.1
SHIFT_RANGE = 0.1


def idg_transform_rows(zx, zy, tx, ty, height: int, width: int):
    """Rows of 8 for `affine_transform` (output (x=col, y=row) -> input point) equal to IDG's matrix.

    Works on numpy arrays and on backend tensors alike; every argument has shape (batch,).
    """
    centre_row, centre_col = (height - 1) / 2.0, (width - 1) / 2.0
    zeros = zx * 0.0
    return ops.stack([
        zx, zeros, centre_col * (1.0 - zx) + tx,   # input col
        zeros, zy, centre_row * (1.0 - zy) + ty,   # input row
        zeros, zeros,                              # no projective part
    ], axis=-1)


def apply_idg_transform(images, zx, zy, tx, ty):
    """Warp channels-last images (batch, h, w, c) by IDG parameters, one set per image."""
    height, width = images.shape[1], images.shape[2]
    rows = idg_transform_rows(zx, zy, tx, ty, height, width)
    return ops.image.affine_transform(images, ops.cast(rows, "float32"), interpolation="bilinear",
                                      fill_mode="nearest", data_format="channels_last")


@keras.saving.register_keras_serializable(package="ensemble")
class IDGAugment(keras.layers.Layer):
    """ImageDataGenerator(zoom_range, width_shift_range, height_shift_range) as a training-only layer."""

    def __init__(self, zoom_range=ZOOM_RANGE, width_shift_range=SHIFT_RANGE,
                 height_shift_range=SHIFT_RANGE, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.zoom_range = float(zoom_range)
        self.width_shift_range = float(width_shift_range)
        self.height_shift_range = float(height_shift_range)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training:
            return images
        height, width = images.shape[1], images.shape[2]
        batch = ops.shape(images)[0]

        def draw(limit):
            return keras.random.uniform((batch,), -limit, limit, seed=self.seed_generator)

        zx, zy = 1.0 + draw(self.zoom_range), 1.0 + draw(self.zoom_range)
        tx = draw(self.height_shift_range) * height
        ty = draw(self.width_shift_range) * width
        warped = apply_idg_transform(ops.cast(images, "float32"), zx, zy, tx, ty)
        return ops.cast(warped, images.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "zoom_range": self.zoom_range, "seed": self.seed,
                "width_shift_range": self.width_shift_range, "height_shift_range": self.height_shift_range}


def augmentation_layers(augment: str, seed: int | None) -> list[keras.layers.Layer]:
    """What goes into the model for an --augment choice; legacy-idg augments outside the graph."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augment!r}; choose one of {', '.join(AUGMENTATIONS)}")
    return [IDGAugment(seed=seed, name="idg_augment")] if augment == "idg" else []


def legacy_image_data_generator():
    """The deprecated Keras ImageDataGenerator configured as the recipe (fill 'nearest', order-1 resampling)."""
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    return ImageDataGenerator(zoom_range=ZOOM_RANGE, width_shift_range=SHIFT_RANGE,
                              height_shift_range=SHIFT_RANGE)


def legacy_idg_flow(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int):
    """A full pass per epoch: Keras 3's fit() takes len(iterator) batches when no steps_per_epoch is given.

    (Passing steps_per_epoch to fit on this legacy iterator, as the notebooks did, silently stops training
    after one pass over the data under Keras 3.)
    """
    return legacy_image_data_generator().flow(images.astype("float32"), labels, batch_size=batch_size,
                                              shuffle=True, seed=seed)
