"""Pseudo-labels (--pseudo-label P): a second round of members that also train on the test rows the first
round's mean blend gives at least P, recorded with the job and resumable."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from ensemble.cli import main
from ensemble.job.pseudo import pseudo_sha256, read_pseudo, select_confident, write_pseudo
from ensemble.job.errors import JobError

SLICE = ["--epochs", "2", "--batch", "32", "--limit-train", "300", "--no-tta", "--precision", "float32", "--model",
         "seed004"]


def invoke(home, *args):
    return CliRunner().invoke(main, ["--home", str(home), *map(str, args)])


def test_confident_rows_are_those_the_blend_gives_the_threshold_with_their_class():
    probs = np.array([[0.995, 0.005], [0.5, 0.5], [0.01, 0.99], [0.2, 0.8]])
    rows, labels = select_confident(probs, 0.99)
    assert rows.tolist() == [0, 2] and labels.tolist() == [0, 1]
    assert select_confident(probs, 0.999)[0].tolist() == []


def test_the_rows_file_is_checked_against_its_recorded_hash(tmp_path):
    rows, labels = np.array([3, 7]), np.array([1, 0])
    sha256 = write_pseudo(tmp_path / "pseudo-1.npz", rows, labels)
    assert sha256 == pseudo_sha256(rows, labels)
    again = read_pseudo(tmp_path / "pseudo-1.npz", sha256)
    assert again[0].tolist() == [3, 7] and again[1].tolist() == [1, 0]
    with pytest.raises(JobError, match="content hash differs"):
        read_pseudo(tmp_path / "pseudo-1.npz", pseudo_sha256(rows, labels[::-1]))
    with pytest.raises(JobError, match="missing or damaged"):
        read_pseudo(tmp_path / "none.npz", sha256)


def test_a_pseudo_label_round_is_recorded_trains_the_new_members_and_resumes(tmp_path, sample_dir):
    home = tmp_path / "home"
    first = invoke(home, "train", "--job", "p", "--n", "2", "--data", sample_dir, *SLICE)
    assert first.exit_code == 0, first.output
    too_few = invoke(home, "train", "--job", "p", "--n", "2", "--pseudo-label", "0.18")
    assert too_few.exit_code != 0 and "pass --n above that (e.g. --n 4)" in too_few.output
    unreachable = invoke(home, "train", "--job", "p", "--n", "4", "--pseudo-label", "0.999")
    assert unreachable.exit_code != 0 and "no test row reaches 0.999" in unreachable.output
    assert "pseudo" not in json.loads((home / "jobs/p/job.json").read_text())  # nothing recorded

    second = invoke(home, "train", "--job", "p", "--n", "4", "--pseudo-label", "0.18")
    assert second.exit_code == 0, second.output
    record = json.loads((home / "jobs/p/job.json").read_text())
    pseudo = record["pseudo"]
    assert pseudo["threshold"] == 0.18 and pseudo["first_member"] == 2 and pseudo["test_rows"] == 1000
    assert pseudo["models"] == ["member-00", "member-01"]
    blended = np.mean([np.load(home / f"models/p/member-0{i}/test_probs.npy") for i in (0, 1)], axis=0)
    rows, labels = select_confident(blended, 0.18)
    assert pseudo["rows"] == len(rows) and 0 < len(rows) < 1000  # a 2-epoch net is unsure: 0.18 of 10 classes picks some rows
    saved = np.load(home / "jobs/p/pseudo-1.npz")
    assert np.array_equal(saved["rows"], rows) and np.array_equal(saved["labels"], labels)
    assert f"pseudo-labels round 1: {len(rows)} of 1000 test rows" in second.output
    for index, extra in ((0, 0), (1, 0), (2, len(rows)), (3, len(rows))):
        metrics = json.loads((home / f"models/p/member-0{index}/metrics.json").read_text())
        assert metrics["n_train"] == 270 + extra, index  # 300 rows, 30 of them validation
        config = json.loads((home / f"models/p/member-0{index}/config.json").read_text())
        assert ("pseudo" in config) is (index >= 2)

    other = invoke(home, "train", "--job", "p", "--n", "5", "--pseudo-label", "0.9")
    assert other.exit_code != 0 and "already has pseudo-label round 1 at 0.18" in other.output
    more = invoke(home, "train", "--job", "p", "--n", "5", "--pseudo-label", "0.18")  # the round continues
    assert more.exit_code == 0, more.output
    assert json.loads((home / "models/p/member-04/metrics.json").read_text())["n_train"] == 270 + len(rows)
    assert json.loads((home / "jobs/p/job.json").read_text())["pseudo"] == pseudo

    report = invoke(home, "leaderboard", "--job", "p")
    assert report.exit_code == 0, report.output
    assert "pseudo-labels round 1" in (home / "submissions/p/leaderboard.md").read_text()


def test_a_round_needs_every_member_finished(tmp_path, sample_dir):
    home = tmp_path / "home"
    from ensemble.run.request import TrainRequest
    from ensemble.run.runner import prepare_job
    from ensemble.job.spec import JobSpec
    from ensemble.store.workspace import Workspace

    ws = Workspace.resolve(home)
    prepare_job(ws, TrainRequest(n=2, data_dir=sample_dir, job="q", spec=JobSpec(limit_train=300, folds=0)),
                gpu_capabilities=[])
    refused = invoke(home, "train", "--job", "q", "--n", "4", "--pseudo-label", "0.9")
    assert refused.exit_code != 0
    assert "not finished: member-00, member-01" in refused.output and "Traceback" not in refused.output


def test_a_round_is_refused_where_it_would_mislead(tmp_path, sample_dir):
    home = tmp_path / "home"
    assert invoke(home, "train", "--job", "f", "--n", "2", "--folds", "2", "--data", sample_dir,
                  *SLICE).exit_code == 0
    folds = invoke(home, "train", "--job", "f", "--n", "4", "--pseudo-label", "0.18")
    assert folds.exit_code != 0 and "would leak labels into the out-of-fold scores" in folds.output
    assert "made with --folds 0" in folds.output and "Traceback" not in folds.output
    out_of_range = invoke(home, "train", "--job", "f", "--n", "4", "--pseudo-label", "1.5")
    assert out_of_range.exit_code != 0 and "--pseudo-label must be between 0 and 1" in out_of_range.output
    assert "pseudo" not in json.loads((home / "jobs/f/job.json").read_text())  # nothing was recorded


def test_ema_is_refused_with_the_legacy_generator_whose_fit_would_never_swap_the_average_in():
    from ensemble.job.spec import JobSpec

    with pytest.raises(JobError, match="--ema 0.99 swaps the average in at each epoch's end, which the legacy"):
        JobSpec.from_options(ema=0.99, augment="legacy-idg")
    with pytest.raises(JobError, match="drop --ema or use --augment idg"):
        JobSpec.from_options(ema=0.99, recipe="seed")  # seed 002's recipe trains through the legacy generator
    assert JobSpec.from_options(ema=0.99, precision="mixed_float16").ema == 0.99  # loss scaling: no step count


def test_the_default_recipe_keeps_a_weight_average_unless_the_legacy_generator_trains_it():
    from ensemble.job.spec import JobSpec

    assert JobSpec.from_options().ema == 0.98
    assert JobSpec.from_options(recipe="seed").ema == 0.0
    # the recipe's average is no request: the legacy generator's job trains without one, and says so in its spec
    assert JobSpec.from_options(augment="legacy-idg").ema == 0.0
    assert JobSpec.from_options(ema=0.0).ema == 0.0
