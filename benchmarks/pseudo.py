"""Pseudo-labels: do second-round members that also train on the first round's confident test rows do better?

    python benchmarks/pseudo.py --data data/fashion --rows 6000 --test-rows 4000 --seeds 3 --threshold 0.99

The data: the first --rows rows of train.csv (from `ensemble data idx`) as training rows, the first
--test-rows of its test.csv as the test file (Digit Recognizer's ratio: 28000 test rows to 42000), their
labels (test_labels.csv) kept aside to score. Two real jobs, job seed 0, the same options:
- "plain": `--n 2S`, members 0..2S-1 on the training rows alone;
- "pseudo": `--n S`, then `--n 2S --pseudo-label P`: members S..2S-1 also train on the test rows the mean
  blend of members 0..S-1 gave at least P.
Members S..2S-1 have the same seeds in both jobs, so they are paired seed by seed: the paired differences of
their test accuracy give the lever's worth with its spread. Also shown: how many rows the round took and how
many of its labels were right.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from levers import ROOT, member_accuracies, run_job  # noqa: E402


def make_data(source: Path, rows: int, test_rows: int, out: Path) -> np.ndarray:
    """train.csv and test.csv under out; returns the test rows' labels."""
    out.mkdir(parents=True, exist_ok=True)
    pd.read_csv(source / "train.csv", nrows=rows).to_csv(out / "train.csv", index=False)
    pd.read_csv(source / "test.csv", nrows=test_rows).to_csv(out / "test.csv", index=False)
    return pd.read_csv(source / "test_labels.csv", nrows=test_rows).iloc[:, 1].to_numpy()


def blend_accuracy(home: Path, job: str, members: range, truth: np.ndarray, tta: bool) -> float:
    name = "test_probs_tta.npy" if tta else "test_probs.npy"
    probs = np.mean([np.load(home / "models" / job / f"member-{i:02d}" / name) for i in members], axis=0)
    return float(np.mean(probs.argmax(axis=1) == truth))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "fashion")
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--test-rows", type=int, default=4000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threshold", type=float, default=0.99)
    parser.add_argument("--common", default="--no-tta --gpus cpu --epochs 6 --folds 0",
                        help="train options for both jobs (a round needs the shared split: --folds 0)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-pseudo")
    args = parser.parse_args()
    data = args.out / f"data-{args.rows}-{args.test_rows}"
    truth = make_data(args.data, args.rows, args.test_rows, data)
    common, seeds = args.common.split(), args.seeds
    tta = "--tta" in common
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, KERAS_BACKEND={os.environ.get('KERAS_BACKEND', 'tensorflow')}; "
          f"{args.rows} training rows, {args.test_rows} test rows, {seeds} paired seeds, threshold "
          f"{args.threshold:g}, common {' '.join(common)}", flush=True)
    home = args.out / "home"
    subprocess.run(["rm", "-rf", str(home)], check=True)
    walls = {"plain": run_job(data, home, "plain", 2 * seeds, common, args.out / "plain.log")}
    walls["pseudo"] = run_job(data, home, "pseudo", seeds, common, args.out / "pseudo-round-0.log")
    walls["pseudo"] += run_job(data, home, "pseudo", 2 * seeds, [*common, "--pseudo-label", str(args.threshold)],
                               args.out / "pseudo-round-1.log")
    with np.load(home / "jobs" / "pseudo" / "pseudo-1.npz") as saved:
        rows, labels = saved["rows"], saved["labels"]
    second = range(seeds, 2 * seeds)
    plain, pseudo = (member_accuracies(home, job, second, truth, tta) for job in ("plain", "pseudo"))
    differences = [100 * (b - a) for a, b in zip(plain, pseudo)]
    spread = statistics.stdev(differences) if len(differences) > 1 else float("nan")
    print(f"\nround: {len(rows)} of {len(truth)} test rows ({len(rows) / len(truth):.1%}) at >= {args.threshold:g}, "
          f"{np.mean(labels == truth[rows]):.2%} of their labels right")
    print("\n| members seeds " + f"{seeds}..{2 * seeds - 1}" + " | test accuracy per seed | mean | blend of them | wall s |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, values in (("plain", plain), ("with pseudo-labels", pseudo)):
        job = "plain" if name == "plain" else "pseudo"
        print(f"| {name} | {', '.join(f'{v:.4f}' for v in values)} | {statistics.fmean(values):.4f} | "
              f"{blend_accuracy(home, job, second, truth, tta):.4f} | {walls[job]:.0f} |")
    print(f"\npaired difference (pseudo - plain), points: {', '.join(f'{d:+.2f}' for d in differences)}; "
          f"mean {statistics.fmean(differences):+.2f}, sd {spread:.2f}, standard error "
          f"{spread / len(differences) ** 0.5:.2f}")


if __name__ == "__main__":
    main()
