"""Named network builders, each with the recipe it was published with.

Every model takes raw pixels (batch, 28, 28, 1) in 0..255 and ends in a 10-way softmax, so a saved
`.keras` file predicts from a CSV row with no preprocessing outside it. Keras is imported inside the
builders: the registry itself is read by commands (blend, check, the job ledger) that never build a model
and should not pay for loading a backend.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .data import N_CLASSES, SIDE

INPUT_SHAPE = (SIDE, SIDE, 1)
AUGMENTATIONS = ("idg", "legacy-idg", "none")  # see augment.py


@dataclass(frozen=True)
class Recipe:
    """An architecture and the training defaults its source used."""

    name: str
    body: Callable[[], list]
    optimizer: str
    learning_rate: float
    epochs: int
    batch_size: int
    source: str


def _softmax_output():
    from keras import layers

    # float32 even under a mixed-precision policy: softmax and the loss need the range (Keras' own advice)
    return layers.Dense(N_CLASSES, activation="softmax", dtype="float32")


def _cnn11() -> list:
    from keras import layers

    def conv(filters):
        return layers.Conv2D(filters, 3, padding="same", activation="relu")

    return [
        conv(32), conv(32), conv(32), layers.MaxPooling2D(),
        conv(64), conv(64), conv(64), layers.MaxPooling2D(),
        conv(128), conv(128), conv(128),
        layers.Flatten(), layers.Dropout(0.2),
        layers.Dense(128, activation="relu"),
        _softmax_output(),
    ]


def _bn_cnn() -> list:
    from keras import layers

    def block(filters):
        return [
            layers.Conv2D(filters, 3, activation="relu"), layers.BatchNormalization(),
            layers.Conv2D(filters, 3, activation="relu"), layers.BatchNormalization(),
            layers.Conv2D(filters, 5, strides=2, padding="same", activation="relu"),
            layers.BatchNormalization(), layers.Dropout(0.4),
        ]

    return [
        *block(32), *block(64),
        layers.Flatten(),
        layers.Dense(128, activation="relu"), layers.BatchNormalization(), layers.Dropout(0.4),
        _softmax_output(),
    ]


def _keras_mnist() -> list:
    from keras import layers

    return [
        layers.Conv2D(32, 3, activation="relu"),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(), layers.Dropout(0.25),
        layers.Flatten(),
        layers.Dense(128, activation="relu"), layers.Dropout(0.5),
        _softmax_output(),
    ]


RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe("cnn11", _cnn11, "adam", 1e-4, 50, 64,
               "seed 002: 3x(3 conv) VGG-style net, ReduceLROnPlateau, IDG augmentation"),
        Recipe("bn_cnn", _bn_cnn, "adam", 1e-3, 16, 64,
               "seed 000: batch-normalised net with strided 5x5 convs"),
        Recipe("keras_mnist", _keras_mnist, "adadelta", 1.0, 12, 128,
               "Keras' classic mnist_cnn example (Adadelta, lr 1.0 as in Keras 2)"),
    )
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise KeyError(f"unknown model {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]


def build_network(name: str):
    """The bare architecture on 0..1 inputs, as published (for parameter counts and inspection)."""
    import keras

    return keras.Sequential([keras.Input(INPUT_SHAPE), *get_recipe(name).body()], name=name)


def build_model(name: str, augment: str = "none", seed: int | None = None):
    """The trainable model: raw 0..255 pixels -> scale -> augmentation (training only) -> the network."""
    import keras
    from keras import layers

    from .augment import augmentation_layers

    return keras.Sequential([
        keras.Input(INPUT_SHAPE),
        layers.Rescaling(1.0 / 255, name="scale_to_unit"),
        *augmentation_layers(augment, seed),
        *get_recipe(name).body(),
    ], name=name)


def make_optimizer(name: str, learning_rate: float):
    import keras

    optimizers = {"adam": keras.optimizers.Adam, "adadelta": keras.optimizers.Adadelta}
    return optimizers[name](learning_rate=learning_rate)


def compile_model(model, recipe: Recipe, learning_rate: float | None = None):
    import keras

    # The seed notebook used from_logits=True on a softmax output (a bug): these are probabilities.
    model.compile(optimizer=make_optimizer(recipe.optimizer, learning_rate or recipe.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=False),
                  metrics=["accuracy"])
    return model
