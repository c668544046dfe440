"""A member that sized itself from a probe sizes itself again from the epochs it trains (member.callbacks.replan):
the loop ends where the re-plan says, the schedule becomes the new length's exactly, and the member's files,
progress and the job's ledger say the new length, so a resume trains it."""
import json
import re
import time
from dataclasses import replace

import keras
import numpy as np
import pytest

from ensemble.data.sources import sample_digits
from ensemble.job.layout import JobLayout, MemberFolder
from ensemble.job.outputs import read_metrics
from ensemble.job.plan import BudgetRules, plan_arrays, read_plan, write_plan
from ensemble.job.planner import FINAL_BAND, Costs, Replanned
from ensemble.job.progress import Progress, read_progress
from ensemble.job.spec import JobSpec
from ensemble.member import calibrate
from ensemble.member.callbacks import replan as replan_module
from ensemble.member.callbacks.commit import EpochCommit
from ensemble.member.callbacks.deadline import PREDICT_MARGIN, model_load_seconds
from ensemble.member.callbacks.replan import Replan
from ensemble.member.checkpoints import restore_newest
from ensemble.member.loop import train_epochs
from ensemble.member.model import build_member_model, member_schedule, resize_schedule
from ensemble.member.process import member_deadline, train_member
from ensemble.nets.schedules import rate_at_step
from ensemble.job.record import load_record
from ensemble.run.budget import TimeBudget
from ensemble.run.devices import Slot
from ensemble.run.executors import Launched
from ensemble.run.progress import PlainReporter
from ensemble.run.request import TrainRequest
from ensemble.run.runner import prepare_job
from ensemble.run.scheduler import JobRun, RunOrder
from ensemble.store import atomic
from ensemble.store.workspace import Workspace

ROWS, BATCH, SEED = 200, 64, 7
COSTS = Costs(startup_s=10, epoch_s=30, predict_s=20)  # what a probe said: epochs of 30 s


@pytest.fixture(scope="module")
def digits():
    images, labels = sample_digits()
    order = np.random.default_rng(0).permutation(len(labels))[:ROWS]
    return images[order].reshape(-1, 28, 28, 1), labels[order].astype("int64")


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Tick(keras.callbacks.Callback):
    """Each whole epoch takes `seconds(epoch)` on the fake clock, a step at a time (it runs before the re-plan
    sees the epoch end); it counts the steps each epoch trains."""

    def __init__(self, clock: FakeClock, seconds):
        super().__init__()
        self.clock, self.seconds = clock, seconds
        self.steps: list[int] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.steps.append(0)

    def on_train_batch_end(self, batch, logs=None):
        self.clock.now += self.seconds(len(self.steps) - 1) / self.params["steps"]
        self.steps[-1] += 1


def tiny_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, "softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    return model


def run_replanned(digits, clock, seconds, deadline, rules, epochs):
    x, y = digits
    resized = []
    replan = Replan(deadline, COSTS, rules, recipe_epochs=12, epochs=epochs,
                    resize=lambda new, final, costs: resized.append((new, final, costs.epoch_s)), clock=clock)
    tick = Tick(clock, seconds)
    train_epochs(tiny_model(), x, y, batch_size=BATCH, epochs=epochs, seed=SEED, callbacks=[tick, replan])
    return replan, resized, tick.steps


def test_a_lone_member_is_resized_from_its_second_epoch_and_then_follows_the_deadline(digits):
    clock = FakeClock()
    # the probe said 30 s an epoch and planned 32; they take 40 s, then 60 s from the fifth on
    seconds = lambda epoch: 40 if epoch < 4 else 60  # noqa: E731
    replan, resized, steps = run_replanned(digits, clock, seconds, 1100, BudgetRules(1, stretch=True), epochs=32)
    # epoch 1 traced; after epoch 2, at 80 s, 1020 s are left: with a quarter epoch to spare, 24 more epochs of
    # 40 s (4 steps of 10 s), then 3 steps (the predictions take 20 s)
    assert replan.changes[0] == (2, 27, 3) and resized[0] == (27, 3, 40)
    assert len(steps) == replan.epochs < 27  # the slower epochs shortened it again
    assert steps[:-1] == [4] * (len(steps) - 1) and steps[-1] == (replan.final_steps or 4)
    # it ends with less than half an epoch's time unused
    assert clock.now + COSTS.predict_s <= 1100 < clock.now + COSTS.predict_s + 60 / 2


def test_a_last_member_fills_the_time_left_with_a_partial_last_epoch_and_keeps_a_length_that_fits(digits):
    clock = FakeClock()
    replan, resized, steps = run_replanned(digits, clock, lambda epoch: 40, 1130, BudgetRules(1, stretch=True),
                                           epochs=32)
    # after epoch 2, 1050 s left: 1030 s before the predictions, 25 epochs, then 30 s: 3 steps; with a quarter
    # epoch to spare, 2. Later re-plans find that length inside the band (it fits, with under half an epoch
    # spare) and keep it: the schedule is reshaped once, not after every epoch.
    assert replan.changes == [(2, 28, 2)] and resized == [(28, 2, 40)]
    assert steps == [4] * 27 + [2]
    assert clock.now == pytest.approx(27 * 40 + 20) and clock.now + COSTS.predict_s <= 1130  # 10 s unused, not 30


def test_before_its_last_epoch_a_member_takes_the_steps_the_band_kept_back_but_a_small_spare(digits):
    clock = FakeClock()
    replan, resized, steps = run_replanned(digits, clock, lambda epoch: 40, 1138, BudgetRules(1, stretch=True),
                                           epochs=32)
    # after epoch 2, 1058 s left: with a quarter epoch to spare, 25 epochs and 2 steps, as above. After epoch 27,
    # at 1080 s, that length leaves 18 s unused, inside the band; but nothing re-plans after its last epoch, so
    # it is fitted again with 3 s to spare (a twentieth of an epoch and a second, twice that kept): 3 steps
    assert replan.changes == [(2, 28, 2), (27, 28, 3)] and resized == [(28, 2, 40), (28, 3, 40)]
    assert steps == [4] * 27 + [3]
    assert clock.now == pytest.approx(27 * 40 + 30) and clock.now + COSTS.predict_s == pytest.approx(1138 - 8)


def test_a_last_epoch_after_epochs_that_slowed_down_is_sized_by_the_latest_and_ends_by_the_deadline(digits):
    clock = FakeClock()
    # as above, but from the 27th epoch on they take 48 s: after it, at 1088 s, 42 s are left, 22 before the
    # predictions. The mean epoch (40.3 s) holds 2 steps there, the length planned, which at 12 s a step end at
    # 1132 s; the latest holds 1, and the member ends at 1120 s. The re-plan records the mean, as measured.
    seconds = lambda epoch: 40 if epoch < 26 else 48  # noqa: E731
    replan, resized, steps = run_replanned(digits, clock, seconds, 1130, BudgetRules(1, stretch=True), epochs=32)
    assert replan.changes == [(2, 28, 2), (27, 28, 1)]
    assert resized[-1][:2] == (28, 1) and resized[-1][2] == pytest.approx((25 * 40 + 48) / 26)
    assert steps == [4] * 27 + [1]
    assert clock.now == pytest.approx(26 * 40 + 48 + 12) and clock.now + COSTS.predict_s <= 1130


def test_a_member_with_members_after_it_keeps_the_length_of_its_first_replan(digits):
    clock = FakeClock()
    replan, resized, steps = run_replanned(digits, clock, lambda epoch: 40, 2000 + 80, BudgetRules(3, stretch=True),
                                           epochs=20)
    # after epoch 2, 2000 s left: two members of 25 epochs (the second starts when it ends, at 1000 s)
    assert replan.changes == [(2, 25, None)] and replan.last is False and steps == [4] * 25  # whole epochs
    assert clock.now == 1000


def test_a_member_whose_epochs_slow_down_until_no_member_fits_after_it_takes_the_time_left(digits):
    clock = FakeClock()
    seconds = lambda epoch: 40 if epoch < 4 else 80  # noqa: E731
    replan, resized, steps = run_replanned(digits, clock, seconds, 2000 + 80, BudgetRules(3, stretch=True),
                                           epochs=20)
    # planned as the first of two 25-epoch members; at 80 s an epoch its 25 would end at 1860 s, and the 220 s
    # left would hold no member of the recipe's 12 epochs. After epoch 7 (its epochs since the second: 40 s three
    # times, then 80 s three times) its slot's plan has only itself: it is the last, and fits its steps to the
    # deadline from then on
    assert replan.changes[:2] == [(2, 25, None), (7, 35, 1)] and replan.last is True
    assert steps[:-1] == [4] * (len(steps) - 1) and steps[-1] == replan.final_steps and len(steps) == replan.epochs
    assert clock.now + COSTS.predict_s <= 2080 < clock.now + COSTS.predict_s + 80 / 2  # not 220 s unused


def test_the_epoch_that_traces_is_not_what_an_epoch_costs_and_one_after_a_resize_is(digits):
    clock = FakeClock()
    # the first epoch traces; the one after the first resize (at epoch 2's end) traces nothing, slow as it is
    seconds = lambda epoch: {0: 400, 2: 80}.get(epoch, 40)  # noqa: E731
    replan, resized, _ = run_replanned(digits, clock, seconds, 1500, BudgetRules(1, stretch=True), epochs=32)
    assert resized and replan.changes[0][0] == 2
    assert replan.steady[:3] == [40, 80, 40] and 400 not in replan.steady


def test_a_member_whose_next_epoch_is_its_last_is_resized_from_its_first_epoch(digits):
    clock = FakeClock()
    # a short budget's member, planned 2 epochs from a probe (30 s each); its first takes 40 s, and then 50 s are
    # left: its second epoch no longer fits whole with its predictions (20 s), 3 of its 4 steps do, but with
    # nothing to spare: with 3 s to spare (its last epoch's), 2. No epoch that traced nothing comes before its
    # last, so the first sizes it.
    replan, resized, steps = run_replanned(digits, clock, lambda epoch: 40, 90, BudgetRules(1, stretch=True),
                                           epochs=2)
    assert replan.changes == [(1, 2, 2)] and resized == [(2, 2, 40)] and steps == [4, 2]
    assert clock.now + COSTS.predict_s <= 90 and replan.steady == []  # not a steady epoch for later re-plans
    # with a third epoch, the first re-plan waits for the second, which traced nothing
    clock = FakeClock()
    replan, resized, steps = run_replanned(digits, clock, lambda epoch: 40, 130, BudgetRules(1, stretch=True),
                                           epochs=3)
    assert replan.changes[0][0] == 2 and replan.steady[0] == 40


def test_a_calibrated_lone_member_counts_its_length_in_steps_and_one_with_members_after_it_in_epochs(
        tmp_path, sample_dir):
    ws = Workspace.resolve(tmp_path / "home")
    spec = JobSpec(model="seed004", epochs=4, batch_size=32, limit_train=128, precision="float32")
    prepare_job(ws, TrainRequest(n=1, data_dir=sample_dir, job="c", spec=spec), gpu_capabilities=[])
    plan = read_plan(ws, "c")
    probe = calibrate.Probe(COSTS, ahead_s=0.0, model=None, predict_row_s=0.01, overhead_s=0.0)
    at = lambda deadline, rules: calibrate.calibrated_length(  # noqa: E731
        replace(plan, deadline=deadline, budget=rules), plan.spec, probe, n_train=128, clock=lambda: 0.0)
    # 75 s: one 30 s epoch and its 20 s of predictions leave 25 s, 3 of the next epoch's 4 steps (7.5 s each);
    # with a quarter epoch to spare, 2
    assert at(75, BudgetRules(1, stretch=True)) == (2, 2)
    # --epochs 4 is a length to shorten, not to pass: 200 s hold 4 whole epochs and 5 steps, it trains 4
    assert at(200, BudgetRules(1, stretch=False)) == (4, None)
    assert at(60, BudgetRules(1, stretch=False)) == (1, None)  # 10 s past one epoch: no step worth its epoch
    # not one epoch and its predictions fit: the job's first member trains the steps that do, not a whole epoch,
    # with the last epoch's spare (nothing re-plans after it): 45 s less 20 s of predictions hold 3 steps, and
    # 3 s to spare (a twentieth of an epoch and a second) still 3, where the quarter epoch of a re-planned
    # member's band would leave 2; at least a tenth of an epoch when nothing fits
    assert at(45, BudgetRules(1, stretch=True)) == (1, 3)
    assert at(45, BudgetRules(1, stretch=False)) == (1, 3)
    floor = calibrate.calibrated_length(replace(plan, deadline=20, budget=BudgetRules(1, stretch=True)), plan.spec,
                                        probe, n_train=384, clock=lambda: 0.0)
    assert floor == (1, 2)  # 12 steps an epoch: a tenth of one is 2 steps, though none fits
    # one whole epoch kept by the band stays one: the small spare would add a second, partial epoch sized from
    # the probe alone (65 s: 2 steps of it)
    assert at(65, BudgetRules(1, stretch=True)) == (1, None)
    # members after it on its slot: whole epochs, theirs planned by the runner
    assert at(1000, BudgetRules(3, stretch=True)) == (calibrate.calibrated_epochs(
        replace(plan, deadline=1000, budget=BudgetRules(3, stretch=True)), plan.spec, COSTS, 0.0, lambda: 0.0), None)
    assert at(75, BudgetRules(1, stretch=True, multiple=2)) == (2, None)  # snapshot cycles stay whole


def test_a_probe_times_its_steps_not_what_its_passes_spend_between_them():
    ticks = iter([0.0, 0.030, 0.045, 0.075, 1.0, 1.032])  # two 30 ms steps 15 ms apart; a pass later, a 32 ms one
    clock = calibrate.PassClock(clock=lambda: next(ticks))
    clock.on_epoch_begin(0)
    for step in range(2):
        clock.on_train_batch_begin(step)
        clock.on_train_batch_end(step)
    clock.on_epoch_end(0)
    clock.on_epoch_begin(1)
    clock.on_train_batch_begin(0)
    clock.on_train_batch_end(0)
    assert clock.seconds == pytest.approx([0.060, 0.032])


def test_a_probed_members_deadline_keeps_back_the_probes_prediction_time_not_its_first_validation_pass(
        tmp_path, sample_dir):
    ws = Workspace.resolve(tmp_path / "home")
    spec = JobSpec(model="seed004", epochs=4, batch_size=32, limit_train=128, precision="float32")
    prepare_job(ws, TrainRequest(n=1, data_dir=sample_dir, job="d", spec=spec), gpu_capabilities=[])
    plan = replace(read_plan(ws, "d"), deadline=time.time() + 60)
    arrays = plan_arrays(ws, plan, 0)
    probe = calibrate.Probe(COSTS, ahead_s=0.0, model=None, predict_row_s=0.004)
    assert member_deadline(plan, plan.spec, arrays, probe).predict_seconds_per_image == 0.004
    measured = replace(plan, predict_seconds_per_image=0.002)  # what finished members measured comes first
    assert member_deadline(measured, plan.spec, arrays, probe).predict_seconds_per_image == 0.002
    assert member_deadline(plan, plan.spec, arrays).predict_seconds_per_image is None  # its own passes decide


# the rate is the optimizer's variable, which the step takes as state on every backend: the partial last epoch on
# JAX too (each case takes a minute of CI there)
@pytest.mark.parametrize("final", [None, pytest.param(2, marks=pytest.mark.jax)])
def test_a_resized_schedule_trains_as_a_member_built_with_that_length_from_the_same_state(digits, tmp_path, final):
    """Resized after 2 of 6 epochs to 3 (the last of them whole, or 2 of its 4 steps): the third epoch is the one
    a member of that length, restored from the state after epoch 2, trains; a schedule left at 6 epochs trains
    another."""
    x, y = digits
    # the default recipe (one-cycle, weight average) on a small net: the schedule does not depend on the net
    spec = JobSpec.from_options(recipe="cnn11", model="seed004", epochs=6, batch_size=BATCH, precision="float32",
                                gpu_capabilities=[])
    assert member_schedule(spec, ROWS).kind == "onecycle"

    class ResizeAfterTwo(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                resize_schedule(self.model, spec, ROWS, 3, final)
                self.params["epochs"], self.params["final_steps"] = 3, final

    folder = MemberFolder(tmp_path / "member-00")  # the state after epoch 2 of a 6-epoch member
    first = build_member_model(spec, SEED, ROWS)
    train_epochs(first, x, y, batch_size=BATCH, epochs=2, seed=SEED,
                 callbacks=[first.member_rate, EpochCommit(folder, spec, None)])
    resized = build_member_model(spec, SEED, ROWS)
    history = train_epochs(resized, x, y, batch_size=BATCH, epochs=6, seed=SEED,
                           callbacks=[resized.member_rate, ResizeAfterTwo()])
    assert history.epoch == [0, 1, 2]
    three = replace(spec, epochs=3)
    assert int(resized.optimizer.iterations) == 2 * 4 + (final or 4)
    assert float(resized.optimizer.learning_rate) == pytest.approx(  # its last step's
        float(rate_at_step(member_schedule(three, ROWS, final), 2 * 4 + (final or 4) - 1)), rel=1e-6)

    def from_epoch_two(epochs, final_steps):
        model = build_member_model(replace(spec, epochs=epochs), SEED, ROWS, final_steps)
        assert restore_newest(model, folder.backup, say=pytest.fail).epoch == 2
        train_epochs(model, x, y, batch_size=BATCH, epochs=3, seed=SEED, initial_epoch=2, final_steps=final,
                     callbacks=[model.member_rate])
        return model

    for ours, theirs in zip(resized.get_weights(), from_epoch_two(3, final).get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    unchanged = from_epoch_two(6, None).get_weights()
    assert any(not np.allclose(ours, theirs, rtol=1e-5, atol=1e-6)
               for ours, theirs in zip(resized.get_weights(), unchanged))


def test_a_calibrated_member_that_replans_trains_and_records_its_new_length(tmp_path, sample_dir, monkeypatch,
                                                                            capsys):
    ws = Workspace.resolve(tmp_path / "home")
    spec = JobSpec(model="seed004", epochs=4, batch_size=32, limit_train=128, precision="float32",
                   schedule="onecycle")
    prepare_job(ws, TrainRequest(n=1, data_dir=sample_dir, job="r", spec=spec), gpu_capabilities=[])
    plan = read_plan(ws, "r")
    write_plan(ws, replace(plan, deadline=time.time() + 600, budget=BudgetRules(1, stretch=False)))
    calls, per_epoch = [], []

    def replanned(done, *args, **options):
        calls.append(done)
        return Replanned(3, last=True)

    def in_steps(done, seconds_left, costs, steps_per_epoch, *args, **kwargs):  # 2 whole epochs, then 1 step
        per_epoch.append(steps_per_epoch)
        return 2 * steps_per_epoch + 1

    monkeypatch.setattr(replan_module, "replan_member", replanned)
    monkeypatch.setattr(replan_module, "replan_steps", in_steps)
    metrics = train_member(ws, "r", 0)
    folder = JobLayout(ws, "r").member(0)
    log = capsys.readouterr().out
    assert "member-00 calibrated: start-up" in log and "trains 4 epochs" in log  # the probe's length
    assert "member-00 re-planned from its own epochs" in log
    assert f"trains 3 epochs, the last 1 of its {per_epoch[0]} steps" in log
    # after the second epoch, the first that traced nothing; not after its partial last one (1 step is no measure
    # of an epoch, and a re-plan then would restart an annealed schedule)
    assert calls == [2]
    assert metrics.epochs == 3 and read_metrics(folder).epochs == 3 and metrics.stopped_early is False
    config = json.loads(folder.config.read_text())
    assert config["epochs"] == 3 and config["final_steps"] == 1 and config["recipe"]["schedule"]["final_steps"] == 1
    assert calibrate.member_epochs(read_plan(ws, "r"), 0, folder) == 3  # a resume trains the new length
    assert calibrate.recorded_final_steps(folder, per_epoch[0]) == 1    # and its partial last epoch
    progress = read_progress(JobLayout(ws, "r").progress(0))
    assert progress.epochs == 3 and progress.final_share == 1 / per_epoch[0]  # the runner's ledger and plan follow it
    assert set(progress.costs) == {"startup_s", "epoch_s", "predict_s"}  # the costs it re-planned with, for the job


class PlanningOnly:
    """An executor whose members never run: what the runner plans for them is what the test reads."""

    name, may_queue = "planning-only", False

    def __init__(self, slots: int):
        self.slots = slots

    def slots_for(self, members):
        return [Slot(None, number, self.slots) for number in range(self.slots)]

    def where(self, slot):
        return "nowhere"

    def start(self, job, index, slot):
        return Launched(index, slot, handle=None)

    def poll(self, launched):
        return None  # still running


def test_the_runner_tells_a_member_planned_last_on_its_slot_to_fit_itself_to_the_deadline(tmp_path, sample_dir):
    ws = Workspace.resolve(tmp_path / "home")
    spec = JobSpec(model="seed004", epochs=4, batch_size=32, limit_train=128, precision="float32")
    prepare_job(ws, TrainRequest(n=1, data_dir=sample_dir, job="p", spec=spec), gpu_capabilities=[])
    costs = Costs(startup_s=1, epoch_s=100, predict_s=1)  # a 4-epoch member takes 402 s
    run = JobRun(ws, load_record(ws, "p"), read_plan(ws, "p"), PlanningOnly(2), PlainReporter(echo=lambda text: None),
                 RunOrder([0], [0], retries=0),
                 TimeBudget(4, deadline=time.time() + 600, cap=3, costs=costs, stretch=False), 600)
    run.fill_slots()
    # slot 0, up to 2 of the 3 members: 4 epochs, then the 198 s left hold 1: member-00 has one after it; slot 1,
    # the one member left: member-01 is its slot's last, and fits its steps to the deadline from the job's costs
    plan = read_plan(ws, "p")
    assert plan.member_epochs == {0: 4, 1: 4} and plan.last_members == (1,) and plan.costs == costs
    assert [member.epochs for member in load_record(ws, "p").members] == [4, 4]
    run.give_length(1, 3)  # retried before its first epoch, planned again with a member after it
    assert read_plan(ws, "p").last_members == () and read_plan(ws, "p").member_epochs[1] == 3


@pytest.mark.parametrize("kind", ["last", "not last", "legacy-idg"])
def test_a_member_the_runner_planned_last_fits_its_steps_to_the_deadline_and_one_with_members_after_it_does_not(
        tmp_path, sample_dir, monkeypatch, capsys, kind):
    ws = Workspace.resolve(tmp_path / "home")
    spec = JobSpec(model="seed004", epochs=4, batch_size=32, limit_train=128, precision="float32",
                   schedule="onecycle", augment="legacy-idg" if kind == "legacy-idg" else None)
    prepare_job(ws, TrainRequest(n=1, data_dir=sample_dir, job="q", spec=spec), gpu_capabilities=[])
    plan = read_plan(ws, "q")
    arrays = plan_arrays(ws, plan, 0)
    # the job's finished members predicted at a speed the deadline turns into 50 s kept back (its margin and the
    # model's load included), more than the 20 s the job's costs say
    load = model_load_seconds(keras.backend.backend())
    per_image = (50 - load) / PREDICT_MARGIN / (len(arrays.x_val) + len(arrays.x_test))
    # 3 members per slot: were it not told it is last, its first re-plan would find members after it
    write_plan(ws, replace(plan, deadline=time.time() + 600, budget=BudgetRules(3, stretch=False),
                           member_epochs={0: 3}, last_members=() if kind == "not last" else (0,), costs=COSTS,
                           predict_seconds_per_image=per_image))
    asked = []

    def in_steps(done, seconds_left, costs, steps_per_epoch, overhead_s, current, cap=None, band=None):
        asked.append((done, current, cap, costs.predict_s, band))
        return 2 * steps_per_epoch + 1  # 2 epochs and a step

    monkeypatch.setattr(replan_module, "replan_steps", in_steps)
    metrics = train_member(ws, "q", 0)
    log = capsys.readouterr().out
    folder = JobLayout(ws, "q").member(0)
    config = json.loads(folder.config.read_text())
    assert "calibrated" not in log  # its length came from the plan
    if kind != "last":  # members after it were planned from its length; Keras' fit owns the legacy loop's length
        assert asked == [] and metrics.epochs == 3 and "final_steps" not in config
        return
    # after its second epoch, the first that traced nothing (not after its partial last one), from the job's costs
    # and its own epochs; --epochs: never past the 3 epochs it was given
    # that length has its last epoch next: fitted again with a small spare, not the band
    assert [(done, cap == current) for done, current, cap, _, _ in asked] == [(2, True), (2, True)]
    assert asked[0][4] == FINAL_BAND and 0 < asked[1][4] <= FINAL_BAND  # its epochs of 0.1 s: the band's spare
    assert asked[0][3] == pytest.approx(50)
    assert "member-00 re-planned from its own epochs" in log and "trains 3 epochs, the last 1 of its" in log
    assert metrics.epochs == 3 and config["epochs"] == 3 and config["final_steps"] == 1
    assert read_progress(JobLayout(ws, "q").progress(0)).epochs == 3


def test_the_plan_announced_after_a_re_plan_counts_the_members_own_epochs_and_its_partial_last_epoch(
        tmp_path, sample_dir):
    """The runner's plan after a member re-planned: what it still needs as it planned it (its own steady epochs,
    not the job's first, tracing epoch; its last epoch's 66 of 152 steps), so the plan printed fits the limit."""
    ws = Workspace.resolve(tmp_path / "home")
    spec = JobSpec(model="seed004", epochs=12, batch_size=32, limit_train=128, precision="float32")
    prepare_job(ws, TrainRequest(n=1, data_dir=sample_dir, job="a", spec=spec), gpu_capabilities=[])
    probed = Costs(startup_s=12.4, epoch_s=14.6, predict_s=8.4)
    lines = []
    started = time.time() - 42.0
    budget = TimeBudget(12, deadline=started + 195.0, cap=1, costs=probed, started=started, time_limit=201)
    run = JobRun(ws, load_record(ws, "a"), read_plan(ws, "a"), PlanningOnly(1), PlainReporter(echo=lines.append),
                 RunOrder([0], [], retries=0), budget, 201)
    budget.epoch_measured(0, 1, 15.1, first=True)  # the first epoch traced
    budget.epoch_measured(0, 2, 12.7)  # the second, at whose end it re-planned: the runner reads both first
    own = Costs(startup_s=12.4, epoch_s=12.4, predict_s=8.4)
    # read as its last epoch would show it: `batches` is the current epoch's, and the share a whole epoch's
    run.replanned(Progress(epoch=2, epochs=14, final_share=66 / 152, batches=66, costs=own.to_dict(), updated=1.0))
    plan = load_record(ws, "a").budget.plan
    left = (11 + 66 / 152) * 12.4 + 8.4
    assert plan.slots == ((14,),) and plan.running_s == (pytest.approx(left, abs=0.05),)
    assert plan.planned_s == pytest.approx(left, abs=0.05) and plan.elapsed_s == pytest.approx(42.0, abs=1.0)
    assert re.search(r"budget plan: 1 member x 14 epochs, ~19[23] s of 201 \(start-up 12 s, 12\.7 s an epoch",
                     lines[-1]), lines


def test_a_first_member_calibrated_to_part_of_one_epoch_is_announced_with_the_limit_that_holds_one(
        tmp_path, sample_dir):
    ws = Workspace.resolve(tmp_path / "home")
    spec = JobSpec(model="seed004", epochs=12, batch_size=32, limit_train=128, precision="float32")
    prepare_job(ws, TrainRequest(n=1, data_dir=sample_dir, job="p", spec=spec), gpu_capabilities=[])
    lines = []
    started = time.time()
    budget = TimeBudget(12, deadline=started + 18.0, cap=1, started=started, time_limit=20)
    run = JobRun(ws, load_record(ws, "p"), read_plan(ws, "p"), PlanningOnly(1), PlainReporter(echo=lines.append),
                 RunOrder([0], [], retries=0), budget, 20)
    probed = Costs(startup_s=12.0, epoch_s=9.3, predict_s=10.0)
    run.calibrated(0, None, Progress(epoch=0, epochs=1, final_share=6 / 57, costs=probed.to_dict(), updated=1.0))
    said = [line.split("] ", 1)[1] for line in lines]  # after the time of day
    assert said[-2].startswith("budget plan: 1 member x 1 epoch, ~"), said
    assert said[-1] == ("member-00: the time limit holds 11% of one epoch after start-up (12 s) and predictions "
                        "(10 s), far from the recipe's accuracy; --time-limit 34s or more trains one whole epoch")
    lines.clear()  # a member of one whole epoch, or of more than one, is only planned
    run.calibrated(0, None, Progress(epoch=0, epochs=1, costs=probed.to_dict(), updated=1.0))
    run.calibrated(0, None, Progress(epoch=0, epochs=2, final_share=0.5, costs=probed.to_dict(), updated=1.0))
    assert len(lines) == 2 and all("] budget plan: " in line for line in lines), lines


def test_the_runner_counts_a_members_whole_epochs_and_not_its_partial_last_one(tmp_path, sample_dir):
    ws = Workspace.resolve(tmp_path / "home")
    spec = JobSpec(model="seed004", epochs=12, batch_size=32, limit_train=128, precision="float32")
    prepare_job(ws, TrainRequest(n=1, data_dir=sample_dir, job="e", spec=spec), gpu_capabilities=[])
    budget = TimeBudget(12, deadline=time.time() + 600, cap=1, costs=Costs(12, 12, 8), started=time.time(),
                        time_limit=600)
    run = JobRun(ws, load_record(ws, "e"), read_plan(ws, "e"), PlanningOnly(1), PlainReporter(echo=lambda text: None),
                 RunOrder([0], [0], retries=0), budget, 600)
    run.start(0, run.free.pop(0))
    for epoch, seconds in [(13, 12.0), (14, 2.7)]:  # its 14th and last epoch trains a fifth of the steps
        progress = Progress(phase="training", epoch=epoch, epochs=14, final_share=0.2, epoch_seconds=seconds,
                            updated=time.time())
        atomic.write_json(JobLayout(ws, "e").progress(0), progress.to_dict())
        run.follow(0)
    assert budget.steady_epochs == [12.0] and budget.epoch_estimate() == 12.0
