import pytest

from ensemble import jobs
from ensemble.jobs import JobError, JobSpec


def test_spec_takes_missing_values_from_the_recipe():
    spec = JobSpec.from_options(model="keras_mnist")
    assert (spec.epochs, spec.batch_size, spec.optimizer, spec.learning_rate) == (12, 128, "adadelta", 1.0)
    assert JobSpec.from_options(model="cnn11", epochs=3).epochs == 3
    assert JobSpec.from_dict(spec.to_dict()) == spec


def test_spec_rejects_bad_values():
    with pytest.raises(JobError, match="--epochs must be at least 1"):
        JobSpec.from_options(epochs=0)
    with pytest.raises(JobError, match="unknown augmentation 'mixup'"):
        JobSpec.from_options(augment="mixup")


def test_spec_differences_name_each_field():
    recorded = JobSpec.from_options(epochs=1)
    requested = JobSpec.from_options(epochs=2, augment="none")
    assert jobs.spec_differences(recorded, requested) == [
        "epochs: job has 1, this run asks 2", "augment: job has 'idg', this run asks 'none'"]
    assert jobs.spec_differences(recorded, recorded) == []


def test_members_get_consecutive_seeds_and_the_ledger_only_grows(tmp_path):
    record = jobs.new_record("j", JobSpec.from_options(seed=40), tmp_path)
    jobs.ensure_members(record, 3)
    jobs.ensure_members(record, 2)
    assert [(m["name"], m["seed"], m["state"]) for m in record["members"]] == [
        ("member-00", 40, "pending"), ("member-01", 41, "pending"), ("member-02", 42, "pending")]


def test_rerun_without_a_name_continues_the_newest_job_with_the_same_spec(ws, tmp_path):
    spec_a, spec_b = JobSpec.from_options(epochs=1), JobSpec.from_options(epochs=2)
    for name, spec, created in (("old", spec_a, "2026-01-01T00:00:00"), ("other", spec_b, "2026-01-02T00:00:00"),
                                ("new", spec_a, "2026-01-03T00:00:00")):
        record = jobs.new_record(name, spec, tmp_path)
        record["created"] = created
        jobs.save_record(ws, record)
    assert jobs.job_names(ws) == ["old", "other", "new"]
    assert jobs.latest_job_with_spec(ws, spec_a) == "new"
    assert jobs.latest_job_with_spec(ws, spec_b) == "other"
    assert jobs.latest_job_with_spec(ws, JobSpec.from_options(epochs=3)) is None


def test_missing_job_is_a_clear_error(ws):
    with pytest.raises(JobError, match="no jobs in .*train one first"):
        jobs.require_record(ws, None)
    jobs.save_record(ws, jobs.new_record("a", JobSpec.from_options(), ws.home))
    with pytest.raises(JobError, match=r"no job named 'b' .*\(jobs: a\)"):
        jobs.require_record(ws, "b")
