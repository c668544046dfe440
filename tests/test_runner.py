"""Faults with real processes and real signals: killed members, a killed runner, Ctrl-C, a member that keeps
failing, a second runner on a running job, Ray. Each runs `python -m ensemble.cli train` on 300 sample rows."""
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from ensemble.cli import main
from ensemble.job.layout import committed_epochs

SLICE = ["--limit-train", "300", "--seed", "3", "--precision", "float32", "--no-tta"]  # TTA: test_cli, test_budget


def train_command(home, sample_dir, job, *options):
    return [sys.executable, "-m", "ensemble.cli", "--home", str(home), "train", "--job", job,
            "--data", str(sample_dir), *SLICE, *map(str, options)]


def _interruptible():
    # a test run started in the background by a shell (`make test &`) inherits SIGINT ignored, and Python then
    # never turns it into KeyboardInterrupt: the runner gets Ctrl-C as a terminal would give it
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(command):
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_interruptible)


def wait_for(condition, process=None, timeout=240):
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            pytest.fail(f"the runner ended early ({process.returncode}):\n{process.stdout.read()}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def ledger(home, job):
    return json.loads((home / "jobs" / job / "job.json").read_text())


def finished_epochs(home, job, member):
    """Epochs member-XX has committed, as its newest training state says (0 before the first)."""
    return max(committed_epochs(home / f"models/{job}/member-{member:02d}/backup"), default=0)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited: it only waits to be reaped
        return stat.read().split(")")[-1].split()[0] != "Z"


def epoch_lines(home, job, member, epochs):
    log = (home / f"jobs/{job}/logs/member-{member:02d}.log").read_text()
    return [log.count(f"member-{member:02d} epoch {epoch}/{epochs} ") for epoch in range(1, epochs + 1)]


def files_digest(folder):
    return {p.name: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.iterdir()) if p.is_file()}


def invoke(home, *args):
    return CliRunner().invoke(main, ["--home", str(home), *map(str, args)])


def test_a_member_killed_mid_epoch_is_retried_and_only_that_epoch_is_redone(tmp_path, sample_dir):
    home = tmp_path / "home"
    runner = start(train_command(home, sample_dir, "retry", "--n", "2", "--epochs", "3", "--workers", "1"))
    wait_for(lambda: finished_epochs(home, "retry", 0) >= 1, runner)
    done_before_kill = finished_epochs(home, "retry", 0)
    os.kill(ledger(home, "retry")["members"][0]["pid"], signal.SIGKILL)
    output = runner.communicate(timeout=300)[0]

    assert runner.returncode == 0, output
    assert "member-00 was killed by SIGKILL on attempt 1; retry 1 of 2, from its last finished epoch" in output
    assert f"member-00 (seed 3) resumes after epoch {done_before_kill}/3" in output
    members = ledger(home, "retry")["members"]
    assert [(m["state"], m["attempts"]) for m in members] == [("done", 2), ("done", 1)]
    assert all(m["pid"] is None and m["ended"] and m["epoch"] == 3 for m in members)
    counts = epoch_lines(home, "retry", 0, 3)
    assert counts[:done_before_kill] == [1] * done_before_kill  # finished epochs are never trained again
    assert sum(counts) <= 4  # at most the interrupted epoch ran twice
    assert epoch_lines(home, "retry", 1, 3) == [1, 1, 1]


def test_a_member_that_keeps_failing_ends_failed_with_its_log_and_the_others_finish(tmp_path, sample_dir):
    home = tmp_path / "home"
    blocked = home / "models/stuck/member-01"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where member-01's folder should be")  # every attempt fails to create it
    result = subprocess.run(train_command(home, sample_dir, "stuck", "--n", "2", "--epochs", "1", "--retries", "1",
                                                  "--model", "seed004"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "member-01 exited with code 1 on attempt 1; retry 1 of 1" in result.stdout
    assert "Error: member-01 exited with code 1 after 2 attempts. Last lines of" in result.stderr
    assert "FileExistsError" in result.stderr and "The other members finished." in result.stderr
    members = ledger(home, "stuck")["members"]
    assert [(m["state"], m["attempts"]) for m in members] == [("done", 1), ("failed", 2)]
    assert (home / "models/stuck/member-00/metrics.json").is_file()


def test_a_killed_runner_is_resumed_without_retraining_finished_members(tmp_path, sample_dir):
    home = tmp_path / "home"
    command = train_command(home, sample_dir, "crash", "--n", "2", "--epochs", "3", "--workers", "1")
    runner = start(command)
    def member_01_training():
        members = ledger(home, "crash")["members"] if (home / "jobs/crash/job.json").is_file() else []
        return (len(members) == 2 and members[1]["state"] == "running" and members[1]["pid"] is not None
                and finished_epochs(home, "crash", 1) >= 1)

    wait_for(member_01_training, runner)
    member_pid = ledger(home, "crash")["members"][1]["pid"]
    os.kill(member_pid, signal.SIGSTOP)  # it can neither finish nor commit another epoch while the test looks
    done_before_kill = finished_epochs(home, "crash", 1)

    second = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert second.returncode == 1
    assert f"job 'crash' is already being trained by pid {runner.pid}" in second.stderr

    runner.kill()
    runner.wait()
    wait_for(lambda: not alive(member_pid), timeout=10)  # the member dies with its runner, no orphan trains on
    finished = files_digest(home / "models/crash/member-00")
    assert "metrics.json" in finished

    status = invoke(home, "status", "--job", "crash")
    assert status.exit_code == 0 and "not running" in status.output
    assert "its runner is gone; rerun to resume" in status.output
    refused = invoke(home, "blend", "--job", "crash")
    assert refused.exit_code == 1 and "has 1 unfinished of 2 members: member-01 (pending)" in refused.output
    partial = invoke(home, "blend", "--job", "crash", "--allow-partial")
    assert partial.exit_code == 0 and "mean blend of 1 (member-00)" in partial.output

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"took over the lock of pid {runner.pid}" in rerun.stdout
    assert "member-00 (seed" not in rerun.stdout and "trained 1, already done 1" in rerun.stdout
    assert f"member-01 (seed 4) resumes after epoch {done_before_kill}/3" in rerun.stdout
    assert files_digest(home / "models/crash/member-00") == finished
    assert epoch_lines(home, "crash", 1, 3)[:done_before_kill] == [1] * done_before_kill
    members = ledger(home, "crash")["members"]
    assert [(m["state"], m["attempts"]) for m in members] == [("done", 1), ("done", 2)]


@pytest.mark.serial  # gives the runner 30 s of wall clock to exit
def test_ctrl_c_stops_every_member_within_seconds_and_leaves_the_job_resumable(tmp_path, sample_dir):
    home = tmp_path / "home"
    # 8 epochs: long enough that both are still training when the signal comes, on a loaded machine too
    command = train_command(home, sample_dir, "stop", "--n", "2", "--epochs", "8", "--workers", "2")
    runner = start(command)

    def both_training():
        members = ledger(home, "stop")["members"] if (home / "jobs/stop/job.json").is_file() else []
        progress = [home / f"jobs/stop/progress/member-0{i}.json" for i in (0, 1)]
        return len(members) == 2 and all(m["state"] == "running" for m in members) and all(
            p.is_file() and json.loads(p.read_text())["phase"] == "training" for p in progress)

    wait_for(both_training, runner)
    pids = [m["pid"] for m in ledger(home, "stop")["members"]]
    sent = time.monotonic()
    runner.send_signal(signal.SIGINT)
    output = runner.communicate(timeout=30)[0]
    took = time.monotonic() - sent

    assert runner.returncode == 130, output
    assert took < 10, f"Ctrl-C took {took:.1f}s"
    assert "interrupted: members stopped; rerun the same command to resume job stop" in output
    assert not any(alive(pid) for pid in pids)
    members = ledger(home, "stop")["members"]
    assert [m["state"] for m in members] == ["pending", "pending"]
    assert all(m["pid"] is None and "interrupted" in m["note"] for m in members)

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert [m["state"] for m in ledger(home, "stop")["members"]] == ["done", "done"]


def test_two_members_run_as_ray_tasks_on_a_local_ray_instance(tmp_path, sample_dir):
    home = tmp_path / "home"
    result = subprocess.run(train_command(home, sample_dir, "ray", "--n", "2", "--epochs", "1",
                                          "--executor", "ray", "--gpus", "cpu", "--model", "seed004"),
                            capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "as a Ray task (cpu)" in result.stdout and "job ray: trained 2, already done 0" in result.stdout
    members = ledger(home, "ray")["members"]
    assert [(m["state"], m["executor"], m["device"]) for m in members] == [("done", "ray", "cpu")] * 2
    assert all(m["host"] and m["epoch"] == 1 for m in members)
    assert all(re.fullmatch(r"[0-9a-f]{56}", m["ray_node_id"] or "") for m in members)  # the node each ran on
    for index in (0, 1):
        assert (home / f"models/ray/member-0{index}/metrics.json").is_file()
        assert epoch_lines(home, "ray", index, 1) == [1]
    again = subprocess.run(train_command(home, sample_dir, "ray", "--n", "2", "--epochs", "1", "--executor", "ray",
                                         "--gpus", "cpu", "--model", "seed004"),
                           capture_output=True, text=True, timeout=400)
    assert again.returncode == 0 and "trained 0, already done 2" in again.stdout


def test_a_ray_cluster_that_refuses_the_drivers_token_is_named_as_an_authentication_failure():
    from ray.exceptions import AuthenticationError

    from ensemble.job.errors import JobError
    from ensemble.run.executors import ray_start_error

    for error in (AuthenticationError("Authentication token is missing or invalid"),
                  ConnectionError("Failed to connect to GCS: UNAUTHENTICATED: invalid auth token")):
        message = str(ray_start_error(error, "ray://head:10001"))
        assert isinstance(ray_start_error(error, "ray://head:10001"), JobError)
        assert "refused this driver's authentication" in message and "RAY_AUTH_MODE=token" in message
        assert "cannot reach" not in message
    unreachable = ray_start_error(ConnectionError("Could not find any running Ray instance"), "auto")
    assert "cannot reach a Ray cluster at 'auto'" in str(unreachable)
    other = RuntimeError("something else")
    assert ray_start_error(other, None) is other  # not ours to reword


def test_members_start_from_a_folder_that_holds_a_directory_named_ensemble(tmp_path, sample_dir):
    """The parent of a clone has an `ensemble` folder; members must import this package, not that one."""
    decoy = tmp_path / "cwd" / "ensemble"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise ImportError('the decoy ensemble package was imported')\n")
    (decoy / "member").mkdir()
    (decoy / "member" / "__main__.py").write_text("raise SystemExit('the decoy member module ran')\n")
    console_script = os.path.join(os.path.dirname(sys.executable), "ensemble")  # as a user runs it
    command = [console_script, *train_command(tmp_path / "home", sample_dir, "cwd", "--n", "1", "--epochs", "1",
                                                                 "--model", "seed004")[3:]]
    result = subprocess.run(command, cwd=tmp_path / "cwd", capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ledger(tmp_path / "home", "cwd")["members"][0]["state"] == "done"
    assert "decoy" not in (tmp_path / "home/jobs/cwd/logs/member-00.log").read_text()
