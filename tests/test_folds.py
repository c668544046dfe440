"""K-fold members (--folds K): every row is a validation row of one fold; member i holds out fold i mod K, so
K members predict every row once out of fold; baselines are fitted fold by fold on the same folds."""
import json
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.model_selection import PredefinedSplit, cross_val_predict
from sklearn.tree import DecisionTreeClassifier

from ensemble.blend.baselines import flat_pixels, out_of_fold, tree_baseline
from ensemble.blend.blending import spread_fold
from ensemble.blend.methods import (BLEND_METHODS, ModelOutputs, cross_fitted_greedy_accuracy, greedy_weights,
                                    mean_blend, weighted_blend)
from ensemble.job.outputs import Metrics, OutputShape
from ensemble.cli import main
from ensemble.data.sources import sample_digits
from ensemble.data.split import stratified_folds
from ensemble.job.errors import JobError
from ensemble.job.spec import JobSpec
from ensemble.job.split import fold_sizes, fold_split, make_split, split_sha256

SLICE = ["--epochs", "1", "--limit-train", "300", "--no-tta", "--precision", "float32", "--model", "seed004"]


def invoke(home, *args):
    return CliRunner().invoke(main, ["--home", str(home), *map(str, args)])


def _labels(n=90):
    return np.repeat(np.arange(3), n // 3)[np.random.default_rng(1).permutation(n)]


def test_folds_hold_out_every_row_exactly_once_stratified_and_from_the_seed():
    labels = _labels()
    folds = stratified_folds(labels, 3, seed=5)
    assert sorted(np.bincount(folds).tolist()) == [30, 30, 30]
    for fold in range(3):  # each class split evenly over the folds: 10 of its 30 rows in each
        assert np.bincount(labels[folds == fold], minlength=3).tolist() == [10, 10, 10]
    assert np.array_equal(folds, stratified_folds(labels, 3, seed=5))
    assert not np.array_equal(folds, stratified_folds(labels, 3, seed=6))


def test_rows_too_few_for_the_recipes_ten_folds_are_refused_with_what_to_ask_instead(tmp_path, sample_dir):
    from ensemble.data.tables import DataError

    with pytest.raises(DataError, match="cannot make 10 stratified folds of 27 rows: .*--folds 0"):
        stratified_folds(np.repeat(np.arange(3), 9), 10, seed=0)  # 9 rows a class: 10 folds cannot hold each
    small = invoke(tmp_path / "home", "train", "--job", "s", "--n", "1", "--data", sample_dir, "--epochs", "1",
                   "--limit-train", "12", "--precision", "float32")  # cnn11's ten folds, on 12 rows
    assert small.exit_code != 0 and "Traceback" not in small.output, small.output
    assert "cannot make 10 stratified folds of 12 rows" in small.output and "--folds 0" in small.output


def test_each_member_trains_on_the_other_folds_and_validates_on_its_own():
    labels = _labels()
    split = make_split(labels, labels, 0.1, 3, seed=0)
    assert fold_sizes(split) == (30, 30, 30) and np.array_equal(split["val_index"], np.arange(90))
    held = []
    for index in range(6):  # members beyond K take the folds again
        fold = JobSpec(folds=3).member_fold(index)
        assert fold == index % 3
        own = fold_split(split, fold)
        assert set(own["train_index"]).isdisjoint(own["val_index"])
        assert sorted([*own["train_index"], *own["val_index"]]) == list(range(90))
        assert np.array_equal(own["val_labels"], labels[own["val_index"]])
        held.append(own["val_index"])
    assert sorted(np.concatenate(held[:3]).tolist()) == list(range(90))  # K members: every row once
    assert JobSpec().member_fold(4) is None and fold_split(split, None) is split


def test_a_shared_split_keeps_its_hash_and_the_folds_are_part_of_a_k_fold_one():
    import hashlib

    labels = _labels()
    shared = make_split(labels, labels, 0.1, None, seed=0)
    assert "fold" not in shared and fold_sizes(shared) is None
    before = hashlib.sha256()  # the hash every shared split had before k-fold splits existed
    for key in ("train_index", "val_index", "val_labels"):
        before.update(np.ascontiguousarray(shared[key], dtype="<i8").tobytes())
    assert split_sha256(shared) == before.hexdigest()
    folded = make_split(labels, labels, 0.1, 3, seed=0)
    other = {**folded, "fold": (folded["fold"] + 1) % 3}
    assert split_sha256(folded) != split_sha256(other)
    assert split_sha256(folded) != split_sha256({k: v for k, v in folded.items() if k != "fold"})


def test_spread_out_of_fold_outputs_cover_each_row_once_and_the_mean_blend_is_each_members_own():
    fold_of_row = np.array([0, 1, 2, 0, 1, 2, 2])
    rng = np.random.default_rng(0)
    members = [rng.dirichlet(np.ones(4), size=int((fold_of_row == f).sum())) for f in range(3)]
    spread = [spread_fold(probs, fold, fold_of_row) for fold, probs in enumerate(members)]
    mask = np.stack([covers for _, covers in spread])
    assert mask.sum(axis=0).tolist() == [1] * 7
    stacked = np.stack([full for full, _ in spread])
    blended = mean_blend(stacked, mask)
    for fold, probs in enumerate(members):
        assert np.allclose(blended[fold_of_row == fold], probs)
    baseline, everywhere = spread_fold(stacked[0], None, fold_of_row)
    assert everywhere.all() and np.array_equal(baseline, stacked[0])


def test_a_row_averages_only_the_members_that_held_it_out():
    probs = np.array([[[1.0, 0.0]], [[0.0, 1.0]], [[0.5, 0.5]]])
    mask = np.array([[True], [False], [True]])
    assert np.allclose(weighted_blend(probs, [0.5, 0.25, 0.25], mask), [[2 / 3 * 1 + 1 / 3 * 0.5, 1 / 3 * 0.5]])
    assert np.allclose(weighted_blend(probs, [0.0, 1.0, 0.0], mask), [[0.5, 0.5]])  # nothing covers: uniform


def test_greedy_on_out_of_fold_outputs_is_fitted_fold_by_fold_and_weighs_every_fold():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 40)
    informed = 0.5 * rng.dirichlet(np.ones(3), size=(4, 40)) + 0.5 * np.eye(3)[labels]
    fold_of_row = np.arange(40) % 2
    mask = np.stack([fold_of_row == 0, fold_of_row == 1, fold_of_row == 0, fold_of_row == 1])
    outputs = ModelOutputs([f"member-0{i}" for i in range(4)], informed * mask[..., None],
                           rng.dirichlet(np.ones(3), size=(4, 7)), val_mask=mask)
    blended = BLEND_METHODS["greedy"].blend(outputs, labels)
    # each fold's weights are the plain greedy among that fold's members, and each fold weighs half
    for fold, members in ((0, [0, 2]), (1, [1, 3])):
        rows = fold_of_row == fold
        alone = greedy_weights(informed[members][:, rows], labels[rows])
        assert np.allclose(blended.weights[members], alone / 2)
        assert np.allclose(blended.val_probs[rows], weighted_blend(informed[members][:, rows], alone))
    assert blended.weights.sum() == pytest.approx(1.0)
    assert np.allclose(blended.test_probs, weighted_blend(outputs.test_probs, blended.weights))


def test_greedy_with_every_row_covered_is_the_plain_greedy():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 40)
    probs = rng.dirichlet(np.ones(3), size=(3, 40))
    plain = BLEND_METHODS["greedy"].blend(ModelOutputs(["a", "b", "c"], probs, probs), labels)
    assert np.array_equal(plain.weights, greedy_weights(probs, labels))
    covered = BLEND_METHODS["greedy"].blend(ModelOutputs(["a", "b", "c"], probs, probs,
                                                         val_mask=np.ones((3, 40), dtype=bool)), labels)
    assert np.allclose(covered.weights, plain.weights) and np.allclose(covered.val_probs, plain.val_probs)
    assert cross_fitted_greedy_accuracy(probs, labels, 1) == pytest.approx(
        cross_fitted_greedy_accuracy(probs, labels, 1, np.ones((3, 40), dtype=bool)))


def test_out_of_fold_baselines_are_cross_val_predict_on_the_same_folds():
    images, labels = sample_digits()
    order = np.random.default_rng(0).permutation(len(labels))[:600]
    x, y = flat_pixels(images[order]), labels[order]
    folds = stratified_folds(y, 3, seed=2)
    result = out_of_fold(lambda *rows: tree_baseline(*rows, n_classes=10, seed=2), x, y, x[:50], folds)
    expected = cross_val_predict(DecisionTreeClassifier(random_state=2), x, y, cv=PredefinedSplit(folds),
                                 method="predict_proba")
    assert np.array_equal(result.val_probs, expected)
    assert len(result.choice["max_depth"]) == 3
    per_fold = [DecisionTreeClassifier(random_state=2).fit(x[folds != f], y[folds != f]).predict_proba(x[:50])
                for f in range(3)]
    assert np.allclose(result.test_probs, np.mean(per_fold, axis=0))


def test_folds_is_an_option_checked_like_the_others():
    with pytest.raises(JobError, match="--folds must be 0 or at least 2, got 1"):
        JobSpec.from_options(folds=1)
    with pytest.raises(JobError, match="--folds must be 0 or at least 2, got -3"):
        JobSpec.from_options(folds=-3)
    assert JobSpec.from_options(folds=5, precision="float32").folds == 5
    assert JobSpec.from_options(folds=0, precision="float32").folds == 0


def test_the_recipe_decides_the_folds_and_a_validation_share_alone_asks_for_the_shared_split():
    assert JobSpec.from_options(precision="float32").folds == 10  # cnn11's: BENCHMARKS.md, "Ten folds at equal time"
    assert JobSpec.from_options(recipe="cnn11_pool", precision="float32").folds == 10
    for recipe in ("seed", "deotte", "bn_cnn", "keras_mnist", "seed001", "seed004"):
        assert JobSpec.from_options(recipe=recipe, precision="float32").folds == 0, recipe
    assert JobSpec.from_options(model="seed004").folds == 0  # a net alone brings its own recipe
    shared = JobSpec.from_options(val_split=0.2, precision="float32")
    assert (shared.folds, shared.val_split, shared.member_fold(3)) == (0, 0.2, None)
    both = JobSpec.from_options(val_split=0.2, folds=5, precision="float32")
    assert (both.folds, both.member_fold(7)) == (5, 2)
    assert JobSpec(val_split=0.2).folds_meant() == 0 and JobSpec().folds_meant() == 10
    assert JobSpec(recipe="no-such").folds_meant() is None  # resolve refuses it, with its own message


def test_a_validation_share_alone_makes_a_shared_split_and_the_train_heading_names_the_split(ws, sample_dir):
    from ensemble.run.request import TrainRequest
    from ensemble.run.runner import prepare_job, run_heading

    asked = JobSpec(limit_train=300, val_split=0.2, precision="float32")  # cnn11, whose recipe has ten folds
    shared = prepare_job(ws, TrainRequest(n=1, data_dir=sample_dir, job="v", spec=asked), gpu_capabilities=[])
    with np.load(ws.jobs_dir / "v/split.npz") as split:
        assert "fold" not in split and (len(split["train_index"]), len(split["val_index"])) == (240, 60)
    folds = prepare_job(ws, TrainRequest(n=1, data_dir=sample_dir, job="f", spec=replace(asked, val_split=None)),
                        gpu_capabilities=[])
    with np.load(ws.jobs_dir / "f/split.npz") as split:
        assert np.bincount(split["fold"]).tolist() == [30] * 10
    request = TrainRequest(n=1)
    assert run_heading("v", True, request, shared.record.spec, None, 1, 0).endswith(
        ", TTA, one shared 0.2 validation split; 1 to train, 0 already done")
    # members on the CPU: cnn11's width auto halves its filters, and the heading says so
    assert run_heading("v", True, request, shared.record.spec, None, 1, 0).startswith(
        "job v (new): 1 x cnn11 at width 0.5 (recipe cnn11), 12 epochs, onecycle lr 0.002")
    assert run_heading("f", True, request, folds.record.spec, None, 1, 0).endswith(
        ", TTA, 10 folds (member i holds out fold i mod 10); 1 to train, 0 already done")


def test_a_cnn11_job_recorded_with_a_null_fold_count_continues_on_its_shared_split(tmp_path, sample_dir):
    """Before cnn11's recipe had folds, a shared split's record held "folds": null. `--job J` alone continues it
    on that split; a rerun that names options asks for the recipe's ten folds and is told what differs."""
    home = tmp_path / "home"
    made = invoke(home, "train", "--job", "old", "--n", "1", "--data", sample_dir, "--folds", "0", "--epochs", "1",
                  "--limit-train", "300", "--no-tta", "--precision", "float32", "--recipe", "cnn11",
                  "--model", "seed004")
    assert made.exit_code == 0, made.output
    path = home / "jobs/old/job.json"
    record = json.loads(path.read_text())
    record["spec"]["folds"] = None
    path.write_text(json.dumps(record))
    more = invoke(home, "train", "--job", "old", "--n", "2")
    assert more.exit_code == 0, more.output
    assert "job old (continued)" in more.output and "one shared 0.1 validation split; 1 to train, 1 already done" in more.output
    with np.load(home / "jobs/old/split.npz") as split:
        assert "fold" not in split and len(split["val_index"]) == 30
    assert json.loads((home / "models/old/member-01/metrics.json").read_text()).get("fold") is None
    named = invoke(home, "train", "--job", "old", "--n", "2", "--data", sample_dir)
    assert named.exit_code != 0 and "--folds: job has 0, this run asks 10" in named.output, named.output
    assert "Traceback" not in named.output


def test_a_k_fold_job_scores_every_row_out_of_fold_and_blends_every_member(tmp_path, sample_dir):
    home = tmp_path / "home"
    result = invoke(home, "train", "--job", "k", "--folds", "3", "--n", "3", "--data", sample_dir, *SLICE)
    assert result.exit_code == 0, result.output
    with np.load(home / "jobs/k/split.npz") as split:
        fold_of_row, val_labels = split["fold"], split["val_labels"]
    assert len(fold_of_row) == 300 and sorted(np.bincount(fold_of_row).tolist()) == [100, 100, 100]
    covered = np.zeros(300, dtype=int)
    for index in range(3):
        folder = home / f"models/k/member-{index:02d}"
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["fold"] == index and metrics["n_train"] == 200 and metrics["n_val"] == 100
        assert json.loads((folder / "config.json").read_text())["fold"] == index
        assert np.load(folder / "val_probs.npy").shape == (100, 10)
        covered[fold_of_row == index] += 1
    assert covered.tolist() == [1] * 300

    baselines = invoke(home, "baselines", "--job", "k", "--only", "tree")
    assert baselines.exit_code == 0, baselines.output
    assert "fitting 3 folds of 300 rows" in baselines.output
    assert np.load(home / "models/k/baseline-tree/val_probs.npy").shape == (300, 10)

    for method in ("mean", "greedy"):
        blended = invoke(home, "blend", "--job", "k", "--method", method)
        assert blended.exit_code == 0, blended.output
        assert "scored       out of fold: 300 of 300 rows" in blended.output
    assert (home / "submissions/submission.csv").read_text().count("\n") == 1001  # header and 1000 test rows

    from ensemble.blend.blending import blend_job, load_outputs
    from ensemble.job.record import load_record
    from ensemble.store.workspace import Workspace

    ws = Workspace.resolve(home)
    outputs = load_outputs(ws, load_record(ws, "k"))
    assert outputs.val_mask.sum(axis=0).tolist() == [1] * 300 and outputs.test_probs.shape == (3, 1000, 10)
    mean = blend_job(ws, "k", "mean")
    oof = BLEND_METHODS["mean"].blend(outputs, val_labels)
    assert mean.val_accuracy == oof.val_accuracy  # every row scored once, by the member that held it out
    assert np.allclose(oof.test_probs, outputs.test_probs.mean(axis=0))  # the test blend averages every member

    report = invoke(home, "leaderboard", "--job", "k")
    assert report.exit_code == 0, report.output
    text = (home / "submissions/k/leaderboard.md").read_text()
    assert "Out-of-fold scores over 3 stratified folds of the 300 training rows" in text
    assert "blends and baselines on every row" in text


def test_fewer_members_than_folds_score_only_the_rows_their_folds_hold():
    fold_of_row = np.array([0, 1, 2, 0, 1, 2])
    labels = np.array([0, 1, 0, 1, 0, 1])
    probs = np.eye(2)[labels]
    spread = [spread_fold(probs[fold_of_row == f], f, fold_of_row) for f in (0, 1)]
    outputs = ModelOutputs(["member-00", "member-01"], np.stack([p for p, _ in spread]), np.zeros((2, 3, 2)),
                           val_mask=np.stack([m for _, m in spread]))
    assert outputs.scored_rows.tolist() == [True, True, False, True, True, False]
    assert BLEND_METHODS["mean"].blend(outputs, labels).val_accuracy == 1.0  # fold 2 is not counted as wrong


def test_a_k_fold_members_outputs_must_hold_its_folds_rows_and_name_the_fold(tmp_path):
    from ensemble.job.layout import ModelFolder
    from ensemble.job.outputs import output_problem, save_model_outputs

    shape = OutputShape(n_val=9, n_test=4, n_classes=3, fold_rows=(3, 3, 3))
    folder = ModelFolder(tmp_path / "baseline-tree")
    whole = Metrics(0.5, 1.0, kind="baseline")
    save_model_outputs(folder, {}, np.full((9, 3), 1 / 3), np.full((4, 3), 1 / 3), whole)
    assert output_problem(folder, shape) is None  # a baseline predicts every fold
    save_model_outputs(folder, {}, np.full((3, 3), 1 / 3), np.full((4, 3), 1 / 3), whole)
    assert "shape (3, 3), expected (9, 3)" in output_problem(folder, shape)
    save_model_outputs(folder, {}, np.full((3, 3), 1 / 3), np.full((4, 3), 1 / 3), Metrics(0.5, 1.0, fold=1, kind="snapshot"))
    assert output_problem(folder, shape) is None  # a fold's rows: its own
    save_model_outputs(folder, {}, np.full((3, 3), 1 / 3), np.full((4, 3), 1 / 3), Metrics(0.5, 1.0, kind="snapshot"))
    assert "trained on no fold" in output_problem(folder, shape)
    save_model_outputs(folder, {}, np.full((3, 3), 1 / 3), np.full((4, 3), 1 / 3), Metrics(0.5, 1.0, fold=5, kind="snapshot"))
    assert "fold 5 is not one of this job's 3 folds" in output_problem(folder, shape)


def test_a_k_fold_split_without_its_folds_is_made_again_exactly(ws, sample_dir):
    from ensemble.job.record import load_record
    from ensemble.job.split import existing_split, load_split, save_split
    from ensemble.run.request import TrainRequest
    from ensemble.run.runner import prepare_job

    prepare_job(ws, TrainRequest(n=3, data_dir=sample_dir, job="kf", spec=JobSpec(folds=3, limit_train=300)),
                gpu_capabilities=[])
    record = load_record(ws, "kf")
    made = existing_split(ws, record)
    assert fold_sizes(made) == (100, 100, 100)
    save_split(ws, "kf", made["train_index"], made["val_index"], made["val_labels"])  # the folds lost
    assert existing_split(ws, record) is None  # a reader never trusts it
    said = []
    again = load_split(ws, record, say=said.append)
    assert split_sha256(again) == split_sha256(made) and "made again" in said[0]
