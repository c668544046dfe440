import pytest

from ensemble.train import ResumableReduceLROnPlateau, read_history


def _rows(values, learning_rate=1e-4):
    return [{"epoch": i, "val_accuracy": v, "learning_rate": learning_rate} for i, v in enumerate(values)]


@pytest.mark.parametrize("values, learning_rate, best, wait", [
    ([], 1e-4, None, 0),
    ([0.5, 0.6, 0.6, 0.6], 1e-4, 0.6, 2),          # two epochs without improvement so far
    ([0.5, 0.5, 0.5, 0.5], 1e-4, 0.5, 0),          # the third stall reduced the rate and restarted patience
    ([0.5, 0.5, 0.5, 0.5, 0.5], 1e-4, 0.5, 1),
    ([0.5, 0.5, 0.5, 0.5, 0.5], 1e-5, 0.5, 4),     # at min_lr nothing is reduced, the count runs on
    ([0.5, 0.4, 0.7, 0.6], 1e-4, 0.7, 1),
])
def test_reduce_lr_patience_is_replayed_from_history(values, learning_rate, best, wait):
    callback = ResumableReduceLROnPlateau(_rows(values, learning_rate), monitor="val_accuracy", mode="max",
                                          patience=3, factor=0.5, min_lr=1e-5)
    callback.on_train_begin()
    assert (callback.best, callback.wait) == (best, wait)


def test_history_keeps_the_last_row_of_a_repeated_epoch(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,val_accuracy\n0,0.5\n1,0.6\n1,0.65\n2,0.7\n")
    assert read_history(path) == [{"epoch": 0.0, "val_accuracy": 0.5}, {"epoch": 1.0, "val_accuracy": 0.65},
                                  {"epoch": 2.0, "val_accuracy": 0.7}]
    assert read_history(tmp_path / "missing.csv") == []
