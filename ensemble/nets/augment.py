"""Augmentation with ImageDataGenerator's semantics, in the graph, on any Keras backend.

The recipes use `ImageDataGenerator(rotation_range, zoom_range, width_shift_range, height_shift_range)`.
For every image Keras 3's IDG draws an angle theta ~ U[-rotation, rotation] degrees, zx, zy ~ U[1-zoom,
1+zoom] independently and shifts tx ~ U[-shift, shift] * height, ty ~ U[-shift, shift] * width, and
resamples once (order 1, fill 'nearest') through the map rotation @ shift @ zoom about the centre, in IDG's
own (x = column, y = row) order, with R the rotation by theta:

    (input_col, input_row) = c + R @ (zx * (out_col - c_col) + tx, zy * (out_row - c_row) + ty)
    with c = ((side - 1) / 2, (side - 1) / 2).

(tx comes from height_shift_range but moves columns: IDG's quirk, kept; with the recipe's equal ranges
on square images it changes nothing.) With horizontal_flip, IDG mirrors each image with chance 1/2 after that
map: the output column col becomes (side - 1) - col, which is zx negated, so the flip costs nothing.
`IDGAugment` applies exactly that map with `keras.ops.image.affine_transform`: one interpolation, as IDG
does, where chaining RandomTranslation and RandomZoom would blur twice and (in the other order) scale
the shift by the zoom. It is active in training only. `legacy_idg_flow` is the deprecated generator
itself, for side-by-side runs.

Random erasing (`Augmentation.erase`, Zhong et al. 2017) is not IDG's: Keras' own `RandomErasing` layer follows
IDGAugment, so IDG's draws stay what they were.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from .recipes import AUGMENTATIONS, Augmentation

ZOOM_RANGE = 0.1
SHIFT_RANGE = 0.1
# Random erasing's rectangle: Keras draws each side as sqrt(U[low, high]) of the image's, independently, so its area
# is 2-40% of the image's (Zhong et al.'s s_l, s_h) and its aspect ratio about 1/4.5 to 4.5 (theirs: 0.3 to 3.3)
ERASE_SCALE = (0.02, 0.4)
# the erasing layer's seed, apart from IDG's: the same seed would draw the rectangle from IDG's own random numbers
ERASE_SEED_OFFSET = 104_729
# Test-time augmentation: a fixed set of small views (zx, zy, tx, ty, theta in degrees), the identity first.
# Small on purpose: each must still look like the same digit (IDG's training range is 10% / 10 degrees).
TTA_VIEWS = (
    (1.0, 1.0, 0.0, 0.0, 0.0),
    (1.0, 1.0, 1.0, 0.0, 0.0), (1.0, 1.0, -1.0, 0.0, 0.0),
    (1.0, 1.0, 0.0, 1.0, 0.0), (1.0, 1.0, 0.0, -1.0, 0.0),
    (1.0, 1.0, 0.0, 0.0, 6.0), (1.0, 1.0, 0.0, 0.0, -6.0),
    (0.93, 0.93, 0.0, 0.0, 0.0),
)


def tta_views(flip: bool = False) -> tuple[tuple[float, ...], ...]:
    """The test-time views of a member: TTA_VIEWS, and with a net trained on mirrored images (--flip) each of them
    mirrored too (zx negated), which its training made as likely as the view itself."""
    if not flip:
        return TTA_VIEWS
    return TTA_VIEWS + tuple((-view[0], *view[1:]) for view in TTA_VIEWS)


def idg_transform_rows(zx, zy, tx, ty, height: int, width: int, theta=None):
    """Rows of 8 for `affine_transform` (output (x=col, y=row) -> input point) equal to IDG's matrix.

    Works on numpy arrays and on backend tensors alike; every argument has shape (batch,); theta is in
    degrees (None: no rotation).
    """
    centre_row, centre_col = (height - 1) / 2.0, (width - 1) / 2.0
    zeros = zx * 0.0
    radians = zeros if theta is None else theta * (np.pi / 180.0)
    cos, sin = ops.cos(radians), ops.sin(radians)
    # IDG: input = c + R @ (Z @ (output - c) + t), R acting on (col, row)
    a0, a1 = cos * zx, -sin * zy
    b0, b1 = sin * zx, cos * zy
    return ops.stack([
        a0, a1, centre_col - a0 * centre_col - a1 * centre_row + cos * tx - sin * ty,   # input col
        b0, b1, centre_row - b0 * centre_col - b1 * centre_row + sin * tx + cos * ty,   # input row
        zeros, zeros,                                                                   # no projective part
    ], axis=-1)


def apply_idg_transform(images, zx, zy, tx, ty, theta=None):
    """Warp channels-last images (batch, h, w, c) by IDG parameters, one set per image."""
    height, width = images.shape[1], images.shape[2]
    rows = idg_transform_rows(zx, zy, tx, ty, height, width, theta)
    return ops.image.affine_transform(images, ops.cast(rows, "float32"), interpolation="bilinear",
                                      fill_mode="nearest", data_format="channels_last")


@keras.saving.register_keras_serializable(package="ensemble")
class IDGAugment(keras.layers.Layer):
    """ImageDataGenerator(rotation_range, zoom_range, width_shift_range, height_shift_range, horizontal_flip)
    as a training-only layer."""

    def __init__(self, zoom_range=ZOOM_RANGE, width_shift_range=SHIFT_RANGE,
                 height_shift_range=SHIFT_RANGE, seed=None, rotation_range=0.0, horizontal_flip=False, **kwargs):
        super().__init__(**kwargs)
        self.rotation_range = float(rotation_range)
        self.horizontal_flip = bool(horizontal_flip)
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

        theta = draw(self.rotation_range) if self.rotation_range else None
        zx, zy = 1.0 + draw(self.zoom_range), 1.0 + draw(self.zoom_range)
        tx = draw(self.height_shift_range) * height
        ty = draw(self.width_shift_range) * width
        if self.horizontal_flip:  # drawn last: a batch's other draws are those a layer without the flip makes
            mirrored = keras.random.uniform((batch,), 0.0, 1.0, seed=self.seed_generator) < 0.5
            zx = ops.where(mirrored, -zx, zx)
        warped = apply_idg_transform(ops.cast(images, "float32"), zx, zy, tx, ty, theta)
        return ops.cast(warped, images.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "zoom_range": self.zoom_range, "seed": self.seed,
                "rotation_range": self.rotation_range, "horizontal_flip": self.horizontal_flip,
                "width_shift_range": self.width_shift_range, "height_shift_range": self.height_shift_range}


def augmentation_layers(augmentation: Augmentation, seed: int | None) -> list[keras.layers.Layer]:
    """What goes into the model for an augmentation: IDG's warp for idg (legacy-idg warps outside the graph), then
    random erasing for any kind that asks for it."""
    if augmentation.kind not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augmentation.kind!r}; choose one of {', '.join(AUGMENTATIONS)}")
    layers = []
    if augmentation.kind == "idg":
        layers.append(IDGAugment(zoom_range=augmentation.zoom, width_shift_range=augmentation.shift,
                                 height_shift_range=augmentation.shift, rotation_range=augmentation.rotation,
                                 horizontal_flip=augmentation.flip, seed=seed, name="idg_augment"))
    if augmentation.erase:
        layers.append(random_erasing(augmentation.erase, seed))
    return layers


def random_erasing(probability: float, seed: int | None) -> keras.layers.Layer:
    """Keras' RandomErasing, training only: with `probability`, one rectangle of an image (pixels scaled to 0..1)
    replaced by noise. Keras draws it from a standard normal clipped to 0..1: about half the erased pixels are 0 and
    a sixth are 1, where Zhong et al. drew uniform values."""
    return keras.layers.RandomErasing(factor=(probability, probability), scale=ERASE_SCALE, value_range=(0.0, 1.0),
                                      seed=None if seed is None else seed + ERASE_SEED_OFFSET, name="random_erasing")


def legacy_image_data_generator(augmentation: Augmentation = Augmentation("legacy-idg")):
    """The deprecated Keras ImageDataGenerator configured as the recipe (fill 'nearest', order-1 resampling)."""
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    return ImageDataGenerator(rotation_range=augmentation.rotation, zoom_range=augmentation.zoom,
                              width_shift_range=augmentation.shift, height_shift_range=augmentation.shift,
                              horizontal_flip=augmentation.flip)


def legacy_idg_flow(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int,
                    augmentation: Augmentation = Augmentation("legacy-idg")):
    """A full pass per epoch: Keras 3's fit() takes len(iterator) batches when no steps_per_epoch is given.

    (Passing steps_per_epoch to fit on this legacy iterator, as the notebooks did, silently stops training
    after one pass over the data under Keras 3.)
    """
    return legacy_image_data_generator(augmentation).flow(images.astype("float32"), labels,
                                                          batch_size=batch_size, shuffle=True, seed=seed)


def tta_view(images: np.ndarray, view: tuple[float, ...]) -> np.ndarray:
    """One fixed test-time view of a batch of raw images (batch, h, w, 1): deterministic, float32."""
    images = np.asarray(images, dtype="float32")
    if view == TTA_VIEWS[0]:
        return images
    params = [np.full(len(images), value, dtype="float32") for value in view]
    return np.asarray(ops.convert_to_numpy(apply_idg_transform(images, *params)), dtype="float32")
