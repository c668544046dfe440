"""What a weight average costs a cnn11 step, kept three ways side by side in one run: none, Keras' own (`use_ema`,
updated inside every train step) and one kept in numpy and updated every K steps with momentum**K (an
average that skips steps, the cheaper kind BENCHMARKS.md once proposed).

    python benchmarks/ema_cost.py --steps 170 --every 1,4,8 --repeats 2

Each variant trains a freshly built cnn11 (the job's precision: mixed_bfloat16 where the CPU has it) for
--steps batches of 64 random images after 5 untimed ones (the trace), through `train_on_batch` as members do;
the table gives the seconds of those steps, per variant and repeat (each repeat starts one variant later). CPU
only: the precision is the CPU's.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from members_vs_epochs import cpu_model  # noqa: E402

BATCH = 64


def fresh_model(build, precision: str, ema: float, learning_rate: float = 1e-3):
    """build() compiled as members compile it, in a cleared session under `precision`, from seed 0."""
    import keras

    from ensemble.nets.architectures import compile_model

    keras.backend.clear_session()
    keras.config.set_dtype_policy(precision)  # after clear_session, which resets it
    keras.utils.set_random_seed(0)
    return compile_model(build(), "adam", learning_rate, 0.0, 10, ema)


def warm_up(model, images, labels, batch: int = BATCH) -> None:
    """5 untimed steps of the first batch: the trace."""
    for _ in range(5):
        model.train_on_batch(images[:batch], labels[:batch])


def steps_seconds(model, images, labels, steps: int, after_step=lambda step: None, batch: int = BATCH) -> float:
    """Seconds of `steps` train steps on consecutive batches; `after_step(step)` runs inside the timed loop after
    each."""
    began = time.perf_counter()
    for step in range(steps):
        rows = slice(step * batch, (step + 1) * batch)
        model.train_on_batch(images[rows], labels[rows])
        after_step(step)
    return time.perf_counter() - began


def rotated(variants: list, repeat: int) -> list:
    """The variants in the order repeat `repeat` runs them: each repeat starts one variant later."""
    return variants[repeat % len(variants):] + variants[:repeat % len(variants)]


def repeated(names: list[str], repeats: int, measure) -> dict[str, list[float]]:
    """measure(name) of every variant, `repeats` times, in rotated order so that none always runs first."""
    results = {name: [] for name in names}
    for repeat in range(repeats):
        for name in rotated(names, repeat):
            results[name].append(measure(name))
    return results


def relative_table(results: dict[str, list[float]], base: str, heading: str, digits: int) -> str:
    """A markdown table: each variant's values per repeat and its mean against `base`'s; heading is the three
    column names, as "a | b | c"."""
    rows = [f"| {heading} |", "| --- | --- | ---: |"]
    reference = np.mean(results[base])
    rows += [f"| {name} | {', '.join(f'{v:.{digits}f}' for v in values)} | {np.mean(values) / reference - 1:+.1%} |"
             for name, values in results.items()]
    return "\n".join(rows)


def timed_steps(images, labels, steps: int, keras_ema: float, every: int, precision: str) -> float:
    import keras

    from ensemble.nets.architectures import build_model
    from ensemble.nets.recipes import RECIPES

    model = fresh_model(lambda: build_model("cnn11", 10, RECIPES["cnn11"].augmentation, 0), precision, keras_ema)
    warm_up(model, images, labels)
    average = [np.array(keras.ops.convert_to_numpy(v)) for v in model.trainable_variables]
    momentum = 0.98 ** every if every else 0.0

    def keep_average(step: int) -> None:
        if every and step % every == every - 1:
            for kept, weight in zip(average, model.trainable_variables):
                kept *= momentum
                kept += (1 - momentum) * keras.ops.convert_to_numpy(weight)

    return steps_seconds(model, images, labels, steps, keep_average)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=170, help="timed steps (170: an epoch of 10800 rows)")
    parser.add_argument("--every", default="1,4,8", help="the numpy average's update intervals, in steps")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from ensemble.nets.precision import resolve_precision

    precision = resolve_precision("auto", gpus=[])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (BATCH * args.steps, 28, 28, 1)).astype("float32")  # pixels, as the net expects
    labels = rng.integers(0, 10, BATCH * args.steps)
    variants = [("none", 0.0, 0), ("Keras use_ema 0.98, every step", 0.98, 0)]
    intervals = [int(k) for k in args.every.split(",")]
    if min(intervals) < 1:
        parser.error("--every takes whole steps of 1 or more")
    variants += [(f"numpy, every {k} steps (0.98**{k})", 0.0, k) for k in intervals]
    print(f"machine: {cpu_model()}, precision {precision}, {args.steps} steps of "
          f"{BATCH}")
    settings = {name: (keras_ema, every) for name, keras_ema, every in variants}
    results = repeated(list(settings), args.repeats,
                       lambda name: timed_steps(images, labels, args.steps, *settings[name], precision))
    print("\n" + relative_table(results, "none", "average | seconds per repeat | mean vs none", digits=2))


if __name__ == "__main__":
    from ensemble.run.devices import tensorflow_defaults

    tensorflow_defaults(os.environ)  # TensorFlow as members run it: oneDNN on, quiet
    main()
