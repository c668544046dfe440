"""K-fold members (--folds K): every row is a validation row of one fold; member i holds out fold i mod K, so
K members predict every row once out of fold; baselines are fitted fold by fold on the same folds."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.model_selection import PredefinedSplit, cross_val_predict
from sklearn.tree import DecisionTreeClassifier

from ensemble.blend.baselines import flat_pixels, out_of_fold, tree_baseline
from ensemble.blend.blending import spread_fold
from ensemble.blend.methods import (BLEND_METHODS, ModelOutputs, cross_fitted_greedy_accuracy, greedy_weights,
                                    mean_blend, weighted_blend)
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
    labels = _labels()
    shared = make_split(labels, labels, 0.1, None, seed=0)
    assert "fold" not in shared and fold_sizes(shared) is None
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


def test_greedy_with_every_row_covered_is_the_plain_greedy_and_with_folds_covers_every_fold():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 40)
    probs = rng.dirichlet(np.ones(3), size=(4, 40))
    full = np.ones((4, 40), dtype=bool)
    assert np.array_equal(greedy_weights(probs, labels), greedy_weights(probs, labels, mask=full))
    assert cross_fitted_greedy_accuracy(probs, labels, 1) == cross_fitted_greedy_accuracy(probs, labels, 1, full)
    informed = 0.5 * probs + 0.5 * np.eye(3)[labels]  # better than uniform everywhere
    fold_of_row = np.arange(40) % 2
    mask = np.stack([fold_of_row == 0, fold_of_row == 1, fold_of_row == 0, fold_of_row == 1])
    weights = greedy_weights(informed, labels, mask=mask)
    assert weights[[0, 2]].sum() > 0 and weights[[1, 3]].sum() > 0  # a member of each fold is picked
    lone = greedy_weights(informed[[0, 1]], labels, mask=mask[[0, 1]])
    assert np.allclose(weighted_blend(informed[[0, 1]], lone, mask[[0, 1]]), mean_blend(informed[[0, 1]], mask[[0, 1]]))


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
    with pytest.raises(JobError, match="--folds must be at least 2"):
        JobSpec.from_options(folds=1)
    assert JobSpec.from_options(folds=5).folds == 5 and JobSpec.from_options().folds is None


@pytest.mark.jax
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
