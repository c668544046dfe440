"""Which weight average of a member reaches an accuracy soonest: several averages of one member's training, kept
side by side on the same steps, each validated at the same points of its first epochs.

    python benchmarks/budget.py --data data/fashion --rows 42000 --variants A,C-onecycle-shared --out /tmp/a42
    python benchmarks/averages.py --home /tmp/a42/42000-C-onecycle-shared --job C-onecycle-shared --epochs 14 \\
        --train-epochs 4 --seeds 0,1 --target 0.8907

A weight average never changes what the net trains on (member.loop swaps it in only to validate and keep), so
one trajectory serves every average: the net is the job's member (its spec, seed, split and one-cycle sized to
--epochs, the length the job's plan gave it), trained with no average in its optimizer, and this script keeps
the averages in numpy after each step:
    net        the net's own weights
    ema:M      Keras' use_ema: the first step's weights, then M * average + (1 - M) * weights
    power:G    Karras et al. 2024's power-function average: momentum (1 - 1/t) ** (G + 1) at step t (1-based), so it
               starts from the first step's weights, with no bias from them, and reaches over a constant share of
               the steps so far (G 6.94: a relative width of 0.10; G 16.97: 0.05)
    warm:G:M   --ema M --ema-power G: the power-function momentum until it reaches M, then M (nets.averaging)
Each is validated on the job's validation rows --checks times an epoch (at equal shares of its steps, the last at
its end), in batches of 1024, at the point's step count. The table: accuracy per average and point, and with
--target, the first point each reaches it. Seeds are member seeds on the job's one split (A's, for a budget.py
job of `C-onecycle-shared`), so the race is always on the same rows. Every seed's rows are printed as they come.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@dataclass(frozen=True)
class Average:
    name: str
    kind: str       # "net", "ema", "power" or "warm"
    value: float = 0.0
    cap: float = 1.0  # warm's M

    def momentum(self, step: int) -> float:
        """The momentum of the update after 1-based step `step`."""
        from ensemble.nets.averaging import power_momentum

        if self.kind == "ema":
            return 0.0 if step == 1 else self.value
        return power_momentum(step, self.value, self.cap)


def parse_average(text: str) -> Average:
    kind, _, value = text.partition(":")
    if kind == "net" and not value:
        return Average(text, "net")
    if kind == "warm" and value.count(":") == 1:
        gamma, cap = value.split(":")
        return Average(text, kind, float(gamma), float(cap))
    if kind not in ("ema", "power") or not value:
        raise SystemExit(f"unknown average {text!r}: use net, ema:M, power:G or warm:G:M")
    return Average(text, kind, float(value))


class Averages:
    """Numpy averages of a model's trainable weights, updated after each step."""

    def __init__(self, averages: list[Average]):
        self.averages = [a for a in averages if a.kind != "net"]
        self.values: dict[str, list[np.ndarray]] = {}
        self.step = 0

    def update(self, weights: list[np.ndarray]) -> None:
        self.step += 1
        for average in self.averages:
            beta = average.momentum(self.step)
            held = self.values.get(average.name)
            if held is None or beta == 0.0:
                self.values[average.name] = [w.copy() for w in weights]
                continue
            for kept, w in zip(held, weights):
                kept *= beta
                kept += (1.0 - beta) * w


def accuracy_of(model, x: np.ndarray, y: np.ndarray) -> float:
    right = 0
    for start in range(0, len(x), 1024):
        probs = np.asarray(model.predict_on_batch(x[start:start + 1024].astype("float32")))
        right += int((probs.argmax(1) == y[start:start + 1024]).sum())
    return right / len(x)


def run_seed(home: Path, job: str, epochs: int, train_epochs_count: int, seed: int, averages: list[Average],
             checks: int) -> list[dict]:
    import keras

    from ensemble.job.arrays import job_arrays
    from ensemble.job.record import load_record
    from ensemble.member.loop import train_epochs
    from ensemble.member.model import build_member_model, rate_callbacks, steps_per_epoch
    from ensemble.store.workspace import Workspace

    ws = Workspace.resolve(home)
    record = load_record(ws, job)
    if record.spec.folds:
        raise SystemExit(f"{job} has {record.spec.folds} folds: name a job on one shared split (--folds 0)")
    arrays = job_arrays(ws, record)
    spec = replace(record.spec, epochs=epochs, ema=0.0)
    keras.backend.clear_session()
    model = build_member_model(spec, seed, len(arrays.x_train))
    steps = steps_per_epoch(spec, len(arrays.x_train))
    points = {max(1, round(steps * (k + 1) / checks)) for k in range(checks)}
    kept = Averages(averages)
    rows: list[dict] = []
    started = time.perf_counter()

    class Keep(keras.callbacks.Callback):
        validating = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            variables = self.model.trainable_weights
            kept.update([keras.ops.convert_to_numpy(v) for v in variables])
            if batch + 1 not in points:
                return
            clock = time.perf_counter() - started - self.validating
            own = [keras.ops.convert_to_numpy(v) for v in variables]
            row = {"seed": seed, "epoch": self.epoch + (batch + 1) / steps, "train_seconds": round(clock, 1)}
            for average in averages:
                weights = own if average.kind == "net" else kept.values[average.name]
                for variable, value in zip(variables, weights):
                    variable.assign(value)
                row[average.name] = accuracy_of(self.model, arrays.x_val, arrays.y_val)
            for variable, value in zip(variables, own):
                variable.assign(value)
            rows.append(row)
            print(json.dumps(row), flush=True)
            self.validating = time.perf_counter() - started - clock  # validation off the training clock

    train_epochs(model, arrays.x_train, arrays.y_train, batch_size=spec.batch_size, epochs=train_epochs_count,
                 seed=seed, callbacks=[*rate_callbacks(model), Keep()], whole_batches=True)
    return rows


def first_reach(rows: list[dict], name: str, target: float) -> float | None:
    return next((row["epoch"] for row in rows if row[name] >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="a budget.py workspace whose job names the member")
    parser.add_argument("--job", required=True)
    parser.add_argument("--epochs", type=int, required=True, help="the member's planned length: its one-cycle's")
    parser.add_argument("--train-epochs", type=int, default=4, help="epochs actually trained")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--checks", type=int, default=2, help="validations an epoch")
    parser.add_argument("--averages", default="net,ema:0.98,ema:0.99,ema:0.995,ema:0.998,power:6.94,power:16.97")
    parser.add_argument("--target", type=float, default=None, help="e.g. seed 002's validation accuracy")
    args = parser.parse_args()
    averages = [parse_average(text) for text in args.averages.split(",")]
    rows = []
    for seed in map(int, args.seeds.split(",")):
        rows += run_seed(args.home, args.job, args.epochs, args.train_epochs, seed, averages, args.checks)
    print("\n| seed | epoch | " + " | ".join(a.name for a in averages) + " |")
    print("| ---: | ---: | " + " | ".join("---:" for _ in averages) + " |")
    for row in rows:
        print(f"| {row['seed']} | {row['epoch']:.2f} | " + " | ".join(f"{row[a.name]:.4f}" for a in averages) + " |")
    if args.target is not None:
        print(f"\nfirst validation at or above {args.target} (epochs trained), per seed:")
        for seed in sorted({row["seed"] for row in rows}):
            mine = [row for row in rows if row["seed"] == seed]
            reached = {a.name: first_reach(mine, a.name, args.target) for a in averages}
            print(f"seed {seed}: " + ", ".join(f"{name} {'-' if at is None else f'{at:.2f}'}"
                                                for name, at in reached.items()))


if __name__ == "__main__":
    from ensemble.run.devices import tensorflow_defaults

    tensorflow_defaults(os.environ)  # TensorFlow as members run it: oneDNN on, quiet
    main()
