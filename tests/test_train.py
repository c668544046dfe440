import re

import keras
import numpy as np
import pytest

from ensemble.job.arrays import JobArrays
from ensemble.job.layout import JobLayout, ModelKind, read_history
from ensemble.job.outputs import finished_models, read_metrics
from ensemble.job.record import load_record
from ensemble.job.spec import JobSpec
from ensemble.member import process
from ensemble.member.callbacks.clock import current_learning_rate
from ensemble.member.callbacks.commit import EpochCommit
from ensemble.member.callbacks.deadline import (MODEL_LOAD_S, PREDICT_MARGIN, UNMEASURED_LOAD_S, Deadline,
                                                 model_load_seconds)
from ensemble.member.callbacks.plateau import ResumableReduceLROnPlateau
from ensemble.member.model import build_member_model, member_schedule
from ensemble.member.predict import predict_probabilities
from ensemble.member.process import _callbacks, train_member
from ensemble.nets.recipes import RECIPES
from ensemble.nets.schedules import PLATEAU, plateau_rates, rates_per_epoch
from ensemble.run.request import TrainRequest
from ensemble.run.runner import prepare_job
from ensemble.store.workspace import Workspace


def _plateau_rates(values, cut=None):
    """The rate each epoch ran at under ReduceLROnPlateau; with cut, the callback and the optimizer are
    rebuilt after `cut` epochs from the counters and rate a training state saves, as a resumed member's are."""
    def fresh(rate, restored):
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.Adam(rate), loss="mse")
        callback = ResumableReduceLROnPlateau(restored, monitor="val_accuracy", mode="max", **PLATEAU)
        callback.set_model(model)
        callback.on_train_begin()
        return callback

    callback, rates = fresh(1e-4, None), []
    for epoch, value in enumerate(values):
        if epoch == cut:
            callback = fresh(current_learning_rate(callback.model), callback.counters())
        rates.append(current_learning_rate(callback.model))
        callback.on_epoch_end(epoch, {"val_accuracy": value})
    return rates


@pytest.mark.parametrize("values", [
    [0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7, 0.7, 0.7],  # two reductions, patience across the cut
    [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
    [0.5, 0.4, 0.7, 0.6, 0.8, 0.8, 0.8, 0.8, 0.9, 0.1, 0.1, 0.1],
])
def test_plateau_counters_from_a_training_state_continue_exactly_as_an_uninterrupted_run(values):
    uninterrupted = _plateau_rates(values)
    assert uninterrupted == pytest.approx(plateau_rates(values, 1e-4), rel=1e-6)
    for cut in range(1, len(values)):
        assert _plateau_rates(values, cut) == pytest.approx(uninterrupted, rel=1e-6), cut


def test_history_keeps_the_last_row_of_a_repeated_epoch(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,val_accuracy\n0,0.5\n1,0.6\n1,0.65\n2,0.7\n")
    assert read_history(path) == [{"epoch": 0.0, "val_accuracy": 0.5}, {"epoch": 1.0, "val_accuracy": 0.65},
                                  {"epoch": 2.0, "val_accuracy": 0.7}]
    assert read_history(tmp_path / "missing.csv") == []


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_each_precision_trains_a_member_model_on_cpu(precision, restore_dtype_policy):
    import numpy as np

    from ensemble.data.sources import sample_digits
    from ensemble.job.arrays import JobArrays
    from ensemble.job.spec import JobSpec
    from ensemble.member.model import build_member_model, fit_member_model

    images, labels = sample_digits()
    order = np.random.default_rng(0).permutation(len(labels))[:160]
    x, y = images[order, ..., None], labels[order]
    arrays = JobArrays(x[:128], y[:128], x[128:], y[128:], x[:0])
    # the default recipe on a small net: bf16 is emulated on a CPU without it, and slow
    spec = JobSpec.from_options(recipe="cnn11", model="seed004", epochs=1, batch_size=32, precision=precision)
    model = build_member_model(spec, seed=0, n_train=128)
    history = fit_member_model(model, spec, arrays, seed=0, callbacks=[])
    assert np.isfinite(history.history["loss"][0])
    assert model.layers[-1].compute_dtype == "float32"  # the softmax stays float32 under mixed precision
    expected_compute = "bfloat16" if precision == "mixed_bfloat16" else "float32"
    assert model.get_layer(index=3).compute_dtype == expected_compute  # a convolution
    probs = np.asarray(model.predict(x[128:], verbose=0))
    assert probs.dtype == np.float32 and np.allclose(probs.sum(axis=1), 1.0, atol=1e-3)


@pytest.fixture(scope="module")
def slice_arrays():
    from ensemble.data.sources import sample_digits

    images, labels = sample_digits()
    order = np.random.default_rng(0).permutation(len(labels))[:192]
    x, y = images[order, ..., None], labels[order]
    return JobArrays(x[:160], y[:160], x[160:], y[160:], x[:0])


@pytest.mark.parametrize("recipe", [pytest.param(name, marks=[pytest.mark.jax] if name == "cnn11" else [])  # one recipe on JAX: CI time
                                    for name in RECIPES])
def test_every_recipe_trains_an_epoch_on_a_slice(recipe, slice_arrays, restore_dtype_policy):
    from ensemble.member.model import build_member_model, fit_member_model

    spec = JobSpec.from_options(recipe=recipe, epochs=1, precision="float32")
    model = build_member_model(spec, seed=0, n_train=len(slice_arrays.x_train))
    history = fit_member_model(model, spec, slice_arrays, seed=0, callbacks=[])
    assert len(history.history["loss"]) == 1 and np.isfinite(history.history["loss"][0])
    optimizer_class = type(model.optimizer).__name__.lower()
    assert optimizer_class == ("poweraveraged" if spec.ema_power else "") + spec.optimizer


class Killed(Exception):
    """Stands for a kill: raised at the start of an epoch, after the previous epoch's backup was saved."""


def _interrupt_at(monkeypatch, epoch):
    class KillAt(keras.callbacks.Callback):
        def on_epoch_begin(self, current, logs=None):
            if current == epoch:
                raise Killed

    original = _callbacks
    monkeypatch.setattr(process, "_callbacks", lambda *args, **kwargs: [KillAt(), *original(*args, **kwargs)])


def finished_snapshots(ws, job, index):
    return [model.name for model in finished_models(ws, load_record(ws, job))
            if model.kind is ModelKind.SNAPSHOT and model.member == f"member-{index:02d}"]


def _job(tmp_path, sample_dir, limit_train=256, **options) -> Workspace:
    ws = Workspace.resolve(tmp_path / "home")
    spec = JobSpec(**{"model": "seed004", "batch_size": 32, "limit_train": limit_train, "precision": "float32",
                      **options})
    request = TrainRequest(n=1, data_dir=sample_dir, job="j", spec=spec)
    prepare_job(ws, request, gpu_capabilities=[])
    return ws


def _train_killed_then_resumed(ws, monkeypatch, kill_at):
    with monkeypatch.context() as patched:
        _interrupt_at(patched, kill_at)
        with pytest.raises(Killed):
            train_member(ws, "j", 0)
    history_before = read_history(JobLayout(ws, "j").member(0).path / "history.csv")
    assert len(history_before) == kill_at and (JobLayout(ws, "j").member(0).path / "backup").is_dir()
    train_member(ws, "j", 0)
    return read_history(JobLayout(ws, "j").member(0).path / "history.csv")


def _expected_rates(ws, history):
    spec = load_record(ws, "j").spec
    if spec.schedule == "plateau":  # moved by validation results: what an uninterrupted run does with them
        return plateau_rates([row["val_accuracy"] for row in history], spec.learning_rate)
    return rates_per_epoch(member_schedule(spec, read_metrics(JobLayout(ws, "j").member(0)).n_train))


@pytest.mark.parametrize("schedule, snapshots", [
    ("constant", 1), pytest.param("plateau", 1, marks=pytest.mark.jax), ("exp", 1), ("onecycle", 1), ("cosine", 1),
    ("cosine", 7)])
def test_a_member_killed_at_each_step_of_the_epoch_end_resumes_exactly_every_time(
        schedule, snapshots, tmp_path, sample_dir, monkeypatch, capsys, restore_dtype_policy):
    """One member's life with a kill at every step of the epoch-end sequence in turn: at step k of epoch k's
    end, then a resume. The member's learning rates, history, kept epoch and snapshots are those of an
    uninterrupted run, each resume's log names the epoch Keras really resumes after, nothing is left over."""
    steps = EpochCommit.STEPS
    ws = _job(tmp_path, sample_dir, schedule=schedule, snapshots=snapshots, epochs=len(steps) + 1,
              learning_rate=1e-3, limit_train=96)
    kills = {epoch: step for epoch, step in enumerate(steps)}  # epoch index -> the step its end is killed at

    def kill(self, step, epoch):
        if kills.get(epoch) == step:
            del kills[epoch]  # each kill once: the resumed member passes that point
            raise Killed

    resumed_after = []
    with monkeypatch.context() as patched:
        patched.setattr(EpochCommit, "after_step", kill)
        for attempt in range(len(steps) + 1):
            try:
                train_member(ws, "j", 0)
                break
            except Killed:
                pass
            finally:
                resumed_after += [int(n) for n in re.findall(r"member-00 resuming after epoch (\d+)/", capsys.readouterr().out)]
    assert kills == {} and attempt == len(steps)
    committed_before_step = {step: 0 if steps.index(step) < steps.index("state") else 1 for step in steps}
    expected = [epoch + committed_before_step[step] for epoch, step in enumerate(steps)]
    assert resumed_after == [n for n in expected if n > 0]  # after a kill before any commit it simply starts
    epochs = len(steps) + 1
    history = read_history(JobLayout(ws, "j").member(0).path / "history.csv")
    assert [int(row["epoch"]) for row in history] == list(range(epochs))
    assert [row["learning_rate"] for row in history] == pytest.approx(_expected_rates(ws, history), rel=1e-5)
    metrics = read_metrics(JobLayout(ws, "j").member(0))
    accuracies = [row["val_accuracy"] for row in history]
    assert metrics.best_epoch == accuracies.index(max(accuracies)) + 1 and metrics.epochs == epochs
    assert finished_snapshots(ws, "j", 0) == ([f"member-00-snap{k}" for k in range(1, snapshots + 1)]
                                              if snapshots > 1 else [])
    assert not list(JobLayout(ws, "j").member(0).path.rglob(".*"))  # no temp file or incoming state is left


@pytest.mark.parametrize("kill_at", [1, 2], ids=["mid-cycle", "between-cycles"])
def test_snapshot_members_resume_within_and_between_cycles(kill_at, tmp_path, sample_dir, monkeypatch,
                                                           restore_dtype_policy):
    ws = _job(tmp_path, sample_dir, snapshots=2, epochs=4, tta=True)
    history = _train_killed_then_resumed(ws, monkeypatch, kill_at=kill_at)
    spec = load_record(ws, "j").spec
    n_train = read_metrics(JobLayout(ws, "j").member(0)).n_train
    assert [row["learning_rate"] for row in history] == pytest.approx(
        rates_per_epoch(member_schedule(spec, n_train)), rel=1e-5)
    assert finished_snapshots(ws, "j", 0) == ["member-00-snap1", "member-00-snap2"]
    for cycle, name in enumerate(finished_snapshots(ws, "j", 0), 1):
        metrics = read_metrics(JobLayout(ws, "j").model(name))
        assert (metrics.kind, metrics.cycle, metrics.epochs, metrics.member) == ("snapshot", cycle,
                                                                                            2 * cycle, 0)
        assert JobLayout(ws, "j").model(name).has_tta
    assert not (JobLayout(ws, "j").member(0).path / "backup").exists()  # all epochs ran: the backup is gone


def test_test_time_augmentation_is_deterministic(slice_arrays, restore_dtype_policy):
    from ensemble.nets.augment import TTA_VIEWS, tta_view

    spec = JobSpec.from_options(recipe="seed004", epochs=1, precision="float32")
    model = build_member_model(spec, seed=0, n_train=160)
    first = predict_probabilities(model, slice_arrays.x_val, tta=True)
    second = predict_probabilities(model, slice_arrays.x_val, tta=True)
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert not np.array_equal(first[0], first[1])  # the views change the answer, a little
    assert np.allclose(first[1].sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(tta_view(slice_arrays.x_val, TTA_VIEWS[0]), slice_arrays.x_val.astype("float32"))
    for view in TTA_VIEWS[1:]:
        assert np.array_equal(tta_view(slice_arrays.x_val, view), tta_view(slice_arrays.x_val, view))
        assert not np.array_equal(tta_view(slice_arrays.x_val, view), slice_arrays.x_val)


def test_deadline_stops_when_another_epoch_and_the_predictions_would_not_fit():
    class FakeModel:
        stop_training = False

    now = [1000.0]
    # a snapshot after epoch 1: from then on the member predicts with 2 models
    deadline = Deadline(deadline=1100.0, n_val=100, n_outputs=1000, views=1, snapshot_ends=(1,),
                        clock=lambda: now[0])
    deadline.set_model(FakeModel())
    # the first epoch also traced the graph: 40 s; its validation pass 1.6 s (16 ms per image):
    # 2 models x (1000 x 16 ms x 1.25 + the load) = 40 s + 2 loads
    deadline.on_epoch_begin(0)
    deadline.on_epoch_end(0, {"epoch_seconds": 40.0, "validation_seconds": 1.6})
    assert not deadline.model.stop_training             # 1000 + 40 + 40 + 2 loads <= 1100
    now[0] = 1020.0
    logs = {"epoch_seconds": 30.0, "validation_seconds": 0.8}  # 8 ms per image: 2 x (10 s + the load)
    needed = 30.0 + 2 * (10.0 + deadline.load_s)
    assert deadline.seconds_needed(dict(logs), 2) == pytest.approx(needed)  # the fastest epoch and pass
    deadline.on_epoch_begin(1)
    deadline.on_epoch_end(1, logs)
    assert not deadline.model.stop_training             # 1020 + 50 s + 2 loads <= 1100
    now[0] = 1100.0 - needed + 0.5
    deadline.on_epoch_begin(2)
    deadline.on_epoch_end(2, logs)
    assert deadline.model.stop_training and deadline.stopped_at == 3   # half a second too few


def test_a_model_load_is_kept_back_as_measured_on_tensorflow_and_as_before_elsewhere():
    assert model_load_seconds("tensorflow") == MODEL_LOAD_S == 0.75
    assert model_load_seconds("jax") == UNMEASURED_LOAD_S == 2.0
    assert Deadline(deadline=0.0, n_val=1, n_outputs=1, views=1).load_s == model_load_seconds(keras.backend.backend())


def test_deadline_plans_for_a_partial_last_epoch_as_its_share_of_the_steps_and_a_whole_validation_pass():
    deadline = Deadline(deadline=0.0, n_val=100, n_outputs=1000, views=1, predict_seconds_per_image=0.002)
    deadline.set_params({"epochs": 3, "steps": 4, "final_steps": 1})
    logs = {"epoch_seconds": 40.0, "validation_seconds": 8.0}  # 32 s of steps
    predictions = 1000 * 0.002 * PREDICT_MARGIN + deadline.load_s
    assert deadline.seconds_needed(dict(logs), 1) == pytest.approx(40.0 + predictions)  # the next epoch is whole
    # the next is the last: a quarter of its steps, all of its validation pass
    assert deadline.seconds_needed(dict(logs), 2) == pytest.approx(40.0 - 0.75 * 32.0 + predictions)


def test_deadline_counts_only_the_snapshots_that_will_exist_and_prefers_measured_prediction_speed():
    deadline = Deadline(deadline=0.0, n_val=100, n_outputs=1000, views=8, snapshot_ends=(4, 8, 12),
                        predict_seconds_per_image=0.002)
    assert [deadline.models_after(epochs) for epochs in (1, 4, 5, 8, 12)] == [1, 2, 2, 3, 4]
    # after epoch 4 the next epoch is 5: the member and one snapshot to predict, at the measured 2 ms per image
    assert deadline.seconds_needed({"epoch_seconds": 10.0, "validation_seconds": 5.0}, 4) == pytest.approx(
        10.0 + 2 * (1000 * 0.002 * PREDICT_MARGIN + deadline.load_s))
    # what a member fitted to the deadline keeps back for its kept weights: the same margin and load
    assert deadline.measured_predictions_s() == pytest.approx(1000 * 0.002 * PREDICT_MARGIN + deadline.load_s)
    assert Deadline(deadline=0.0, n_val=100, n_outputs=1000, views=8).measured_predictions_s() is None


@pytest.mark.jax  # the probe's model is reset through each backend's variables
def test_a_member_that_calibrated_learns_exactly_what_a_member_given_its_length_learns(tmp_path, sample_dir,
                                                                                       restore_dtype_policy):
    """The first member of a --time-limit job probes its own training on its own model to choose its length, and
    the model is put back as built (weights, the augmentation's random stream, the optimizer's moments, step count
    and weight average): its probabilities equal those of a member that was given that length and never probed."""
    import dataclasses
    import time

    from ensemble.job.plan import BudgetRules, read_plan, write_plan

    outputs = {}
    for name, calibrate in (("probed", True), ("given", False)):
        ws = _job(tmp_path / name, sample_dir, limit_train=160, epochs=2, augment="idg", schedule="onecycle", ema=0.9)
        plan = read_plan(ws, "j")
        rules = BudgetRules(cap_per_slot=1, stretch=False)
        plan = dataclasses.replace(plan, deadline=time.time() + 3600, budget=rules,
                                   member_epochs={} if calibrate else {0: 2})
        write_plan(ws, plan)
        train_member(ws, "j", 0)
        folder = JobLayout(ws, "j").member(0)
        outputs[name] = np.load(folder.path / "val_probs.npy"), np.load(folder.path / "test_probs.npy")
        progress = (JobLayout(ws, "j").progress(0)).read_text()
        assert ('"costs"' in progress) is calibrate
        assert read_metrics(folder).epochs == 2
    assert np.array_equal(outputs["probed"][0], outputs["given"][0])
    assert np.array_equal(outputs["probed"][1], outputs["given"][1])


def test_a_member_trained_with_flip_predicts_each_view_mirrored_too(tmp_path, sample_dir, restore_dtype_policy):
    import json

    from ensemble.job.plan import plan_arrays, read_plan
    from ensemble.nets.augment import TTA_VIEWS, tta_views

    ws = _job(tmp_path, sample_dir, limit_train=96, epochs=1, augment="idg", flip=True, tta=True)
    train_member(ws, "j", 0)
    folder = JobLayout(ws, "j").member(0)
    config = json.loads(folder.config.read_text())
    assert config["spec"]["flip"] and len(config["recipe"]["tta_views"]) == 2 * len(TTA_VIEWS)
    arrays = plan_arrays(ws, read_plan(ws, "j"), 0)
    model = keras.saving.load_model(folder.best, compile=False)
    expected = predict_probabilities(model, arrays.x_val, tta=True, views=tta_views(True))[1]
    np.testing.assert_allclose(np.load(folder.path / "val_probs_tta.npy"), expected, atol=1e-6)
    assert not np.allclose(np.load(folder.path / "val_probs_tta.npy"),
                           predict_probabilities(model, arrays.x_val, tta=True)[1], atol=1e-5)


def test_the_probe_leaves_tensorflows_global_seed_alone_once_the_step_is_traced(slice_arrays, monkeypatch,
                                                                                 restore_dtype_policy):
    """Setting TensorFlow's global seed drops the runtime's caches: the member's first step after the probe then
    spent 0.3 s instantiating its traced step again (keras.utils.set_random_seed put the streams back). The build
    seeds it, before anything is traced; the probe puts back only Python's and NumPy's streams."""
    import random

    import tensorflow as tf

    from ensemble.member.calibrate import measure_costs

    seeded = []
    original = tf.random.set_seed
    monkeypatch.setattr(tf.random, "set_seed", lambda seed: (seeded.append(seed), original(seed))[1])
    spec = JobSpec.from_options(epochs=1, precision="float32", model="seed004", batch_size=32, augment="idg")
    random.seed(1)
    np.random.seed(1)
    measure_costs(spec, slice_arrays, seed=7)
    assert seeded == [7]  # the build's
    after_probe = random.random(), np.random.random()
    keras.utils.set_random_seed(7)
    build_member_model(spec, seed=7, n_train=len(slice_arrays.x_train))
    assert (random.random(), np.random.random()) == after_probe  # where the build left them


@pytest.mark.jax
def test_label_smoothing_is_the_smoothed_cross_entropy_and_trains_an_epoch_on_a_slice(slice_arrays,
                                                                                       restore_dtype_policy):
    from ensemble.member.model import build_member_model, fit_member_model
    from ensemble.nets.losses import SmoothedSparseCrossentropy

    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype="float32")
    labels = np.array([0, 2])
    targets = np.array([[0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3], [0.1 / 3, 0.1 / 3, 0.9 + 0.1 / 3]])
    expected = np.mean(-np.sum(targets * np.log(probs), axis=1))
    loss = SmoothedSparseCrossentropy(0.1, classes=3)(labels, probs)
    assert float(keras.ops.convert_to_numpy(loss)) == pytest.approx(expected, rel=1e-5)

    spec = JobSpec.from_options(label_smoothing=0.1, epochs=1, precision="float32", model="seed004")
    model = build_member_model(spec, seed=0, n_train=len(slice_arrays.x_train))
    assert isinstance(model.loss, SmoothedSparseCrossentropy) and model.loss.smoothing == 0.1
    history = fit_member_model(model, spec, slice_arrays, seed=0, callbacks=[])
    assert np.isfinite(history.history["loss"][0]) and "val_accuracy" in history.history


@pytest.mark.jax
def test_weight_decay_shrinks_kernels_by_the_rate_times_the_decay_leaves_the_rest_and_trains_an_epoch_on_a_slice(
        slice_arrays, restore_dtype_policy):
    from ensemble.member.model import fit_member_model

    def decayed_by_one_zero_gradient_step(weight_decay):
        """Each trainable weight's (path, before, after) over one step of a member's optimizer, with the rate that
        step had. A zero gradient leaves Adam's moments at zero, so the step moves a weight by its decay alone."""
        spec = JobSpec.from_options(weight_decay=weight_decay, model="bn_cnn", precision="float32")
        model = build_member_model(spec, seed=0, n_train=len(slice_arrays.x_train))
        before = [v.numpy() for v in model.trainable_variables]
        model.optimizer.apply_gradients(zip([np.zeros(v.shape, "float32") for v in model.trainable_variables],
                                            model.trainable_variables))
        rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        return rate, [(v.path, b, v.numpy()) for v, b in zip(model.trainable_variables, before)]

    rate, weights = decayed_by_one_zero_gradient_step(0.5)
    names = {path.rsplit("/", 1)[-1] for path, _, _ in weights}
    assert names == {"kernel", "bias", "gamma", "beta"}  # a batch-normalised net: every kind of weight is here
    for path, before, after in weights:
        if path.endswith("/kernel"):
            np.testing.assert_allclose(after, before * (1 - np.float32(rate * 0.5)), rtol=1e-6, atol=1e-9)
            assert not np.array_equal(after, before), path
        else:  # biases, and a batch norm's scale and offset
            np.testing.assert_array_equal(after, before, err_msg=path)
    _, weights = decayed_by_one_zero_gradient_step(0.0)
    assert all(np.array_equal(after, before) for _, before, after in weights)

    spec = JobSpec.from_options(weight_decay=0.05, epochs=1, precision="float32", model="seed004", batch_size=32)
    model = build_member_model(spec, seed=0, n_train=len(slice_arrays.x_train))
    assert model.optimizer.weight_decay == pytest.approx(0.05)
    history = fit_member_model(model, spec, slice_arrays, seed=0, callbacks=[])
    assert np.isfinite(history.history["loss"][0]) and "val_accuracy" in history.history


@pytest.mark.jax
def test_a_short_warm_up_reaches_the_peak_rate_early_and_trains_an_epoch_on_a_slice(slice_arrays,
                                                                                     restore_dtype_policy):
    from ensemble.member.model import build_member_model, fit_member_model, member_schedule
    from ensemble.nets.schedules import rate_at_step

    spec = JobSpec.from_options(warmup=0.1, epochs=2, precision="float32", model="seed004", schedule="onecycle",
                                batch_size=32)
    n_train = len(slice_arrays.x_train)
    schedule = member_schedule(spec, n_train)
    assert schedule.warmup == 0.1
    model = build_member_model(spec, seed=0, n_train=n_train)
    history = fit_member_model(model, spec, slice_arrays, seed=0, callbacks=[])
    assert np.isfinite(history.history["loss"]).all() and len(history.history["val_accuracy"]) == 2
    steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    assert steps == schedule.total_steps
    # the optimizer's rate came from the short warm-up: its last step (past the peak, step 1 of 10) at the falling
    # rate the schedule gives it
    in_optimizer = model.optimizer.learning_rate
    assert float(keras.ops.convert_to_numpy(in_optimizer)) == pytest.approx(float(rate_at_step(schedule, steps - 1)),
                                                                         rel=1e-6)
    assert float(rate_at_step(schedule, 1)) == pytest.approx(spec.learning_rate, rel=1e-9)


@pytest.mark.jax
def test_random_erasing_is_in_the_members_model_trains_an_epoch_on_a_slice_and_saves(slice_arrays, tmp_path,
                                                                                      restore_dtype_policy):
    from ensemble.member.model import fit_member_model

    spec = JobSpec.from_options(erase=0.5, epochs=1, precision="float32", model="seed004", batch_size=32,
                                augment="idg")
    model = build_member_model(spec, seed=0, n_train=len(slice_arrays.x_train))
    (erasing,) = [layer for layer in model.layers if isinstance(layer, keras.layers.RandomErasing)]
    assert erasing.factor == (0.5, 0.5)
    history = fit_member_model(model, spec, slice_arrays, seed=0, callbacks=[])
    assert np.isfinite(history.history["loss"][0]) and "val_accuracy" in history.history
    model.save(tmp_path / "erasing.keras")  # a checkpoint rebuilds it: Keras' own layer, no custom object
    loaded = keras.saving.load_model(tmp_path / "erasing.keras", compile=False)
    x = slice_arrays.x_val[:16].astype("float32")
    np.testing.assert_allclose(loaded.predict_on_batch(x), model.predict_on_batch(x), atol=1e-6)


@pytest.mark.jax
def test_a_half_width_member_trains_an_epoch_on_a_slice_and_its_checkpoint_rebuilds_it(slice_arrays, tmp_path,
                                                                                       restore_dtype_policy):
    from ensemble.member.model import fit_member_model

    spec = JobSpec.from_options(width=0.5, epochs=1, precision="float32", batch_size=32)
    model = build_member_model(spec, seed=0, n_train=len(slice_arrays.x_train))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [16, 16, 16, 32, 32, 32, 64, 64, 64]  # cnn11's, halved
    history = fit_member_model(model, spec, slice_arrays, seed=0, callbacks=[])
    assert np.isfinite(history.history["loss"][0]) and "val_accuracy" in history.history
    model.save(tmp_path / "half.keras")  # the checkpoint carries the narrower net: no width needed to load it
    loaded = keras.saving.load_model(tmp_path / "half.keras", compile=False)
    assert [layer.filters for layer in loaded.layers if isinstance(layer, keras.layers.Conv2D)][0] == 16
    x = slice_arrays.x_val[:16].astype("float32")
    np.testing.assert_allclose(loaded.predict_on_batch(x), model.predict_on_batch(x), atol=1e-6)


@pytest.mark.jax
def test_the_flip_lever_is_in_the_members_augmentation_and_trains_an_epoch_on_a_slice(slice_arrays,
                                                                                     restore_dtype_policy):
    from ensemble.member.model import build_member_model, fit_member_model
    from ensemble.nets.augment import IDGAugment

    spec = JobSpec.from_options(flip=True, epochs=1, precision="float32", model="seed004", batch_size=32,
                                augment="idg")
    assert spec.augmentation.flip and not JobSpec.from_options(model="seed004").augmentation.flip
    model = build_member_model(spec, seed=0, n_train=len(slice_arrays.x_train))
    (augment,) = [layer for layer in model.layers if isinstance(layer, IDGAugment)]
    assert augment.horizontal_flip
    history = fit_member_model(model, spec, slice_arrays, seed=0, callbacks=[])
    assert np.isfinite(history.history["loss"][0]) and "val_accuracy" in history.history
    # its test-time views are each view and its mirror: TTA_VIEWS is closed under a mirror (shifts and turns both
    # ways), so that is the mean of the views of the images and of their mirrors
    from ensemble.nets.augment import tta_views

    x = slice_arrays.x_val
    both = predict_probabilities(model, x, tta=True, views=tta_views(True))[1]
    halves = predict_probabilities(model, x, tta=True)[1], predict_probabilities(model, x[:, :, ::-1], tta=True)[1]
    np.testing.assert_allclose(both, (halves[0] + halves[1]) / 2, atol=2e-6)
    assert not np.allclose(both, halves[0], atol=1e-4)


def _values(variables) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(v) for v in variables]


class _AtEpochEnd(keras.callbacks.Callback):
    """What the net and the optimizer's average slots hold when each epoch's callbacks run."""

    def __init__(self):
        super().__init__()
        self.net, self.slots = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.net.append(_values(self.model.trainable_variables))
        optimizer = self.model.optimizer
        if getattr(optimizer, "use_ema", False):
            self.slots.append(_values(optimizer._model_variables_moving_average))


@pytest.mark.jax
def test_weight_averaging_validates_and_keeps_the_average_and_trains_on_as_without_it(slice_arrays,
                                                                                       restore_dtype_policy):
    """The average is kept beside the net: each epoch's end (its validation and its checkpoints) and the end of
    training see the average; the net's own weights, which go on training, are exactly those of a member with no
    average."""
    from ensemble.member.model import fit_member_model

    averaged_spec = JobSpec.from_options(ema=0.9, epochs=3, precision="float32", model="seed004", batch_size=32)
    plain_spec = JobSpec.from_options(epochs=3, precision="float32", model="seed004", batch_size=32)
    n_train = len(slice_arrays.x_train)
    averaged, plain = (build_member_model(spec, seed=0, n_train=n_train) for spec in (averaged_spec, plain_spec))
    assert averaged.optimizer.use_ema and averaged.optimizer.ema_momentum == 0.9
    seen_averaged, seen_plain = _AtEpochEnd(), _AtEpochEnd()
    averaged_history = fit_member_model(averaged, averaged_spec, slice_arrays, seed=0, callbacks=[seen_averaged])
    plain_history = fit_member_model(plain, plain_spec, slice_arrays, seed=0, callbacks=[seen_plain])
    for epoch in range(3):
        # swapped: the slots hold the net's own weights, which equal the plain member's to the bit
        assert all(np.array_equal(own, p) for own, p in zip(seen_averaged.slots[epoch], seen_plain.net[epoch]))
        assert not np.array_equal(seen_averaged.net[epoch][0], seen_plain.net[epoch][0])  # the net: the average
    assert averaged_history.history["loss"] == plain_history.history["loss"]  # the same training steps
    assert averaged_history.history["val_loss"] != plain_history.history["val_loss"]  # the average validated
    final = _values(averaged.trainable_variables)
    assert all(np.array_equal(f, e) for f, e in zip(final, seen_averaged.net[-1]))  # and kept at the end


@pytest.mark.parametrize("average", [{"ema": 0.9}, {"ema": 0.9, "ema_power": 3.0}])
def test_weight_averaging_needs_no_step_count_under_loss_scaling(slice_arrays, restore_dtype_policy, average):
    """mixed_float16 (what --precision auto picks on a T4) wraps the optimizer for loss scaling, which skips
    overflowing steps: the average is still swapped in at each epoch's end and kept at the end."""
    from ensemble.member.loop import kept_average
    from ensemble.member.model import fit_member_model

    spec = JobSpec.from_options(**average, epochs=2, precision="mixed_float16", model="seed004", batch_size=32)
    model = build_member_model(spec, seed=0, n_train=len(slice_arrays.x_train))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    optimizer = kept_average(model)
    assert optimizer is model.optimizer.inner_optimizer and optimizer.use_ema
    seen = _AtEpochEnd()
    history = fit_member_model(model, spec, slice_arrays, seed=0, callbacks=[seen])
    assert np.isfinite(history.history["val_loss"]).all()
    slots = _values(optimizer._model_variables_moving_average)  # the net's own weights, swapped out
    assert all(np.array_equal(f, e) for f, e in zip(_values(model.trainable_variables), seen.net[-1]))
    assert not np.array_equal(slots[0], seen.net[-1][0])


class _EachStep(keras.callbacks.Callback):
    """The net's own weights after each training step."""

    def __init__(self):
        super().__init__()
        self.net = []

    def on_train_batch_end(self, batch, logs=None):
        self.net.append(_values(self.model.trainable_variables))


def test_the_power_momentum_takes_the_first_step_whole_and_grows_to_its_cap():
    from ensemble.nets.averaging import power_momentum

    assert power_momentum(1, 16.97) == 0.0
    assert power_momentum(2, 0.0) == 0.5  # gamma 0: the plain mean of every step so far
    assert power_momentum(4, 1.0) == 0.5625
    assert power_momentum(10, 6.94) == pytest.approx(0.9 ** 7.94)
    assert power_momentum(800, 16.97, cap=0.98) < 0.98 == power_momentum(1000, 16.97, cap=0.98)  # ~900 steps


@pytest.mark.jax
def test_a_warmed_up_average_is_the_closed_form_over_the_steps_and_is_validated_and_kept(slice_arrays,
                                                                                       restore_dtype_policy):
    """--ema-power's average after each epoch is a_t = m_t a_(t-1) + (1 - m_t) w_t over every step's weights w_t
    so far, m_t = min(M, (1 - 1/t)^(G+1)): computed here from the net's own weights step by step, through both the
    rise (steps 1-6) and the cap (7-10), it is what each epoch's end validates and what the member keeps; the
    net trains on as a member without an average does."""
    from ensemble.member.model import fit_member_model
    from ensemble.nets.averaging import PowerAveragedAdam, power_momentum

    gamma, cap = 3.0, 0.5
    spec = JobSpec.from_options(ema=cap, ema_power=gamma, epochs=2, precision="float32", model="seed004",
                                batch_size=32)
    plain_spec = JobSpec.from_options(ema=0.0, epochs=2, precision="float32", model="seed004", batch_size=32)
    n_train = len(slice_arrays.x_train)
    model, plain = (build_member_model(s, seed=0, n_train=n_train) for s in (spec, plain_spec))
    assert isinstance(model.optimizer, PowerAveragedAdam) and model.optimizer.use_ema
    steps, at_end = _EachStep(), _AtEpochEnd()
    history = fit_member_model(model, spec, slice_arrays, seed=0, callbacks=[steps, at_end])
    plain_history = fit_member_model(plain, plain_spec, slice_arrays, seed=0, callbacks=[])
    assert history.history["loss"] == plain_history.history["loss"]  # the average never touches training
    steps_per_epoch = len(steps.net) // 2
    assert steps_per_epoch == 5
    momenta = [power_momentum(step, gamma, cap) for step in range(1, 11)]
    assert momenta[5] < cap == momenta[6]  # both phases are in the run
    average = None
    for step, (weights, momentum) in enumerate(zip(steps.net, momenta), start=1):
        kept = np.float32(momentum)
        average = weights if average is None else [kept * a + (1 - kept) * w for a, w in zip(average, weights)]
        if step % steps_per_epoch == 0:
            seen = at_end.net[step // steps_per_epoch - 1]  # the average, swapped into the net
            for expected, got in zip(average, seen):
                np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(at_end.net[-1][0], steps.net[-1][0])  # an average, not the last step's weights
    for expected, kept in zip(average, _values(model.trainable_variables)):
        np.testing.assert_allclose(kept, expected, rtol=1e-5, atol=1e-6)


def test_a_power_averaged_optimizer_round_trips_its_config_and_refuses_gradient_accumulation():
    from ensemble.nets.architectures import make_optimizer
    from ensemble.nets.averaging import PowerAveragedAdam, PowerAveragedRMSprop

    optimizer = make_optimizer("adam", 1e-3, ema=0.98, ema_power=6.94)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(again) is PowerAveragedAdam and again.use_ema and (again.ema_momentum, again.ema_power) == (0.98, 6.94)
    assert type(make_optimizer("adam", 1e-3, ema=0.0, ema_power=6.94)) is keras.optimizers.Adam  # no average at all
    wrapped = keras.optimizers.LossScaleOptimizer(make_optimizer("rmsprop", 1e-3, ema=0.9, ema_power=3.0))
    inner = keras.optimizers.deserialize(keras.optimizers.serialize(wrapped)).inner_optimizer
    assert type(inner) is PowerAveragedRMSprop and inner.ema_power == 3.0
    with pytest.raises(ValueError, match="does not support gradient_accumulation_steps"):
        PowerAveragedAdam(ema_power=3.0, gradient_accumulation_steps=4)


def test_ema_power_warms_up_an_average_and_is_refused_where_there_is_none():
    from ensemble.job.errors import JobError

    spec = JobSpec.from_options(ema_power=16.97)
    assert (spec.ema, spec.ema_power) == (0.98, 16.97)  # the recipe's average, warmed up
    assert JobSpec.from_dict(spec.to_dict()) == spec
    assert JobSpec.from_options(ema=0.98, ema_power=16.97) == spec  # what its resume command carries
    recorded = JobSpec.from_options().to_dict()
    del recorded["ema_power"]  # a job recorded before the field
    assert JobSpec.from_dict(recorded).ema_power == 0.0
    with pytest.raises(JobError, match="--ema-power 16.97 warms up the weight average, and this job keeps none"):
        JobSpec.from_options(ema=0.0, ema_power=16.97)
    with pytest.raises(JobError, match="--ema-power 6 warms up .* drop --ema-power or give --ema a momentum"):
        JobSpec.from_options(ema_power=6, model="deotte")  # Deotte's recipe keeps no average
    with pytest.raises(JobError, match="--ema-power 6 swaps the average in .* drop --ema-power or use --augment"):
        JobSpec.from_options(ema_power=6, augment="legacy-idg")
    with pytest.raises(JobError, match="--ema-power must be at least 0"):
        JobSpec.from_options(ema_power=-1)
    # cnn11's warm-up is no request: it goes with the average wherever that is left out or turned off
    assert RECIPES["cnn11"].ema_power == 16.97 and JobSpec.from_options().ema_power == 16.97
    assert JobSpec.from_options(augment="legacy-idg").ema_power == 0.0
    assert JobSpec.from_options(ema=0.0).ema_power == 0.0


@pytest.mark.parametrize("average", [{"ema": 0.9}, {"ema": 0.9, "ema_power": 3.0}])
def test_a_resumed_member_continues_its_weight_average_exactly(tmp_path, sample_dir, monkeypatch,
                                                               restore_dtype_policy, average):
    """A member killed after an epoch resumes with the net's own weights and its average where they were: every
    later epoch's training loss and validation (of the average) is the uninterrupted member's."""
    from ensemble.member.resume import resume_point

    whole = _job(tmp_path / "whole", sample_dir, epochs=3, limit_train=96, **average)
    train_member(whole, "j", 0)
    ws = _job(tmp_path, sample_dir, epochs=3, limit_train=96, **average)
    with monkeypatch.context() as patched:
        _interrupt_at(patched, 1)
        with pytest.raises(Killed):
            train_member(ws, "j", 0)
    folder = JobLayout(ws, "j").member(0)
    spec = load_record(ws, "j").spec
    model, state = resume_point(folder, spec, spec.member_seed(0), 86, lambda _: None)
    assert state is not None and len(state.history) == 1
    slots = _values(model.optimizer._model_variables_moving_average)
    net = _values(model.trainable_variables)
    assert not np.array_equal(slots[0], net[0]) and all(np.abs(a).sum() > 0 for a in slots)  # both kept
    train_member(ws, "j", 0)
    assert read_metrics(folder).epochs == 3
    resumed = read_history(folder.path / "history.csv")
    uninterrupted = read_history(JobLayout(whole, "j").member(0).path / "history.csv")
    for name in ("loss", "val_loss", "val_accuracy"):
        assert [row[name] for row in resumed] == pytest.approx([row[name] for row in uninterrupted], rel=1e-6), name
