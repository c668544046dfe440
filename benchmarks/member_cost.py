"""The fixed cost of a member: what an extra member adds to a job's wall time beyond its training and its
predictions. Several checkouts side by side in one run (this one, and e.g. a worktree of an earlier commit).

    python benchmarks/member_cost.py --data data/sample --members 4 --repeats 2 --roots .,/tmp/old

Each trial is the real `ensemble train --n N --epochs E --workers 1 --no-tta` in a fresh workspace, timed
from start to exit, with N = 1 and N = --members, alternating checkouts within a repeat. The extra
members' cost is (wall(N) - wall(1)) / (N - 1); of it, `fit_seconds` and the prediction time (metrics.json)
are training and predicting, and the rest is the fixed cost per member: process start, imports, data,
building and tracing the model, saving. Each checkout runs with PYTHONPATH set to it, member processes too.
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
import time
from pathlib import Path


def trial(root: Path, data: Path, members: int, epochs: int, limit: int | None, extra: list[str]) -> dict:
    home = Path(tempfile.mkdtemp(prefix="ensemble-cost-"))
    command = [sys.executable, "-m", "ensemble.cli", "--home", str(home), "train", "--n", str(members),
               "--epochs", str(epochs), "--data", str(data), "--job", "bench", "--workers", "1", "--no-tta",
               "--gpus", "cpu", *extra]
    if limit:
        command += ["--limit-train", str(limit)]
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=root, env=env)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    record = json.loads((home / "jobs/bench/job.json").read_text())
    metrics = [json.loads((home / f"models/bench/{m['name']}/metrics.json").read_text()) for m in record["members"]]
    shutil.rmtree(home, ignore_errors=True)
    return {"wall_s": wall, "fit_s": [m["fit_seconds"] for m in metrics],
            "predict_s": [m["predict_ms_per_1k"] * (m["n_val"] + m["n_test"]) / 1e6 for m in metrics]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--limit-train", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--roots", default=".", help="checkouts to compare, comma-separated")
    parser.add_argument("--extra", default="", help="more train options, space-separated")
    args = parser.parse_args()
    roots = [Path(root).resolve() for root in args.roots.split(",")]
    args.data = args.data.resolve()  # each checkout runs in its own folder
    extra = args.extra.split()
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"KERAS_BACKEND={os.environ.get('KERAS_BACKEND', 'tensorflow')}; {args.members} members x {args.epochs} "
          f"epochs on {args.data} (limit {args.limit_train}) {' '.join(extra)}")
    rows: dict[Path, list[dict]] = {root: [] for root in roots}
    for repeat in range(args.repeats):
        for root in roots:
            one = trial(root, args.data, 1, args.epochs, args.limit_train, extra)
            many = trial(root, args.data, args.members, args.epochs, args.limit_train, extra)
            extra_member = (many["wall_s"] - one["wall_s"]) / (args.members - 1)
            work = statistics.fmean(f + p for f, p in zip(many["fit_s"][1:], many["predict_s"][1:]))
            row = {"repeat": repeat + 1, "wall_1": round(one["wall_s"], 1), "wall_n": round(many["wall_s"], 1),
                   "extra_member_s": round(extra_member, 2), "fit_and_predict_s": round(work, 2),
                   "fixed_s": round(extra_member - work, 2),
                   "members_per_hour": round(args.members * 3600 / many["wall_s"], 1)}
            rows[root].append(row)
            print(f"repeat {repeat + 1}  {root}: {json.dumps(row)}", flush=True)
    print("\n| checkout | wall, 1 member s | wall, N members s | an extra member s | of it fit + predict s | "
          "fixed s per extra member | members/hour |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for root, found in rows.items():
        median = lambda key: statistics.median(r[key] for r in found)  # noqa: E731
        spread = lambda key: f"{min(r[key] for r in found)}-{max(r[key] for r in found)}"  # noqa: E731
        print(f"| {root} | {median('wall_1'):.1f} | {median('wall_n'):.1f} | {median('extra_member_s'):.2f} "
              f"({spread('extra_member_s')}) | {median('fit_and_predict_s'):.2f} | {median('fixed_s'):.2f} "
              f"({spread('fixed_s')}) | {median('members_per_hour'):.0f} |")


if __name__ == "__main__":
    main()
