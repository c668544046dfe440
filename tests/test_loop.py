"""The member's own fit and predict loops (member.loop): they learn and report exactly what Keras' `fit` and
`predict` do given the same batches, see every row once an epoch in an order fixed by (seed, epoch), resume
exactly, and stop when a callback says so."""
import math

import keras
import numpy as np
import pytest

from ensemble.data.sources import sample_digits
from ensemble.job.layout import MemberFolder, committed_epochs
from ensemble.job.spec import JobSpec
from ensemble.member.callbacks.commit import EpochCommit
from ensemble.member.checkpoints import random_states, restore_newest
from ensemble.member.loop import RowMeans, epoch_batches, epoch_order, predict_rows, train_epochs
from ensemble.member.model import build_member_model
from ensemble.nets.schedules import ScheduledRate, rate_at_step

# The loop is what trains members on every backend: the tests marked jax run on JAX too (CI time keeps the rest on
# TF; resuming exactly on JAX is also test_train's member killed at each step of its epoch end)

ROWS, BATCH, SEED = 200, 64, 7  # 4 batches an epoch, the last one partial


@pytest.fixture(scope="module")
def digits():
    """A seeded slice of every class: the sample is sorted by label, so its first rows are all zeros, a net
    learns them in one epoch and then gets no gradient, and a test could no longer tell one draw from another."""
    images, labels = sample_digits()
    order = np.random.default_rng(0).permutation(len(labels))[:ROWS + 70]
    images, labels = images[order].reshape(-1, 28, 28, 1), labels[order].astype("int64")
    assert len(np.unique(labels[:ROWS])) == 10
    return images[:ROWS], labels[:ROWS], images[ROWS:], labels[ROWS:]


def small_spec(epochs: int = 2) -> JobSpec:
    # the plain loop, whose every number fit's defines; the weight average beside it: test_train. The default
    # recipe (its augmentation, dropout and one-cycle) on a small net: the loop does not depend on the net's size
    return JobSpec.from_options(recipe="cnn11", model="seed004", epochs=epochs, batch_size=BATCH,
                                precision="float32", ema=0.0, gpu_capabilities=[])


def fresh_model(epochs: int = 2):
    return build_member_model(small_spec(epochs), SEED, ROWS)


def endless_batches(x, y, seed, whole=False):
    """What the loop trains on, as a generator `fit` can take; `whole`: the last batch filled from the first rows."""
    epoch = 0
    while True:
        order = epoch_order(len(x), seed, epoch)
        for start in range(0, len(x), BATCH):
            rows = order[start:start + BATCH]
            if whole:
                rows = np.concatenate([rows, order[:BATCH - len(rows)]])
            yield x[rows].astype("float32"), y[rows]
        epoch += 1


def weights(model):
    return [np.asarray(w) for w in model.get_weights()]


@pytest.mark.jax
def test_each_epoch_trains_every_row_once_in_an_order_fixed_by_seed_and_epoch():
    first, again, second = epoch_order(ROWS, SEED, 0), epoch_order(ROWS, SEED, 0), epoch_order(ROWS, SEED, 1)
    assert sorted(first) == list(range(ROWS)) and sorted(second) == list(range(ROWS))
    assert np.array_equal(first, again) and not np.array_equal(first, second)
    assert not np.array_equal(first, epoch_order(ROWS, SEED + 1, 0))


@pytest.mark.jax
def test_row_means_weigh_each_batch_by_its_rows():
    means = RowMeans()
    means.add({"loss": 1.0, "accuracy": 0.5}, 64)
    means.add({"loss": 4.0, "accuracy": 1.0}, 8)
    assert means.means() == {"loss": (64 + 32) / 72, "accuracy": (32 + 8) / 72}
    assert RowMeans().means() == {}
    ties = RowMeans(), RowMeans()  # 29 + 30 and 30 + 29 rows right: the same accuracy, to the last bit
    ties[0].add({"accuracy": np.float32(29 / 40)}, 40), ties[0].add({"accuracy": np.float32(30 / 64)}, 64)
    ties[1].add({"accuracy": np.float32(30 / 40)}, 40), ties[1].add({"accuracy": np.float32(29 / 64)}, 64)
    assert ties[0].means()["accuracy"] == ties[1].means()["accuracy"] == 59 / 104


@pytest.mark.jax
def test_the_loop_learns_and_logs_what_fit_does_on_the_same_batches(digits):
    x, y, x_val, y_val = digits
    looped = fresh_model()
    history = train_epochs(looped, x, y, batch_size=BATCH, epochs=2, seed=SEED, validation=(x_val, y_val))
    fitted = fresh_model()
    reference = fitted.fit(endless_batches(x, y, SEED), steps_per_epoch=4, epochs=2, shuffle=False, verbose=0,
                           validation_data=(x_val.astype("float32"), y_val))
    for ours, theirs in zip(weights(looped), weights(fitted)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert sorted(history.history) == sorted(reference.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    for name, values in reference.history.items():
        np.testing.assert_allclose(history.history[name], values, rtol=1e-5, atol=1e-6, err_msg=name)
    assert int(looped.optimizer.iterations) == int(fitted.optimizer.iterations) == 8


def test_validation_in_larger_batches_logs_what_fit_does_with_that_validation_batch_size(digits):
    x, y, x_val, y_val = digits

    class TestBatches(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seen = 0

        def on_test_batch_begin(self, batch, logs=None):
            self.seen += 1

    looped, fitted = fresh_model(), fresh_model()
    ours, theirs = TestBatches(), TestBatches()
    history = train_epochs(looped, x, y, batch_size=BATCH, epochs=2, seed=SEED, validation=(x_val, y_val),
                           validation_batch_size=16, callbacks=[ours])  # a short last batch too
    reference = fitted.fit(endless_batches(x, y, SEED), steps_per_epoch=4, epochs=2, shuffle=False, verbose=0,
                           validation_data=(x_val.astype("float32"), y_val), validation_batch_size=16,
                           callbacks=[theirs])
    assert ours.seen == theirs.seen == 2 * math.ceil(len(x_val) / 16) != 2 * math.ceil(len(x_val) / BATCH)
    for name in ("val_accuracy", "val_loss"):
        np.testing.assert_allclose(history.history[name], reference.history[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.jax
def test_whole_batches_fill_an_epochs_last_batch_from_its_first_rows():
    order = np.arange(10)[::-1]
    assert [batch.tolist() for batch in epoch_batches(order, 4)] == [[9, 8, 7, 6], [5, 4, 3, 2], [1, 0]]
    assert [batch.tolist() for batch in epoch_batches(order, 4, whole=True)] == [[9, 8, 7, 6], [5, 4, 3, 2],
                                                                                [1, 0, 9, 8]]
    assert [batch.tolist() for batch in epoch_batches(order[:8], 4, whole=True)] == [[9, 8, 7, 6], [5, 4, 3, 2]]
    assert [batch.tolist() for batch in epoch_batches(order[:3], 4, whole=True)] == [[9, 8, 7]]
    assert epoch_batches(order[:0], 4, whole=True) == []


def test_with_whole_batches_every_step_has_one_shape_and_learns_what_fit_does_on_those_batches(digits, monkeypatch):
    x, y, _, _ = digits
    looped, rows_per_step = fresh_model(), []
    train_step = looped.train_on_batch
    monkeypatch.setattr(looped, "train_on_batch",
                        lambda images, labels, **kwargs: rows_per_step.append(len(images)) or train_step(
                            images, labels, **kwargs))
    history = train_epochs(looped, x, y, batch_size=BATCH, epochs=2, seed=SEED, whole_batches=True)
    assert rows_per_step == [BATCH] * 8  # 200 rows: the 8 of each epoch's last batch and its first 56
    fitted = fresh_model()
    reference = fitted.fit(endless_batches(x, y, SEED, whole=True), steps_per_epoch=4, epochs=2, shuffle=False,
                           verbose=0)
    for ours, theirs in zip(weights(looped), weights(fitted)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(history.history["loss"], reference.history["loss"], rtol=1e-5, atol=1e-6)


@pytest.mark.jax
def test_a_resumed_run_continues_exactly_where_an_uninterrupted_one_would_be(digits):
    x, y, _, _ = digits
    whole = fresh_model()  # its onecycle rates set step by step, from the optimizer's step count
    train_epochs(whole, x, y, batch_size=BATCH, epochs=2, seed=SEED, callbacks=[whole.member_rate])
    resumed = fresh_model()
    train_epochs(resumed, x, y, batch_size=BATCH, epochs=1, seed=SEED, callbacks=[resumed.member_rate])
    train_epochs(resumed, x, y, batch_size=BATCH, epochs=2, seed=SEED, initial_epoch=1,
                 callbacks=[resumed.member_rate])
    for ours, theirs in zip(weights(resumed), weights(whole)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_a_member_rebuilt_from_its_committed_state_continues_exactly(digits, tmp_path):
    """A kill after epoch 1: the member process starts again, builds its model from its seed and restores
    the state that epoch committed. Its augmentation and dropout draw on where their streams were, so epoch 2
    is the uninterrupted member's epoch 2."""
    x, y, _, _ = digits
    spec = small_spec()
    assert spec.augment == "idg" and spec.augmentation.zoom > 0  # random layers in the graph
    whole = fresh_model()
    train_epochs(whole, x, y, batch_size=BATCH, epochs=2, seed=SEED, callbacks=[whole.member_rate])

    folder = MemberFolder(tmp_path / "member-00")
    killed = fresh_model()
    train_epochs(killed, x, y, batch_size=BATCH, epochs=1, seed=SEED,
                 callbacks=[killed.member_rate, EpochCommit(folder, spec, None)])
    rebuilt = fresh_model()
    assert random_states(rebuilt) != random_states(killed)  # a new build starts its streams over
    state = restore_newest(rebuilt, folder.backup, say=pytest.fail)
    assert state.epoch == 1 and state.random == random_states(killed) == random_states(rebuilt)
    assert len(state.random) > 1  # the augmentation layer's stream and each dropout layer's
    assert all(counter > 0 for _, counter in state.random)  # each drew during epoch 1
    train_epochs(rebuilt, x, y, batch_size=BATCH, epochs=2, seed=SEED, initial_epoch=1,
                 callbacks=[rebuilt.member_rate])
    for ours, theirs in zip(weights(rebuilt), weights(whole)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_a_state_whose_optimizer_is_laid_out_otherwise_is_set_aside_not_half_restored(digits, tmp_path):
    """A state committed while the schedule lived in the optimizer (an older version's ScheduledRate: no rate
    variable) does not line up with today's optimizer. Keras would load the weights and only warn that it skipped
    the optimizer (its moments and step count lost, the schedule begun again): the state is set aside instead, and
    the member starts over."""
    x, y, _, _ = digits
    spec = small_spec()
    folder = MemberFolder(tmp_path / "member-00")
    older = fresh_model()
    older.compile(optimizer=keras.optimizers.Adam(ScheduledRate("onecycle", 1e-3, 2, 4)),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    train_epochs(older, x, y, batch_size=BATCH, epochs=1, seed=SEED, callbacks=[EpochCommit(folder, spec, None)])
    said = []
    assert restore_newest(fresh_model(), folder.backup, say=said.append) is None
    assert len(said) == 1 and "the training state after epoch 1 does not restore" in said[0]
    assert "Skipping variable loading for optimizer" in said[0] and not committed_epochs(folder.backup)


class Recorder(keras.callbacks.Callback):
    def __init__(self, stop_at_batch=None):
        super().__init__()
        self.calls, self.stop_at_batch = [], stop_at_batch

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin", self.params["epochs"], self.params["steps"]))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(("batch", batch))
        if batch == self.stop_at_batch:
            self.model.stop_training = True

    def on_test_begin(self, logs=None):
        self.calls.append(("test_begin",))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, sorted(logs)))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end",))


@pytest.mark.jax
def test_callbacks_see_fits_calls_and_a_stop_ends_the_epoch_and_the_run(digits):
    x, y, x_val, y_val = digits
    recorder = Recorder(stop_at_batch=1)
    train_epochs(fresh_model(3), x, y, batch_size=BATCH, epochs=3, seed=SEED, initial_epoch=1,
                 validation=(x_val, y_val), callbacks=[recorder])
    assert recorder.calls == [("train_begin", 3, 4), ("epoch_begin", 1), ("batch", 0), ("batch", 1), ("test_begin",),
                              ("epoch_end", 1, ["accuracy", "loss", "val_accuracy", "val_loss"]), ("train_end",)]


@pytest.mark.jax
def test_a_partial_last_epoch_trains_the_first_batches_of_its_order_and_ends_the_schedule(digits):
    x, y, x_val, y_val = digits
    model = build_member_model(small_spec(3), SEED, ROWS, final_steps=2)
    recorder = Recorder()
    train_epochs(model, x, y, batch_size=BATCH, epochs=3, seed=SEED, validation=(x_val, y_val),
                 callbacks=[model.member_rate, recorder], final_steps=2)
    batches = [call[1] for call in recorder.calls if call[0] == "batch"]
    assert batches == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]          # 4, 4, then 2 of the last epoch's 4
    assert int(model.optimizer.iterations) == 10 and ("test_begin",) in recorder.calls[-4:]  # validated all the same
    # the last step trained at the one-cycle's rate for step 9 of 10: the schedule ends with the partial epoch
    schedule = model.member_rate.schedule
    assert schedule.total_steps == 10
    assert float(model.optimizer.learning_rate) == pytest.approx(float(rate_at_step(schedule, 9)), rel=1e-6)
    assert float(rate_at_step(schedule, 10)) == pytest.approx(small_spec(3).learning_rate / 1e5, rel=1e-9)


@pytest.mark.jax
def test_predicting_batch_by_batch_equals_keras_predict(digits):
    x, y, x_val, _ = digits
    model = fresh_model()
    train_epochs(model, x, y, batch_size=BATCH, epochs=1, seed=SEED)
    ours = predict_rows(model, x_val, 32)
    np.testing.assert_allclose(ours, model.predict(x_val.astype("float32"), batch_size=32, verbose=0),
                               rtol=1e-5, atol=1e-6)
    assert ours.shape == (70, 10) and predict_rows(model, x_val[:0], 32).shape == (0, 10)


def test_a_run_with_a_weight_average_started_past_epoch_zero_with_no_state_trains_and_validates_the_average(digits):
    from dataclasses import replace

    x, y, x_val, y_val = digits
    model = build_member_model(replace(small_spec(3), ema=0.9), SEED, ROWS)
    assert not model.optimizer.built  # nothing restored: no average yet to swap out at epoch 1's start
    history = train_epochs(model, x, y, batch_size=BATCH, epochs=3, seed=SEED, initial_epoch=1,
                           validation=(x_val, y_val))
    assert len(history.history["val_loss"]) == 2 and int(model.optimizer.iterations) == 8
    # the last epoch validated what the net holds now, the average, and its own weights wait beside it
    loss = model.evaluate(x_val.astype("float32"), y_val, batch_size=BATCH, verbose=0, return_dict=True)["loss"]
    assert loss == pytest.approx(history.history["val_loss"][-1], rel=1e-5)
    own = [keras.ops.convert_to_numpy(v) for v in model.optimizer._model_variables_moving_average]
    held = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    assert [w.shape for w in held] == [w.shape for w in own]
    assert any(not np.array_equal(average, net) for average, net in zip(held, own))
