import pytest

from ensemble.job.errors import JobError
from ensemble.job.layout import JobLayout
from ensemble.job.record import job_names, latest_job_with_spec, new_record, require_record, resume_command, save_record
from ensemble.job.spec import JobSpec, spec_differences
from ensemble.nets.recipes import RECIPES, Augmentation, get_recipe


def test_spec_takes_missing_values_from_the_recipe():
    spec = JobSpec.from_options(model="keras_mnist")
    assert (spec.epochs, spec.batch_size, spec.optimizer, spec.learning_rate) == (12, 128, "adadelta", 1.0)
    assert JobSpec.from_options(model="cnn11", epochs=3).epochs == 3
    assert JobSpec.from_dict(spec.to_dict()) == spec


def test_spec_rejects_bad_values():
    with pytest.raises(JobError, match="--epochs must be at least 1"):
        JobSpec.from_options(epochs=0)
    with pytest.raises(JobError, match="unknown --augment 'mixup'; choose one of idg, legacy-idg, none"):
        JobSpec.from_options(augment="mixup")
    with pytest.raises(JobError, match="unknown --schedule 'step'"):
        JobSpec.from_options(schedule="step")
    with pytest.raises(JobError, match="--rotation is in degrees"):
        JobSpec.from_options(rotation=400)
    with pytest.raises(JobError, match="--lr must be positive"):
        JobSpec.from_options(learning_rate=0.0)


def test_recipe_flags_and_overrides_are_frozen_into_the_spec():
    default = JobSpec.from_options(precision="float32")
    assert (default.recipe, default.model, default.schedule, default.learning_rate, default.epochs,
            default.augment, default.rotation, default.keep, default.snapshots, default.tta) == (
        "cnn11", "cnn11", "onecycle", 2e-3, 12, "idg", 0.0, "best", 1, True)
    assert JobSpec.from_options(precision="float32", tta=False).tta is False
    seed = JobSpec.from_options(recipe="seed")
    assert (seed.schedule, seed.learning_rate, seed.epochs, seed.augment, seed.precision, seed.keep) == (
        "plateau", 1e-4, 50, "legacy-idg", "float32", "last")
    overridden = JobSpec.from_options(recipe="deotte", schedule="onecycle", rotation=5, keep="best", tta=True,
                                      precision="float32")
    assert (overridden.model, overridden.schedule, overridden.rotation, overridden.keep, overridden.tta) == (
        "deotte", "onecycle", 5.0, "best", True)


def test_the_flip_is_off_unless_asked_and_needs_an_augmentation():
    assert JobSpec.from_options(precision="float32").flip is False  # digits and letters: a mirror changes them
    asked = JobSpec.from_options(precision="float32", flip=True)
    assert asked.flip and asked.augmentation.flip
    assert JobSpec.from_options(recipe="seed", flip=True).augmentation == Augmentation("legacy-idg", 0.1, 0.1, 0.0,
                                                                                       flip=True)
    with pytest.raises(JobError, match="--flip mirrors augmented training images, and --augment none augments "
                                       "nothing; drop --flip or use --augment idg"):
        JobSpec.from_options(flip=True, augment="none")
    recorded = JobSpec.from_options(precision="float32").to_dict()
    del recorded["flip"]  # a job recorded before the field
    assert JobSpec.from_dict(recorded).flip is False


def test_random_erasing_is_off_unless_asked_and_is_a_probability():
    assert JobSpec.from_options(precision="float32").augmentation.erase == 0.0
    asked = JobSpec.from_options(precision="float32", erase=0.5)
    assert asked.erase == 0.5 and asked.augmentation == Augmentation("idg", 0.1, 0.1, 0.0, erase=0.5)
    assert type(JobSpec.from_options(precision="float32", erase=1).erase) is float  # as JSON and the flag give it
    assert JobSpec.from_options(recipe="seed", erase=0.25).augmentation.erase == 0.25
    with pytest.raises(JobError, match=r"--erase is a probability, from 0 to 1"):
        JobSpec.from_options(erase=1.5)
    recorded = asked.to_dict()
    del recorded["erase"]  # a job recorded before the field
    assert JobSpec.from_dict(recorded).augmentation.erase == 0.0


def test_the_width_is_half_for_cnn11_on_the_cpu_the_published_net_elsewhere_and_an_asked_one_kept():
    assert get_recipe("cnn11").width == get_recipe("cnn11_pool").width == "auto"
    assert all(recipe.width == 1.0 for name, recipe in RECIPES.items() if name not in ("cnn11", "cnn11_pool"))
    assert JobSpec.from_options(precision="float32", gpu_capabilities=[]).width == 0.5
    assert JobSpec.from_options(gpu_capabilities=[7.5, 7.5]).width == 1.0  # Kaggle's T4 x2
    assert JobSpec.from_options(recipe="seed", gpu_capabilities=[]).width == 1.0  # seed 002's net, as it ran
    assert JobSpec.from_options(model="deotte", gpu_capabilities=[]).width == 1.0
    asked = JobSpec.from_options(precision="float32", width=0.75, gpu_capabilities=[])
    assert asked.width == 0.75 and JobSpec.from_dict(asked.to_dict()) == asked
    assert JobSpec.from_options(width="auto", model="seed004", gpu_capabilities=[]).width == 0.5  # asked: any net
    assert type(JobSpec.from_options(precision="float32", width=2, gpu_capabilities=[]).width) is float
    with pytest.raises(JobError, match=r"--width must be a factor above 0 and at most 8, or auto, got 0"):
        JobSpec.from_options(width=0)
    assert JobSpec.from_options(width=8, gpu_capabilities=[]).width == 8.0
    assert JobSpec.from_options(gpu_capabilities=[]).net_described == "cnn11 at width 0.5"
    assert JobSpec.from_options(gpu_capabilities=[7.5]).net_described == "cnn11"
    recorded = asked.to_dict()
    del recorded["width"]  # a job recorded before the field: its nets were as published
    assert JobSpec.from_dict(recorded).width == 1.0


def test_weight_decay_is_off_unless_asked_and_below_one():
    assert JobSpec.from_options(precision="float32").weight_decay == 0.0
    asked = JobSpec.from_options(precision="float32", weight_decay=0.05)
    assert asked.weight_decay == 0.05 and JobSpec.from_dict(asked.to_dict()) == asked
    with pytest.raises(JobError, match=r"--weight-decay must be from 0 to below 1"):
        JobSpec.from_options(weight_decay=1.0)
    recorded = asked.to_dict()
    del recorded["weight_decay"]  # a job recorded before the field
    assert JobSpec.from_dict(recorded).weight_decay == 0.0


def test_snapshots_mean_cosine_cycles_of_equal_length():
    spec = JobSpec.from_options(snapshots=4, precision="float32")
    assert (spec.schedule, spec.snapshots, spec.epochs) == ("cosine", 4, 12)
    with pytest.raises(JobError, match="--snapshots 5 needs epochs in equal cycles: 12 epochs do not split into 5; "
                                       "use --epochs 10"):
        JobSpec.from_options(snapshots=5)
    with pytest.raises(JobError, match="--snapshots 3 trains cosine cycles; drop --schedule exp"):
        JobSpec.from_options(snapshots=3, schedule="exp")


def test_warm_up_shapes_only_the_onecycle_schedule():
    assert JobSpec.from_options(precision="float32").warmup == 0.05  # cnn11's recipe
    assert JobSpec.from_options(recipe="deotte", schedule="onecycle", precision="float32").warmup == 0.25
    assert JobSpec.from_options(precision="float32", warmup=0.05).warmup == 0.05
    with pytest.raises(JobError, match="--warmup 0.1 shapes the onecycle schedule, and this job's is cosine; drop "
                                       "--warmup or add --schedule onecycle"):
        JobSpec.from_options(snapshots=3, warmup=0.1, precision="float32")
    with pytest.raises(JobError, match="--warmup must be from 0 to below 1"):
        JobSpec.from_options(warmup=1.0)
    # the recipe's own value is what every job's resume command carries: accepted whatever the schedule
    assert JobSpec.from_options(recipe="seed", warmup=0.25).schedule == "plateau"
    assert JobSpec.from_options(snapshots=3, warmup=0.05, precision="float32").schedule == "cosine"
    # a snapshot job recorded before the field existed reads as the fixed 25% it had, and resumes
    recorded = JobSpec.from_options(snapshots=3, precision="float32").to_dict()
    del recorded["warmup"]
    older = JobSpec.from_dict(recorded)
    assert older.warmup == 0.25 and JobSpec.resolve(older).schedule == "cosine"


def test_a_record_written_before_recipes_reads_as_what_it_meant():
    old = {"model": "cnn11", "epochs": 50, "batch_size": 64, "optimizer": "adam", "learning_rate": 1e-4,
           "augment": "idg", "precision": "float32", "seed": 0, "val_split": 0.1, "limit_train": None,
           "train_sha256": "a", "test_sha256": "b"}
    spec = JobSpec.from_dict(old)
    assert (spec.schedule, spec.zoom, spec.shift, spec.rotation, spec.keep, spec.snapshots, spec.tta) == (
        "plateau", 0.1, 0.1, 0.0, "best", 1, False)


def test_resume_command_carries_every_recipe_choice(tmp_path):
    spec = JobSpec.from_options(recipe="deotte", snapshots=3, epochs=6, tta=True, precision="float32")
    record = new_record("j", spec, tmp_path / "my data").ensure_members(2)
    command = resume_command(record)
    assert command == (f"ensemble train --job j --n 2 --data '{tmp_path}/my data' --recipe deotte "
                       "--model deotte --epochs 6 --batch 64 --lr 0.001 --schedule cosine --augment idg "
                       "--rotation 10 --no-flip --erase 0 --keep last --snapshots 3 --tta --label-smoothing 0 --ema 0 "
                       "--ema-power 0 --weight-decay 0 --warmup 0.25 --width 1 "
                       "--precision float32 --seed 0 "
                       "--val-split 0.1 --folds 0 "
                       "--format digit-recognizer")


def test_spec_differences_name_each_field():
    recorded = JobSpec.from_options(epochs=1)
    requested = JobSpec.from_options(epochs=2, augment="none")  # precision auto resolves alike for both
    assert spec_differences(recorded, requested) == [
        "--epochs: job has 1, this run asks 2", "--augment: job has 'idg', this run asks 'none'"]
    assert spec_differences(recorded, recorded) == []


def test_members_get_consecutive_seeds_and_the_ledger_only_grows(tmp_path):
    record = new_record("j", JobSpec.from_options(seed=40), tmp_path)
    record.ensure_members(3)
    record.ensure_members(2)
    assert [(m.name, m.seed, m.state.value) for m in record.members] == [
        ("member-00", 40, "pending"), ("member-01", 41, "pending"), ("member-02", 42, "pending")]


def test_rerun_without_a_name_continues_the_newest_job_with_the_same_spec(ws, tmp_path):
    spec_a, spec_b = JobSpec.from_options(epochs=1), JobSpec.from_options(epochs=2)
    for name, spec, created in (("old", spec_a, "2026-01-01T00:00:00"), ("other", spec_b, "2026-01-02T00:00:00"),
                                ("new", spec_a, "2026-01-03T00:00:00")):
        record = new_record(name, spec, tmp_path)
        record.created = created
        save_record(ws, record)
    assert job_names(ws) == ["old", "other", "new"]
    assert latest_job_with_spec(ws, spec_a) == "new"
    assert latest_job_with_spec(ws, spec_b) == "other"
    assert latest_job_with_spec(ws, JobSpec.from_options(epochs=3)) is None


def test_missing_job_is_a_clear_error(ws):
    with pytest.raises(JobError, match="no jobs in .*train one first"):
        require_record(ws, None)
    save_record(ws, new_record("a", JobSpec.from_options(), ws.home))
    with pytest.raises(JobError, match=r"no job named 'b' .*\(jobs: a\)"):
        require_record(ws, "b")


def test_a_damaged_record_is_reported_with_its_path_and_other_jobs_keep_working(ws, tmp_path):
    from click.testing import CliRunner

    from ensemble.cli import main

    for name, created in (("good", "2026-01-01T00:00:00"), ("bad", "2026-01-02T00:00:00")):
        record = new_record(name, JobSpec.from_options(precision="float32"), tmp_path).ensure_members(1)
        record.created = created
        save_record(ws, record)
    bad = JobLayout(ws, "bad").record
    bad.write_text(bad.read_text()[:40])  # truncated, as a full disk or a kill mid-copy leaves it
    assert job_names(ws) == ["good"]
    assert require_record(ws, None).name == "good"
    with pytest.raises(JobError, match=f"{bad}: the job record is damaged \\(JSONDecodeError"):
        require_record(ws, "bad")

    def run(*args):
        return CliRunner().invoke(main, ["--home", str(ws.home), *args])  # click 8.2+: stdout and stderr apart

    listed = run("jobs")
    assert listed.exit_code == 0 and "good" in listed.stdout and f"job bad: {bad}: the job record is damaged" in listed.stderr
    assert run("status", "--job", "good").exit_code == 0
    refused = run("status", "--job", "bad")
    assert refused.exit_code == 1 and str(bad) in refused.stderr and "Traceback" not in refused.stderr
