"""One lever at a time, over several seeds, on a holdout no training sees: is it worth defaulting?

    python benchmarks/levers.py --data data/fashion --rows 6000 --seeds 3 --lever "--label-smoothing 0.1"

Both variants are real `ensemble train --n SEEDS` jobs on the same data and split (job seed 0): member i of
each trains with seed i, so the two are paired seed by seed. Each member is scored alone on the holdout
(the first --rows rows of train.csv, a stratified 10% held out as test.csv, as benchmarks/budget.py makes
it), then the paired differences give the lever's worth with its spread. Extra train options for both
variants go in --common.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from budget import ROOT, make_data  # noqa: E402  (the same holdout split as the budget benchmark)


def run_job(data: Path, home: Path, job: str, seeds: int, options: list[str], log: Path | None = None) -> float:
    """`ensemble train --n SEEDS` of this checkout as its own process; its output goes to `log` (default:
    HOME.log beside the workspace). Returns its wall seconds."""
    command = [sys.executable, "-m", "ensemble.cli", "--home", str(home), "train", "--data", str(data), "--job", job,
               "--n", str(seeds), *options]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    started = time.time()
    log = log or home.parent / f"{home.name}.log"
    with log.open("w") as handle:
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{job} failed (exit {result.returncode}); see {log}")
    return time.time() - started


def member_accuracies(home: Path, job: str, members: range, holdout: np.ndarray, tta: bool) -> list[float]:
    """Each member's accuracy on the holdout (the job's test file), from its saved test softmax."""
    found = []
    for index in members:
        folder = home / "models" / job / f"member-{index:02d}"
        probs = np.load(folder / ("test_probs_tta.npy" if tta else "test_probs.npy"))
        found.append(float(np.mean(probs.argmax(axis=1) == holdout)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "fashion")
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--lever", required=True, help='the train options that make the lever, e.g. "--label-smoothing 0.1"')
    parser.add_argument("--common", default="--no-tta --gpus cpu", help="train options for both variants")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-levers")
    args = parser.parse_args()
    data = args.out / f"data-{args.rows}"
    holdout = make_data(args.data, args.rows, data)
    common, lever = args.common.split(), args.lever.split()
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, KERAS_BACKEND={os.environ.get('KERAS_BACKEND', 'tensorflow')}; "
          f"{args.rows} rows ({len(holdout)} holdout), {args.seeds} seeds, common {' '.join(common)}", flush=True)
    scores, walls = {}, {}
    for name, options in (("without", common), ("with", common + lever)):
        home = args.out / f"{args.rows}-{name}"
        subprocess.run(["rm", "-rf", str(home)], check=True)
        home.mkdir(parents=True)
        walls[name] = run_job(data, home, name, args.seeds, options)
        scores[name] = member_accuracies(home, name, range(args.seeds), holdout, tta="--tta" in options)
        print(f"{name} {' '.join(lever) if name == 'with' else ''}: holdout per seed {scores[name]}, "
              f"{walls[name]:.0f} s", flush=True)
    differences = [100 * (b - a) for a, b in zip(scores["without"], scores["with"])]
    spread = statistics.stdev(differences) if len(differences) > 1 else float("nan")
    print("\n| variant | holdout per seed | mean | sd | wall s |\n| --- | --- | ---: | ---: | ---: |")
    for name in scores:
        values = scores[name]
        print(f"| {name} {' '.join(lever) if name == 'with' else ''} | {', '.join(f'{v:.4f}' for v in values)} | "
              f"{statistics.fmean(values):.4f} | {100 * statistics.stdev(values):.2f} | {walls[name]:.0f} |")
    print(f"\npaired difference (with - without), points: {', '.join(f'{d:+.2f}' for d in differences)}; "
          f"mean {statistics.fmean(differences):+.2f}, sd {spread:.2f}, "
          f"standard error {spread / len(differences) ** 0.5:.2f}")


if __name__ == "__main__":
    main()
