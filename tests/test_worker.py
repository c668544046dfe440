"""Warm member workers: a worker per slot trains members one after another. What a member learns does not
depend on being a worker's second member, and a worker killed between two members costs only the member in
flight."""
import json
import os
import signal
import subprocess
import sys

import numpy as np

from test_runner import alive, files_digest, ledger, start, train_command, wait_for

SMALL = ["--model", "seed004", "--epochs", "1"]


def test_a_workers_second_member_equals_the_same_member_trained_in_a_fresh_process(tmp_path, sample_dir):
    home = tmp_path / "home"
    result = subprocess.run(train_command(home, sample_dir, "warm", "--n", "2", *SMALL), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    members = ledger(home, "warm")["members"]
    assert members[0]["pid"] is None and len({m["device"] for m in members}) == 1
    log = (home / "jobs/warm/logs/member-01.log").read_text()
    assert "member-01 done" in log and "member-00" not in log  # each member's output in its own log
    folder = home / "models/warm/member-01"
    warm = {name: np.load(folder / name) for name in ("val_probs.npy", "test_probs.npy")}

    # the same member again, alone in a fresh member process, from the same plan
    for path in folder.rglob("*"):
        if path.is_file():
            path.unlink()
    fresh = subprocess.run([sys.executable, "-P", "-m", "ensemble.member", "--home", str(home), "--job", "warm",
                            "--member", "1"], capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    for name, probs in warm.items():
        assert np.array_equal(np.load(folder / name), probs), name


def test_a_worker_killed_between_two_members_costs_only_the_member_it_was_handed(tmp_path, sample_dir):
    home = tmp_path / "home"
    runner = start(train_command(home, sample_dir, "between", "--n", "3", *SMALL))
    done = home / "models/between/member-00/metrics.json"
    wait_for(done.is_file, runner)

    def second_handed():
        members = ledger(home, "between")["members"] if (home / "jobs/between/job.json").is_file() else []
        return len(members) >= 2 and members[1]["state"] == "running" and members[1]["pid"] is not None

    wait_for(second_handed, runner)
    first = files_digest(home / "models/between/member-00")
    worker = ledger(home, "between")["members"][1]["pid"]
    os.kill(worker, signal.SIGKILL)  # the worker that trained member-00 and was just handed member-01
    output, _ = runner.communicate(timeout=300)
    assert runner.returncode == 0, output
    assert not alive(worker)
    assert "member-01 was killed by SIGKILL on attempt 1; retry 1 of 2, from its last finished epoch" in output
    members = ledger(home, "between")["members"]
    assert [(m["state"], m["attempts"]) for m in members] == [("done", 1), ("done", 2), ("done", 1)]
    assert files_digest(home / "models/between/member-00") == first  # the finished member is not touched
    assert json.loads((home / "models/between/member-01/metrics.json").read_text())["epochs"] == 1
