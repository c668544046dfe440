"""Training throughput: the seed recipe (A) vs `ensemble`'s member training (B), alternating, one run.

    python benchmarks/train_throughput.py --data data/sample --epochs 4 --repeats 3
    KERAS_BACKEND=jax python benchmarks/train_throughput.py --data data/fashion --epochs 3 --repeats 3

Variants (each trial is a fresh process, so no Keras state leaks between them; A and B alternate):
  A          the seed recipe: deprecated ImageDataGenerator.flow feeding fit, float32, batch 64,
             Adam 1e-4, ReduceLROnPlateau, pixels divided by 255 up front. One deviation: the seed's
             from_logits=True bug is fixed, so accuracy compares the pipelines, not the bug.
  B          `ensemble` member training with its defaults: in-graph IDG augmentation, --precision auto,
             whole arrays handed to fit, and every member callback (checkpoint, history, backup).
  B-float32  B with --precision float32 (the precision lever alone).
(There is no XLA variant for TensorFlow: XLA cannot compile the ImageProjectiveTransformV3 op that
keras.ops.image.affine_transform uses there, so `jit_compile=True` fails; on JAX everything is jit-compiled.)

Images/s = training images / epoch seconds (an epoch includes its validation pass), median over epochs
2..E (epoch 1 also traces and compiles). Time-to-accuracy: seconds of training until a variant first
reaches the validation accuracy A reached after E epochs, in the same repeat.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("A", "B", "B-float32")


def load_arrays(data_dir: Path, limit: int | None):
    import numpy as np

    from ensemble.data.split import stratified_split
    from ensemble.data.tables import read_train_csv
    from ensemble.job.arrays import JobArrays

    train = read_train_csv(data_dir / "train.csv")
    images, labels = train.images[:limit, ..., None], train.labels[:limit]
    train_index, val_index = stratified_split(labels, 0.1, seed=0)
    return JobArrays(images[train_index], labels[train_index], images[val_index], labels[val_index],
                     np.zeros((0, 28, 28, 1), np.uint8))


def run_seed_recipe(arrays, epochs: int, seed: int) -> dict:
    import keras

    from ensemble.member.callbacks.clock import EpochClock
    from ensemble.nets.architectures import build_network
    from ensemble.nets.augment import legacy_image_data_generator

    keras.utils.set_random_seed(seed)
    keras.config.set_dtype_policy("float32")
    model = build_network("cnn11")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=False), metrics=["accuracy"])
    x_train = arrays.x_train.astype("float32") / 255.0
    x_val = arrays.x_val.astype("float32") / 255.0
    flow = legacy_image_data_generator().flow(x_train, arrays.y_train, batch_size=64, seed=seed)
    history = model.fit(flow, epochs=epochs, validation_data=(x_val, arrays.y_val), verbose=0,
                        callbacks=[EpochClock(), keras.callbacks.ReduceLROnPlateau(
                            monitor="val_accuracy", mode="max", patience=3, factor=0.5, min_lr=1e-5)])
    return {"epoch_seconds": history.history["epoch_seconds"], "val_accuracy": history.history["val_accuracy"],
            "precision": "float32"}


def run_member(arrays, epochs: int, seed: int, precision: str) -> dict:
    from ensemble.job.layout import read_history
    from ensemble.job.spec import JobSpec
    from ensemble.member.model import build_member_model, fit_member_model
    from ensemble.member.process import _callbacks

    spec = JobSpec.from_options(model="cnn11", epochs=epochs, precision=precision)
    model = build_member_model(spec, seed)
    with tempfile.TemporaryDirectory() as folder:
        fit_member_model(model, spec, arrays, seed, _callbacks(Path(folder), "bench", epochs, []))
        history = read_history(Path(folder) / "history.csv")
    return {"epoch_seconds": [row["epoch_seconds"] for row in history],
            "val_accuracy": [row["val_accuracy"] for row in history], "precision": spec.precision}


def run_trial(variant: str, data_dir: Path, limit: int | None, epochs: int, seed: int) -> dict:
    arrays = load_arrays(data_dir, limit)
    if variant == "A":
        result = run_seed_recipe(arrays, epochs, seed)
    else:
        precision = "float32" if variant == "B-float32" else "auto"
        result = run_member(arrays, epochs, seed, precision)
    import keras

    from ensemble.member.model import runtime_description

    runtime = runtime_description()
    return {"variant": variant, "seed": seed, "n_train": len(arrays.x_train), "n_val": len(arrays.x_val),
            "backend": runtime["backend"], "device": runtime["device"], "keras": keras.__version__, **result}


def steady_images_per_second(trial: dict) -> float:
    seconds = trial["epoch_seconds"][1:] or trial["epoch_seconds"]
    return trial["n_train"] / statistics.median(seconds)


def time_to_reach(trial: dict, target: float) -> float | None:
    elapsed = 0.0
    for seconds, accuracy in zip(trial["epoch_seconds"], trial["val_accuracy"]):
        elapsed += seconds
        if accuracy >= target:
            return elapsed
    return None


def spread(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "never"
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def summarise(trials: list[dict], variants: list[str], epochs: int) -> str:
    by_variant = {v: [t for t in trials if t["variant"] == v] for v in variants}
    repeats = min(len(ts) for ts in by_variant.values())
    lines = [f"| variant | precision | images/s min / median / max | x A (paired) min / median / max | "
             f"val acc after {epochs} epochs min / median / max | s to A's final val acc min / median / max |",
             "| --- | --- | --- | --- | --- | --- |"]
    for variant, ts in by_variant.items():
        speeds = [steady_images_per_second(t) for t in ts]
        ratios = [steady_images_per_second(ts[r]) / steady_images_per_second(by_variant["A"][r])
                  for r in range(repeats)] if "A" in by_variant else []
        reach = [time_to_reach(ts[r], by_variant["A"][r]["val_accuracy"][-1]) for r in range(repeats)] \
            if "A" in by_variant else []
        lines.append(f"| {variant} | {ts[0]['precision']} | {spread(speeds)} | {spread(ratios)} | "
                     f"{spread([t['val_accuracy'][-1] for t in ts])} | {spread(reach)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/sample"))
    parser.add_argument("--limit", type=int, default=None, help="first N rows of train.csv")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default="A,B", help=f"comma-separated from {','.join(VARIANTS)}")
    parser.add_argument("--trial", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write every trial as JSON here")
    args = parser.parse_args()

    if args.trial:
        print("RESULT " + json.dumps(run_trial(args.trial, args.data, args.limit, args.epochs, args.seed)))
        return

    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}")
    print(f"{platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}, "
          f"KERAS_BACKEND={os.environ.get('KERAS_BACKEND', 'tensorflow')}, data {args.data} "
          f"(limit {args.limit}), {args.epochs} epochs x {args.repeats} repeats, variants {variants}", flush=True)
    trials, started = [], time.perf_counter()
    from ensemble.run.devices import tensorflow_defaults

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    tensorflow_defaults(env)  # each trial's TensorFlow as members run it: oneDNN on, quiet
    for repeat in range(args.repeats):
        for variant in variants:
            command = [sys.executable, __file__, "--trial", variant, "--seed", str(repeat), "--data", str(args.data),
                       "--epochs", str(args.epochs)] + (["--limit", str(args.limit)] if args.limit else [])
            output = subprocess.run(command, capture_output=True, text=True, env=env)
            result_lines = [line for line in output.stdout.splitlines() if line.startswith("RESULT ")]
            if output.returncode != 0 or not result_lines:
                sys.exit(f"trial {variant} failed:\n{output.stdout[-3000:]}\n{output.stderr[-3000:]}")
            trial = json.loads(result_lines[-1][len("RESULT "):])
            trials.append(trial)
            print(f"repeat {repeat} {variant:10} {trial['precision']:15} {steady_images_per_second(trial):8.1f} img/s"
                  f"  epochs {[round(s, 1) for s in trial['epoch_seconds']]}  val_acc "
                  f"{[round(a, 4) for a in trial['val_accuracy']]}  ({trial['backend']}, {trial['device']})",
                  flush=True)
    print(summarise(trials, variants, args.epochs))
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(trials, indent=1))


if __name__ == "__main__":
    main()
