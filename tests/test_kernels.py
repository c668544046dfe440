"""Jobs on Kaggle, end to end, against the stand-in service (tests/standin): each session is a real Jupyter
kernel in a "Kaggle image" without ensemble or its small dependencies, with read-only inputs under
/kaggle/input, no package index and no credentials. One epoch on slices of the sample digits."""
import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from ensemble.cli import main
from ensemble.job.record import load_record
from ensemble.job.records import read_kernel_versions, read_submission_records
from ensemble.store.workspace import Workspace

TRAIN = ("--epochs", "1", "--model", "seed004", "--limit-train", "300", "--precision", "float32")


def invoke(home, *args):
    return CliRunner().invoke(main, ["--home", str(home), *map(str, args)])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def small_copy(source: Path, out: Path, train_rows: int = 400, test_rows: int = 200) -> Path:
    """The sample's files with fewer rows (the sessions predict the whole test file)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.csv", train_rows), ("test.csv", test_rows)):
        lines = (source / name).read_text().splitlines()
        (out / name).write_text("\n".join(lines[: rows + 1]) + "\n")
    return out


@pytest.fixture
def digits(kaggle_service, sample_dir, tmp_path):
    data = small_copy(sample_dir, tmp_path / "data")
    kaggle_service.add_competition("digit-recognizer", {"train.csv": data / "train.csv", "test.csv": data / "test.csv"})
    return data


def test_a_job_trains_across_two_sessions_and_comes_back(kaggle_service, digits, tmp_path, monkeypatch):
    home = tmp_path / "home"
    # session 1 is cut off once member-00 is done, as Kaggle kills a session at its time limit
    monkeypatch.setenv("STANDIN_CUT_WHEN", "models/t4/member-00/metrics.json")
    first = invoke(home, "kernel", "train", "--n", 2, *TRAIN, "--data", digits, "--job", "t4", "--every", 1)
    assert first.exit_code == 1, first.output
    error = first.output.strip().splitlines()[-1]
    assert error.startswith("Error: the Kaggle session tester/ensemble-t4 version 1 ended in error: Notebook "
                            "exceeded its time limit (log: ") and "ensemble kernel fetch --job t4" in error
    assert "wheels   tester/ensemble-wheels (uploaded ensemble " in first.output
    assert "pushed   tester/ensemble-t4 version 1 (NvidiaTeslaT4; internet off)" in first.output
    request = kaggle_service.kernel("tester/ensemble-t4")["versions"][0]["request"]
    assert (request["enable_internet"], request["enable_gpu"], request["machine_shape"]) == (False, True,
                                                                                             "NvidiaTeslaT4")
    monkeypatch.delenv("STANDIN_CUT_WHEN")
    status = invoke(home, "kernel", "status", "--job", "t4")
    assert status.exit_code == 0
    assert status.output.startswith("tester/ensemble-t4 version 1: error (Notebook exceeded its time limit)\n  | ")

    fetched = invoke(home, "kernel", "fetch", "--job", "t4")
    assert fetched.exit_code == 0, fetched.output
    assert "job t4 from tester/ensemble-t4 version 1: imported member-00" in fetched.output
    ws = Workspace(home)
    kept = digest(home / "models/t4/member-00/best.keras")

    second = invoke(home, "kernel", "train", "--job", "t4", "--every", 1)
    assert second.exit_code == 0, second.output
    assert "pushed   tester/ensemble-t4 version 2 (NvidiaTeslaT4; internet off; continues from version 1's output)" \
        in second.output
    assert "wheels   tester/ensemble-wheels (unchanged, reused)" in second.output
    assert "job t4 from tester/ensemble-t4 version 2: imported member-01; kept here: member-00 (finished here)" \
        in second.output
    sources = kaggle_service.kernel("tester/ensemble-t4")["versions"][1]["request"]["kernel_data_sources"]
    assert sources == ["tester/ensemble-t4/1"]
    log = kaggle_service.log_text("tester/ensemble-t4")
    assert "trained 1, already done 1" in log  # the session did not train member-00 again
    assert "Kaggle session: --time-limit" in log and "\x1b[" not in log  # plain lines, no cursor codes
    assert digest(home / "models/t4/member-00/best.keras") == kept

    versions = read_kernel_versions(ws, "t4")
    assert [(v.version, v.status, v.imported) for v in versions] == [(1, "error", ("member-00",)),
                                                                     (2, "complete", ("member-01",))]
    record = load_record(ws, "t4")
    assert [m.state.value for m in record.members] == ["done", "done"]
    assert record.data_dir == str(digits.resolve())  # the local job keeps its own data folder
    assert invoke(home, "blend", "--job", "t4").exit_code == 0
    board = invoke(home, "leaderboard", "--job", "t4", "--format", "csv")
    assert board.exit_code == 0 and "member-01" in board.output


def test_the_generated_notebook_leaves_the_job_and_a_checked_submission_in_working(kaggle_service, digits, tmp_path):
    home = tmp_path / "home"
    # followed from a terminal, then Ctrl-C: the following stops, the session goes on
    follower = subprocess.Popen([sys.executable, "-m", "ensemble.cli", "--home", str(home), "kernel", "train", "--n", "1",
                                 *TRAIN, "--data", str(digits), "--job", "c", "--accelerator", "none", "--every", "1"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    for line in follower.stdout:
        seen.append(line)
        if line.startswith("pushed   tester/ensemble-c version 1"):
            break
    time.sleep(2)
    follower.send_signal(signal.SIGINT)
    rest, _ = follower.communicate(timeout=60)
    assert follower.returncode == 130, "".join(seen) + rest
    assert rest.strip().splitlines()[-1] == ("stopped following; the session goes on on Kaggle: `ensemble kernel "
                                             "status` shows it, `ensemble kernel fetch` brings its output")
    session = kaggle_service.wait("tester/ensemble-c", timeout=300)
    assert session["status"] == "COMPLETE", kaggle_service.log_text("tester/ensemble-c")[-3000:]
    assert {mount["slug"] for mount in session["mounts"]} == {"digit-recognizer", "ensemble-wheels", "ensemble-job-c"}
    request = session["request"]
    assert (request["enable_internet"], request["enable_gpu"], request["machine_shape"] or None) == (False, False, None)
    output = kaggle_service.output_dir("tester/ensemble-c")
    assert (output / "jobs/c/job.json").is_file() and (output / "models/c/member-00/best.keras").is_file()
    assert not (output / ".cache").exists()  # the parsed-CSV cache went to /kaggle/temp, not into the output
    assert json.loads((output / "jobs/c/job.json").read_text())["data_dir"] == "/kaggle/input/digit-recognizer"
    checked = invoke(home, "check", output / "submissions/submission.csv", "--data", digits)
    assert checked.exit_code == 0 and "OK (200 rows" in checked.output
    assert (output / "submissions/c/leaderboard.md").is_file()
    log = kaggle_service.log_text("tester/ensemble-c")
    assert "installing ensemble offline from /kaggle/input/ensemble-wheels" in log
    assert "job c from /kaggle/temp/restore/" in log and "the job keeps " in log
    fetched = invoke(home, "kernel", "fetch", "--job", "c")
    assert fetched.exit_code == 0 and "imported member-00" in fetched.output


def kannada_sample(sample_dir: Path, out: Path, runner_home: Path) -> Path:
    result = invoke(runner_home, "data", "sample", "--out", out, "--format", "kannada-mnist")
    assert result.exit_code == 0, result.output
    for name, rows in (("train.csv", 400), ("test.csv", 200)):
        lines = (out / name).read_text().splitlines()
        (out / name).write_text("\n".join(lines[: rows + 1]) + "\n")
    return out


def test_a_code_competition_is_scored_from_an_offline_notebook_on_hidden_rows(kaggle_service, sample_dir,
                                                                           tmp_path):
    home = tmp_path / "home"
    data = kannada_sample(sample_dir, tmp_path / "kannada", home)
    full = tmp_path / "kannada-full"
    invoke(home, "data", "sample", "--out", full, "--format", "kannada-mnist")
    # the hidden test set: other rows (and another row count) than the public test.csv, with their answers
    test = pd.read_csv(full / "test.csv").iloc[500:650]
    answers = pd.read_csv(full / "test_labels.csv").iloc[500:650]
    hidden = tmp_path / "hidden-test.csv"
    test.to_csv(hidden, index=False)
    kaggle_service.add_competition("Kannada-MNIST", {"train.csv": data / "train.csv", "test.csv": data / "test.csv"},
                                   code=True, hidden={"test.csv": hidden,
                                                      "solution.csv": answers.to_csv(index=False)})
    assert invoke(home, "train", "--n", 1, *TRAIN, "--data", data, "--job", "kn").exit_code == 0
    assert invoke(home, "blend", "--job", "kn").exit_code == 0

    result = invoke(home, "submit", "--job", "kn", "-m", "1 x seed004", "--wait", "--timeout", 600)
    assert result.exit_code == 0, result.output
    assert "pushed   tester/ensemble-submit-kn version 1: predicts Kannada-MNIST's test file offline" in result.output
    assert "public score" in result.output
    entry = read_submission_records(Workspace(home), "kn")[-1]
    assert (entry.competition, entry.kernel, entry.kernel_version) == ("Kannada-MNIST", "tester/ensemble-submit-kn", 1)
    assert entry.blend is not None and entry.blend.models == ("member-00",) and entry.public_score > 0.1
    submit = next(call for call in kaggle_service.calls() if call[:2] == ["competitions", "submit"])
    assert submit[:8] == ["competitions", "submit", "Kannada-MNIST", "-k", "tester/ensemble-submit-kn", "-v", "1",
                          "-f"]
    rerun = kaggle_service.submissions("Kannada-MNIST")[-1]
    assert rerun["kind"] == "code" and rerun["status"].endswith("COMPLETE")


def test_failures_are_one_line_and_record_nothing(kaggle_service, digits, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("STANDIN_REFUSE_ACCELERATOR", "You have used your weekly GPU quota")
    refused = invoke(home, "kernel", "train", "--n", 1, *TRAIN, "--data", digits, "--job", "q", "--every", 1)
    assert refused.exit_code == 1
    assert refused.output.strip().splitlines()[-1] == ("Error: Kaggle refused the notebook: Kernel push error: You have "
                                                       "used your weekly GPU quota")
    assert read_kernel_versions(Workspace(home), "q") == []

    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    monkeypatch.setenv("HOME", str(tmp_path / "nobody"))
    missing = invoke(home, "kernel", "train", "--n", 1, *TRAIN, "--data", digits, "--job", "c")
    assert missing.exit_code == 1 and missing.output.startswith("Error: the kaggle CLI has no credentials")
    assert not (home / "jobs/c").exists()

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    no_cli = invoke(home, "kernel", "status", "--job", "q")
    assert no_cli.exit_code == 1 and "job q has no Kaggle notebook yet" in no_cli.output
    no_cli = invoke(home, "kernel", "train", "--job", "q")
    assert no_cli.exit_code == 1 and "the kaggle CLI is not installed" in no_cli.output
    assert read_kernel_versions(Workspace(home), "q") == []
    assert json.loads((home / "jobs/q/job.json").read_text())["name"] == "q"


def test_a_missing_output_or_a_refused_dataset_is_one_line_and_imports_nothing(kaggle_service, digits, tmp_path):
    from ensemble.api import Job
    from ensemble.job.records import KernelVersion, record_kernel_version
    from kaggle_service import write_kernel

    home = tmp_path / "home"
    Job.create(home, data=digits, job="o", n=1, epochs=1, model="seed004", limit_train=300)
    # a version whose session wrote nothing: its output holds no job
    write_kernel(tmp_path / "nb", ["print('nothing kept')"], "tester/ensemble-o")
    assert kaggle_service.run("kernels", "push", "-p", tmp_path / "nb").returncode == 0
    kaggle_service.wait("tester/ensemble-o")
    record_kernel_version(Workspace(home), "o", KernelVersion("tester/ensemble-o", 1, "train", "now", None))
    fetched = invoke(home, "kernel", "fetch", "--job", "o")
    assert fetched.exit_code == 1
    assert fetched.output.strip() == ("Error: the output of tester/ensemble-o version 1 holds no job o (log: nothing "
                                      "kept); nothing imported")
    assert read_kernel_versions(Workspace(home), "o")[0].fetched is None
    assert not (home / "models/o").exists()

    # the service no longer has the wheels dataset this machine uploaded: its own words, nothing recorded
    ws = Workspace(home)
    record = ws.cache_dir / "kaggle" / "datasets.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"tester/ensemble-wheels": {"content_sha256": "old", "uploaded": "then"}}))
    refused = invoke(home, "kernel", "wheels")
    assert refused.exit_code == 1 and refused.output.startswith("Error: `kaggle datasets version` failed (exit 1): ")
    assert "404" in refused.output and len(refused.output.strip().splitlines()) == 1
    assert json.loads(record.read_text())["tester/ensemble-wheels"]["content_sha256"] == "old"
