import numpy as np

from ensemble.report.rank import COLUMNS, accuracy_by_members_blended, per_class_accuracy, rank_entries


def entry(model, kind, acc, loss, **extra):
    return {"model": model, "kind": kind, "val_accuracy": acc, "val_logloss": loss, "fit_s": extra.get("fit", 1.0),
            "predict_ms_per_1k": 2.0, "params": 10, "seed": extra.get("seed"), "epochs": extra.get("epochs")}


def test_ranking_is_by_accuracy_then_log_loss_then_name():
    frame = rank_entries([
        entry("knn", "baseline", 0.97, 0.30),
        entry("member-00", "member", 0.99, 0.040, seed=0, epochs=50),
        entry("blend-mean", "blend", 0.995, 0.020),
        entry("member-01", "member", 0.99, 0.030, seed=1, epochs=50),
        entry("tree", "baseline", 0.87, 4.0),
        entry("forest", "baseline", 0.97, 0.30),
    ])
    assert list(frame.columns) == COLUMNS
    assert frame["model"].tolist() == ["blend-mean", "member-01", "member-00", "forest", "knn", "tree"]
    assert frame["rank"].tolist() == [1, 2, 3, 4, 5, 6]
    assert frame.loc[1, "val_logloss"] == 0.030 and frame.loc[1, "seed"] == 1


def test_accuracy_by_members_blended_in_order_and_over_random_orders():
    y = np.array([0, 1, 1])
    good = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    bad = np.array([[0.1, 0.9], [0.9, 0.1], [0.8, 0.2]])
    curve = accuracy_by_members_blended(np.stack([good, bad, good]), y, orders=10)
    assert curve["members"].tolist() == [1, 2, 3]
    assert curve["in_order"].tolist() == [1.0, 1 / 3, 1.0]  # (good+bad)/2 gets rows 0 and 1 wrong
    assert curve["random_min"].tolist()[0] == 0.0 and curve["random_max"].tolist()[0] == 1.0
    assert curve["random_min"].tolist()[2] == curve["random_max"].tolist()[2] == 1.0


def test_per_class_accuracy():
    y = np.array([0, 0, 1, 1])
    probs = np.eye(10)[[0, 1, 1, 1]]
    result = per_class_accuracy(probs, y)
    assert result[:2].tolist() == [0.5, 1.0] and np.isnan(result[2:]).all()


def test_ranking_breaks_ties_by_log_loss_then_name_and_an_empty_board_has_every_column():
    def entry(model, accuracy, logloss):
        return {"model": model, "kind": "member", "val_accuracy": accuracy, "val_logloss": logloss}

    frame = rank_entries([entry("b", 0.9, 0.3), entry("a", 0.9, 0.3), entry("c", 0.9, 0.2), entry("d", 0.95, 0.5)])
    assert frame[["rank", "model"]].values.tolist() == [[1, "d"], [2, "c"], [3, "a"], [4, "b"]]
    empty = rank_entries([])
    assert list(empty.columns) == COLUMNS and len(empty) == 0


def test_confident_mistakes_are_the_wrong_rows_the_blend_was_surest_of():
    from ensemble.report.rank import Mistake, confident_mistakes

    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.3, 0.7], [0.95, 0.05]])
    labels = np.array([1, 1, 0, 0, 0])  # rows 0, 2 and 3 are wrong
    assert confident_mistakes(probs, labels) == [Mistake(0, 1, 0, 0.9), Mistake(3, 0, 1, 0.7), Mistake(2, 0, 1, 0.6)]
    assert confident_mistakes(probs, labels, count=1) == [Mistake(0, 1, 0, 0.9)]
    assert confident_mistakes(probs, np.argmax(probs, axis=1)) == []
    tie = np.array([[0.3, 0.7], [0.3, 0.7]])
    assert [m.row for m in confident_mistakes(tie, np.array([0, 0]))] == [0, 1]  # a tie: the earlier row first


def test_the_growing_blend_counts_each_members_training_seconds_once():
    from ensemble.report.rank import blend_by_training_seconds

    frame = blend_by_training_seconds(["member-00-snap1", "member-00-snap2", "member-01", "member-02"],
                                      {"member-00": 30.0, "member-01": 20.0, "member-02": 25.0}, [0.8, 0.85, 0.9, 0.91])
    assert frame["seconds"].tolist() == [30.0, 30.0, 50.0, 75.0]
    assert frame["accuracy"].tolist() == [0.8, 0.85, 0.9, 0.91] and frame["models"].tolist() == [1, 2, 3, 4]


def test_each_accuracy_is_shown_with_its_errors_and_standard_error():
    from ensemble.report.render import accuracy_cell, render_markdown

    assert accuracy_cell(0.985, 1000) == "0.9850 (15 err, ±0.38)"
    assert accuracy_cell(1.0, 300) == "1.0000 (0 err, ±0.00)"
    assert accuracy_cell(0.9, None) == "0.9000" and accuracy_cell(float("nan"), 100) == ""
    frame = rank_entries([entry("member-00", "member", 0.9, 0.3) | {"val_rows": 200},
                          entry("blend-mean", "blend", 0.95, 0.2) | {"val_rows": 1000}])
    table = render_markdown(frame)
    assert "0.9500 (50 err, ±0.69)" in table and "0.9000 (20 err, ±2.12)" in table
    assert "val_rows" not in table.splitlines()[0] and "val_rows" in frame.to_csv(index=False).splitlines()[0]
