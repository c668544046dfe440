"""A warm member worker: `python -m ensemble.member.worker --home H`, one per slot, trains the members it is
handed one after another, so that Python, Keras and the backend start once per slot rather than once per
member.

The runner writes one assignment per line to the worker's stdin (`JOB INDEX`); the worker trains that member
exactly as the member process does (member.process.train_member: its own folder, seed, checkpoints and lock,
its model built again from its seed, the backend's session cleared between members), with the member's
output appended to the member's own log. A member that finishes is reported on the results pipe
(`INDEX 0`); any other outcome ends the worker with the code the member process would have exited with
(1 for an exception, 3 when another process holds the member, the no-space code), so a failure is seen and
retried exactly as a member process's, and the next member on that slot starts in a fresh worker.
A run starts its workers before it reads the data (run.executors.prestart_worker), so their imports overlap it;
such a worker prints into a file of its own (--prelog) until its first member's log takes that file's text.
Before it imports the backend it marks the packages no member uses as absent (member.startup): 2 s of its start.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from ..job.layout import JobLayout, move_into_log
from ..store.workspace import Workspace
from .startup import skip_unused_imports


def redirect_output(log_path, prelog: Path | None = None) -> None:
    """This process's stdout and stderr (Python's and the backend's own C++ logging) to the member's log; what it
    printed into `prelog` before (a worker started ahead of its first member) is moved there first."""
    sys.stdout.flush()
    sys.stderr.flush()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if prelog is not None:
        move_into_log(prelog, log_path)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)


def train_assignment(home: str, job: str, index: int, prelog: Path | None = None) -> int:
    """One member, as `python -m ensemble.member` would run it; its exit code."""
    # here, not at the top: importing this module must not load the backend before main() marks what it skips
    import keras

    from . import process  # defers Keras, for the same reason

    redirect_output(JobLayout(Workspace.resolve(home), job).log(index), prelog)
    try:
        return process.main(["--home", home, "--job", job, "--member", str(index)])
    except Exception:  # what the member process would print before exiting with 1
        traceback.print_exc()
        return 1
    finally:
        keras.backend.clear_session()  # the next member builds its model from its own seed in a clean session
        sys.stdout.flush()
        sys.stderr.flush()


def serve(home: str, results_fd: int, prelog: Path | None = None) -> int:
    with os.fdopen(results_fd, "w", buffering=1) as results:
        while line := sys.stdin.readline():
            if not line.strip():
                continue
            job, index = line.split()
            code = train_assignment(home, job, int(index), prelog)
            prelog = None  # its text went to the first member's log
            if code != 0:
                return code
            results.write(f"{index} 0\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ensemble.member.worker",
                                     description="Train the members the runner hands this slot, one after another.")
    parser.add_argument("--home", required=True)
    parser.add_argument("--results-fd", type=int, required=True, help="the pipe (inherited) the worker reports on")
    parser.add_argument("--prelog", type=Path, default=None,
                        help="the file this worker prints into until its first member's log takes its output")
    args = parser.parse_args(argv)
    skip_unused_imports()
    from . import process  # noqa: F401  the backend, imported while the runner reads the data, not on the first member

    return serve(args.home, args.results_fd, args.prelog)


if __name__ == "__main__":
    sys.exit(main())
