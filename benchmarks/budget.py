"""Accuracy per compute: seed 002 as the notebook ran it (A) vs today's cnn11 (B) vs the fast recipes (C),
at equal wall time, scored on a stratified holdout that no training sees. One run, one machine.

    python benchmarks/budget.py --data data/fashion --rows 12000 --variants A,B,C-onecycle,...
    python benchmarks/budget.py --data data/fashion --rows 42000 --budget 1200 --variants A-budget,C-onecycle

The data: the first --rows rows of the 42000-row train.csv from `ensemble data idx` (a seeded shuffle of
Fashion-MNIST), a stratified 10% of them held out as test.csv (labels kept aside), the rest as train.csv.
Every variant's job uses seed 0, so the shared-split ones share A's validation split of that train.csv. With --seed N
every variant but A uses seed N (another split: the race to A's validation accuracy then compares other rows), and
each seed needs an --out of its own. A k-fold variant's validation accuracy is out of fold, on the rows its members
held out (other rows than A's, as with --seed); C-onecycle is one since cnn11's recipe has ten folds, and
C-onecycle-shared is the same recipe on A's split.

A = `--recipe seed --n 1 --epochs 8`: seed 002's recipe (float32, the legacy generator, Adam 1e-4, plateau,
the last epoch's weights). Its wall time is the budget (or --budget seconds) and every other variant runs
`ensemble train --time-limit BUDGET`. "A-budget" is the seed recipe itself under the time limit (its 50
epochs stopped at the budget). For each variant: holdout accuracy of its mean blend, with and without
TTA where it made TTA outputs, and the wall time at which it first reached A's validation accuracy (the
best validation accuracy among the models finished so far or the running member's epochs, each at the wall
clock its epoch ended: start-up counts).
Each variant is a real `ensemble train` process in a fresh workspace, timed from start to exit.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from ensemble.job.layout import JobLayout

ROOT = Path(__file__).resolve().parent.parent
ENSEMBLE = [sys.executable, "-m", "ensemble.cli"]
VARIANTS = {
    "A": ["--recipe", "seed", "--n", "1", "--epochs", "8"],
    "A-budget": ["--recipe", "seed"],
    "B": ["--recipe", "cnn11", "--schedule", "plateau", "--lr", "1e-4", "--epochs", "50"],
    "C-onecycle": ["--recipe", "cnn11", "--tta"],  # since 2026-12-06's seventh session: ten folds (the recipe's)
    # one split shared by every member, as A's (the default until then): its val acc is on A's rows
    "C-onecycle-shared": ["--recipe", "cnn11", "--tta", "--folds", "0"],
    "C-onecycle-6ep": ["--recipe", "cnn11", "--epochs", "6", "--tta"],
    "C-onecycle-n2": ["--recipe", "cnn11", "--tta", "--n", "2"],  # a cap: 2 members stretched to fill the limit
    "C-onecycle-pool": ["--recipe", "cnn11", "--tta", "--model", "cnn11_pool"],  # cnn11 pooled before its dense
    "C-onecycle-warmup05": ["--recipe", "cnn11", "--tta", "--warmup", "0.05"],  # the peak after 5% of the steps
    "C-onecycle-ema98": ["--recipe", "cnn11", "--tta", "--ema", "0.98"],  # a weight average kept beside the net
    "C-onecycle-flip": ["--recipe", "cnn11", "--tta", "--flip"],  # mirrored training images, and mirrored views
    "C-onecycle-b128": ["--recipe", "cnn11", "--tta", "--batch", "128", "--lr", "4e-3"],  # half the steps, the rate x2
    "C-onecycle-shared-b128": ["--recipe", "cnn11", "--tta", "--folds", "0", "--batch", "128", "--lr", "4e-3"],
    "C-onecycle-erase": ["--recipe", "cnn11", "--tta", "--erase", "0.5"],  # random erasing, Zhong et al.'s p
    "C-onecycle-wd": ["--recipe", "cnn11", "--tta", "--weight-decay", "0.05"],  # AdamW's decoupled decay
    "C-onecycle-w2": ["--recipe", "cnn11", "--tta", "--workers", "2"],  # two members at once, a core each
    "C-onecycle-w2-16ep": ["--recipe", "cnn11", "--tta", "--workers", "2", "--epochs", "16"],  # 2 x 2 members
    # 10 folds: each member trains on 90% of the rows, as on the shared split, but holds out a fold of its own
    "C-onecycle-f10": ["--recipe", "cnn11", "--tta", "--folds", "10"],
    "C-snapshots": ["--recipe", "cnn11", "--snapshots", "3", "--epochs", "12", "--tta"],
    "C-deotte-recipe": ["--recipe", "deotte", "--tta"],
    "C-deotte-onecycle": ["--recipe", "cnn11", "--model", "deotte", "--rotation", "10", "--tta"],
}


def make_data(source: Path, rows: int, out: Path) -> np.ndarray:
    """train.csv / test.csv (holdout pixels) under out; returns the holdout labels."""
    labels_path = out / "holdout_labels.npy"
    if labels_path.is_file():
        return np.load(labels_path)
    frame = pd.read_csv(source / "train.csv", nrows=rows)
    train, holdout = train_test_split(frame, test_size=0.1, stratify=frame["label"], random_state=0)
    out.mkdir(parents=True, exist_ok=True)
    train.to_csv(out / "train.csv", index=False)
    holdout.drop(columns="label").to_csv(out / "test.csv", index=False)
    np.save(labels_path, holdout["label"].to_numpy())
    return holdout["label"].to_numpy()


def run_variant(name: str, args: list[str], data: Path, home: Path, budget: float | None, log: Path,
                gpus: str = "cpu", root: Path = ROOT) -> float:
    """One `ensemble train` of `root`'s package (default: this checkout), timed from start to exit."""
    command = [*ENSEMBLE, "--home", str(home), "train", "--data", str(data), "--job", name, "--gpus", gpus, *args]
    if budget is not None:
        command += ["--time-limit", f"{budget:.0f}"]
    started = time.time()
    # that checkout's package, also in the member processes (which never import from the current directory)
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with log.open("w") as handle:
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=root, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{name} failed (exit {result.returncode}); see {log}")
    return time.time() - started


def parse_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z").timestamp()


def score_variant(home: Path, job: str, holdout: np.ndarray, run_started: float) -> dict:
    """Holdout accuracy of the mean blend (plain and TTA), and a timeline of validation accuracy."""
    sys.path.insert(0, str(ROOT))
    from ensemble.blend.blending import default_blend_names, load_outputs
    from ensemble.blend.methods import blend_arrays, covered_rows, mean_blend
    from ensemble.job.outputs import read_metrics
    from ensemble.job.record import load_record
    from ensemble.job.split import load_split
    from ensemble.nets.metrics import accuracy
    from ensemble.store.workspace import Workspace

    ws = Workspace.resolve(home)
    record = load_record(ws, job)
    y_val = load_split(ws, record)["val_labels"]
    plain = load_outputs(ws, record)
    tta = load_outputs(ws, record, tta=True)
    # the mean blend as `ensemble blend` makes it: with k folds, each validation row scored by the members that
    # held it out
    plain_blend = blend_arrays(plain, y_val, "mean")
    tta_blend = blend_arrays(tta, y_val, "mean") if tta.tta else None
    result = {
        "models": len(plain.names),
        "members": len(record.members),
        "epochs": [member.epoch for member in record.members],
        "holdout": accuracy(plain_blend.test_probs, holdout),
        "holdout_tta": accuracy(tta_blend.test_probs, holdout) if tta_blend else None,
        "val": plain_blend.val_accuracy,
        "val_tta": tta_blend.val_accuracy if tta_blend else None,
        "best_single_holdout": max(accuracy(p, holdout) for p in plain.test_probs),
    }
    # timeline: (seconds since start, validation accuracy reachable then)
    timeline = []
    for member in record.members:
        history = pd.read_csv(JobLayout(ws, job).member(member.index).path / "history.csv").drop_duplicates("epoch", keep="last")
        if "ended_at" in history:  # the wall clock at each epoch's end: the member's start-up counts
            ends = history["ended_at"] - run_started
        else:  # an older member: its epochs from its launch, without its start-up (reads early)
            ends = parse_time(member.started) - run_started + history["epoch_seconds"].cumsum()
        for at, val in zip(ends, history["val_accuracy"]):
            timeline.append((at, val))
    names = default_blend_names(ws, record)
    finished = sorted((parse_time(record.members[read_metrics(JobLayout(ws, job).model(n)).member].ended)
                       - run_started, n) for n in names)
    for i, (at, _) in enumerate(finished):
        chosen = [plain.names.index(n) for _, n in finished[: i + 1]]
        mask = None if plain.val_mask is None else plain.val_mask[chosen]
        probs = mean_blend(plain.val_probs[chosen], mask)
        rows = covered_rows(mask, len(y_val))
        timeline.append((at, accuracy(probs[rows], y_val[rows])))
    result["timeline"] = sorted(timeline)
    return result


def time_to(timeline: list[tuple[float, float]], target: float) -> float | None:
    return next((at for at, val in timeline if val >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "fashion")
    parser.add_argument("--rows", type=int, default=12000)
    parser.add_argument("--variants", default="A,B,C-onecycle,C-onecycle-6ep,C-snapshots,C-deotte-onecycle")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds per variant (default: A's wall time; A must then come first)")
    parser.add_argument("--reference", default="A", help="the variant whose accuracy the others race to")
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    parser.add_argument("--gpus", default="cpu", help="ensemble train --gpus (cpu here; 0 on a GPU machine)")
    parser.add_argument("--seed", type=int, default=None,
                        help="the job seed of every variant but A (default: the job's, 0): other members, split, folds")
    args = parser.parse_args()

    data = args.out / f"data-{args.rows}"
    holdout = make_data(args.data, args.rows, data)
    results, budget = {}, args.budget
    for name in args.variants.split(","):
        home = args.out / f"{args.rows}-{name}"
        if home.exists():
            subprocess.run(["rm", "-rf", str(home)], check=True)
        started = time.time()
        limited = None if name == "A" else budget
        seeded = VARIANTS[name] + (["--seed", str(args.seed)] if args.seed is not None and name != "A" else [])
        wall = run_variant(name, seeded, data, home, limited, args.out / f"{args.rows}-{name}.log", args.gpus)
        if name == "A" and budget is None:
            budget = wall
        results[name] = {"wall": wall, "budget": limited, **score_variant(home, name, holdout, started)}
        print(json.dumps({name: {k: v for k, v in results[name].items() if k != "timeline"}}), flush=True)
    reference = results.get(args.reference)
    target = reference["val"] if reference else None  # what A delivers: its blend's validation accuracy
    print(f"\nrows {args.rows}, budget {budget:.0f} s, holdout {len(holdout)} rows, "
          f"reference {args.reference} val acc {target}")
    print("| variant | wall s | members (epochs each) | models blended | holdout acc | holdout acc with TTA | "
          f"val acc | val acc with TTA | s to {args.reference}'s val acc |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        reach = time_to(r["timeline"], target) if target is not None else None
        tta = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
        print(f"| {name} | {r['wall']:.0f} | {r['members']} ({', '.join(map(str, r['epochs']))}) | {r['models']} | "
              f"{r['holdout']:.4f} | {tta(r['holdout_tta'])} | {r['val']:.4f} | {tta(r['val_tta'])} | "
              f"{'-' if reach is None else f'{reach:.0f}'} |")
    (args.out / f"results-{args.rows}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
