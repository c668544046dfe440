"""Which test-time views pay, measured on a finished job's own members: every candidate view predicted once by each
member's kept weights, then each set of views scored as the mean over members and views, on the job's validation
rows and on budget.py's holdout. Paired by construction (the same weights for every set), so differences far below
one run's noise show; choose on validation, read the holdout as the check.

    python benchmarks/budget.py --data data/fashion --rows 42000 --variants C-onecycle --budget 1200 --out /tmp/b
    python benchmarks/tta_views.py --home /tmp/b/42000-C-onecycle --job C-onecycle \
        --holdout-labels /tmp/b/data-42000/holdout_labels.npy

Views are (zx, zy, tx, ty, theta in degrees) as in ensemble.nets.augment.TTA_VIEWS; "current" is that set.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CANDIDATES = {
    "identity": (1.0, 1.0, 0.0, 0.0, 0.0),
    "x+1": (1.0, 1.0, 1.0, 0.0, 0.0), "x-1": (1.0, 1.0, -1.0, 0.0, 0.0),
    "y+1": (1.0, 1.0, 0.0, 1.0, 0.0), "y-1": (1.0, 1.0, 0.0, -1.0, 0.0),
    "x+1 y+1": (1.0, 1.0, 1.0, 1.0, 0.0), "x-1 y-1": (1.0, 1.0, -1.0, -1.0, 0.0),
    "x+1 y-1": (1.0, 1.0, 1.0, -1.0, 0.0), "x-1 y+1": (1.0, 1.0, -1.0, 1.0, 0.0),
    "x+2": (1.0, 1.0, 2.0, 0.0, 0.0), "x-2": (1.0, 1.0, -2.0, 0.0, 0.0),
    "y+2": (1.0, 1.0, 0.0, 2.0, 0.0), "y-2": (1.0, 1.0, 0.0, -2.0, 0.0),
    "rotate +6": (1.0, 1.0, 0.0, 0.0, 6.0), "rotate -6": (1.0, 1.0, 0.0, 0.0, -6.0),
    "zoom 0.93": (0.93, 0.93, 0.0, 0.0, 0.0), "zoom 1.07": (1.07, 1.07, 0.0, 0.0, 0.0),
    "zoom 0.96": (0.96, 0.96, 0.0, 0.0, 0.0), "zoom 1.04": (1.04, 1.04, 0.0, 0.0, 0.0),
    "mirror": (-1.0, 1.0, 0.0, 0.0, 0.0),
}
SHIFTS_1 = ["identity", "x+1", "x-1", "y+1", "y-1"]
DIAGONALS = ["x+1 y+1", "x-1 y-1", "x+1 y-1", "x-1 y+1"]
SETS = {
    "identity alone": ["identity"],
    "shifts of 1": SHIFTS_1,
    "shifts of 1, diagonals too": SHIFTS_1 + DIAGONALS,
    "shifts of 1, zoom 0.93": SHIFTS_1 + ["zoom 0.93"],
    "shifts of 1, zoom 0.93 and 1.07": SHIFTS_1 + ["zoom 0.93", "zoom 1.07"],
    "shifts of 1 and diagonals, zoom 0.96 and 1.04": SHIFTS_1 + DIAGONALS + ["zoom 0.96", "zoom 1.04"],
    "all 20 candidates but the mirror": [name for name in CANDIDATES if name != "mirror"],
}


def current_set() -> list[str]:
    from ensemble.nets.augment import TTA_VIEWS

    by_view = {view: name for name, view in CANDIDATES.items()}
    return [by_view[tuple(float(v) for v in view)] for view in TTA_VIEWS]


def view_probabilities(model_file: Path, rows: dict[str, np.ndarray]) -> dict[tuple[str, str], np.ndarray]:
    """{(view, rows' name): softmax} for every candidate view of every row set, from one saved member."""
    import keras

    from ensemble.member.loop import PREDICT_BATCH, predict_rows
    from ensemble.nets.augment import tta_view

    model = keras.saving.load_model(model_file, compile=False)
    return {(view, name): np.asarray(predict_rows(model, tta_view(images, CANDIDATES[view]), PREDICT_BATCH))
            for view in CANDIDATES for name, images in rows.items()}


def set_accuracy(members: list[dict], views: list[str], name: str, labels: np.ndarray) -> float:
    from ensemble.nets.metrics import accuracy

    return accuracy(np.mean([member[(view, name)] for member in members for view in views], axis=0), labels)


def scores(members: list[dict], views: list[str], labels: dict[str, np.ndarray]) -> str:
    """'| validation | holdout |' cells of a set of views."""
    return " | ".join(f"{set_accuracy(members, views, name, rows):.4f}" for name, rows in labels.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="the job's workspace (budget.py: OUT/ROWS-VARIANT)")
    parser.add_argument("--job", required=True)
    parser.add_argument("--holdout-labels", type=Path, required=True, help="labels of the job's test rows, .npy")
    args = parser.parse_args()

    from ensemble.job.arrays import job_arrays
    from ensemble.job.layout import JobLayout
    from ensemble.job.record import load_record
    from ensemble.store.workspace import Workspace

    ws = Workspace(args.home.resolve())
    record = load_record(ws, args.job)
    if record is None:
        parser.error(f"no job {args.job!r} under {args.home}")
    if record.spec.flip:
        parser.error("a --flip job also predicts each view mirrored; this script scores the unmirrored views only")
    arrays = job_arrays(ws, record)
    holdout = np.load(args.holdout_labels)
    if len(holdout) != len(arrays.x_test):
        parser.error(f"{len(holdout)} holdout labels for the job's {len(arrays.x_test)} test rows")
    files = [config.parent / "best.keras" for config in JobLayout(ws, args.job).member_configs()]
    if not files:
        parser.error(f"job {args.job!r} has no finished member")
    rows = {"val": arrays.x_val, "holdout": arrays.x_test}
    members = [view_probabilities(path, rows) for path in files]
    labels = {"val": arrays.y_val, "holdout": holdout}
    print(f"job {args.job}: {len(files)} members, {len(arrays.x_val)} validation rows, {len(holdout)} holdout rows")
    print("\n| view alone | validation | holdout |\n| --- | ---: | ---: |")
    for view in CANDIDATES:
        print(f"| {view} | {scores(members, [view], labels)} |")
    print("\n| views averaged | count | validation | holdout |\n| --- | ---: | ---: | ---: |")
    for name, views in {"current (TTA_VIEWS)": current_set(), **SETS}.items():
        print(f"| {name} | {len(views)} | {scores(members, views, labels)} |")


if __name__ == "__main__":
    main()
