"""Idle seconds inside a member's epochs: checkouts side by side in one run (this one, and e.g. a worktree of
an earlier commit that trained through `fit` on whole arrays).

    python benchmarks/epoch_stall.py --data bench/data-12000 --epochs 8 --repeats 2 --roots /tmp/old,.

Each trial is the real `ensemble train --n 1 --epochs E --no-tta --workers 1` in a fresh workspace, timed from
start to exit, checkouts alternating within a repeat. While it runs, /proc/stat is sampled every 0.1 s: the
seconds in which the whole machine was at least 90% idle between the member's first epoch start and its last
epoch end are time the member neither computed nor let anything else compute. From history.csv: each epoch's
seconds (median and max), the fit's total and the last epoch's validation accuracy.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

SAMPLE_S = 0.1
IDLE = 0.9


def cpu_times() -> tuple[int, int]:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(values), values[3] + values[4]  # all, idle + iowait


def sample_idle(samples: list, stop: threading.Event) -> None:
    previous = cpu_times()
    while not stop.wait(SAMPLE_S):
        current = cpu_times()
        total = current[0] - previous[0]
        samples.append((time.time(), (current[1] - previous[1]) / total if total else 0.0))
        previous = current


def trial(root: Path, data: Path, epochs: int, extra: list[str]) -> dict:
    home = Path(tempfile.mkdtemp(prefix="ensemble-stall-"))
    command = [sys.executable, "-m", "ensemble.cli", "--home", str(home), "train", "--n", "1", "--epochs", str(epochs),
               "--data", str(data), "--job", "bench", "--workers", "1", "--no-tta", "--gpus", "cpu", *extra]
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    samples: list = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_idle, args=(samples, stop), daemon=True)
    sampler.start()
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=root, env=env)
    wall = time.perf_counter() - started
    stop.set()
    sampler.join()
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    history = pd.read_csv(home / "models/bench/member-00/history.csv")
    shutil.rmtree(home, ignore_errors=True)
    first_start = history["ended_at"].iloc[0] - history["epoch_seconds"].iloc[0]
    last_end = history["ended_at"].iloc[-1]
    idle = sum(SAMPLE_S for at, share in samples if first_start <= at <= last_end and share >= IDLE)
    seconds = history["epoch_seconds"].tolist()
    return {"wall_s": wall, "fit_s": float(sum(seconds)), "median_epoch_s": statistics.median(seconds),
            "max_epoch_s": max(seconds), "idle_s": idle, "val_accuracy": float(history["val_accuracy"].iloc[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--roots", default=".", help="checkouts to compare, comma-separated")
    parser.add_argument("--extra", default="", help="more train options, space-separated")
    args = parser.parse_args()
    roots = [Path(root).resolve() for root in args.roots.split(",")]
    data = args.data.resolve()
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, python {platform.python_version()}; data {data}, "
          f"{args.epochs} epochs, {args.repeats} repeats", flush=True)
    print("| checkout | repeat | wall s | fit s | median epoch s | max epoch s | machine idle s in the epochs | "
          "val acc |", flush=True)
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |", flush=True)
    for repeat in range(args.repeats):
        for root in roots:
            r = trial(root, data, args.epochs, args.extra.split())
            print(f"| {root} | {repeat + 1} | {r['wall_s']:.1f} | {r['fit_s']:.1f} | {r['median_epoch_s']:.2f} | "
                  f"{r['max_epoch_s']:.2f} | {r['idle_s']:.1f} | {r['val_accuracy']:.4f} |", flush=True)


if __name__ == "__main__":
    from ensemble.run.devices import tensorflow_defaults

    tensorflow_defaults(os.environ)  # TensorFlow as members run it: oneDNN on, quiet
    main()
