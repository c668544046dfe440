"""Parallel members: `ensemble train` with one slot vs several, alternating in one run.

    python benchmarks/workers.py --data data/sample --members 4 --epochs 1 --slots 1,2 --repeats 2
    KERAS_BACKEND=jax python benchmarks/workers.py --data data/fashion --per-gpu 1,2,4 --members 8 --epochs 2

CPU (default): compares --workers K. With --per-gpu, compares --per-gpu K on GPU 0 (--gpus 0) instead, and
samples nvidia-smi's utilisation while each run trains. Each trial is the real command in a fresh workspace
(member start-up, data loading, training, prediction, the ledger), timed from start to exit. Reported:
wall seconds, members/hour, and the ratio to the first setting of the same repeat.
"""
from __future__ import annotations

import argparse
import json
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


def gpu_utilisation_sampler(samples: list[float], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                  "--id=0"], capture_output=True, text=True, timeout=10).stdout
            samples.append(float(out.split()[0]))
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            pass
        stop.wait(1.0)


def trial(data: Path, members: int, epochs: int, limit: int | None, option: str, value: int) -> dict:
    home = Path(tempfile.mkdtemp(prefix="ensemble-workers-"))
    command = [sys.executable, "-m", "ensemble.cli", "--home", str(home), "train", "--n", str(members),
               "--epochs", str(epochs), "--data", str(data), "--job", "bench", option, str(value)]
    if option == "--per-gpu":
        command += ["--gpus", "0"]
    if limit:
        command += ["--limit-train", str(limit)]
    samples, stop = [], threading.Event()
    sampler = threading.Thread(target=gpu_utilisation_sampler, args=(samples, stop), daemon=True)
    if option == "--per-gpu":
        sampler.start()
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    stop.set()
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    record = json.loads((home / "jobs/bench/job.json").read_text())
    metrics = [json.loads((home / f"models/bench/{m['name']}/metrics.json").read_text()) for m in record["members"]]
    shutil.rmtree(home, ignore_errors=True)
    return {"option": option, "value": value, "wall_s": round(wall, 1),
            "members_per_hour": round(members * 3600 / wall, 1),
            "member_fit_s": [m["fit_seconds"] for m in metrics],
            "gpu_util_mean": round(statistics.fmean(samples), 1) if samples else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--limit-train", type=int, default=None)
    parser.add_argument("--slots", default="1,2", help="--workers values to compare (CPU)")
    parser.add_argument("--per-gpu", default=None, help="--per-gpu values to compare on GPU 0 instead")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    option, values = ("--per-gpu", args.per_gpu) if args.per_gpu else ("--workers", args.slots)
    values = [int(v) for v in values.split(",")]
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"KERAS_BACKEND={os.environ.get('KERAS_BACKEND', 'tensorflow')}")
    print(f"{args.members} members x {args.epochs} epochs on {args.data} (limit {args.limit_train}), "
          f"{option} {values}, {args.repeats} alternating repeats")
    rows = []
    for repeat in range(args.repeats):
        base = None
        for value in values:
            row = trial(args.data, args.members, args.epochs, args.limit_train, option, value)
            base = base or row["wall_s"]
            row.update(repeat=repeat + 1, speedup=round(base / row["wall_s"], 2))
            rows.append(row)
            util = f"  GPU util {row['gpu_util_mean']}%" if row["gpu_util_mean"] is not None else ""
            print(f"repeat {repeat + 1}  {option} {value}: {row['wall_s']:7.1f} s  "
                  f"{row['members_per_hour']:7.1f} members/h  x{row['speedup']:.2f}  "
                  f"member fit s {row['member_fit_s']}{util}", flush=True)
    for value in values:
        walls = [r["wall_s"] for r in rows if r["value"] == value]
        ratios = [r["speedup"] for r in rows if r["value"] == value]
        print(f"{option} {value}: wall median {statistics.median(walls):.1f} s, speedup vs {values[0]} "
              f"min {min(ratios):.2f} / median {statistics.median(ratios):.2f} / max {max(ratios):.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
