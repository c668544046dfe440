"""K-fold members against the shared split, on a holdout no training sees: at equal members, and with
--refit-full at equal training time.

    python benchmarks/folds.py --data data/fashion --rows 6000 --members 5 --epochs 3
    python benchmarks/folds.py --data data/fashion --rows 6000 --members 5 --epochs 3 --refit

Real `ensemble train` jobs on the same rows (the first --rows of train.csv, a stratified 10% held out as
test.csv, as benchmarks/budget.py makes it). Without --refit: the shared split (`--n M`: every member trains
on 90% of the rows, the same 10% scores them all) and k-fold (`--folds M --n M`: member i trains on every fold
but its own, every row scored once out of fold). With --refit, three jobs of 2M members each, so of about the
same training rows x epochs: the shared split with `--n 2M` (2M x 90%), k-fold with `--folds M --n 2M` (every
fold twice, 2M x 80%), and `--folds M --n M --refit-full` (M x 80% for the folds, then M twins x 100%). For
each: the mean blend's accuracy on the holdout (the refit job's from its twins' test predictions), the
validation score the job reports for that blend, how many rows that score rests on, its standard error, and
the wall time.
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
from levers import member_accuracies, run_job  # noqa: E402


def blend_scores(home: Path, job: str) -> tuple[np.ndarray, float, int]:
    """The mean blend's test softmax (as `ensemble blend` makes it: refit twins stand in for their fold
    members), its reported validation accuracy and the rows that accuracy rests on."""
    sys.path.insert(0, str(ROOT))
    from dataclasses import replace

    from ensemble.blend.blending import finished_twins, load_outputs, refit_tests
    from ensemble.blend.methods import BLEND_METHODS
    from ensemble.job.outputs import survey_models
    from ensemble.job.record import load_record
    from ensemble.job.split import existing_split
    from ensemble.store.workspace import Workspace

    ws = Workspace.resolve(home)
    record = load_record(ws, job)
    outputs = load_outputs(ws, record)
    twins = finished_twins(survey_models(ws, record), outputs.names)
    outputs = replace(outputs, test_probs=refit_tests(ws, record, outputs, twins).test_probs)
    y_val = existing_split(ws, record)["val_labels"]
    blended = BLEND_METHODS["mean"].blend(outputs, y_val)
    return blended.test_probs, blended.val_accuracy, int(outputs.scored_rows.sum())


def variants(members: int, refit: bool) -> list[tuple[str, int, list[str]]]:
    """(name, --n, extra options) of each job the benchmark trains."""
    if not refit:
        return [("shared", members, ["--folds", "0"]), ("folds", members, ["--folds", str(members)])]
    return [("shared", 2 * members, ["--folds", "0"]), ("folds", 2 * members, ["--folds", str(members)]),
            ("folds+refit", members, ["--folds", str(members), "--refit-full"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "fashion")
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--refit", action="store_true", help="three jobs of 2 x --members at equal training time, "
                        "one of them --folds --refit-full")
    parser.add_argument("--common", default="--no-tta --gpus cpu", help="train options for every variant")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-folds")
    args = parser.parse_args()
    data = args.out / f"data-{args.rows}"
    holdout = make_data(args.data, args.rows, data)
    common = [*args.common.split(), "--epochs", str(args.epochs)]
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, KERAS_BACKEND={os.environ.get('KERAS_BACKEND', 'tensorflow')}; "
          f"{args.rows} rows ({len(holdout)} holdout), {args.members} members x {args.epochs} epochs, "
          f"common {' '.join(common)}", flush=True)
    rows = []
    for name, n, extra in variants(args.members, args.refit):
        home = args.out / f"{args.rows}-{name}"
        subprocess.run(["rm", "-rf", str(home)], check=True)
        home.mkdir(parents=True)
        wall = run_job(data, home, name.replace("+", "-"), n, [*common, *extra])
        test_probs, val_accuracy, scored = blend_scores(home, name.replace("+", "-"))
        holdout_accuracy = float(np.mean(test_probs.argmax(axis=1) == holdout))
        standard_error = 100 * (val_accuracy * (1 - val_accuracy) / scored) ** 0.5
        rows.append((name, holdout_accuracy, val_accuracy, scored, standard_error, wall))
        print(f"{name}: holdout {holdout_accuracy:.4f}, reported {val_accuracy:.4f} on {scored} rows, {wall:.0f} s",
              flush=True)
        if "--refit-full" in extra:  # each twin against the fold member it refits, on the holdout
            job = name.replace("+", "-")
            parents = member_accuracies(home, job, range(n), holdout, tta=False)
            twins = member_accuracies(home, job, range(n, 2 * n), holdout, tta=False)
            gains = 100 * (np.array(twins) - np.array(parents))
            print(f"{name}: fold members' holdout {np.mean(parents):.4f}, their twins' {np.mean(twins):.4f}; "
                  f"twin - fold member {gains.mean():+.2f} points (SE {gains.std(ddof=1) / len(gains) ** 0.5:.2f}, "
                  f"{', '.join(f'{g:+.2f}' for g in gains)})", flush=True)
    print("\n| job | holdout accuracy (mean blend) | reported validation accuracy | rows scored | SE, points | "
          "reported - holdout, points | wall s |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, holdout_accuracy, val_accuracy, scored, standard_error, wall in rows:
        print(f"| {name} | {holdout_accuracy:.4f} | {val_accuracy:.4f} | {scored} | {standard_error:.2f} | "
              f"{100 * (val_accuracy - holdout_accuracy):+.2f} | {wall:.0f} |")


if __name__ == "__main__":
    main()
