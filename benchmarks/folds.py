"""K-fold members against the shared split, the same members and epochs, on a holdout no training sees.

    python benchmarks/folds.py --data data/fashion --rows 6000 --members 5 --epochs 3

Two real `ensemble train` jobs on the same rows (the first --rows of train.csv, a stratified 10% held out as
test.csv, as benchmarks/budget.py makes it): the shared split (`--n M`: every member trains on 90% of the rows,
the same 10% scores them all) and k-fold (`--folds M --n M`: member i trains on every fold but its own, every
row scored once out of fold). For each: the mean blend's accuracy on the holdout, the validation score the
job reports for that blend, how many rows that score rests on, its standard error, and the wall time.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from budget import ROOT, make_data  # noqa: E402  (the same holdout split as the budget benchmark)
from levers import run_job  # noqa: E402


def blend_scores(home: Path, job: str) -> tuple[np.ndarray, float, int]:
    """The mean blend's test softmax, its reported validation accuracy and the rows that accuracy rests on."""
    sys.path.insert(0, str(ROOT))
    from ensemble.blend.blending import load_outputs
    from ensemble.blend.methods import BLEND_METHODS
    from ensemble.job.record import load_record
    from ensemble.job.split import existing_split
    from ensemble.store.workspace import Workspace

    ws = Workspace.resolve(home)
    record = load_record(ws, job)
    outputs = load_outputs(ws, record)
    y_val = existing_split(ws, record)["val_labels"]
    blended = BLEND_METHODS["mean"].blend(outputs, y_val)
    return blended.test_probs, blended.val_accuracy, int(outputs.scored_rows.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "fashion")
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--common", default="--no-tta --gpus cpu", help="train options for both variants")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-folds")
    args = parser.parse_args()
    data = args.out / f"data-{args.rows}"
    holdout = make_data(args.data, args.rows, data)
    common = [*args.common.split(), "--epochs", str(args.epochs)]
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, KERAS_BACKEND={os.environ.get('KERAS_BACKEND', 'tensorflow')}; "
          f"{args.rows} rows ({len(holdout)} holdout), {args.members} members x {args.epochs} epochs, "
          f"common {' '.join(common)}", flush=True)
    rows = []
    for name, options in (("shared", common), ("folds", [*common, "--folds", str(args.members)])):
        home = args.out / f"{args.rows}-{name}"
        subprocess.run(["rm", "-rf", str(home)], check=True)
        home.mkdir(parents=True)
        wall = run_job(data, home, name, args.members, options)
        test_probs, val_accuracy, scored = blend_scores(home, name)
        holdout_accuracy = float(np.mean(test_probs.argmax(axis=1) == holdout))
        standard_error = 100 * (val_accuracy * (1 - val_accuracy) / scored) ** 0.5
        rows.append((name, holdout_accuracy, val_accuracy, scored, standard_error, wall))
        print(f"{name}: holdout {holdout_accuracy:.4f}, reported {val_accuracy:.4f} on {scored} rows, {wall:.0f} s",
              flush=True)
    print("\n| split | holdout accuracy (mean blend) | reported validation accuracy | rows scored | SE, points | "
          "reported - holdout, points | wall s |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, holdout_accuracy, val_accuracy, scored, standard_error, wall in rows:
        print(f"| {name} | {holdout_accuracy:.4f} | {val_accuracy:.4f} | {scored} | {standard_error:.2f} | "
              f"{100 * (val_accuracy - holdout_accuracy):+.2f} | {wall:.0f} |")


if __name__ == "__main__":
    main()
