"""Members vs epochs at equal wall time: the default job (`--recipe cnn11 --tta --time-limit BUDGET`) of each
checkout, over several job seeds, checkouts alternating within a seed. Each checkout's planner decides how
many members of how many epochs fill the budget; the holdout decides which plan was worth more.

    git worktree add -f /tmp/recipe-length 0f02732   # the planner that kept members at the recipe's length
    python benchmarks/members_vs_epochs.py --data data/fashion --rows 12000 --budget 400 --seeds 0,1,2 \\
        --roots /tmp/recipe-length,.

With --lever (repeatable), each checkout also runs its default job plus those train options, paired seed by
seed (a lever measured under the time limit, as a user runs it); --levers-only runs those alone (e.g. a baseline
lever `--folds 0` and `--folds 0 --width 0.5`, without the ten-fold default). With --target, each run also says
when the job first reached that validation accuracy (budget.py's timeline: the wall clock at each epoch's end,
start-up included), e.g. seed 002's validation accuracy from a budget.py run of A on the same rows:

    python benchmarks/members_vs_epochs.py --rows 12000 --budget 110 --roots . --lever "--warmup 0.05" \\
        --target 0.8148

Each checkout runs its own default: since cnn11's recipe has ten folds (2026-12-06), this checkout's default
validates each member on its own fold, and a checkout from before on the shared split, so --target races on
other rows for the two (`--lever "--folds 0"` puts this one on the shared split, where every checkout knows
`--folds 0`).

The data and holdout are benchmarks/budget.py's (the first --rows rows of the seeded 42000-row train.csv, a
stratified 10% held out). The job seed sets the members' seeds and the validation split; the holdout is the
same for every run. Per run: the plan as the job recorded it, the epochs each member ran, wall time, and the
holdout accuracy of the mean blend with and without TTA; per checkout: the mean and the spread over seeds.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from budget import ROOT, VARIANTS, make_data, run_variant, score_variant, time_to  # noqa: E402


def planned(home: Path, job: str) -> str:
    from ensemble.job.record import load_record
    from ensemble.store.workspace import Workspace

    record = load_record(Workspace.resolve(home), job)
    return record.budget.plan.describe() if record.budget and record.budget.plan else "-"


def cpu_model() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())


def spread(values: list[float], digits: int = 4) -> str:
    if len(values) < 2:
        return f"{values[0]:.{digits}f}" if values else "-"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "fashion")
    parser.add_argument("--rows", type=int, default=12000)
    parser.add_argument("--budget", type=float, required=True, help="seconds per run (--time-limit)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--roots", required=True, help="checkouts, comma-separated ('.' is this one)")
    parser.add_argument("--lever", action="append", default=[],
                        help='train options run beside each default, e.g. "--warmup 0.05" (repeatable)')
    parser.add_argument("--target", type=float, default=None, help="a validation accuracy: seconds until reached")
    parser.add_argument("--levers-only", action="store_true",
                        help="run only the --lever jobs, not each checkout's default beside them")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-members")
    parser.add_argument("--gpus", default="cpu", help="ensemble train --gpus (cpu here; 0 on a GPU machine)")
    args = parser.parse_args()
    if args.levers_only and not args.lever:
        parser.error("--levers-only needs at least one --lever")

    roots = [Path(root).resolve() for root in args.roots.split(",")]
    data = args.out / f"data-{args.rows}"
    holdout = make_data(args.data, args.rows, data)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; rows {args.rows}, "
          f"budget {args.budget:.0f} s, holdout {len(holdout)} rows", flush=True)
    variants = [] if args.levers_only else [("", [])]
    variants += [("+" + lever.replace("--", "").replace(" ", ""), lever.split()) for lever in args.lever]
    runs = []
    for seed in args.seeds.split(","):
        for number, root in enumerate(roots):
            commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True).stdout.strip()
            for suffix, options in variants:
                label = f"{number}-{commit}{suffix}"
                home = args.out / f"{args.rows}-{label}-seed{seed}"
                subprocess.run(["rm", "-rf", str(home)], check=True)
                started = time.time()
                wall = run_variant("C-onecycle", [*VARIANTS["C-onecycle"], "--seed", seed, *options], data, home,
                                   args.budget, args.out / f"{args.rows}-{label}-seed{seed}.log", args.gpus, root)
                scored = score_variant(home, "C-onecycle", holdout, started)
                reached = time_to(scored["timeline"], args.target) if args.target is not None else None
                run = {"checkout": label, "seed": int(seed), "wall": round(wall, 1),
                       "plan": planned(home, "C-onecycle"), "reached": reached,
                       "first_epoch": round(scored["timeline"][0][0], 2),  # its end, start-up included
                       **{k: v for k, v in scored.items() if k != "timeline"}}
                runs.append(run)
                print(json.dumps(run), flush=True)
    (args.out / f"members-{args.rows}.json").write_text(json.dumps(runs, indent=1))

    reach = f"s to {args.target}" if args.target is not None else "s to a target (none given)"
    print(f"\n| checkout | seed | plan | members (epochs run) | wall s | holdout acc | with TTA | first epoch ends, s "
          f"| {reach} |")
    print("| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for run in runs:
        tta = "" if run["holdout_tta"] is None else f"{run['holdout_tta']:.4f}"
        reached = "-" if run["reached"] is None else f"{run['reached']:.0f}"
        print(f"| {run['checkout']} | {run['seed']} | {run['plan']} | {run['members']} "
              f"({', '.join(map(str, run['epochs']))}) | {run['wall']:.0f} | {run['holdout']:.4f} | {tta} "
              f"| {run['first_epoch']:.1f} | {reached} |")
    print(f"\n| checkout | runs | holdout acc, mean ± sd | with TTA, mean ± sd | first epoch ends, s | {reach}, "
          "mean ± sd |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label in dict.fromkeys(run["checkout"] for run in runs):
        mine = [run for run in runs if run["checkout"] == label]
        reached = [r["reached"] for r in mine if r["reached"] is not None]
        print(f"| {label} | {len(mine)} | {spread([r['holdout'] for r in mine])} | "
              f"{spread([r['holdout_tta'] for r in mine if r['holdout_tta'] is not None])} | "
              f"{spread([r['first_epoch'] for r in mine], 1)} | "
              f"{spread(reached, 1) if len(reached) == len(mine) else f'{len(reached)} of {len(mine)} reached'} |")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
