"""Every built-in layout end to end: train (1 epoch, a slice) -> blend -> check -> predict -> leaderboard."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from ensemble.cli import main
from ensemble.data.layouts import LAYOUTS, data_files
from ensemble.data.sources import make_sample, sample_digits, write_kaggle_csvs
from ensemble.data.tables import read_train_csv
from ensemble.job.spec import JobSpec

SIGN_LABELS = np.array([label for label in range(25) if label != 9])  # 24 letters: no J (9), no Z (25)


def invoke(home, *args):
    return CliRunner().invoke(main, ["--home", str(home), *map(str, args)])


def write_layout(folder, name):
    """The sample digits in a layout; for Sign Language MNIST relabelled with its 24 sparse labels, every
    label present in the first 300 rows."""
    fmt = LAYOUTS[name]
    if name != "sign-language-mnist":
        return make_sample(folder, fmt=fmt)
    images, _ = sample_digits()
    labels = SIGN_LABELS[np.random.default_rng(0).permutation(len(images)) % len(SIGN_LABELS)].astype(np.uint8)
    return write_kaggle_csvs(folder, images[:4000], labels[:4000], images[4000:], labels[4000:], fmt)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_a_layout_goes_from_csv_to_a_checked_submission_and_predictions(name, tmp_path):
    fmt, folder, home = LAYOUTS[name], tmp_path / "data", tmp_path / "home"
    write_layout(folder, name)
    trained = invoke(home, "train", "--n", "1", "--epochs", "1", "--model", "seed004", "--limit-train", "300",
                     "--data", folder, "--job", "j", "--precision", "float32")
    assert trained.exit_code == 0, trained.output
    spec = json.loads((home / "jobs/j/job.json").read_text())["spec"]
    assert spec["layout"] == name
    expected_classes = SIGN_LABELS.tolist() if name == "sign-language-mnist" else list(range(10))
    assert spec["classes"] == expected_classes
    assert np.load(home / "models/j/member-00/test_probs.npy").shape == (1000, len(expected_classes))

    assert invoke(home, "blend", "--job", "j").exit_code == 0
    lines = (home / "submissions/submission.csv").read_text().splitlines()
    assert lines[0] == ",".join(fmt.submission)
    first_ids = [int(line.split(",")[0]) for line in lines[1:4]]  # 1..N unless the test file names its rows
    assert first_ids == ([100000, 100001, 100002] if fmt.ids_from_test else [1, 2, 3])
    assert len(lines) == 1001
    assert {int(line.split(",")[1]) for line in lines[1:]} <= set(expected_classes)

    checked = invoke(home, "check", home / "submissions/submission.csv", "--data", folder)
    assert checked.exit_code == 0 and "OK (1000 rows" in checked.output, checked.output

    test_path = data_files(fmt, folder)[1]
    predicted = invoke(home, "predict", "--job", "j", test_path, "--out", tmp_path / "predictions.csv")
    assert predicted.exit_code == 0, predicted.output
    assert (tmp_path / "predictions.csv").read_text() == (home / "submissions/submission.csv").read_text()

    board = invoke(home, "leaderboard", "--job", "j", "--format", "csv")
    rows = {line.split(",")[1]: line.split(",") for line in board.output.splitlines()[1:] if line[:1].isdigit()}
    answers = (folder / "test_labels.csv").is_file()  # beside an unlabelled test file, in the submission format
    assert (rows["member-00"][5] != "") == (fmt.test_labelled or answers)  # test accuracy where labels are known


def test_emnist_style_images_come_out_the_right_way_round_in_a_job(tmp_path, sample_dir):
    """No header, transposed storage: the job's arrays equal the original digits."""
    from ensemble.job.arrays import job_arrays
    from ensemble.job.record import load_record
    from ensemble.run.request import TrainRequest
    from ensemble.run.runner import prepare_job
    from ensemble.store.workspace import Workspace

    folder = tmp_path / "emnist"
    make_sample(folder, fmt=LAYOUTS["emnist"])
    ws = Workspace.resolve(tmp_path / "home")
    prepare_job(ws, TrainRequest(n=1, data_dir=folder, job="e", spec=JobSpec(limit_train=200, precision="float32",
                                                                                     folds=0)),
                gpu_capabilities=[])
    arrays = job_arrays(ws, load_record(ws, "e"))
    original = read_train_csv(sample_dir / "train.csv").images[:200]
    seen = np.concatenate([arrays.x_train, arrays.x_val])[..., 0]
    assert sorted(map(bytes, seen)) == sorted(map(bytes, original))


def test_a_forced_format_that_does_not_fit_says_where(tmp_path, sample_dir):
    result = invoke(tmp_path, "train", "--data", sample_dir, "--format", "kannada-mnist", "--n", "1")
    assert result.exit_code == 1
    assert "test.csv, line 1, column 1: missing column 'id'" in result.output
    assert not (tmp_path / "jobs").exists()


def test_data_sample_writes_any_layout(tmp_path):
    result = invoke(tmp_path, "data", "sample", "--format", "fashion-mnist", "--out", tmp_path / "f")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["fashion-mnist_test.csv", "fashion-mnist_train.csv"]
