"""What each piece of a cnn11 train step costs on this machine, side by side in one run: the net alone, with the
recipe's augmentation in the graph, with its weight average, the same net with every conv batch-normalised (the
fastest public recipes' nets are; FIELD.md), which is not one of the project's nets, cnn11_pool, and cnn11 at
narrower widths (--width).

    python benchmarks/step_cost.py --steps 120 --repeats 2

Each variant trains a freshly built model (the job's precision: mixed_bfloat16 where the CPU has it) for --steps
batches of 64 random images after 5 untimed ones (the trace), through `train_on_batch` as members do; the table
gives milliseconds a step, per repeat (each repeat starts one variant later). CPU only.

    python benchmarks/step_cost.py --steps 60 --repeats 2 --batches 64,128,256 --variants default

With --batches, the variants train at each batch size in turn, and the table gives each one's milliseconds a step
and images a second instead: it separates what a step costs whatever its rows from what grows with them.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ema_cost import BATCH, fresh_model, relative_table, repeated, steps_seconds, warm_up  # noqa: E402
from members_vs_epochs import cpu_model  # noqa: E402
BN_MOMENTUM = 0.9  # Keras' 0.99 would still hold a fifth of the initial statistics after a 150-step epoch


def cnn11_batch_normalised(n_classes: int, augmentation: list):
    """cnn11 as build_model makes it, with each conv's bias replaced by a batch norm before its ReLU."""
    import keras
    from keras import layers

    from ensemble.nets.architectures import INPUT_SHAPE

    def conv(filters):
        return [layers.Conv2D(filters, 3, padding="same", use_bias=False),
                layers.BatchNormalization(momentum=BN_MOMENTUM), layers.ReLU()]

    body = [*conv(32), *conv(32), *conv(32), layers.MaxPooling2D(), *conv(64), *conv(64), *conv(64),
            layers.MaxPooling2D(), *conv(128), *conv(128), *conv(128), layers.Flatten(), layers.Dropout(0.2),
            layers.Dense(128, activation="relu"), layers.Dense(n_classes, activation="softmax", dtype="float32")]
    return keras.Sequential([keras.Input(INPUT_SHAPE), layers.Rescaling(1.0 / 255), *augmentation, *body])


class Variant(NamedTuple):
    net: str
    batch_normalised: bool  # every conv of cnn11 batch-normalised (cnn11_batch_normalised)
    augmented: bool
    ema: float  # the weight average's momentum (0: none)
    width: float = 1.0  # every conv's filters times this (--width)


VARIANTS = {
    "cnn11 alone": Variant("cnn11", False, False, 0.0), "cnn11, IDG": Variant("cnn11", False, True, 0.0),
    "cnn11, IDG, average (the default)": Variant("cnn11", False, True, 0.98),
    "cnn11 + BN, IDG, average": Variant("cnn11", True, True, 0.98),
    "cnn11_pool, IDG, average": Variant("cnn11_pool", False, True, 0.98),
    "cnn11 at width 0.75, IDG, average": Variant("cnn11", False, True, 0.98, 0.75),
    "cnn11 at width 0.5, IDG, average": Variant("cnn11", False, True, 0.98, 0.5),
    "cnn11 at width 0.375, IDG, average": Variant("cnn11", False, True, 0.98, 0.375),
}
DEFAULT = "cnn11, IDG, average (the default)"


def build(variant: str, seed: int):
    from ensemble.nets.architectures import build_model
    from ensemble.nets.augment import augmentation_layers
    from ensemble.nets.recipes import NO_AUGMENTATION, RECIPES

    chosen = VARIANTS[variant]
    augmentation = RECIPES["cnn11"].augmentation if chosen.augmented else NO_AUGMENTATION
    if chosen.batch_normalised:
        return cnn11_batch_normalised(10, augmentation_layers(augmentation, seed))
    return build_model(chosen.net, 10, augmentation, seed, chosen.width)


def step_ms(variant: str, images, labels, steps: int, precision: str, batch: int = BATCH) -> float:
    model = fresh_model(lambda: build(variant, 0), precision, VARIANTS[variant].ema, learning_rate=2e-3)
    warm_up(model, images, labels, batch)
    return 1000 * steps_seconds(model, images, labels, steps, batch=batch) / steps


def batch_table(results: dict[tuple[str, int], list[float]]) -> str:
    """Milliseconds a step (mean over repeats) and images a second, per variant and batch."""
    rows = ["| variant | batch | ms a step, per repeat | images a second |", "| --- | ---: | --- | ---: |"]
    rows += [f"| {variant} | {batch} | {', '.join(f'{v:.1f}' for v in values)} | {1000 * batch / np.mean(values):.0f} |"
             for (variant, batch), values in results.items()]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batches", default=None,
                        help=f"batch sizes, comma-separated (default: {BATCH}, and the table against the net alone)")
    parser.add_argument("--variants", default=";".join(VARIANTS),
                        help="names from VARIANTS separated by ';' (they hold commas); 'default' is the default's step")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")] if args.batches else [BATCH]
    names = [DEFAULT if name == "default" else name for name in args.variants.split(";")]
    if unknown := [name for name in names if name not in VARIANTS]:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)} or 'default'")
    if not args.batches and "cnn11 alone" not in names:
        parser.error("without --batches the table compares each variant with 'cnn11 alone': include it")

    from ensemble.nets.precision import resolve_precision

    precision = resolve_precision("auto", gpus=[])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (max(batches) * args.steps, 28, 28, 1)).astype("float32")
    labels = rng.integers(0, 10, max(batches) * args.steps)
    print(f"machine: {cpu_model()}, precision {precision}, {args.steps} steps of {','.join(map(str, batches))}")
    if not args.batches:
        results = repeated(names, args.repeats, lambda name: step_ms(name, images, labels, args.steps, precision))
        print("\n" + relative_table(results, "cnn11 alone", "variant | ms a step, per repeat | mean vs the net alone",
                                    digits=1))
        return
    pairs = [(name, batch) for name in names for batch in batches]
    results = repeated(pairs, args.repeats,
                       lambda pair: step_ms(pair[0], images, labels, args.steps, precision, pair[1]))
    print("\n" + batch_table(results))


if __name__ == "__main__":
    from ensemble.run.devices import tensorflow_defaults

    tensorflow_defaults(os.environ)  # TensorFlow as members run it: oneDNN on, quiet
    main()
