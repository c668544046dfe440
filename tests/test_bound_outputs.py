"""Never a silently wrong submission: outputs bound to the files they came from, read-only workspaces,
changed data files named. One job is trained once; each test changes a copy of it and of its data."""
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from ensemble.cli import main
from ensemble.data.layouts import LAYOUTS, LayoutError, data_files, detect_layout, renamed_files
from ensemble.job.outputs import Metrics, OutputShape
from ensemble.run.request import TrainRequest
from ensemble.run.runner import prepare_job, request_spec
from ensemble.store.workspace import Workspace

# a small net: CI time
SLICE = ["--epochs", "1", "--limit-train", "300", "--no-tta", "--precision", "float32", "--model", "seed004"]


def invoke(home, *args):
    return CliRunner().invoke(main, ["--home", str(home), *map(str, args)])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def bound_job(tmp_path_factory, sample_dir):
    """A job of two one-epoch members and its blend, in base/home, on a copy of the sample in base/data."""
    base = tmp_path_factory.mktemp("bound")
    shutil.copytree(sample_dir, base / "data")
    result = invoke(base / "home", "train", "--job", "b", "--n", "2", "--data", base / "data", *SLICE)
    assert result.exit_code == 0, result.output
    assert invoke(base / "home", "blend", "--job", "b").exit_code == 0
    return base


@pytest.fixture
def job_copy(bound_job, tmp_path):
    """(home, data) copies of the trained job, its record pointing at the copied data."""
    shutil.copytree(bound_job, tmp_path / "base")
    home, data = tmp_path / "base/home", tmp_path / "base/data"
    record_path = home / "jobs/b/job.json"
    record = json.loads(record_path.read_text())
    record["data_dir"] = str(data)
    record_path.write_text(json.dumps(record))
    return home, data


def reorder_rows(csv_path: Path, seed: int = 1) -> None:
    """The same rows in another order: what a re-download or a refreshed Kaggle test set can look like."""
    frame = pd.read_csv(csv_path)
    frame.sample(frac=1, random_state=seed).to_csv(csv_path, index=False)


def member_digests(home: Path) -> dict[str, str]:
    """What training made (kept weights, history): predicting again must leave them as they are."""
    return {str(path.relative_to(home)): digest(path) for name in ("best.keras", "history.csv")
            for path in sorted((home / "models/b").glob(f"member-*/{name}"))}


def test_every_output_records_the_test_file_and_split_it_came_from(job_copy):
    home, data = job_copy
    test_sha = digest(data / "test.csv")
    for member in ("member-00", "member-01"):
        metrics = json.loads((home / f"models/b/{member}/metrics.json").read_text())
        assert metrics["test_sha256"] == test_sha and len(metrics["split_sha256"]) == 64
    blends = json.loads((home / "jobs/b/blends.json").read_text())
    assert blends[-1]["test_sha256"] == test_sha


def test_a_reordered_test_file_is_refused_then_predicted_again_without_training(job_copy):
    home, data = job_copy
    submission = home / "submissions/submission.csv"
    before, trained = digest(submission), member_digests(home)
    reorder_rows(data / "test.csv")

    blended = invoke(home, "blend", "--job", "b")
    assert blended.exit_code == 1
    assert f"{data / 'test.csv'} changed since 2 models of job 'b' predicted it" in blended.output
    assert "`ensemble train --job b` predicts member-00, member-01 again" in blended.output
    assert digest(submission) == before  # nothing written
    checked = invoke(home, "check", "--job", "b")
    assert checked.exit_code == 1 and "blended from outputs of another test.csv" in checked.output
    assert "Traceback" not in blended.output + checked.output

    again = invoke(home, "train", "--job", "b")
    assert again.exit_code == 0, again.output
    assert again.output.count("predicting it again from its kept weights (nothing is retrained)") == 2
    assert member_digests(home) == trained
    blended = invoke(home, "blend", "--job", "b")
    assert blended.exit_code == 0, blended.output
    predicted = invoke(home, "predict", "--job", "b", data / "test.csv", "--out", home / "predicted.csv")
    assert predicted.exit_code == 0, predicted.output
    assert (home / "predicted.csv").read_text() == submission.read_text()
    assert invoke(home, "check", "--job", "b").exit_code == 0


def test_a_test_file_replaced_between_members_is_blended_only_once_every_member_predicted_it(job_copy):
    """member-01 predicts the new test file, member-00 still holds the old one: half of them."""
    home, data = job_copy
    reorder_rows(data / "test.csv", seed=2)
    ws = Workspace(home)
    prepare_job(ws, TrainRequest(job="b"))  # the plan a run on the new file writes
    member = subprocess.run([str(Path(os.sys.executable)), "-m", "ensemble.member", "--home", str(home),
                             "--job", "b", "--member", "1"], capture_output=True, text=True, timeout=300)
    assert member.returncode == 0, member.stderr[-2000:]
    metrics = {name: json.loads((home / f"models/b/{name}/metrics.json").read_text())["test_sha256"]
               for name in ("member-00", "member-01")}
    assert metrics["member-01"] == digest(data / "test.csv") != metrics["member-00"]

    blended = invoke(home, "blend", "--job", "b")
    assert blended.exit_code == 1 and "changed since 1 model of job 'b' predicted it" in blended.output
    assert "predicts member-00 again" in blended.output
    board = invoke(home, "leaderboard", "--job", "b", "--format", "csv")
    assert board.exit_code == 0 and "predicted from other files, left out: member-00" in board.output
    again = invoke(home, "train", "--job", "b")
    assert again.exit_code == 0, again.output
    assert "member-00: " in again.output and "member-01: " not in again.output.split("job b (continued)")[0]
    assert "1 to train, 1 already done" in again.output
    assert invoke(home, "blend", "--job", "b").exit_code == 0
    assert invoke(home, "predict", "--job", "b", data / "test.csv", "--out", home / "predicted.csv").exit_code == 0
    assert (home / "predicted.csv").read_text() == (home / "submissions/submission.csv").read_text()


def test_outputs_saved_before_binding_are_held_to_the_test_file_their_job_was_created_from(job_copy):
    """Old outputs say nothing, but their job recorded its test file and older versions refused any other:
    that is where they came from. Only a record without it leaves their origin unknown: offered, not forced."""
    home, data = job_copy
    for path in (home / "models/b").glob("member-*/metrics.json"):
        metrics = json.loads(path.read_text())
        del metrics["test_sha256"], metrics["split_sha256"]
        path.write_text(json.dumps(metrics))
    blended = invoke(home, "blend", "--job", "b")
    assert blended.exit_code == 0 and "note:" not in blended.output, blended.output

    reorder_rows(data / "test.csv")
    refused = invoke(home, "blend", "--job", "b")
    assert refused.exit_code == 1 and "the file the job was created from); " in refused.output, refused.output

    record_path = home / "jobs/b/job.json"
    record = json.loads(record_path.read_text())
    record["spec"]["test_sha256"] = ""  # a record of a version that kept no test hash
    record_path.write_text(json.dumps(record))
    blended = invoke(home, "blend", "--job", "b")
    assert blended.exit_code == 0, blended.output
    assert ("note: member-00, member-01: saved before outputs recorded which test file they came from; if the "
            "test file changed since, `ensemble train --job b` predicts members again") in blended.output
    assert json.loads((home / "jobs/b/blends.json").read_text())[-1]["test_sha256"] is None  # unknown: not claimed

    frame = pd.read_csv(data / "test.csv")
    frame.iloc[:-1].to_csv(data / "test.csv", index=False)  # one row fewer: these outputs cannot be its
    refused = invoke(home, "blend", "--job", "b")
    assert refused.exit_code == 1 and "shape (1000, 10), expected (999, 10)" in refused.output

    again = invoke(home, "train", "--job", "b")
    assert again.exit_code == 0, again.output
    metrics = json.loads((home / "models/b/member-00/metrics.json").read_text())
    assert metrics["test_sha256"] == digest(data / "test.csv") and metrics["n_test"] == 999


def test_a_changed_train_file_is_named_with_the_date_the_job_was_created_from_it(job_copy):
    home, data = job_copy
    created = json.loads((home / "jobs/b/job.json").read_text())["created"]
    reorder_rows(data / "train.csv")
    result = invoke(home, "train", "--job", "b")
    assert result.exit_code == 1
    assert f"{data / 'train.csv'} changed since job 'b' was created from it on {created} (sha256 " in result.output
    assert "Put the job's file back to continue it, or train a new job on this data with --job NEW_NAME" \
        in result.output
    assert "train_sha256" not in result.output and "Rerun with the job's options" not in result.output


# --- read-only workspaces ----------------------------------------------------------------------------

@pytest.fixture
def read_only_home(job_copy, tmp_path):
    """The job's home bind-mounted read-only (how a Kaggle session sees an earlier session's output)."""
    home, data = job_copy
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "--bind", str(home), str(mount)], capture_output=True).returncode != 0:
        pytest.skip("bind mounts need root")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)], check=True, capture_output=True)
        with pytest.raises(OSError):
            (mount / "probe").write_text("x")
        yield mount, data
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_every_reading_command_works_on_a_read_only_workspace(read_only_home, tmp_path):
    home, data = read_only_home
    for args in (["status", "--job", "b"], ["jobs"], ["leaderboard", "--job", "b", "--format", "csv"],
                 ["check", "--job", "b"], ["check", home / "submissions/submission.csv", "--data", data],
                 ["predict", "--job", "b", data / "test.csv", "--out", tmp_path / "out.csv"]):
        result = invoke(home, *args)
        assert result.exit_code == 0, (args, result.output)
        assert "Traceback" not in result.output
    board = invoke(home, "leaderboard", "--job", "b", "--format", "csv")
    assert board.output.splitlines()[0].startswith("rank,model")
    assert f"report files not written: {home / 'submissions/b'} is read-only" in board.output
    assert (tmp_path / "out.csv").read_text() == (home / "submissions/submission.csv").read_text()


@pytest.mark.parametrize("args, path", [
    (["blend", "--job", "b"], "submissions/b-mean.csv"),
    (["train", "--job", "b"], "jobs/b/lock"),
    (["baselines", "--job", "b", "--only", "tree"], "models/b/baseline-tree"),
])
def test_every_writing_command_on_a_read_only_workspace_says_so_in_one_line(read_only_home, args, path):
    home, _ = read_only_home
    result = invoke(home, *args)
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: cannot write {home / path} (Read-only file system): `ensemble {args[0]}` must write there; copy "
        f"the workspace somewhere writable (cp -r {home} ~/ensemble-work) and rerun with --home ~/ensemble-work"]


# --- the pure parts --------------------------------------------------------------------------------

def test_outputs_are_held_against_the_files_of_the_shape():
    shape = OutputShape(10, 20, 10, "a" * 64, "s" * 64, "/data/test.csv")
    bound = Metrics(0.9, 0.3, test_sha256="a" * 64, split_sha256="s" * 64)
    assert shape.origin_problem(bound) is None and shape.binds(bound)
    other_test = Metrics(0.9, 0.3, test_sha256="b" * 64, split_sha256="s" * 64)
    assert shape.origin_problem(other_test) == (f"predicted from another test.csv (sha256 {'b' * 12}); "
                                                f"/data/test.csv now has sha256 {'a' * 12}")
    other_split = Metrics(0.9, 0.3, test_sha256="a" * 64, split_sha256="t" * 64)
    assert "another validation split" in shape.origin_problem(other_split)
    unknown = Metrics(0.9, 0.3)  # saved before outputs recorded it: readable, never skipped when predicting
    assert shape.origin_problem(unknown) is None and not shape.binds(unknown)
    assert OutputShape(10, None, 10).origin_problem(other_test) is None  # a test file that cannot be read now


def test_format_takes_renamed_files_whose_headers_fit_and_says_which_is_which(tmp_path, sample_dir, ws):
    folder = tmp_path / "sign"
    result = invoke(tmp_path, "data", "sample", "--format", "sign-language-mnist", "--out", folder)
    assert result.exit_code == 0, result.output
    (folder / "sign_mnist_train.csv").rename(folder / "train.csv")
    (folder / "sign_mnist_test.csv").rename(folder / "test.csv")
    layout = LAYOUTS["sign-language-mnist"]
    assert data_files(layout, folder) == (folder / "train.csv", folder / "test.csv")
    assert renamed_files(LAYOUTS["digit-recognizer"], folder) is None  # pixel1.. is not Digit Recognizer's header
    with pytest.raises(LayoutError, match="fits several layouts .*fashion-mnist, sign-language-mnist"):
        detect_layout(folder)  # unnamed, the headers fit two layouts
    asked = request_spec(ws, TrainRequest.from_options(data=folder, format="sign-language-mnist", epochs=1,
                                                       precision="float32"), [])
    assert asked.notes == ["--format sign-language-mnist: took train.csv as its training file (sign_mnist_train.csv) "
                           "and test.csv as its test file (sign_mnist_test.csv); their headers fit the layout"]
    assert asked.spec.classes == tuple(sorted(set(np.unique(asked.train.labels))))
    names = ["a.csv", "b.csv"]  # no name says which is train: the larger file is
    (folder / "train.csv").rename(folder / names[1])
    (folder / "test.csv").rename(folder / names[0])
    assert data_files(layout, folder) == (folder / "b.csv", folder / "a.csv")
