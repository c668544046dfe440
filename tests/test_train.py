import pytest

from ensemble.jobs import read_history
from ensemble.train import ResumableReduceLROnPlateau


def _rows(values, learning_rate=1e-4):
    return [{"epoch": i, "val_accuracy": v, "learning_rate": learning_rate} for i, v in enumerate(values)]


@pytest.mark.parametrize("values, learning_rate, best, wait", [
    ([], 1e-4, None, 0),
    ([0.5, 0.6, 0.6, 0.6], 1e-4, 0.6, 2),          # two epochs without improvement so far
    ([0.5, 0.5, 0.5, 0.5], 1e-4, 0.5, 0),          # the third stall reduced the rate and restarted patience
    ([0.5, 0.5, 0.5, 0.5, 0.5], 1e-4, 0.5, 1),
    ([0.5, 0.5, 0.5, 0.5, 0.5], 1e-5, 0.5, 4),     # at min_lr nothing is reduced, the count runs on
    ([0.5, 0.4, 0.7, 0.6], 1e-4, 0.7, 1),
])
def test_reduce_lr_patience_is_replayed_from_history(values, learning_rate, best, wait):
    callback = ResumableReduceLROnPlateau(_rows(values, learning_rate), monitor="val_accuracy", mode="max",
                                          patience=3, factor=0.5, min_lr=1e-5)
    callback.on_train_begin()
    assert (callback.best, callback.wait) == (best, wait)


def test_history_keeps_the_last_row_of_a_repeated_epoch(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,val_accuracy\n0,0.5\n1,0.6\n1,0.65\n2,0.7\n")
    assert read_history(path) == [{"epoch": 0.0, "val_accuracy": 0.5}, {"epoch": 1.0, "val_accuracy": 0.65},
                                  {"epoch": 2.0, "val_accuracy": 0.7}]
    assert read_history(tmp_path / "missing.csv") == []


@pytest.fixture
def restore_dtype_policy():
    import keras

    yield
    keras.config.set_dtype_policy("float32")


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_each_precision_trains_a_member_model_on_cpu(precision, restore_dtype_policy):
    import numpy as np

    from ensemble.data import sample_digits
    from ensemble.jobs import JobArrays, JobSpec
    from ensemble.train import build_member_model, fit_member_model

    images, labels = sample_digits()
    order = np.random.default_rng(0).permutation(len(labels))[:160]
    x, y = images[order, ..., None], labels[order]
    arrays = JobArrays(x[:128], y[:128], x[128:], y[128:], x[:0])
    spec = JobSpec.from_options(model="cnn11", epochs=1, batch_size=32, precision=precision)
    model = build_member_model(spec, seed=0)
    history = fit_member_model(model, spec, arrays, seed=0, callbacks=[])
    assert np.isfinite(history.history["loss"][0])
    assert model.layers[-1].compute_dtype == "float32"  # the softmax stays float32 under mixed precision
    expected_compute = "bfloat16" if precision == "mixed_bfloat16" else "float32"
    assert model.get_layer(index=3).compute_dtype == expected_compute  # a convolution
    probs = np.asarray(model.predict(x[128:], verbose=0))
    assert probs.dtype == np.float32 and np.allclose(probs.sum(axis=1), 1.0, atol=1e-3)
