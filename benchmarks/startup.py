"""Three start-up costs in front of a job's first epoch: the CLI's own start, a member process's imports, and
what a second batch shape costs a fresh member's train step (a trace).

    python benchmarks/startup.py --repeats 3 --roots /tmp/old6,.

CLI: `ensemble --help` of each checkout (PYTHONPATH set to it), timed from start to exit, --repeats times,
checkouts alternating. Member: `python -P -m ensemble.member --help` the same way, started as the runner
starts members: its imports (the backend's among them), then the help. Trace: a cnn11 member model built as
members build it (the CPU's precision, the recipe's weight average), then `train_on_batch` on 64 rows, 64 again,
48 (the last batch of 10800 rows at batch 64, before whole batches) and 48 again, each call timed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from members_vs_epochs import cpu_model  # noqa: E402

from ensemble.run.devices import tensorflow_defaults  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

TRACE = """
import time
import numpy as np
from ensemble.job.spec import JobSpec
from ensemble.member.model import build_member_model
spec = JobSpec.from_options(model="cnn11", gpu_capabilities=[])
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (64, 28, 28, 1)).astype("float32")
y = rng.integers(0, 10, 64)
model = build_member_model(spec, 0, 10800)
for rows in (64, 64, 48, 48):
    began = time.perf_counter()
    model.train_on_batch(x[:rows], y[:rows])
    print("CALL", rows, time.perf_counter() - began, flush=True)
print("SPEC", spec.precision, spec.ema)
"""


def seconds_to_run(root: Path, command: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(root)}
    tensorflow_defaults(env)  # every checkout's process under the settings members get now: oneDNN on, quiet
    began = time.perf_counter()
    result = subprocess.run([sys.executable, *command], env=env, cwd=root, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed in {root}:\n{result.stderr}")
    return time.perf_counter() - began


COMMANDS = {"`ensemble --help`": ["-m", "ensemble.cli", "--help"],
            "`python -P -m ensemble.member --help`": ["-P", "-m", "ensemble.member", "--help"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--roots", default=".", help="checkouts to time the CLI of, comma-separated")
    args = parser.parse_args()
    roots = [Path(root).resolve() for root in args.roots.split(",")]
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores")
    for name, command in COMMANDS.items():
        times = {root: [] for root in roots}
        for _ in range(args.repeats):
            for root in roots:
                times[root].append(seconds_to_run(root, command))
        print(f"\n| checkout | {name} s, each repeat | median |\n| --- | --- | ---: |")
        for root, seconds in times.items():
            print(f"| {root} | {', '.join(f'{s:.2f}' for s in seconds)} | {statistics.median(seconds):.2f} |")
    result = subprocess.run([sys.executable, "-c", TRACE], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    spec = next(line.split()[1:] for line in lines if line.startswith("SPEC"))
    print(f"\nA fresh member's train_on_batch ({spec[0]}, weight average {spec[1]}):\n")
    print("| call | rows | seconds |\n| ---: | ---: | ---: |")
    for number, line in enumerate(line for line in lines if line.startswith("CALL")):
        _, rows, seconds = line.split()
        print(f"| {number + 1} | {rows} | {float(seconds):.3f} |")


if __name__ == "__main__":
    main()
