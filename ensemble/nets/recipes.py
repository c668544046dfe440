"""Whole training recipes: net, optimizer, learning rate and its schedule, epochs, batch, augmentation.

Pure data, no Keras: the job ledger, blend and status read recipes without loading a backend. Each net
has a recipe of its own name with the settings its source published (cnn11_pool, the project's own net, trains
with cnn11's); `seed` is seed 002 exactly as the notebook ran it (its `from_logits=True` bug aside). Every field
can be overridden by a flag, and the resolved values are frozen into the job spec (jobs.JobSpec).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

AUGMENTATIONS = ("idg", "legacy-idg", "none")  # see augment.py
SCHEDULES = ("constant", "plateau", "exp", "onecycle", "cosine")  # see schedules.py
KEEP = ("best", "last")  # which weights a member keeps: best validation epoch, or the final epoch
ONECYCLE_WARMUP = 0.25  # fastai's pct_start: onecycle's share of steps rising to the peak, unless a recipe says


@dataclass(frozen=True)
class Augmentation:
    """ImageDataGenerator's parameters: zoom_range, width/height_shift_range, rotation_range (degrees),
    horizontal_flip (for classes that a mirror leaves the same: clothes, not digits or letters); and random
    erasing's probability (Zhong et al.: one rectangle of a training image replaced by noise; 0: off), which IDG
    does not have and which follows its warp."""

    kind: str = "idg"
    zoom: float = 0.1
    shift: float = 0.1
    rotation: float = 0.0
    flip: bool = False
    erase: float = 0.0


NO_AUGMENTATION = Augmentation("none", 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Recipe:
    """A net and the way its source trained it."""

    name: str
    net: str
    optimizer: str
    learning_rate: float      # the peak rate for onecycle and cosine, lr0 for exp
    epochs: int
    batch_size: int
    schedule: str
    augmentation: Augmentation
    source: str
    precision: str = "auto"   # "auto": bf16 where the hardware has it (devices.resolve_precision)
    keep: str = "best"
    tta: bool = False         # members also predict under the fixed test-time views
    label_smoothing: float = 0.0  # off in every recipe: -0.6 points with TTA at 12000 rows (BENCHMARKS.md, "Levers")
    ema: float = 0.0              # weight averaging's momentum (0: off); cnn11's: BENCHMARKS.md, "faster CPU"
    ema_power: float = 0.0        # the average's power-function warm-up, gamma (0: none): nets.averaging
    weight_decay: float = 0.0     # decoupled (AdamW's), per unit of rate; off everywhere: BENCHMARKS.md, "Weight decay"
    warmup: float = ONECYCLE_WARMUP  # onecycle's share of steps rising to the peak rate
    folds: int = 0                # K: member i holds out fold i mod K; 0: one split shared by every member
    width: float | str = 1.0      # every conv's filters times this; "auto": half on a CPU, 1 on GPUs (nets.width)


# The default. Its schedule, rate, epochs and TTA are what benchmarks/budget.py found most accurate at equal wall
# time (BENCHMARKS.md, "Accuracy per compute"); the net is seed 002's. Its 5% warm-up: BENCHMARKS.md, "A short
# warm-up". Its weight average (0.98) passes seed 002's accuracy at 42000 rows with the 3rd epoch where the net's
# own weights need the 5th, at the same final accuracy: BENCHMARKS.md, "Issue 18's goals on a faster CPU". Its
# ten folds (each member trains on 90% of the rows, as on a shared split, but holds out its own tenth, so the job
# trains on every row) beat the shared split at 42000 rows in 20 minutes at each of 3 job seeds: BENCHMARKS.md,
# "Ten folds at equal time". Its average warms up along the power function (--ema-power 16.97): on one trajectory
# it leads the plain 0.98 after the first epochs at every seed and is that average from about 900 steps on
# (BENCHMARKS.md, "A power-function weight average"). On a CPU its net has half the filters (--width auto): at
# seed 002's 263 s on 12000 rows, 26-27 epochs of it beat 8-10 of the published net's at each of 3 paired seeds
# (+1.61 points with TTA on average) and passed seed 002's accuracy in 13-16% of its time (BENCHMARKS.md, "A
# narrower net").
CNN11 = Recipe("cnn11", "cnn11", "adam", 2e-3, 12, 64, "onecycle", Augmentation(),
               "seed 002's 11-conv net, trained fast: one-cycle Adam to 2e-3 after a 5% warm-up, 12 epochs, IDG "
               "zoom/shift in the graph, bf16 where the hardware has it, a weight average (0.98, warmed up along "
               "the power function) kept beside the net, test-time augmentation, ten folds (each member holds out "
               "its own tenth of the rows), half the filters on a CPU", tta=True, warmup=0.05, ema=0.98,
               ema_power=16.97, folds=10, width="auto")
RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        CNN11,
        Recipe("seed", "cnn11", "adam", 1e-4, 50, 64, "plateau", Augmentation("legacy-idg"),
               "seed 002 as the notebook ran it: Adam 1e-4, ReduceLROnPlateau(val acc, 3, 0.5, 1e-5), 50 "
               "epochs, batch 64, the legacy ImageDataGenerator, float32, the final epoch's weights",
               precision="float32", keep="last"),
        Recipe("deotte", "deotte", "adam", 1e-3, 45, 64, "exp", Augmentation(rotation=10.0),
               "Deotte's 25-million-images net (LB 0.99757): Adam, 1e-3 * 0.95^epoch, 45 epochs, batch 64, "
               "IDG rotation 10 / zoom 0.1 / shifts 0.1, the final epoch's weights", keep="last"),
        Recipe("bn_cnn", "bn_cnn", "adam", 1e-3, 16, 64, "plateau", Augmentation(),
               "seed 000: Deotte's 'How to choose' batch-normalised net with strided 5x5 convs"),
        Recipe("keras_mnist", "keras_mnist", "adadelta", 1.0, 12, 128, "constant", NO_AUGMENTATION,
               "seed 003: Keras' classic mnist_cnn example (Adadelta, lr 1.0 as in Keras 2, 12 epochs)"),
        Recipe("seed001", "seed001", "rmsprop", 1e-3, 5, 64, "constant", NO_AUGMENTATION,
               "seed 001's final net: 64C5-32C3-pool-Dense128 per position-Dropout0.2, RMSprop, 5 epochs"),
        Recipe("seed004", "seed004", "adam", 1e-3, 8, 200, "constant", NO_AUGMENTATION,
               "seed 004: 16C5-pool-16C5-pool-Dense128, Adam, batch 200, 8 epochs"),
        # cnn11's recipe on the pooled net: seed 002's accuracy sooner, the same accuracy within noise at the end
        # (BENCHMARKS.md, "A pooled cnn11"), so not the default
        replace(CNN11, name="cnn11_pool", net="cnn11_pool",
                source="cnn11's fast recipe on cnn11 pooled to 3x3 before its dense layer: half the weights, steps "
                       "about 13% cheaper on a CPU"),
    )
}
NETS = tuple(dict.fromkeys(recipe.net for recipe in RECIPES.values()))


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]


def recipe_for(recipe: str | None, net: str | None) -> Recipe:
    """--recipe names a recipe; --model alone picks that net's own recipe; neither: the default."""
    if recipe is None and net is not None and net in RECIPES:
        return RECIPES[net]
    return get_recipe(recipe or "cnn11")
