"""A full disk, on a real small tmpfs: one line naming the path and the space left, exit non-zero, no temp
file left, nothing half-written counted as finished; after space is freed the same command finishes the
job without losing a committed epoch."""
import os
import subprocess
import sys

import pytest

from ensemble.job.layout import JobLayout, committed_epochs, read_history
from ensemble.job.outputs import survey_models
from ensemble.job.record import load_record
from ensemble.job.spec import JobSpec
from ensemble.run.request import TrainRequest
from ensemble.run.runner import prepare_job
from ensemble.store.workspace import Workspace

STATE_BYTES = 600_000  # a seed004 training state (weights and Adam's moments), about; best.keras is alike


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip(f"mounting a tmpfs needs root; the tests run as uid {os.geteuid()}")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk, leave: int):
    """A ballast file that leaves `leave` bytes free on the disk."""
    ballast = disk / "ballast"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(ballast, "wb") as handle:
        handle.write(b"\0" * max(free - leave, 0))
    return ballast


def ensemble(home, *args):
    return subprocess.run([sys.executable, "-m", "ensemble.cli", "--home", str(home), *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def leftovers(home):
    """Temp files of atomic writes, half-saved models and uncommitted training states."""
    return [path for path in home.rglob("*")
            if path.name.endswith(".tmp") or path.name.startswith((".saving-", ".incoming-"))]


def assert_one_line_about_space(result, where):
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if "no space left on device" in line]
    assert len(lines) == 1 and str(where) in lines[0] and " free there" in lines[0], result.stderr


def test_training_that_runs_out_of_disk_stops_cleanly_and_finishes_after_space_is_freed(small_disk, sample_dir):
    home = small_disk / "home"
    ws = Workspace.resolve(home)
    prepare_job(ws, TrainRequest(n=1, data_dir=sample_dir, job="full", spec=JobSpec(model="seed004", epochs=6, batch_size=32, limit_train=300, precision="float32", tta=False)), gpu_capabilities=[])
    ballast = fill(small_disk, leave=int(2.5 * STATE_BYTES))  # the first epoch fits, the job does not

    result = ensemble(home, "train", "--job", "full")
    assert_one_line_about_space(result, JobLayout(ws, "full").member(0).path)
    assert leftovers(home) == []
    member_dir = JobLayout(ws, "full").member(0).path
    committed = max(committed_epochs(member_dir / "backup"), default=0)
    assert 1 <= committed < 6
    survey = survey_models(ws, load_record(ws, "full"))
    assert survey.finished == [] and survey.damaged == {}  # nothing half-written counts
    assert load_record(ws, "full").members[0].state.value == "pending"

    ballast.unlink()
    rerun = ensemble(home, "train", "--job", "full")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"resumes after epoch {committed}/6" in rerun.stdout  # no committed epoch is trained again
    assert [int(row["epoch"]) for row in read_history(member_dir / "history.csv")] == list(range(6))
    assert [model.name for model in survey_models(ws, load_record(ws, "full")).finished] == ["member-00"]

    # the next stage on a full disk: no submission, no temp file, the blend record untouched
    fill(small_disk, leave=0)
    blend = ensemble(home, "blend", "--job", "full")
    assert_one_line_about_space(blend, home / "submissions")
    assert leftovers(home) == [] and not list((home / "submissions").glob("*.csv"))
    assert not (JobLayout(ws, "full").dir / "blends.json").exists()


def test_a_job_that_cannot_write_its_record_says_so_in_one_line(small_disk, sample_dir):
    home = small_disk / "home"
    fill(small_disk, leave=0)
    result = ensemble(home, "train", "--job", "new", "--n", "1", "--epochs", "1", "--data", sample_dir,
                      "--limit-train", "300")
    assert_one_line_about_space(result, home / "jobs")
    assert leftovers(home) == []
