"""The Python API (ensemble.Job) and the quickstart notebook, run by a real Jupyter kernel on the sample."""
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from click.testing import CliRunner
from nbclient import NotebookClient

import ensemble
from ensemble import Job
from ensemble.cli import main
from ensemble.job.errors import JobError

NOTEBOOK = Path(__file__).parent.parent / "examples" / "quickstart.ipynb"
TINY = {"n": 2, "epochs": 1, "limit_train": 300, "model": "seed004"}


def with_parameters(notebook, **values):
    """The notebook with its `parameters` cell set to these values (papermill's convention)."""
    cell = next(cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", []))
    cell.source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    return notebook


def test_the_quickstart_notebook_runs_end_to_end_on_the_sample(tmp_path):
    notebook = with_parameters(nbformat.read(NOTEBOOK, as_version=4), home=str(tmp_path / "home"), **TINY)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}},
                   ).execute()
    outputs = ["".join(o.get("text", "") for o in cell.get("outputs", [])) for cell in notebook.cells]
    assert any("blend of 2: val accuracy" in text for text in outputs)
    assert any("1000 test rows, accuracy" in text for text in outputs)
    home = tmp_path / "home"
    record = json.loads((home / "jobs/quickstart/job.json").read_text())
    assert [m["state"] for m in record["members"]] == ["done", "done"]
    assert (home / "submissions/submission.csv").read_text().startswith("ImageId,Label\n1,")
    assert (home / "submissions/quickstart/leaderboard.html").is_file()


@pytest.fixture(scope="module")
def api_job(tmp_path_factory, sample_dir):
    home = tmp_path_factory.mktemp("api")
    job = Job.create(home=home, data=sample_dir, job="api", n=1, epochs=1, limit_train=300, model="seed004",
                     precision="float32")
    outcome = job.train()
    return home, job, outcome


def test_a_created_job_trains_blends_ranks_and_predicts_like_the_cli(api_job, sample_dir, tmp_path):
    home, job, outcome = api_job
    assert (outcome.job, outcome.trained) == ("api", [0])
    assert list(job.status()["state"]) == ["done"]
    result = job.blend()
    assert result.members == ["member-00"] and result.paths[-1] == home / "submissions/submission.csv"
    board = job.leaderboard()
    assert set(board["model"]) == {"member-00", "blend-mean"}
    assert board["rank"].tolist() == [1, 2]

    rows = pd.read_csv(sample_dir / "test.csv").head(40)
    from_frame = job.predict(rows)
    cli_out = tmp_path / "cli.csv"
    rows.to_csv(tmp_path / "rows.csv", index=False)
    done = CliRunner().invoke(main, ["--home", str(home), "predict", "--job", "api", str(tmp_path / "rows.csv"),
                                     "--out", str(cli_out)])
    assert done.exit_code == 0, done.output
    assert from_frame.equals(pd.read_csv(cli_out)) and list(from_frame.columns) == ["ImageId", "Label"]
    assert len(from_frame) == 40


def test_open_finds_jobs_and_errors_are_the_librarys_own(api_job, tmp_path):
    home, job, _ = api_job
    assert Job.open(home=home).name == "api" and Job.open("api", home=home).spec.model == "seed004"
    assert ensemble.Job is Job
    with pytest.raises(JobError, match="no job named 'nope'"):
        Job.open("nope", home=home)
    with pytest.raises(JobError, match="unknown option batch_size"):
        Job.create(home=tmp_path, data=tmp_path, batch_size=64)
    with pytest.raises(JobError, match="exists with a different spec"):
        Job.create(home=home, data=job.record.data_path, job="api", epochs=2)


def test_importing_a_stage_does_not_load_the_api():
    code = "import sys, ensemble.job.spec; assert 'ensemble.api' not in sys.modules and 'keras' not in sys.modules"
    assert os.system(f"{os.sys.executable} -c \"{code}\"") == 0


def test_the_command_line_starts_without_scikit_learn_or_keras():
    # every command pays its imports before it does anything: `ensemble train` before its workers start, whose
    # start-up is then on the clock of a --time-limit job (scikit-learn with scipy: 0.6 s of 1.1 s)
    code = ("import sys, ensemble.cli; loaded = {m.split('.')[0] for m in sys.modules} & {"
            "'sklearn', 'scipy', 'keras', 'tensorflow'}; assert not loaded, loaded")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_the_api_takes_a_width_as_the_flag_does_and_resolves_auto_for_the_members_devices(tmp_path, sample_dir,
                                                                                          monkeypatch):
    from ensemble.run import runner
    from ensemble.run.request import TrainRequest

    assert TrainRequest.from_options(width="0.5").spec.width == 0.5  # text, as the flag gives it
    assert TrainRequest.from_options(width="auto").spec.width == "auto"
    with pytest.raises(JobError, match=r"--width 'half': give a factor for every conv's filters"):
        TrainRequest.from_options(width="half")
    # a machine with two T4s: members asked onto the CPU get the CPU's width, members on a GPU the published net
    monkeypatch.setattr(runner, "list_gpus", lambda: {0: 7.5, 1: 7.5})
    assert runner.member_gpu_capabilities(TrainRequest.from_options(gpus="cpu")) == []
    assert runner.member_gpu_capabilities(TrainRequest.from_options(gpus="1")) == [7.5]
    assert runner.member_gpu_capabilities(TrainRequest.from_options(executor="ray")) is None
    on_cpu = Job.create(tmp_path / "home", data=sample_dir, job="c", n=1, gpus="cpu", limit_train=300)
    assert on_cpu.spec.width == 0.5 and on_cpu.spec.precision == "float32"
    on_gpu = Job.create(tmp_path / "home", data=sample_dir, job="g", n=1, gpus="0", limit_train=300)
    assert on_gpu.spec.width == 1.0 and on_gpu.spec.precision == "mixed_float16"  # what auto gives a T4
