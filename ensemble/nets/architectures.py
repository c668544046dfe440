"""Named network builders: every net of the seed notebooks and Deotte's, as published, and cnn11_pool, this
project's variant of seed 002's net.

Every model takes raw pixels (batch, 28, 28, 1) in 0..255 and ends in a softmax over the job's classes
(data.layouts: they come from the training labels), so a saved
`.keras` file predicts from a CSV row with no preprocessing outside it. How each net was trained is its
recipe (recipes.py). Keras is imported inside the builders: the registry itself is read by commands
(blend, check, the job ledger) that never build a model and should not pay for loading a backend.
"""
from __future__ import annotations

from typing import Callable

from ..data.layouts import SIDE
from .recipes import NO_AUGMENTATION, Augmentation

INPUT_SHAPE = (SIDE, SIDE, 1)


def scaled(filters: int, width: float) -> int:
    """A conv's filters under the net's width multiplier (MobileNet's alpha), at least one."""
    return max(1, round(filters * width))


def _softmax_output(n_classes: int):
    from keras import layers

    # float32 even under a mixed-precision policy: softmax and the loss need the range (Keras' own advice)
    return layers.Dense(n_classes, activation="softmax", dtype="float32")


def _cnn11_convs(width: float) -> list:
    from keras import layers

    def conv(filters):
        return layers.Conv2D(scaled(filters, width), 3, padding="same", activation="relu")

    return [
        conv(32), conv(32), conv(32), layers.MaxPooling2D(),
        conv(64), conv(64), conv(64), layers.MaxPooling2D(),
        conv(128), conv(128), conv(128),
    ]


def _cnn11_head(n_classes: int) -> list:
    from keras import layers

    return [layers.Flatten(), layers.Dropout(0.2), layers.Dense(128, activation="relu"), _softmax_output(n_classes)]


def _cnn11(n_classes: int, width: float = 1.0) -> list:
    return [*_cnn11_convs(width), *_cnn11_head(n_classes)]


def _cnn11_pool(n_classes: int, width: float = 1.0) -> list:
    """cnn11 with a third max-pool before its dense layer: Dense(128) reads 3x3x128 values, not 7x7x128, so the net
    has half the weights and a CPU step costs about 13% less (BENCHMARKS.md, "A pooled cnn11")."""
    from keras import layers

    return [*_cnn11_convs(width), layers.MaxPooling2D(), *_cnn11_head(n_classes)]


def _bn_cnn(n_classes: int, width: float = 1.0) -> list:
    from keras import layers

    def block(filters):
        filters = scaled(filters, width)
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
        _softmax_output(n_classes),
    ]


def _keras_mnist(n_classes: int, width: float = 1.0) -> list:
    from keras import layers

    return [
        layers.Conv2D(scaled(32, width), 3, activation="relu"),
        layers.Conv2D(scaled(64, width), 3, activation="relu"),
        layers.MaxPooling2D(), layers.Dropout(0.25),
        layers.Flatten(),
        layers.Dense(128, activation="relu"), layers.Dropout(0.5),
        _softmax_output(n_classes),
    ]


def _deotte(n_classes: int, width: float = 1.0) -> list:
    """Deotte's "25 Million Images" net: two 3x3 convs then a strided 5x5 in place of pooling, BN, dropout 0.4."""
    from keras import layers

    def conv_bn(filters, size, **kwargs):
        return [layers.Conv2D(scaled(filters, width), size, activation="relu", **kwargs), layers.BatchNormalization()]

    def block(filters):
        return [*conv_bn(filters, 3), *conv_bn(filters, 3), *conv_bn(filters, 5, strides=2, padding="same"),
                layers.Dropout(0.4)]

    return [*block(32), *block(64), *conv_bn(128, 4), layers.Flatten(), layers.Dropout(0.4), _softmax_output(n_classes)]


def _seed001(n_classes: int, width: float = 1.0) -> list:
    """Seed 001's final net; its Dense(128) comes before Flatten, so it acts per position (as published)."""
    from keras import layers

    return [
        layers.Conv2D(scaled(64, width), 5, activation="relu"), layers.Conv2D(scaled(32, width), 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Dense(128, activation="relu"), layers.Dropout(0.2), layers.Flatten(), _softmax_output(n_classes),
    ]


def _seed004(n_classes: int, width: float = 1.0) -> list:
    from keras import layers

    return [
        layers.Conv2D(scaled(16, width), 5, activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(scaled(16, width), 5, activation="relu"), layers.MaxPooling2D(),
        layers.Dropout(0.2), layers.Flatten(),
        layers.Dense(128, activation="relu"), layers.Dropout(0.2),
        _softmax_output(n_classes),
    ]


# each builder takes the classes and a width: every conv's filters times it (its dense layers keep their units)
NETS: dict[str, Callable[[int, float], list]] = {
    "cnn11": _cnn11, "deotte": _deotte, "bn_cnn": _bn_cnn, "keras_mnist": _keras_mnist,
    "seed001": _seed001, "seed004": _seed004, "cnn11_pool": _cnn11_pool,
}


def net_body(name: str, n_classes: int, width: float = 1.0) -> list:
    if name not in NETS:
        raise KeyError(f"unknown net {name!r}; choose one of {', '.join(NETS)}")
    return NETS[name](n_classes, width)


def build_network(name: str, n_classes: int, width: float = 1.0):
    """The bare architecture on 0..1 inputs, as published at width 1 (for parameter counts and inspection)."""
    import keras

    return keras.Sequential([keras.Input(INPUT_SHAPE), *net_body(name, n_classes, width)], name=name)


def build_model(name: str, n_classes: int, augmentation: Augmentation = NO_AUGMENTATION, seed: int | None = None,
                width: float = 1.0):
    """The trainable model: raw 0..255 pixels -> scale -> augmentation (training only) -> the network, its convs'
    filters times `width`."""
    import keras
    from keras import layers

    from .augment import augmentation_layers  # a Keras layer: loaded with the builders, not the registry

    return keras.Sequential([
        keras.Input(INPUT_SHAPE),
        layers.Rescaling(1.0 / 255, name="scale_to_unit"),
        *augmentation_layers(augmentation, seed),
        *net_body(name, n_classes, width),
    ], name=name)


OPTIMIZERS = ("adam", "adadelta", "rmsprop")
NOT_DECAYED = ["bias", "gamma", "beta"]  # Keras' names for biases and a batch norm's scale and offset


def make_optimizer(name: str, learning_rate, ema: float = 0.0, weight_decay: float = 0.0,
                   ema_power: float = 0.0):
    """learning_rate: a float (a member's schedule sets it each step: member.callbacks.rate). With ema (a momentum,
    e.g. 0.99), the optimizer keeps an exponential moving average of the weights (Keras' use_ema) beside the
    net; with ema_power too (gamma, e.g. 16.97), that average warms up along Karras et al.'s power function
    (nets.averaging). member.loop swaps the average into the net at each epoch's end, so each epoch's
    validation, its checkpoint and the kept weights are the average, and the next epoch trains on from
    the net's own weights, as it would without one. The average lives in the optimizer's variables, which a
    training state saves: a resumed member continues it exactly. With weight_decay, each step also shrinks
    every kernel by its rate x weight_decay, decoupled from the gradient's moments (Keras applies it so for
    every optimizer: Adam becomes AdamW); biases and batch norms' scales and offsets are left alone, as AdamW's
    users leave them."""
    import keras

    optimizers = {"adam": keras.optimizers.Adam, "adadelta": keras.optimizers.Adadelta,
                  "rmsprop": keras.optimizers.RMSprop}
    averaging = {"use_ema": True, "ema_momentum": ema} if ema else {}  # never written over the net by Keras itself
    decay = {"weight_decay": weight_decay} if weight_decay else {}
    if ema and ema_power:
        from .averaging import POWER_AVERAGED  # Keras' optimizers subclassed: loaded with Keras, not at import

        optimizers, averaging = POWER_AVERAGED, {**averaging, "ema_power": ema_power}
    optimizer = optimizers[name](learning_rate=learning_rate, **averaging, **decay)
    if weight_decay:
        optimizer.exclude_from_weight_decay(var_names=NOT_DECAYED)
    return optimizer


def compile_model(model, optimizer: str, learning_rate, label_smoothing: float = 0.0, classes: int = 10,
                  ema: float = 0.0, weight_decay: float = 0.0, ema_power: float = 0.0):
    from .losses import training_loss  # defers Keras, as the net builders do

    # The seed notebook used from_logits=True on a softmax output (a bug): these are probabilities.
    model.compile(optimizer=make_optimizer(optimizer, learning_rate, ema, weight_decay, ema_power),
                  loss=training_loss(label_smoothing, classes), metrics=["accuracy"])
    return model
