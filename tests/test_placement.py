"""Placement (--gpus/--per-gpu/--workers), the job lock, progress display and the status tables."""
import os
import pty
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from ensemble.cli import main
from ensemble.job.errors import JobError
from ensemble.job.ledger import MemberEntry, MemberState
from ensemble.job.outputs import JobModels, ModelRef
from ensemble.job.layout import ModelKind
from ensemble.job.progress import Progress
from ensemble.job.record import load_record, new_record
from ensemble.job.spec import JobSpec
from ensemble.job.state import member_status
from ensemble.run.devices import PlacementError, Slot, parse_gpus, plan_slots, slot_environment
from ensemble.run.progress import (LiveReporter, MemberLine, Overview, PlainReporter, estimate_eta, format_clock,
                                   make_reporter)
from ensemble.run.status import member_rows
from ensemble.store import atomic
from ensemble.store.hardware import list_gpus
from ensemble.store.locks import LockHeld, PidLock, is_held, read_holder
from ensemble.store.workspace import Workspace

TWO_GPUS = {0: 9.0, 1: 9.0}


# --- placement ----------------------------------------------------------------------------------

def test_gpus_option_is_checked_against_the_gpus_that_exist():
    assert parse_gpus(None, TWO_GPUS) == [0, 1] and parse_gpus(None, {}) == []
    assert parse_gpus("all", TWO_GPUS) == [0, 1] and parse_gpus("cpu", TWO_GPUS) == []
    assert parse_gpus("1", TWO_GPUS) == [1] and parse_gpus(" 1,0 ", TWO_GPUS) == [1, 0]
    with pytest.raises(PlacementError, match=r"--gpus 0,2: no GPU 2 on this machine \(GPUs: 0, 1\)"):
        parse_gpus("0,2", TWO_GPUS)
    with pytest.raises(PlacementError, match=r"no GPU 0 on this machine \(GPUs: none \(nvidia-smi lists no GPU\)\)"):
        parse_gpus("0", {})
    with pytest.raises(PlacementError, match="--gpus all: no NVIDIA GPU found"):
        parse_gpus("all", {})
    with pytest.raises(PlacementError, match="expected GPU ids like 0,1"):
        parse_gpus("first", TWO_GPUS)
    with pytest.raises(PlacementError, match="distinct"):
        parse_gpus("1,1", TWO_GPUS)


def test_slots_interleave_gpus_and_split_the_cpu():
    assert [s.label for s in plan_slots([0, 1], per_gpu=2)] == ["gpu:0#0", "gpu:1#0", "gpu:0#1", "gpu:1#1"]
    assert [s.label for s in plan_slots([1])] == ["gpu:1"]
    assert [s.label for s in plan_slots([], workers=2)] == ["cpu#0", "cpu#1"]
    assert plan_slots([]) == [Slot(None, 0, 1)]
    with pytest.raises(PlacementError, match="--workers is for CPU training"):
        plan_slots([0], workers=2)
    with pytest.raises(PlacementError, match="--per-gpu needs GPUs"):
        plan_slots([], per_gpu=2)
    with pytest.raises(PlacementError, match="--per-gpu must be at least 1"):
        plan_slots([0], per_gpu=0)


def test_slot_environment_pins_the_device_and_sizes_memory_and_threads():
    assert slot_environment(Slot(1, 0, 1)) == {"CUDA_VISIBLE_DEVICES": "1", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}
    shared = slot_environment(Slot(0, 3, 4))
    assert shared["CUDA_VISIBLE_DEVICES"] == "0"
    assert shared["XLA_PYTHON_CLIENT_MEM_FRACTION"] == shared["XLA_CLIENT_MEM_FRACTION"] == "0.225"
    assert slot_environment(Slot(None, 0, 1)) == {"CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}
    assert slot_environment(Slot(None, 1, 2), cpu_count=16)["TF_NUM_INTRAOP_THREADS"] == "8"
    assert slot_environment(Slot(None, 1, 4), cpu_count=2)["OMP_NUM_THREADS"] == "1"


def fake_nvidia_smi(folder, lines):
    """An nvidia-smi on PATH that lists GPUs as the real one does for --query-gpu=index,compute_cap."""
    folder.mkdir(exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text("#!/bin/sh\nprintf '" + "\\n".join(lines) + "\\n'\n")
    script.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def test_gpus_are_read_from_nvidia_smi(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "bin", ["0, 9.0", "1, 8.6"]))
    assert list_gpus() == {0: 9.0, 1: 8.6}
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert list_gpus() == {}


def test_a_wrong_gpu_id_is_refused_before_anything_is_written(tmp_path, sample_dir, monkeypatch):
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "bin", ["0, 9.0", "1, 9.0"]))
    result = CliRunner().invoke(main, ["--home", str(tmp_path / "home"), "train", "--n", "2", "--gpus", "0,3",
                                       "--data", str(sample_dir)])
    assert result.exit_code == 1
    assert "--gpus 0,3: no GPU 3 on this machine (GPUs: 0, 1); use --gpus cpu" in result.output
    assert not (tmp_path / "home").exists()


def run_in_terminal(command, env, timeout=300):
    """Run a command with a pseudo-terminal as its stdout, as a person's shell would; returns (code, output)."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    chunks, deadline = [], time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, "timed out"
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process is gone
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return process.wait(), b"".join(chunks).decode("utf-8", "replace")


def test_members_are_pinned_to_their_gpus_and_a_terminal_gets_a_live_view(tmp_path, sample_dir):
    """Two (fake) GPUs: each member process sees only its own GPU id; on a terminal the view redraws in place."""
    home = tmp_path / "home"
    env = dict(os.environ, PATH=fake_nvidia_smi(tmp_path / "bin", ["0, 9.0", "1, 9.0"]), COLUMNS="120")
    code, output = run_in_terminal(
        [sys.executable, "-m", "ensemble.cli", "--home", str(home), "train", "--n", "2", "--gpus", "0,1",
         "--job", "pinned", "--data", str(sample_dir), "--epochs", "1", "--limit-train", "300", "--model", "seed004",
         # the fake GPUs say 9.0, where precision auto is bf16: emulated on this CPU it is slow, and beside the point
         "--precision", "float32"], env)
    assert code == 0, output
    members = load_record(Workspace.resolve(home), "pinned").members
    assert [(m.state.value, m.device) for m in members] == [("done", "gpu:0"), ("done", "gpu:1")]
    seen = [atomic.read_json(home / f"jobs/pinned/progress/member-0{i}.json") for i in (0, 1)]
    assert [p["cuda_visible_devices"] for p in seen] == ["0", "1"]
    assert "member-00 (seed 0) starts on gpu:0" in output and "member-01 (seed 1) starts on gpu:1" in output
    assert "\x1b[1A" in output and "\x1b[2K" in output  # cursor up, erase line: redrawn in place
    assert "members done" in output and "val acc" in output


def test_a_notebook_cells_pseudo_terminal_gets_plain_lines(tmp_path, sample_dir):
    """`!ensemble train` in a Jupyter cell runs under a pseudo-terminal whose output is the saved log: the
    kernel's variables (JPY_PARENT_PID, the inline matplotlib backend) make progress plain lines there."""
    env = dict(os.environ, JPY_PARENT_PID="1", MPLBACKEND="module://matplotlib_inline.backend_inline",
               COLUMNS="120")
    code, output = run_in_terminal(
        [sys.executable, "-m", "ensemble.cli", "--home", str(tmp_path / "home"), "train", "--n", "1", "--job", "nb",
         "--data", str(sample_dir), "--epochs", "1", "--limit-train", "300", "--model", "seed004", "--precision",
         "float32"], env)
    assert code == 0, output
    assert "\x1b[1A" not in output and "\x1b[2K" not in output
    assert "member-00 done: val_acc" in output and "1/1 members done" in output


# --- the lock -----------------------------------------------------------------------------------

HOLD = textwrap.dedent("""
    import sys, time
    from ensemble.store.locks import PidLock
    with PidLock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(120)
""")


def test_a_live_holder_is_named_and_a_dead_ones_lock_is_taken_over(tmp_path):
    path = tmp_path / "job" / "lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert is_held(path) and read_holder(path)["pid"] == holder.pid
    with pytest.raises(LockHeld) as refused:
        with PidLock(path):
            pass
    assert refused.value.holder["pid"] == holder.pid
    holder.kill()
    holder.wait()
    assert not is_held(path)
    with PidLock(path) as lock:
        assert lock.previous["pid"] == holder.pid  # left by the killed process: reported as taken over
        assert read_holder(path)["pid"] == os.getpid()
    assert read_holder(path) == {} and not is_held(path)
    with PidLock(path) as lock:
        assert lock.previous == {}  # released cleanly last time: nothing to take over


# --- progress -----------------------------------------------------------------------------------

def test_eta_uses_only_this_runs_pace():
    assert estimate_eta(10.0, 20.0, 50.0, 100.0) == pytest.approx(300.0)
    assert estimate_eta(10.0, 10.0, 50.0, 100.0) is None
    assert estimate_eta(0.0, 50.0, 50.0, 10.0) == 0.0
    # 40 s of the 100 went into two finished members' predictions; three more members will predict 20 s each
    assert estimate_eta(10.0, 20.0, 50.0, 100.0, predicting_done_s=40.0, predicting_left_s=60.0) == pytest.approx(
        30 * 60 / 10 + 60)
    assert [format_clock(s) for s in (None, 59.6, 3600 + 62)] == ["--:--", "01:00", "1:01:02"]


def line(epoch, val=None, name="member-00"):
    return MemberLine(name, "gpu:0", epoch, 3, 5, 10, val, 1)


def overview(done=0, elapsed=10.0):
    return Overview("j", done, 2, 0, 1.5, 6, elapsed, 20.0)


def test_plain_reporter_prints_each_epoch_once_and_the_overall_line_every_minute():
    printed, now = [], [0.0]
    reporter = PlainReporter(printed.append, clock=lambda: now[0])
    reporter.update([line(0)], overview())
    reporter.update([line(1, 0.91234)], overview())
    reporter.update([line(1, 0.91234)], overview())
    now[0] = 61.0
    reporter.update([line(1, 0.91234)], overview(elapsed=61.0))
    stamp = time.strftime("%H:%M:%S", time.localtime(0.0))
    assert printed == [f"[{stamp}] member-00 [gpu:0] epoch 1/3  val_acc 0.9123",
                       f"[{time.strftime('%H:%M:%S', time.localtime(61.0))}] 0/2 members done, 1.5/6 epochs, "
                       "elapsed 01:01, ETA 00:20"]


def test_live_reporter_draws_one_row_per_running_member_and_the_overall_line():
    from rich.console import Console

    console = Console(record=True, width=120, force_terminal=True)
    reporter = LiveReporter(console)
    reporter.update([line(1, 0.9, "member-00"), line(0, None, "member-01")], overview(done=1))
    reporter.close(overview(done=2))
    text = console.export_text()
    assert re.search(r"member-00 +gpu:0 +1/3 +━+╺━+ +0\.9000 +1\n", text), text
    assert re.search(r"member-01 +gpu:0 +0/3 +━+╺━+ +- +1\n", text), text
    assert "job j  1/2 members done, 1.5/6 epochs, elapsed 00:10, ETA 00:20" in text
    after_update = text.split("1/2 members done", 1)[1]  # the frames close() drew: the summary, no table
    assert "2/2 members done" in after_update and "member-0" not in after_update and "try" not in after_update
    assert isinstance(make_reporter(print, live=False), PlainReporter)


# --- status -------------------------------------------------------------------------------------

@pytest.mark.parametrize("state, finished, fault, runner_alive, expected", [
    ("done", True, None, False, ("done", "")),
    ("done", False, None, False, ("pending", "files incomplete (no metrics.json)")),
    ("done", False, "m/member-00/best.keras: missing", False, ("pending", "damaged: m/member-00/best.keras: missing")),
    ("running", False, None, True, ("running", "")),
    ("running", False, None, False, ("pending", "its runner is gone; rerun to resume")),
    ("failed", False, None, False, ("failed", "boom")),
    ("pending", True, None, False, ("done", "boom")),
])
def test_member_status_trusts_the_artifact_check_and_the_lock(state, finished, fault, runner_alive, expected):
    note = "" if state in ("done", "running") else "boom"
    member = MemberEntry(0, "member-00", 0, state=MemberState(state), note=note)
    models = JobModels([ModelRef("member-00", ModelKind.MEMBER)] if finished else [],
                       {"member-00-snap1": fault} if fault else {})
    status = member_status(member, models, runner_alive)
    assert (status.state.value, status.note) == expected
    assert status.fault == fault


def test_status_rows_show_live_batches_for_running_members():
    record = new_record("j", JobSpec.from_options(epochs=50, precision="float32"), Path("data"))
    record.members = [
        MemberEntry(0, "member-00", 0, MemberState.DONE, attempts=1, device="gpu:0", epoch=50, val_accuracy=0.9961,
                    started="s", ended="e"),
        MemberEntry(1, "member-01", 1, MemberState.RUNNING, attempts=2, device="gpu:1", pid=4242, epoch=7,
                    val_accuracy=0.991, started="s"),
        MemberEntry(2, "member-02", 2)]
    models = JobModels([ModelRef("member-00", ModelKind.MEMBER)], {})
    frame = member_rows(record, {1: Progress(phase="training", batch=120, batches=591, updated=1.0)},
                        {m.index: member_status(m, models, runner_alive=True) for m in record.members}, now=2.0)
    assert frame.to_dict("records") == [
        {"member": "member-00", "state": "done", "attempts": 1, "device": "gpu:0", "pid": "-", "epoch": "50/50",
         "val_acc": "0.9961", "started": "s", "ended": "e", "note": ""},
        {"member": "member-01", "state": "running", "attempts": 2, "device": "gpu:1", "pid": "4242",
         "epoch": "7/50 (+120/591)", "val_acc": "0.9910", "started": "s", "ended": "-", "note": ""},
        {"member": "member-02", "state": "pending", "attempts": 0, "device": "-", "pid": "-", "epoch": "0/50",
         "val_acc": "-", "started": "-", "ended": "-", "note": ""}]
    assert isinstance(frame, pd.DataFrame)


@pytest.mark.parametrize("options, message", [
    ({"retries": -1}, "--retries must be 0 or more"),
    ({"address": "auto"}, "--address is for --executor ray"),
    ({"executor": "dask"}, "unknown executor 'dask'"),
])
def test_impossible_runs_are_refused_before_anything_starts(ws, options, message):
    from ensemble.run.request import TrainRequest
    from ensemble.run.runner import make_executor

    with pytest.raises(JobError, match=message):
        make_executor(ws, TrainRequest(n=1, data_dir=ws.data_dir, **options))


def test_ray_members_ask_for_a_gpu_share_or_a_cpu():
    from ensemble.run.executors import RAY_GPU, ray_slot

    assert ray_slot(None, None, cluster_gpus=0) == Slot(None, 0, 1)
    assert ray_slot(None, 4, cluster_gpus=8) == Slot(RAY_GPU, 0, 4)
    assert ray_slot("cpu", None, cluster_gpus=8) == Slot(None, 0, 1)
    with pytest.raises(JobError, match="with --executor ray, Ray chooses the GPUs"):
        ray_slot("0,1", None, cluster_gpus=8)
    with pytest.raises(JobError, match="the Ray cluster reports no GPUs"):
        ray_slot("all", None, cluster_gpus=0)
