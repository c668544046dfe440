"""The Kaggle loop against a stand-in `kaggle` executable that prints the real CLI's formats."""
import argparse
import json
import stat
import sys
import textwrap
import zipfile

import pytest
from click.testing import CliRunner

from ensemble.cli import main
from ensemble.kaggle import competition
from ensemble.kaggle.competition import KaggleError, parse_submissions

HEADER = "fileName,date,description,status,publicScore,privateScore"
STANDIN = textwrap.dedent('''\
    #!{python}
    """Stand-in for the kaggle CLI: the real one's commands, output formats and failures, offline."""
    import json, os, shutil, sys
    from pathlib import Path

    state = Path(os.environ["STANDIN_STATE"])
    log = json.loads(state.read_text()) if state.is_file() else {{"calls": [], "submitted": [], "polls": 0}}
    args = sys.argv[1:]
    log["calls"].append(args)
    def save():
        state.write_text(json.dumps(log))
    if os.environ.get("STANDIN_NOAUTH"):
        save()
        print("Could not find kaggle.json. Make sure it's located in /root/.kaggle. Or use the environment method.")
        sys.exit(1)
    if args[:2] == ["competitions", "download"]:
        out = Path(args[args.index("-p") + 1])
        shutil.copy(os.environ["STANDIN_ZIP"], out / (args[2] + ".zip"))
        print(f"Downloading {{args[2]}}.zip to {{out}}")
        print("100%|##########| 15.3M/15.3M [00:01<00:00, 9.87MB/s]")
    elif args[:2] == ["competitions", "submit"]:
        if os.environ.get("STANDIN_REFUSE"):
            save()
            print("400 Client Error: Bad Request for url: https://www.kaggle.com/api/v1/competitions/submissions/submit")
            sys.exit(1)
        log["submitted"].append({{"file": args[args.index("-f") + 1], "message": args[args.index("-m") + 1]}})
        print("100%|##########| 208k/208k [00:00<00:00, 500kB/s]")
        print("Successfully submitted to Digit Recognizer")
    elif args[:2] == ["competitions", "submissions"]:
        log["polls"] += 1
        ref = os.environ.get("STANDIN_REF") == "1"
        print(("ref," if ref else "") + "{header}")
        done = log["polls"] >= int(os.environ.get("STANDIN_POLLS_TO_SCORE", "2"))
        for number, row in enumerate(reversed(log["submitted"])):
            status = os.environ.get("STANDIN_STATUS", "SubmissionStatus.COMPLETE") if done else "SubmissionStatus.PENDING"
            score = "0.98765" if done and status.endswith("COMPLETE") else ""
            cells = [Path(row["file"]).name, "2026-11-22 04:00:00", '"' + row["message"] + '"', status, score, ""]
            print(((f"{{50000000 + number}},") if ref else "") + ",".join(cells))
        print(("12345," if ref else "") + 'old.csv,2026-01-01 00:00:00,"an older one",SubmissionStatus.COMPLETE,0.97000,')
    save()
''')


@pytest.fixture
def standin(tmp_path, monkeypatch, sample_dir):
    """A `kaggle` on PATH ahead of any real one; its calls are logged to a JSON state file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "kaggle"
    exe.write_text(STANDIN.format(python=sys.executable, header=HEADER))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    archive = tmp_path / "competition.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for name in ("train.csv", "test.csv"):
            bundle.write(sample_dir / name, name)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("STANDIN_STATE", str(tmp_path / "state.json"))
    monkeypatch.setenv("STANDIN_ZIP", str(archive))
    return tmp_path / "state.json"


def calls(state):
    return json.loads(state.read_text())["calls"] if state.is_file() else []


def invoke(home, *args):
    return CliRunner().invoke(main, ["--home", str(home), *map(str, args)])


@pytest.mark.parametrize("with_ref", [False, True])
def test_the_submissions_table_is_read_with_and_without_the_ref_column(with_ref):
    ref = "ref," if with_ref else ""
    text = (f"{ref}{HEADER}\n" + ("123," if with_ref else "") + 'sub.csv,2026-11-22 04:00:00,"mine [x]",'
            "SubmissionStatus.COMPLETE,0.99100,\n" + ("124," if with_ref else "")
            + "b.csv,2026-11-22 04:01:00,other,pending,,\n")
    rows = parse_submissions(text)
    assert [(r.file_name, r.description, r.status, r.public_score) for r in rows] == [
        ("sub.csv", "mine [x]", "complete", 0.991), ("b.csv", "other", "pending", None)]
    assert rows[0].ref == ("123" if with_ref else None)
    with pytest.raises(KaggleError, match="printed no submissions table"):
        parse_submissions("Warning: Looks like you're using an outdated API Version")


def test_our_arguments_parse_with_the_real_kaggle_cli():
    cli = pytest.importorskip("kaggle.cli")  # kaggle 2.x imports without credentials or network
    parser = argparse.ArgumentParser()
    cli.parse_competitions(parser.add_subparsers(dest="command"))
    submit = parser.parse_args(competition.submit_args("digit-recognizer", "s.csv", "a message"))
    assert (submit.competition, submit.file_name, submit.message) == ("digit-recognizer", "s.csv", "a message")
    listing = parser.parse_args(competition.submissions_args("digit-recognizer"))
    assert (listing.competition, listing.csv_display) == ("digit-recognizer", True)
    download = parser.parse_args(competition.download_args("digit-recognizer", "out"))
    assert (download.competition, download.path) == ("digit-recognizer", "out")


@pytest.fixture(scope="module")
def blended_home(tmp_path_factory, sample_dir):
    home = tmp_path_factory.mktemp("kaggle-home")
    trained = invoke(home, "train", "--n", "1", "--epochs", "1", "--model", "seed004", "--limit-train", "300",
                     "--data", sample_dir, "--job", "k", "--precision", "float32")
    assert trained.exit_code == 0, trained.output
    assert invoke(home, "blend", "--job", "k").exit_code == 0
    return home


def test_download_unzips_the_competition(standin, tmp_path):
    result = invoke(tmp_path, "data", "kaggle", "digit-recognizer", "--out", tmp_path / "data")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["test.csv", "train.csv"]
    assert calls(standin) == [["competitions", "download", "digit-recognizer", "-p", str(tmp_path / "data")]]


@pytest.mark.parametrize("with_ref", ["0", "1"])
def test_submit_waits_for_the_score_and_records_it(standin, blended_home, monkeypatch, with_ref):
    monkeypatch.setenv("STANDIN_REF", with_ref)
    monkeypatch.setattr(competition, "POLL_S", 0.01)
    monkeypatch.setattr(competition.time, "sleep", lambda s: None)
    records_file = blended_home / "jobs/k/submissions.json"
    before = len(json.loads(records_file.read_text())) if records_file.is_file() else 0
    result = invoke(blended_home, "submit", "--job", "k", "-m", "1 x seed004", "--wait")
    assert result.exit_code == 0, result.output
    assert "public score 0.98765 (from blend-mean, val accuracy" in result.output
    submitted = json.loads(standin.read_text())["submitted"][-1]
    assert submitted["file"].endswith("submissions/submission.csv")
    assert submitted["message"].startswith("1 x seed004 [ensemble k ")
    records = json.loads((blended_home / "jobs/k/submissions.json").read_text())
    assert len(records) == before + 1
    assert (records[-1]["status"], records[-1]["public_score"], records[-1]["blend"]["method"]) == (
        "complete", 0.98765, "mean")
    board = invoke(blended_home, "leaderboard", "--job", "k", "--format", "md")
    assert "public 0.98765" in board.output


@pytest.mark.parametrize("env, message", [
    ({"STANDIN_NOAUTH": "1"}, "the kaggle CLI has no valid credentials: put your API token in ~/.kaggle/kaggle.json"),
    ({"STANDIN_REFUSE": "1"}, "`kaggle competitions submit` failed (exit 1): 400 Client Error: Bad Request"),
    ({"STANDIN_STATUS": "SubmissionStatus.ERROR", "STANDIN_POLLS_TO_SCORE": "1"},
     "Kaggle could not score the submission"),
    ({"STANDIN_POLLS_TO_SCORE": "1000"}, "no score after 0 s: the submission"),
])
def test_failures_say_what_happened_and_leave_the_job_untouched(standin, blended_home, monkeypatch, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(competition.time, "sleep", lambda s: None)
    records = blended_home / "jobs/k/submissions.json"
    before = records.read_text() if records.is_file() else None
    result = invoke(blended_home, "submit", "--job", "k", "--wait", "--timeout", "0")
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output
    assert (records.read_text() if records.is_file() else None) == before


def test_missing_cli_and_datasets_are_refused_up_front_and_code_competitions_go_through_a_notebook(
        blended_home, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = invoke(blended_home, "submit", "--job", "k")
    assert result.exit_code == 1 and "the kaggle CLI is not installed: pip install 'ensemble[kaggle]'" in result.output
    from ensemble.data.layouts import LAYOUTS

    assert competition.competition_for(LAYOUTS["kannada-mnist"], None) == "Kannada-MNIST"
    assert competition.is_code_competition(LAYOUTS["kannada-mnist"], "Kannada-MNIST")
    assert not competition.is_code_competition(LAYOUTS["digit-recognizer"], "digit-recognizer")
    with pytest.raises(KaggleError, match="the fashion-mnist layout is a Kaggle dataset, not a competition"):
        competition.competition_for(LAYOUTS["fashion-mnist"], None)
    assert competition.competition_for(LAYOUTS["fashion-mnist"], "my-comp") == "my-comp"


def test_a_bad_file_is_not_uploaded(standin, blended_home, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("ImageId,Label\n1,3\n")
    result = invoke(blended_home, "submit", "--job", "k", "--file", bad)
    assert result.exit_code == 1 and "1 rows, expected 1000" in result.output and "not uploaded" in result.output
    assert calls(standin) == []
