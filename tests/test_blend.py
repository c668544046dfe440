import math

import numpy as np
import pytest

from ensemble.blend.methods import blend_probabilities
from ensemble.data.layouts import LAYOUTS
from ensemble.kaggle.submission import (SubmissionError, SubmissionLayout, check_submission_text, label_ranges,
                                        submission_frame)

DIGITS_3 = SubmissionLayout.for_layout(LAYOUTS["digit-recognizer"], None, 3, range(10))
from ensemble.nets.metrics import accuracy, log_loss

# two members, three rows, three classes (the arithmetic does not care about ten)
MEMBER_A = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
MEMBER_B = np.array([[0.2, 0.7, 0.1], [0.4, 0.4, 0.2], [0.5, 0.25, 0.25]])
PROBS = np.stack([MEMBER_A, MEMBER_B])


def test_mean_blend_is_the_average():
    expected = np.array([[0.4, 0.5, 0.1], [0.3, 0.45, 0.25], [0.3, 0.175, 0.525]])
    assert np.allclose(blend_probabilities(PROBS, "mean"), expected, atol=1e-12)


def test_geometric_blend_is_the_normalised_geometric_mean():
    row0 = np.array([math.sqrt(0.12), math.sqrt(0.21), 0.1])
    row2 = np.array([math.sqrt(0.05), math.sqrt(0.025), math.sqrt(0.2)])
    got = blend_probabilities(PROBS, "geometric")
    assert np.allclose(got[0], row0 / row0.sum(), atol=1e-12)
    assert np.allclose(got[2], row2 / row2.sum(), atol=1e-12)
    assert np.allclose(got.sum(axis=1), 1.0)
    # the methods disagree on row 0's runner-up share but both pick class 1; on row 2 both pick class 2
    assert np.argmax(got, axis=1).tolist() == [1, 1, 2]


def test_geometric_blend_survives_a_zero_probability():
    probs = np.stack([np.array([[1.0, 0.0]]), np.array([[0.5, 0.5]])])
    got = blend_probabilities(probs, "geometric")
    assert np.isfinite(got).all() and got[0, 0] > 0.999


def test_single_member_blend_is_that_member():
    assert np.array_equal(blend_probabilities(MEMBER_A[None], "mean"), MEMBER_A)


def test_unknown_method_and_bad_shape_are_refused():
    with pytest.raises(ValueError, match="unknown blend method 'median'"):
        blend_probabilities(PROBS, "median")
    with pytest.raises(ValueError, match="expected \\(members, rows, classes\\)"):
        blend_probabilities(MEMBER_A, "mean")


def test_accuracy_and_log_loss_are_exact():
    labels = np.array([0, 1, 1])
    assert accuracy(MEMBER_A, labels) == pytest.approx(2 / 3)
    assert log_loss(MEMBER_A, labels) == pytest.approx(-(math.log(0.6) + math.log(0.5) + math.log(0.1)) / 3)


def _text(rows, header="ImageId,Label"):
    return "\n".join([header] + [f"{a},{b}" for a, b in rows]) + "\n"


def test_a_correct_submission_passes():
    text = submission_frame(np.array([3, 0, 9]), DIGITS_3).to_csv(index=False, lineterminator="\n")
    assert text == "ImageId,Label\n1,3\n2,0\n3,9\n"
    check_submission_text(text, DIGITS_3)


@pytest.mark.parametrize("text, message", [
    ("", "line 1: the file is empty"),
    (_text([(1, 3)], header="Id,Label"), "line 1: header is 'Id,Label', expected 'ImageId,Label'"),
    (_text([(1, 3), (3, 4), (2, 1)]), "line 3: ImageId is '3', expected 2"),
    (_text([(0, 3), (1, 4), (2, 1)]), "line 2: ImageId is '0', expected 1"),
    (_text([(1, 3), (2, 10), (3, 1)]), "line 3: Label is '10', expected one of 0..9"),
    (_text([(1, 3), (2, "x"), (3, 1)]), "line 3: Label is 'x', expected one of 0..9"),
    (_text([(1, 3), (2, -1), (3, 1)]), "line 3: Label is '-1', expected one of 0..9"),
    (_text([(1, 3), (2, 4)]), "line 4: 2 rows, expected 3"),
    (_text([(1, 3), (2, 4), (3, 1), (4, 1)]), "line 6: 4 rows, expected 3"),
    ("ImageId,Label\n1,3\n2,4,5\n3,1\n", "line 3: 3 fields, expected 2"),
])
def test_submission_checker_names_the_problem(text, message):
    with pytest.raises(SubmissionError) as caught:
        check_submission_text(text, DIGITS_3)
    assert str(caught.value).startswith(message)


def test_a_plain_blend_uses_each_members_snapshots_in_its_place():
    from ensemble.job.outputs import ModelRef, ensemble_models
    from ensemble.job.layout import ModelKind, model_kind, snapshot_name

    member, snapshot, baseline = ModelKind.MEMBER, ModelKind.SNAPSHOT, ModelKind.BASELINE
    models = [ModelRef("member-00", member), ModelRef("member-00-snap1", snapshot, "member-00"),
              ModelRef("member-00-snap2", snapshot, "member-00"), ModelRef("member-01", member),
              ModelRef("member-02", member, stopped_early=True), ModelRef("member-02-snap1", snapshot, "member-02"),
              ModelRef("knn", baseline)]
    # member-02 was stopped by the time limit mid-cycle: its best weights are newer than its one snapshot
    assert ensemble_models(models) == ["member-00-snap1", "member-00-snap2", "member-01", "member-02",
                                       "member-02-snap1"]
    assert [model_kind(name) for name in ("member-03", snapshot_name(3, 2), "knn")] == [member, snapshot, baseline]
    assert snapshot_name(3, 2) == "member-03-snap2"


def test_every_registered_blend_method_blends_and_scores():
    from ensemble.blend.methods import BLEND_METHODS, ModelOutputs, get_blend_method

    outputs = ModelOutputs(["a", "b"], PROBS, PROBS[:, :2])
    labels = np.array([0, 1, 1])
    assert list(BLEND_METHODS) == ["mean", "geometric", "greedy"]
    for method in BLEND_METHODS.values():
        blended = method.blend(outputs, labels, seed=0)
        assert blended.weights.sum() == pytest.approx(1.0)
        assert blended.val_probs.shape == (3, PROBS.shape[2]) and blended.test_probs.shape == (2, PROBS.shape[2])
        assert 0.0 <= blended.val_accuracy <= 1.0 and method.help
    mean = get_blend_method("mean").blend(outputs, labels)
    assert np.allclose(mean.val_probs, PROBS.mean(axis=0)) and mean.val_accuracy == accuracy(PROBS.mean(axis=0), labels)
    with pytest.raises(ValueError, match="unknown blend method 'median'; choose one of mean, geometric, greedy"):
        get_blend_method("median")


def test_other_layouts_have_their_own_columns_ids_and_labels():
    kannada = SubmissionLayout.for_layout(LAYOUTS["kannada-mnist"], np.array([5, 6, 9]), 3, range(10))
    text = submission_frame(np.array([1, 2, 3]), kannada).to_csv(index=False, lineterminator="\n")
    assert text == "id,label\n5,1\n6,2\n9,3\n"
    check_submission_text(text, kannada)
    with pytest.raises(SubmissionError, match="line 3: id is '7', expected 6 \\(ids follow the test file's id column"):
        check_submission_text("id,label\n5,1\n7,2\n9,3\n", kannada)
    sign = SubmissionLayout.for_layout(LAYOUTS["sign-language-mnist"], None, 2, [c for c in range(25) if c != 9])
    check_submission_text("id,label\n1,24\n2,10\n", sign)  # a dataset: predictions as id,label, ids 1..N
    with pytest.raises(SubmissionError, match="line 2: label is '9', expected one of 0..8, 10..24"):
        check_submission_text("id,label\n1,9\n2,10\n", sign)
    assert label_ranges([0, 1, 2, 5, 7, 8]) == "0..2, 5, 7..8"
