"""A member runs from the run's plan (jobs/<job>/plan.json) and nothing else about the job."""
import json

import numpy as np
import pytest

from ensemble.data import tables
from ensemble.job.errors import JobError
from ensemble.job.layout import JobLayout
from ensemble.job.outputs import OutputShape, read_metrics
from ensemble.job.plan import DataFile, read_plan
from ensemble.job.split import read_split_file, save_split, split_sha256
from ensemble.job.spec import JobSpec
from ensemble.member.process import train_member
from ensemble.run.request import TrainRequest
from ensemble.run.runner import prepare_job
from ensemble.store.workspace import Workspace


@pytest.fixture
def planned(tmp_path, sample_dir):
    ws = Workspace.resolve(tmp_path / "home")
    prepared = prepare_job(ws, TrainRequest(n=1, data_dir=sample_dir, job="p", spec=JobSpec(
        model="seed004", epochs=1, batch_size=32, limit_train=128, precision="float32")), gpu_capabilities=[])
    return ws, prepared


def test_the_plan_holds_what_a_member_needs(planned, sample_dir):
    ws, prepared = planned
    plan = read_plan(ws, "p")
    assert plan == prepared.plan
    assert plan.spec == prepared.record.spec and plan.deadline is None
    assert plan.train.path == str(sample_dir.resolve() / "train.csv")
    assert plan.train.sha256 == tables.file_sha256(sample_dir / "train.csv") == plan.spec.train_sha256
    split = read_split_file(JobLayout(ws, "p").split)
    assert plan.split_sha256 == split_sha256(split)  # of its rows: the same when split.npz is made again
    assert plan.test == DataFile(str(sample_dir.resolve() / "test.csv"), tables.file_sha256(sample_dir / "test.csv"))
    assert plan.shape == OutputShape(n_val=13, n_test=1000, n_classes=10, test_sha256=plan.test.sha256,
                                     split_sha256=plan.split_sha256, test_file=plan.test.path,
                                     created_test_sha256=plan.spec.test_sha256)  # 10% of 128 rows


def test_a_member_reads_only_its_plan_and_never_hashes_the_csvs_again(planned, monkeypatch):
    ws, _ = planned
    JobLayout(ws, "p").record.write_text("{ not a job record")  # a member that read the record would fail
    hashed = []
    real = tables.file_sha256

    def watched(path):
        hashed.append(path.name)
        return real(path)

    monkeypatch.setattr(tables, "file_sha256", watched)
    metrics = train_member(ws, "p", 0)
    assert [name for name in hashed if name.endswith(".csv")] == []
    assert metrics.epochs == 1 and read_metrics(JobLayout(ws, "p").member(0)) == metrics
    config = json.loads(JobLayout(ws, "p").member(0).config.read_text())
    assert config["data"]["split_sha256"] == read_plan(ws, "p").split_sha256


def test_a_member_refuses_a_split_that_is_not_its_plans(planned):
    ws, _ = planned
    split = read_split_file(JobLayout(ws, "p").split)
    train_index, val_index = split["train_index"], split["val_index"]
    swapped = np.concatenate([train_index[:1], val_index[1:]])  # another validation row
    save_split(ws, "p", np.concatenate([val_index[:1], train_index[1:]]), swapped, split["val_labels"])
    with pytest.raises(JobError, match="is not the split this run was planned with"):
        train_member(ws, "p", 0)


def test_without_a_plan_a_member_says_how_one_is_made(tmp_path):
    ws = Workspace.resolve(tmp_path)
    with pytest.raises(JobError, match=r"no run plan to train from .*`ensemble train --job q`"):
        train_member(ws, "q", 0)
