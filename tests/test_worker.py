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


def test_a_run_starts_its_workers_before_it_reads_the_data_and_closes_them_when_refused(tmp_path, sample_dir,
                                                                                        monkeypatch):
    from ensemble.job.errors import JobError
    from ensemble.job.spec import JobSpec
    from ensemble.run import runner
    from ensemble.run.request import TrainRequest
    from ensemble.store.workspace import Workspace

    calls = []

    class Recording:
        name = "local"

        def prestart(self, members):
            calls.append(("prestart", members))

        def close(self):
            calls.append(("close",))

    def refused(*args):
        calls.append(("read",))
        raise JobError("refused after the workers started")

    monkeypatch.setattr(runner, "make_executor", lambda ws, request: (Recording(), None))
    monkeypatch.setattr(runner, "request_spec", refused)
    request = TrainRequest(n=3, data_dir=sample_dir, job="early", spec=JobSpec(limit_train=300))
    try:
        runner.train_members(Workspace.resolve(tmp_path / "home"), request)
    except JobError as error:
        assert str(error) == "refused after the workers started"
    else:
        raise AssertionError("the refusal was not raised")
    assert calls == [("prestart", 3), ("read",), ("close",)]


def test_a_worker_started_ahead_that_no_member_took_is_killed_at_close_and_leaves_no_file(tmp_path, monkeypatch):
    import tempfile

    from ensemble.run.devices import Slot
    from ensemble.run.executors import LocalExecutor
    from ensemble.store.workspace import Workspace

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    executor = LocalExecutor(Workspace.resolve(tmp_path / "home"), [Slot(None, 0, 1)])
    executor.prestart(None)
    (worker,) = executor.workers.values()
    assert worker.alive and worker.prelog.parent == tmp_path and worker.prelog.is_file()
    executor.close()
    assert worker.process.returncode == -signal.SIGKILL  # killed, not left to finish its imports
    assert not list(tmp_path.glob("ensemble-worker-*"))


def test_what_a_worker_started_ahead_prints_lands_in_its_first_members_log(tmp_path, sample_dir):
    home, scratch = tmp_path / "home", tmp_path / "scratch"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    ok = subprocess.run(train_command(home, sample_dir, "ahead", "--n", "1", *SMALL), capture_output=True,
                        text=True, timeout=300, env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "member-00 done" in (home / "jobs/ahead/logs/member-00.log").read_text()
    assert not list(scratch.glob("ensemble-worker-*"))

    # a worker that cannot import Keras (the runner never does): its traceback, printed before any member took its
    # output, is in the member's log (once, or twice where the runner found it dead and started the slot afresh)
    shadow = tmp_path / "shadow" / "keras"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('a keras that cannot be imported, for this test')\n")
    path = os.pathsep.join([str(shadow.parent), *filter(None, [os.environ.get("PYTHONPATH")])])
    failed = subprocess.run(train_command(home, sample_dir, "nokeras", "--n", "1", "--retries", "0", *SMALL),
                            capture_output=True, text=True, timeout=300, env={**env, "PYTHONPATH": path})
    assert failed.returncode == 1, failed.stdout + failed.stderr
    reason = "ImportError: a keras that cannot be imported, for this test"
    assert reason in (home / "jobs/nokeras/logs/member-00.log").read_text()
    assert reason in failed.stderr  # the runner's message quotes the log's last lines
    assert not list(scratch.glob("ensemble-worker-*"))


def test_a_worker_started_ahead_moves_its_early_output_into_its_first_members_log(tmp_path):
    home, prelog = tmp_path / "home", tmp_path / "ensemble-worker-x.log"
    prelog.write_text("said before any member\n")
    log = home / "jobs/j/logs/member-04.log"
    log.parent.mkdir(parents=True)
    log.write_text("an earlier attempt's lines\n")
    code = ("import sys; from pathlib import Path; from ensemble.member.worker import redirect_output; "
            f"redirect_output(Path({str(log)!r}), Path({str(prelog)!r})); print('the member speaks')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert log.read_text() == "an earlier attempt's lines\nsaid before any member\nthe member speaks\n"
    assert not prelog.exists()


def test_what_a_dead_worker_printed_before_its_member_took_its_output_goes_to_that_members_log(tmp_path):
    from ensemble.run.executors import Worker

    home, prelog = tmp_path / "home", tmp_path / "ensemble-worker-y.log"
    with prelog.open("wb") as output:  # a worker that died before it read its first assignment
        process = subprocess.Popen([sys.executable, "-c", "print('Traceback: it could not start')"],
                                   stdin=subprocess.PIPE, stdout=output)
    process.wait(timeout=60)
    read_fd, write_fd = os.pipe()
    os.close(write_fd)
    worker = Worker(process, read_fd, prelog=prelog, first=("j", 2))
    worker.close(home)
    assert (home / "jobs/j/logs/member-02.log").read_text() == "Traceback: it could not start\n"
    assert not prelog.exists()
