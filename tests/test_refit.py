"""Refit-full (--refit-full): once a k-fold job's members finish, a twin of each trains on every row for the
epochs its fold member's kept weights had; the fold members' out-of-fold predictions weigh and score every
blend, and the twins' test predictions make the submission."""
import json
import time

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from ensemble.blend.blending import refit_test_probs
from ensemble.cli import main
from ensemble.job.arrays import split_arrays
from ensemble.job.refit import refit_spec_problem, twin_epochs
from ensemble.job.rounds import RefitRound
from ensemble.job.spec import JobSpec
from ensemble.job.split import make_split

SLICE = ["--epochs", "2", "--limit-train", "300", "--no-tta", "--precision", "float32", "--model", "seed004",
         "--keep", "best"]


def invoke(home, *args):
    return CliRunner().invoke(main, ["--home", str(home), *map(str, args)])


def test_a_refit_round_maps_each_twin_to_its_fold_member_and_length():
    round_ = RefitRound(3, (0, 1, 2), (5, 4, 5), "now")
    assert [round_.uses(i) for i in range(7)] == [False, False, False, True, True, True, False]
    assert [round_.parent(i) for i in (3, 4, 5)] == [0, 1, 2]
    assert [round_.twin(i) for i in (0, 1, 2, 3)] == [3, 4, 5, None]
    assert [round_.epochs_of(i) for i in (3, 4, 5)] == [5, 4, 5] and round_.end == 6
    assert RefitRound.from_dict(json.loads(json.dumps(round_.to_dict()))) == round_
    assert "member-03..member-05 train on every training row" in round_.describe()
    assert twin_epochs([7, 0, 3]) == (7, 1, 3)


def test_twins_test_predictions_replace_their_fold_members_and_nothing_else():
    test = np.arange(3 * 2 * 2, dtype=float).reshape(3, 2, 2)
    twin = np.full((2, 2), -1.0)
    replaced = refit_test_probs(["member-00", "member-01", "member-02"], test, {"member-01": twin})
    assert np.array_equal(replaced[0], test[0]) and np.array_equal(replaced[1], twin)
    assert np.array_equal(replaced[2], test[2])


def test_only_a_k_fold_job_of_fixed_length_without_a_time_limit_is_refitted():
    folds = JobSpec.from_options(folds=3, precision="float32", gpu_capabilities=[])
    assert refit_spec_problem(folds) is None
    shared = JobSpec.from_options(folds=0, precision="float32", gpu_capabilities=[])
    assert "add --folds K" in refit_spec_problem(shared)
    assert refit_spec_problem(JobSpec.from_options(precision="float32", gpu_capabilities=[])) is None  # cnn11's ten
    snapshots = JobSpec.from_options(folds=3, snapshots=2, epochs=4, precision="float32", gpu_capabilities=[])
    assert "drop --snapshots" in refit_spec_problem(snapshots)
    plateau = JobSpec.from_options(folds=3, schedule="plateau", precision="float32", gpu_capabilities=[])
    assert "use --schedule onecycle, cosine or exp" in refit_spec_problem(plateau)


def test_under_a_time_limit_the_folds_get_the_share_that_leaves_their_twins_as_long(ws):
    from ensemble.run.request import TrainRequest
    from ensemble.run.runner import fold_pass

    asked = TrainRequest(spec=JobSpec(folds=5), time_limit=900.0, refit_full=True)
    first = fold_pass(ws, asked)  # a fold member trains on 4/5 of the rows, its twin on all: 0.8 / 1.8 of the time
    assert first.n == 5 and first.time_limit == pytest.approx(400.0)
    assert fold_pass(ws, TrainRequest(spec=JobSpec(folds=4), n=8, time_limit=700.0, refit_full=True)).n == 8
    assert fold_pass(ws, TrainRequest(spec=JobSpec(folds=5), refit_full=True)).time_limit is None
    recipes = fold_pass(ws, TrainRequest(spec=JobSpec(), time_limit=1900.0, refit_full=True))  # cnn11's ten folds
    assert recipes.n == 10 and recipes.time_limit == pytest.approx(900.0)
    shared = TrainRequest(spec=JobSpec(val_split=0.2), time_limit=1900.0, refit_full=True)
    assert fold_pass(ws, shared) == shared  # a shared split: refused by check_refit, before anything is written


def test_a_twin_trains_on_every_row_and_predicts_its_fold_members_fold():
    labels = np.repeat(np.arange(3), 10)
    split = make_split(labels, labels, 0.1, 3, seed=0)
    images = np.arange(30, dtype=np.uint8).reshape(30, 1, 1) * np.ones((1, 2, 2), dtype=np.uint8)
    test = np.zeros((4, 2, 2), dtype=np.uint8)
    member = split_arrays(images, labels, split, test, None, fold=1)
    twin = split_arrays(images, labels, split, test, None, fold=1, train_all=True)
    assert len(member.x_train) == 20 and len(twin.x_train) == 30
    assert sorted(twin.x_train[:, 0, 0, 0].tolist()) == list(range(30))
    assert np.array_equal(twin.x_val, member.x_val) and np.array_equal(twin.y_val, member.y_val)
    shared = make_split(labels, labels, 0.2, None, seed=0)
    assert len(split_arrays(images, labels, shared, test, None, train_all=True).x_train) == 30


def test_refit_full_trains_twins_whose_test_predictions_make_the_checked_submission(tmp_path, sample_dir):
    home = tmp_path / "home"
    started = time.time()
    folds = invoke(home, "train", "--job", "r", "--folds", "3", "--n", "3", "--data", sample_dir, *SLICE)
    assert folds.exit_code == 0, folds.output
    history = pd.read_csv(home / "models/r/member-00/history.csv")  # each epoch's end on the wall clock
    assert started < history["ended_at"].iloc[0] < history["ended_at"].iloc[1] < time.time()
    shortened = home / "models/r/member-01/metrics.json"  # as if its best epoch had been its first
    shortened.write_text(json.dumps({**json.loads(shortened.read_text()), "best_epoch": 1}))

    refit = invoke(home, "train", "--job", "r", "--refit-full")
    assert refit.exit_code == 0, refit.output
    assert "refit-full: member-03..member-05 train on every training row" in refit.output
    assert "member-04 done: refit of member-01 on all 300 rows, 1 epochs" in refit.output
    record = json.loads((home / "jobs/r/job.json").read_text())
    assert record["refit"]["parents"] == [0, 1, 2] and record["refit"]["epochs"] == [2, 1, 2]
    assert [m["val_accuracy"] for m in record["members"][3:]] == [None, None, None]
    assert record["members"][4]["note"] == "refit of member-01 on every row"
    for twin, parent in ((3, 0), (4, 1), (5, 2)):
        folder = home / f"models/r/member-{twin:02d}"
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["refit_of"] == f"member-{parent:02d}" and metrics["fold"] == parent
        assert metrics["n_train"] == 300 and metrics["n_val"] == 100 and metrics["best_epoch"] == metrics["epochs"]
        assert metrics["epochs"] == record["refit"]["epochs"][parent]
        assert "val_accuracy" not in open(folder / "history.csv").readline()  # no validation pass: rows it trains on
        assert json.loads((folder / "config.json").read_text())["refit_of"] == f"member-{parent:02d}"

    again = invoke(home, "train", "--job", "r", "--folds", "3", "--n", "3", "--data", sample_dir, *SLICE, "--refit-full")
    assert again.exit_code == 0 and "trained 0, already done 6" in again.output
    limited = invoke(home, "train", "--job", "r", "--time-limit", "10m")  # the twins are the last members: no growth
    assert limited.exit_code == 0 and "trained 0, already done 6" in limited.output
    assert len(json.loads((home / "jobs/r/job.json").read_text())["members"]) == 6
    stopped = json.loads((home / "jobs/r/job.json").read_text())  # as if the limit had stopped member-01 early:
    stopped["members"][1].update(stopped_early=True, epochs=3)   # its twin was sized from its kept epoch
    (home / "jobs/r/job.json").write_text(json.dumps(stopped))
    kept = invoke(home, "train", "--job", "r")
    assert kept.exit_code == 0 and "trained 0, already done 6" in kept.output, kept.output

    blended = invoke(home, "blend", "--job", "r")
    assert blended.exit_code == 0, blended.output
    assert "mean blend of 3 (member-00, member-01, member-02)" in blended.output
    assert "test predictions from the refit twins (member-03 for member-00" in blended.output
    twins = np.mean([np.load(home / f"models/r/member-0{i}/test_probs.npy") for i in (3, 4, 5)], axis=0)
    written = np.loadtxt(home / "submissions/submission.csv", delimiter=",", skiprows=1, dtype=int)[:, 1]
    assert np.array_equal(written, twins.argmax(axis=1))
    blend_record = json.loads((home / "jobs/r/blends.json").read_text())[-1]
    assert blend_record["test_models"] == ["member-03", "member-04", "member-05"]

    from ensemble.blend.blending import load_outputs
    from ensemble.blend.methods import BLEND_METHODS
    from ensemble.job.record import load_record
    from ensemble.store.workspace import Workspace

    ws = Workspace.resolve(home)
    outputs = load_outputs(ws, load_record(ws, "r"))
    assert outputs.names == ["member-00", "member-01", "member-02"]  # the twins are never scored
    y_val = np.load(home / "jobs/r/split.npz")["val_labels"]
    assert f"val accuracy {BLEND_METHODS['mean'].blend(outputs, y_val).val_accuracy:.4f}" in blended.output

    checked = invoke(home, "check", "--job", "r")
    assert checked.exit_code == 0 and "(test predictions from member-03, member-04, member-05)" in checked.output
    predicted = invoke(home, "predict", "--job", "r", sample_dir / "test.csv", "--out", tmp_path / "p.csv")
    assert predicted.exit_code == 0 and "predicted by their refit twins: member-03 for member-00" in predicted.output
    assert np.array_equal(np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1, dtype=int)[:, 1], written)

    named = invoke(home, "blend", "--job", "r", "--only", "member-03,member-01")
    assert named.exit_code == 1 and "member-03: refit on every row" in named.output
    assert "blend member-00 instead" in named.output

    report = invoke(home, "leaderboard", "--job", "r")
    assert report.exit_code == 0, report.output
    text = (home / "submissions/r/leaderboard.md").read_text()
    assert "member-03" not in text.split("\n- ")[0]  # the table ranks no twin
    own, refitted = twins, np.mean([np.load(home / f"models/r/member-0{i}/test_probs.npy") for i in (0, 1, 2)], axis=0)
    answers = np.loadtxt(sample_dir / "test_labels.csv", delimiter=",", skiprows=1, dtype=int)[:, 1]
    assert (f"Test accuracy of blend-mean with the twins' test predictions: {np.mean(own.argmax(1) == answers):.4f} "
            f"(the fold members' own: {np.mean(refitted.argmax(1) == answers):.4f})") in text

    (home / "jobs/r/job.json").write_text("{")  # damaged: rebuilt from the member configs, the twins' carry the round
    rebuilt = invoke(home, "train", "--job", "r")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert json.loads((home / "jobs/r/job.json").read_text())["refit"] == record["refit"]


@pytest.mark.parametrize("options, message", [
    (["--n", "2"], "add --folds K"),
    (["--folds", "2", "--n", "2", "--schedule", "plateau"], "a twin has no held-out rows"),
])
def test_a_refit_that_cannot_be_made_is_refused_before_anything_is_written(tmp_path, sample_dir, options, message):
    home = tmp_path / "home"
    result = invoke(home, "train", "--job", "x", "--refit-full", "--data", sample_dir, *SLICE, *options)
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert not (home / "jobs/x").exists()


def test_unfinished_folds_make_no_twins_and_a_time_limit_trains_them_at_their_chosen_length(tmp_path, sample_dir):
    home = tmp_path / "home"
    assert invoke(home, "train", "--job", "t", "--folds", "2", "--n", "1", "--data", sample_dir, *SLICE).exit_code == 0
    from ensemble.job.errors import JobError
    from ensemble.job.outputs import job_output_shape
    from ensemble.job.record import load_record, save_record
    from ensemble.job.refit import make_refit_round
    from ensemble.store.workspace import Workspace

    ws = Workspace.resolve(home)
    record = load_record(ws, "t").ensure_members(2)  # member-01 pending
    save_record(ws, record)
    with pytest.raises(JobError, match="not finished: member-01"):
        make_refit_round(ws, record, job_output_shape(ws, record), "now")

    limited = invoke(home, "train", "--job", "t", "--n", "2", "--refit-full", "--time-limit", "10m")
    assert limited.exit_code == 0, limited.output  # member-01 first, then the twins, inside the limit
    assert "refit-full: member-02..member-03 train on every training row" in limited.output
    members = json.loads((home / "jobs/t/job.json").read_text())["members"]
    assert [m["state"] for m in members] == ["done"] * 4 and [m["epochs"] for m in members[2:]] == [2, 2]
    assert all(not m["stopped_early"] for m in members)


def test_a_twin_the_time_limit_stopped_does_not_stand_in_for_its_fold_member():
    from ensemble.blend.blending import finished_twins
    from ensemble.job.layout import ModelKind
    from ensemble.job.outputs import JobModels, ModelRef

    survey = JobModels([ModelRef("member-00", ModelKind.MEMBER), ModelRef("member-01", ModelKind.MEMBER),
                        ModelRef("member-02", ModelKind.MEMBER, refit_of="member-00"),
                        ModelRef("member-03", ModelKind.MEMBER, stopped_early=True, refit_of="member-01")], {})
    assert finished_twins(survey, ["member-00", "member-01"]) == {"member-00": "member-02"}


def test_twins_come_only_after_a_member_on_every_fold(tmp_path, sample_dir):
    home = tmp_path / "home"
    assert invoke(home, "train", "--job", "f", "--folds", "3", "--n", "2", "--data", sample_dir, *SLICE).exit_code == 0
    from ensemble.job.errors import JobError
    from ensemble.job.outputs import job_output_shape
    from ensemble.job.record import load_record
    from ensemble.job.refit import make_refit_round
    from ensemble.run.runner import folds_finished
    from ensemble.store.workspace import Workspace

    ws = Workspace.resolve(home)
    record = load_record(ws, "f")
    assert not folds_finished(ws, "f")
    with pytest.raises(JobError, match="has 2 of its 3 folds' members"):
        make_refit_round(ws, record, job_output_shape(ws, record), "now")


def test_a_copy_whose_twins_would_land_on_fold_members_is_refused():
    from ensemble.job.ledger import MemberEntry
    from ensemble.job.record import new_record
    from ensemble.kaggle.transfer import refit_mismatch

    def job(members, refit=None):
        record = new_record("j", JobSpec(folds=2), "/data")
        record.members = [MemberEntry(i, f"member-{i:02d}", i) for i in range(members)]
        record.refit = refit
        return record

    refit = RefitRound(2, (0, 1), (3, 3), "now")
    assert refit_mismatch(job(2), job(4, refit)) is None  # a session added the twins to the job sent to it
    assert refit_mismatch(job(4, refit), job(2)) is None
    assert "has refit twins where this job has fold members" in refit_mismatch(job(3), job(4, refit))
    assert "has fold members where this job has refit twins" in refit_mismatch(job(4, refit), job(3))
    assert "has another refit round than this one" in refit_mismatch(job(4, refit), job(4, RefitRound(2, (0, 1), (2, 3), "x")))


def test_kernel_train_passes_the_rounds_on_to_the_session():
    from ensemble.kaggle.kernel import run_options
    from ensemble.run.request import TrainRequest

    words = run_options(TrainRequest(n=5, refit_full=True, pseudo_label=0.99))
    assert words == ("--n", "5", "--retries", "2", "--pseudo-label", "0.99", "--refit-full")
