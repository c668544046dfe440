"""IDGAugment must behave as ImageDataGenerator(zoom_range=0.1, width/height_shift_range=0.1) does."""
import math

import keras
import numpy as np
import pytest
from keras.src.legacy.preprocessing.image import apply_affine_transform, flip_axis

pytestmark = pytest.mark.jax  # the augmentation layer runs on every backend

from ensemble.data.sources import sample_digits
from ensemble.nets.augment import (ERASE_SCALE, TTA_VIEWS, IDGAugment, apply_idg_transform, augmentation_layers,
                                   legacy_idg_flow, legacy_image_data_generator, random_erasing, tta_view, tta_views)
from ensemble.nets.recipes import Augmentation

N_DRAWS = 1500
SHIFT_LIMIT = 0.1 * 28  # pixels
UNIFORM_STD = 1 / math.sqrt(3)  # std of U[-1, 1]
# Tolerances are 4 standard errors at N_DRAWS: for a mean, 4 * std / sqrt(N) (times sqrt(2) for a difference
# of two samples); for a std, relative 4 / sqrt(2N) (4 / sqrt(N) for a difference).
SHIFT_STD = SHIFT_LIMIT * UNIFORM_STD
MEAN_TOLERANCE = 4 * SHIFT_STD / math.sqrt(N_DRAWS)
MEAN_DIFFERENCE_TOLERANCE = MEAN_TOLERANCE * math.sqrt(2)
STD_DIFFERENCE_REL = 4 / math.sqrt(N_DRAWS)


@pytest.fixture(scope="module")
def digit():
    images, _ = sample_digits()
    return images[0].astype("float32")[..., None]  # a real digit, (28, 28, 1)


@pytest.mark.parametrize("zx, zy, tx, ty, theta", [
    (1.1, 0.9, 2.5, -1.3, 0.0), (0.93, 1.07, -2.8, 0.4, 0.0), (1.0, 1.0, 1.5, 0.0, 0.0), (1.05, 0.95, 0.0, 0.0, 0.0),
    (0.9, 1.1, -2.8, 2.8, 0.0),
    (1.0, 1.0, 0.0, 0.0, 10.0), (1.0, 1.0, 0.0, 0.0, -7.5),           # rotation alone, both ways
    (1.08, 0.94, 1.7, -2.2, 9.0), (0.91, 1.02, -0.6, 2.4, -4.0),      # rotation @ shift @ zoom, as IDG composes
])
def test_one_warp_equals_idgs_own_affine_transform(digit, zx, zy, tx, ty, theta):
    expected = apply_affine_transform(digit, theta=theta, tx=tx, ty=ty, zx=zx, zy=zy, row_axis=0, col_axis=1,
                                      channel_axis=2, fill_mode="nearest", order=1)
    got = np.asarray(apply_idg_transform(digit[None], *(np.array([v]) for v in (zx, zy, tx, ty, theta))))[0]
    assert np.abs(got - expected).max() < 1e-3 * 255  # same map, same fill; float rounding only


def _centres(images):
    """Per image (batch, 28, 28, 1): pixels as float64, row and column grids, mass, intensity centroid."""
    images = images[..., 0].astype("float64")
    rows, cols = np.mgrid[:28, :28]
    mass = images.sum(axis=(1, 2))
    return images, rows, cols, mass, (images * rows).sum(axis=(1, 2)) / mass, (images * cols).sum(axis=(1, 2)) / mass


def _geometry(images):
    """Per image: intensity centroid (row, col) and spread (row, col) = sqrt of the second central moment."""
    images, rows, cols, mass, centre_r, centre_c = _centres(images)
    spread_r = np.sqrt((images * (rows - centre_r[:, None, None]) ** 2).sum(axis=(1, 2)) / mass)
    spread_c = np.sqrt((images * (cols - centre_c[:, None, None]) ** 2).sum(axis=(1, 2)) / mass)
    return centre_r, centre_c, spread_r, spread_c


@pytest.fixture(scope="module")
def draws(digit):
    keras.utils.set_random_seed(0)
    ours = np.asarray(IDGAugment(seed=0)(np.repeat(digit[None], N_DRAWS, axis=0), training=True))
    np.random.seed(0)
    generator = legacy_image_data_generator()
    legacy = np.stack([generator.random_transform(digit) for _ in range(N_DRAWS)])
    return {"base": _geometry(digit[None]), "ours": _geometry(ours), "legacy": _geometry(legacy)}


def test_shift_statistics_agree_with_idg_and_with_theory(draws):
    base_r, base_c = draws["base"][0][0], draws["base"][1][0]
    for name in ("ours", "legacy"):
        centre_r, centre_c, _, _ = draws[name]
        for shift in (centre_r - base_r, centre_c - base_c):
            # IDG moves the content by -t: uniform on [-2.8, 2.8] px, std 1.617 px (plus a little from zoom)
            assert abs(shift.mean()) < MEAN_TOLERANCE + 0.05, name  # + the zoom's pull on an off-centre digit
            assert shift.std() == pytest.approx(SHIFT_STD, rel=0.10), name
            assert np.abs(shift).max() < SHIFT_LIMIT + 0.6, name
    for ours_centre, legacy_centre in zip(draws["ours"][:2], draws["legacy"][:2]):
        assert ours_centre.mean() == pytest.approx(legacy_centre.mean(), abs=MEAN_DIFFERENCE_TOLERANCE)
        assert ours_centre.std() == pytest.approx(legacy_centre.std(), rel=STD_DIFFERENCE_REL)


def test_zoom_statistics_agree_and_x_y_zoom_are_independent(draws):
    base_spread_r, base_spread_c = draws["base"][2][0], draws["base"][3][0]
    results = {}
    for name in ("ours", "legacy"):
        _, _, spread_r, spread_c = draws[name]
        scale_r, scale_c = spread_r / base_spread_r, spread_c / base_spread_c
        # content scales by 1/z with z ~ U[0.9, 1.1]: mean ~1.003, between 1/1.1 and 1/0.9 (+ resampling blur)
        for scale in (scale_r, scale_c):
            assert scale.mean() == pytest.approx(1.0, abs=0.02), name
            assert 0.88 < scale.min() and scale.max() < 1.14, name
            assert scale.std() == pytest.approx(0.1 * UNIFORM_STD, rel=0.2), name
        # drawn independently per axis (a single zoom factor would correlate them near 1)
        assert abs(np.corrcoef(scale_r, scale_c)[0, 1]) < 0.15, name
        results[name] = (scale_r, scale_c)
    for ours_scale, legacy_scale in zip(results["ours"], results["legacy"]):
        assert ours_scale.mean() == pytest.approx(legacy_scale.mean(), abs=0.01)
        assert ours_scale.std() == pytest.approx(legacy_scale.std(), rel=STD_DIFFERENCE_REL)


def test_augmentation_is_off_outside_training(digit):
    layer = IDGAugment(seed=1)
    batch = np.repeat(digit[None], 4, axis=0)
    assert np.array_equal(np.asarray(layer(batch, training=False)), batch)
    assert not np.array_equal(np.asarray(layer(batch, training=True)), batch)


def test_legacy_generator_trains_a_full_pass_every_epoch():
    images, labels = sample_digits()
    x, y = images[:200, ..., None], labels[:200]

    class CountBatches(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.seen = 0

        def on_train_batch_end(self, batch, logs=None):
            self.seen += 1

        def on_epoch_end(self, epoch, logs=None):
            per_epoch.append(self.seen)

    per_epoch = []
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, "softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(legacy_idg_flow(x, y, batch_size=64, seed=0), epochs=3, verbose=0, callbacks=[CountBatches()])
    assert per_epoch == [4, 4, 4]  # ceil(200 / 64) batches in each of the 3 epochs


ROTATION = 10.0  # Deotte's rotation_range
ROTATION_STD = ROTATION * UNIFORM_STD


def _orientation_degrees(images):
    """Per image: the angle of the intensity's principal axis (from its second central moments), degrees."""
    images, rows, cols, mass, centre_r, centre_c = _centres(images)
    dr, dc = rows - centre_r[:, None, None], cols - centre_c[:, None, None]
    mu_rr, mu_cc = (images * dr ** 2).sum(axis=(1, 2)) / mass, (images * dc ** 2).sum(axis=(1, 2)) / mass
    mu_rc = (images * dr * dc).sum(axis=(1, 2)) / mass
    return np.degrees(0.5 * np.arctan2(2 * mu_rc, mu_cc - mu_rr))


@pytest.fixture(scope="module")
def rotation_draws():
    """A long, thin digit (a 1: its principal axis is well defined) rotated N_DRAWS times by each side."""
    images, labels = sample_digits()
    one = images[np.flatnonzero(labels == 1)[0]].astype("float32")[..., None]
    keras.utils.set_random_seed(0)
    layer = IDGAugment(zoom_range=0.0, width_shift_range=0.0, height_shift_range=0.0, rotation_range=ROTATION, seed=0)
    ours = np.asarray(layer(np.repeat(one[None], N_DRAWS, axis=0), training=True))
    np.random.seed(0)
    generator = legacy_image_data_generator(Augmentation("legacy-idg", 0.0, 0.0, ROTATION))
    legacy = np.stack([generator.random_transform(one) for _ in range(N_DRAWS)])
    base = _orientation_degrees(one[None])[0]
    return {"ours": _orientation_degrees(ours) - base, "legacy": _orientation_degrees(legacy) - base}


def test_rotation_statistics_agree_with_idg_and_with_theory(rotation_draws):
    for name, turn in rotation_draws.items():
        # the content turns by theta ~ U[-10, 10] degrees: mean 0, std 5.77; resampling blurs the axis a little
        assert abs(turn.mean()) < 4 * ROTATION_STD / math.sqrt(N_DRAWS) + 0.1, name
        assert turn.std() == pytest.approx(ROTATION_STD, rel=0.10), name
        assert np.abs(turn).max() < ROTATION + 1.0, name
    ours, legacy = rotation_draws["ours"], rotation_draws["legacy"]
    assert ours.mean() == pytest.approx(legacy.mean(), abs=4 * ROTATION_STD / math.sqrt(N_DRAWS) * math.sqrt(2))
    assert ours.std() == pytest.approx(legacy.std(), rel=STD_DIFFERENCE_REL)
    # uniform, not bell-shaped: as many draws in the outer half of the range as in the inner half
    for turn in (ours, legacy):
        assert np.mean(np.abs(turn) > ROTATION / 2) == pytest.approx(0.5, abs=0.05)


def test_rotation_is_part_of_the_saved_layer():
    layer = IDGAugment(rotation_range=10.0, seed=3)
    clone = IDGAugment.from_config(layer.get_config())
    assert (clone.rotation_range, clone.zoom_range, clone.width_shift_range) == (10.0, 0.1, 0.1)


@pytest.mark.parametrize("zx, zy, tx, ty, theta", [(1.0, 1.0, 0.0, 0.0, 0.0), (1.08, 0.94, 1.7, -2.2, 9.0)])
def test_a_negated_zoom_is_idgs_horizontal_flip_after_its_warp(digit, zx, zy, tx, ty, theta):
    warped = apply_affine_transform(digit, theta=theta, tx=tx, ty=ty, zx=zx, zy=zy, row_axis=0, col_axis=1,
                                    channel_axis=2, fill_mode="nearest", order=1)
    expected = flip_axis(warped, 1)  # IDG's apply_transform flips after the affine map
    got = np.asarray(apply_idg_transform(digit[None], *(np.array([v]) for v in (-zx, zy, tx, ty, theta))))[0]
    assert np.abs(got - expected).max() < 1e-3 * 255


def test_horizontal_flip_mirrors_half_the_images_and_leaves_the_other_draws_as_they_were(digit):
    batch = np.repeat(digit[None], N_DRAWS, axis=0)
    plain = np.asarray(IDGAugment(seed=5)(batch, training=True))
    flipped = np.asarray(IDGAugment(seed=5, horizontal_flip=True)(batch, training=True))
    same = np.abs(flipped - plain).max(axis=(1, 2, 3)) < 1e-3 * 255
    mirrored = np.abs(flipped - plain[:, :, ::-1]).max(axis=(1, 2, 3)) < 1e-3 * 255
    assert (same | mirrored).all()  # each image is the unflipped layer's own draw, or its mirror
    # each mirrored with chance 1/2: within 4 standard errors of half (the digit is not symmetric: never both)
    assert not (same & mirrored).any()
    assert abs(mirrored.mean() - 0.5) < 4 * 0.5 / math.sqrt(N_DRAWS)


def test_idgs_own_generator_flips_as_the_layer_does(digit):
    np.random.seed(0)
    generator = legacy_image_data_generator(Augmentation("legacy-idg", 0.0, 0.0, 0.0, flip=True))
    legacy = np.stack([generator.random_transform(digit) for _ in range(400)])
    ours = np.asarray(IDGAugment(zoom_range=0.0, width_shift_range=0.0, height_shift_range=0.0, horizontal_flip=True,
                                 seed=0)(np.repeat(digit[None], 400, axis=0), training=True))
    for images in (legacy, ours):
        mirrored = np.abs(images - digit[None, :, ::-1]).max(axis=(1, 2, 3)) < 1e-3 * 255
        kept = np.abs(images - digit[None]).max(axis=(1, 2, 3)) < 1e-3 * 255
        assert (mirrored | kept).all() and abs(mirrored.mean() - 0.5) < 4 * 0.5 / math.sqrt(400)


def test_the_flip_is_part_of_the_saved_layer():
    clone = IDGAugment.from_config(IDGAugment(horizontal_flip=True, seed=3).get_config())
    assert clone.horizontal_flip and not IDGAugment.from_config(IDGAugment(seed=3).get_config()).horizontal_flip


def test_a_flipped_nets_test_time_views_are_each_view_and_its_mirror(digit):
    assert tta_views() == tta_views(False) == TTA_VIEWS
    views = tta_views(True)
    assert views[:len(TTA_VIEWS)] == TTA_VIEWS and len(views) == 2 * len(TTA_VIEWS)
    assert views[len(TTA_VIEWS)] == (-1.0, 1.0, 0.0, 0.0, 0.0)
    assert views[len(TTA_VIEWS) + 1] == (-1.0, 1.0, 1.0, 0.0, 0.0)  # the shift's view, mirrored
    mirrored = tta_view(digit[None], views[len(TTA_VIEWS)])
    assert np.abs(mirrored - digit[None, :, ::-1]).max() < 1e-3 * 255


def test_random_erasing_follows_idg_and_only_where_asked():
    def kinds(augmentation):
        return [type(layer).__name__ for layer in augmentation_layers(augmentation, seed=1)]

    assert kinds(Augmentation()) == ["IDGAugment"]
    assert kinds(Augmentation(erase=0.5)) == ["IDGAugment", "RandomErasing"]
    assert kinds(Augmentation("none", 0.0, 0.0, 0.0, erase=0.5)) == ["RandomErasing"]
    assert kinds(Augmentation("legacy-idg", erase=0.5)) == ["RandomErasing"]  # the generator warps outside the graph


def test_random_erasing_replaces_one_rectangle_of_about_half_the_images(restore_dtype_policy):
    keras.mixed_precision.set_global_policy("float32")
    grey = np.full((N_DRAWS, 28, 28, 1), 0.5, "float32")  # pixels as the layer sees them: scaled to 0..1
    erased = np.asarray(keras.ops.convert_to_numpy(random_erasing(0.5, seed=4)(grey, training=True)))
    changed = (erased != 0.5)[..., 0]
    hit = changed.any(axis=(1, 2))
    assert abs(hit.mean() - 0.5) < 4 * 0.5 / math.sqrt(N_DRAWS)
    for mask in changed[hit][:200]:  # one rectangle: every pixel of its bounding box replaced
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        assert mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all() and mask.sum() == len(rows) * len(cols)
    # each side is sqrt(U[0.02, 0.4]) of the image's: 0.439 on average, so 19.3% of the area on average
    low, high = ERASE_SCALE
    mean_side = (2 / 3) * (high ** 1.5 - low ** 1.5) / (high - low)
    assert changed[hit].mean() == pytest.approx(mean_side ** 2, abs=0.015)
    assert erased.min() >= 0.0 and erased.max() <= 1.0  # noise within the pixels' range
    assert np.array_equal(np.asarray(random_erasing(0.5, seed=4)(grey, training=False)), grey)
