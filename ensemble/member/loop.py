"""Keras' fit and predict loops, batch by batch, with no input pipeline under them.

Given arrays, `fit` and `predict` on TensorFlow feed the net through a tf.data iterator, a new one every epoch
and every call, and dropping one waits for its autotune thread's next wake-up: on a 2-core CPU 4 s of a 6 s
epoch at 12000 rows and 20 s of a 21 s one at 42000, with both cores idle, in a third of the epochs
(benchmarks/epoch_stall.py). Feeding `train_on_batch` / `test_on_batch` / `predict_on_batch` from numpy
creates no iterator at all, on any backend, and each step costs what a step inside `fit` costs.

What `fit` does around its steps is kept: the callbacks see the same calls in the same order (train, epoch,
batch and test begin/end, `params` with epochs and steps), the epoch's logs are the running means over its
rows (training: every row each batch trained on) and over every validation row (`val_` prefixed), and
`stop_training` ends the epoch and the run. Where the optimizer keeps a weight average (Keras' use_ema), the net
holds the average from each epoch's end to the next epoch's start and trains on its own weights in between
(swap_average). Two additions: the run lasts as many epochs as `params["epochs"]` says after each epoch, so a
callback that re-plans the length moves its end; and its last epoch trains only the first
`params["final_steps"]` batches of its order where that is set (a member fitted to a deadline: its schedule
ends there too). One departure a member asks for (`whole_batches`): an epoch's last batch, short where the
rows do not divide, is filled from the epoch's first rows, so every step has one shape and the train step is
traced once, not twice (0.75-0.9 s of a member's first epoch on a 2-core CPU, an XLA compile per shape under JAX):
16 of 10800 rows twice in an epoch at batch 64.
Each epoch's row order is drawn from (seed, epoch), so a resumed member sees the batches an uninterrupted one
would have.
"""
from __future__ import annotations

import math

import keras
import numpy as np

# the batch a member predicts and validates in: a validation pass of 1080 rows takes 0.09 s at 1024 against 0.16 s
# at the training batch of 64 on a 2-core CPU, every epoch
PREDICT_BATCH = 1024


def epoch_order(n_rows: int, seed: int, epoch: int) -> np.ndarray:
    """The rows of one epoch in the order it trains on them."""
    return np.random.default_rng([seed, epoch]).permutation(n_rows)


def batch_starts(n_rows: int, batch_size: int) -> range:
    return range(0, n_rows, batch_size)


def epoch_batches(order: np.ndarray, batch_size: int, whole: bool = False) -> list[np.ndarray]:
    """The rows of each of an epoch's batches, in training order: `fit`'s, whose last is short where the rows do
    not divide; with `whole`, that last batch takes its missing rows from the epoch's first ones."""
    batches = [order[start:start + batch_size] for start in batch_starts(len(order), batch_size)]
    if whole and len(batches) > 1 and len(batches[-1]) < batch_size:
        batches[-1] = np.concatenate([batches[-1], order[:batch_size - len(batches[-1])]])
    return batches


class RowMeans:
    """Means of per-batch results weighted by the batch's rows: what Keras' metric trackers accumulate. An
    accuracy is summed as the whole number of rows it counts right, so two epochs that get equally many rows
    right tie exactly, as they do in `fit` (a float32 29/40 times 40 is not 29)."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.rows = 0

    def add(self, logs: dict, rows: int) -> None:
        for name, value in logs.items():
            total = float(value) * rows
            self.sums[name] = self.sums.get(name, 0.0) + (round(total) if name.endswith("accuracy") else total)
        self.rows += rows

    def means(self) -> dict[str, float]:
        return {name: total / self.rows for name, total in self.sums.items()} if self.rows else {}


def _as_inputs(images: np.ndarray) -> np.ndarray:
    return images.astype("float32", copy=False)


def evaluate_rows(model, x: np.ndarray, y: np.ndarray, batch_size: int, callbacks) -> dict[str, float]:
    """Loss and metrics over every row, as `evaluate` reports them."""
    callbacks.on_test_begin()
    means = RowMeans()
    for step, start in enumerate(batch_starts(len(x), batch_size)):
        callbacks.on_test_batch_begin(step)
        logs = model.test_on_batch(_as_inputs(x[start:start + batch_size]), y[start:start + batch_size],
                                   return_dict=True)
        means.add(logs, min(batch_size, len(x) - start))
        callbacks.on_test_batch_end(step, logs)
    result = means.means()
    callbacks.on_test_end(result)
    return result


def kept_average(model):
    """The optimizer that keeps an average of the net's weights (Keras' use_ema; under a loss-scale wrapper, the
    inner one), or None."""
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    return optimizer if getattr(optimizer, "use_ema", False) else None


def swap_average(optimizer) -> None:
    """Exchange the net's weights with the optimizer's average of them (what keras.callbacks.SwapEMAWeights
    does, on any backend): done twice, it restores both."""
    for weight, average in zip(optimizer._trainable_variables, optimizer._model_variables_moving_average):
        held = keras.ops.convert_to_numpy(weight)
        weight.assign(keras.ops.convert_to_numpy(average))
        average.assign(held)


def epoch_steps(params: dict, epoch: int) -> int:
    """The batches epoch `epoch` trains: all of them but in a partial last epoch."""
    final = params.get("final_steps")
    return final if final and epoch == params["epochs"] - 1 else params["steps"]


def train_epochs(model, x: np.ndarray, y: np.ndarray, *, batch_size: int, epochs: int, seed: int,
                 initial_epoch: int = 0, validation: tuple[np.ndarray, np.ndarray] | None = None,
                 callbacks: list = (), final_steps: int | None = None, whole_batches: bool = False,
                 validation_batch_size: int | None = None) -> keras.callbacks.History:
    """`model.fit(x, y, batch_size, epochs, initial_epoch, validation_data, shuffle=True, validation_batch_size)`,
    step by step; the last epoch `final_steps` batches long where given; every batch `batch_size` rows with
    `whole_batches`."""
    batch_size = min(batch_size, len(x))
    steps = math.ceil(len(x) / batch_size)
    callback_list = keras.callbacks.CallbackList(list(callbacks), add_history=True, add_progbar=False, model=model,
                                                 verbose=0, epochs=epochs, steps=steps, final_steps=final_steps)
    average = kept_average(model)
    model.stop_training = False
    callback_list.on_train_begin()
    epoch_logs: dict = {}
    epoch = initial_epoch
    while epoch < callback_list.params["epochs"]:  # a callback may re-plan the run's length (member.callbacks.replan)
        # since the last epoch's end (a resumed state's too) the net held the average; an optimizer not built yet
        # has none (a run started past epoch 0 with no state restored)
        if average is not None and epoch > 0 and average.built:
            swap_average(average)
        callback_list.on_epoch_begin(epoch)
        batches = epoch_batches(epoch_order(len(x), seed, epoch), batch_size, whole_batches)
        means = RowMeans()
        for step, rows in enumerate(batches[:epoch_steps(callback_list.params, epoch)]):
            callback_list.on_train_batch_begin(step)
            logs = model.train_on_batch(_as_inputs(x[rows]), y[rows], return_dict=True)
            means.add(logs, len(rows))
            callback_list.on_train_batch_end(step, means.means())
            if model.stop_training:
                break
        epoch_logs = means.means()
        if average is not None:  # validation, the epoch's checkpoints and the weights kept at the end: the average's
            swap_average(average)
        if validation is not None:
            scores = evaluate_rows(model, *validation, validation_batch_size or batch_size, callback_list)
            epoch_logs.update({f"val_{name}": value for name, value in scores.items()})
        callback_list.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
        epoch += 1
    callback_list.on_train_end(epoch_logs)
    return model.history


def predict_rows(model, images: np.ndarray, batch_size: int, callbacks: list = ()) -> np.ndarray:
    """`model.predict(images, batch_size)`, batch by batch; callbacks see predict begin/batch/end."""
    callback_list = keras.callbacks.CallbackList(list(callbacks), model=model, verbose=0,
                                                 steps=math.ceil(len(images) / batch_size))
    callback_list.on_predict_begin()
    outputs = []
    for step, start in enumerate(batch_starts(len(images), batch_size)):
        callback_list.on_predict_batch_begin(step)
        outputs.append(np.asarray(model.predict_on_batch(_as_inputs(images[start:start + batch_size]))))
        callback_list.on_predict_batch_end(step, {"outputs": outputs[-1]})
    callback_list.on_predict_end()
    if not outputs:
        return np.zeros((0, *model.output_shape[1:]), np.float32)
    return np.concatenate(outputs)
