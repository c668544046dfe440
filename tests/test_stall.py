"""Stalled members: shown as stalled after many of their own update gaps, killed and retried at the stall
timeout (pure rules with a clock of their own), and a real SIGSTOPped member killed, retried and finished."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ensemble.job.ledger import LastRun, MemberState
from ensemble.job.progress import Progress
from ensemble.job.record import new_record
from ensemble.job.spec import JobSpec
from ensemble.job.state import MemberStatus
from ensemble.run.stall import DEFAULT_STALL_TIMEOUT_S, StallWatch, stall_limits, stalled_text
from ensemble.run.status import member_rows


def test_limits_follow_the_members_own_gaps_and_the_timeout():
    assert stall_limits(None, None) == (DEFAULT_STALL_TIMEOUT_S, DEFAULT_STALL_TIMEOUT_S)  # start-up: timeout only
    assert stall_limits(0.5, None) == (60.0, 600.0)      # a fast member: the floor, then the default
    assert stall_limits(10.0, None) == (200.0, 600.0)    # 20 of its gaps
    assert stall_limits(30.0, None) == (600.0, 1500.0)   # slow updates: the default grows (50 gaps)
    assert stall_limits(0.5, 20.0) == (20.0, 20.0)       # --stall-timeout 20s: shown and killed together
    assert stall_limits(None, 20.0) == (600.0, 600.0)    # start-up (imports, the first compile) is not held to it
    assert stall_limits(None, 900.0) == (900.0, 900.0)


def test_a_watch_measures_gaps_on_the_runners_clock_and_gives_its_verdict():
    watch = StallWatch(last_change=100.0)
    watch.saw(5000.0, now=130.0)  # the first update 30 s after launch: start-up, not a gap
    assert watch.longest_gap is None
    for stamp, now in ((5001.0, 131.0), (5002.0, 133.0), (5003.0, 134.0)):
        watch.saw(stamp, now)
    assert watch.longest_gap == 2.0
    watch.saw(5003.0, now=150.0)  # the same stamp again: no change
    assert watch.silent_for(150.0) == 16.0
    assert watch.verdict(150.0, None) is None
    assert watch.verdict(134.0 + 60.0, None) == "stalled" and watch.verdict(134.0 + 599.0, None) == "stalled"
    assert watch.verdict(134.0 + 600.0, None) == "kill"
    assert watch.verdict(134.0 + 20.0, 20.0) == "kill"
    assert watch.describe(134.0 + 75.0) == "no progress for 1m15s; its updates came at most 2.0s apart"
    queued = StallWatch(last_change=0.0, may_queue=True)  # a Ray task waiting for a GPU: not stalled
    assert queued.verdict(10_000.0, 20.0) is None
    starting = StallWatch(last_change=0.0)
    assert starting.verdict(599.0, 20.0) is None and starting.verdict(600.0, 20.0) == "kill"


def test_status_notes_a_running_member_whose_progress_stopped():
    record = new_record("s", JobSpec.from_options(epochs=3, precision="float32"), "/data")
    record.ensure_members(2)
    record.last_run = LastRun(pid=1, host="h", started="t", executor="local", members=2, retries=2, stall_timeout=30.0)
    progress = {0: Progress(pid=11, phase="training", epoch=1, updated=1000.0, heartbeat_s=1.0),
                1: Progress(pid=12, phase="training", epoch=1, updated=1025.0, heartbeat_s=1.0)}
    running = {i: MemberStatus(MemberState.RUNNING) for i in (0, 1)}
    rows = member_rows(record, progress, running, now=1040.0)
    assert list(rows["note"]) == ["stalled: no progress for 0m40s", ""]
    record.members[0].started = "2026-12-01T10:00:00+0000"  # a new attempt: the old attempt's file says nothing
    assert list(member_rows(record, progress, running, now=1040.0)["note"]) == ["", ""]
    assert stalled_text(1000.0, 1.0, now=1059.0) is None and stalled_text(1000.0, 1.0, now=1061.0)


@pytest.mark.serial  # a 20 s stall timeout on the wall clock
def test_a_stopped_member_is_reported_stalled_killed_retried_and_the_job_finishes(tmp_path, sample_dir):
    home = tmp_path / "home"
    runner = subprocess.Popen(
        [sys.executable, "-m", "ensemble.cli", "--home", str(home), "train", "--data", str(sample_dir), "--job", "s",
         "--n", "1", "--epochs", "2", "--limit-train", "400", "--no-tta", "--precision", "float32",
         "--stall-timeout", "20s"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    progress_file = home / "jobs/s/progress/member-00.json"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # batches are running: the member has a heartbeat to be held to
            try:
                progress = json.loads(progress_file.read_text())
            except (OSError, ValueError):
                progress = {}
            if progress.get("phase") == "training" and progress.get("heartbeat_s"):
                break
            assert runner.poll() is None, runner.stdout.read()
            time.sleep(0.2)
        else:
            pytest.fail("the member never started its batches")
        os.kill(progress["pid"], signal.SIGSTOP)
        output, _ = runner.communicate(timeout=300)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 0, output
    assert "member-00 stalled: no progress for 0m20s" in output
    assert "it is killed and retried after 0m20s without progress (--stall-timeout)" in output
    assert "and was killed on attempt 1; retry 1 of 2, from its last finished epoch" in output
    record = json.loads((home / "jobs/s/job.json").read_text())
    member = record["members"][0]
    assert member["state"] == "done" and member["attempts"] == 2 and member["epoch"] == 2
    assert record["last_run"]["stall_timeout"] == 20.0
