"""The report's plots (matplotlib, rendered to PNG in memory)."""
from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .rank import RANDOM_ORDERS

if TYPE_CHECKING:  # the record's type, without importing jobs (and Keras) at module load
    pass


def _png(figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def plot_confusion(y_val: np.ndarray, probs: np.ndarray, title: str, class_names: list[str]) -> bytes:
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(6.5, 0.35 * len(class_names))
    figure, axes = plt.subplots(figsize=(size, size * 0.85))
    ConfusionMatrixDisplay.from_predictions(y_val, np.argmax(probs, axis=1), labels=list(range(len(class_names))),
                                            display_labels=class_names, cmap="Blues", colorbar=False, ax=axes,
                                            xticks_rotation="vertical" if len(class_names) > 10 else "horizontal",
                                            include_values=len(class_names) <= 30)
    axes.set_title(title)
    return _png(figure)


def plot_members_curve(curve: pd.DataFrame) -> bytes:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.5, 4))
    if len(curve) >= 3:  # with two members there are only two orders: a band over "20 random orders" would lie
        axes.fill_between(curve["members"], curve["random_min"], curve["random_max"], alpha=0.25,
                          label=f"range over {RANDOM_ORDERS} random orders")
        axes.plot(curve["members"], curve["random_mean"], "--", label="mean over random orders")
    axes.plot(curve["members"], curve["in_order"], "o-", label="members added in order")
    axes.set(xlabel="members blended (mean of softmax)", ylabel="validation accuracy",
             title="Validation accuracy vs members blended")
    axes.set_xticks(curve["members"])
    axes.legend(loc="lower right")
    return _png(figure)


def plot_learning_curves(histories: dict[str, pd.DataFrame]) -> bytes:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(figsize=(6.5, 4))
    for name, history in histories.items():
        axes.plot(history["epoch"] + 1, history["val_accuracy"], marker=".", label=name)
    axes.set(xlabel="epoch", ylabel="validation accuracy", title="Learning curves")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no ticks at 1.2, 1.4
    if 0 < len(histories) <= 12:
        axes.legend(loc="lower right", fontsize="small")
    return _png(figure)


def plot_per_class(blend_accuracy: np.ndarray, other_accuracy: np.ndarray, other_name: str,
                   class_names: list[str], blend_name: str = "blend-mean") -> bytes:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(max(6.5, 0.3 * len(class_names)), 4))
    positions = np.arange(len(class_names))
    axes.bar(positions - 0.2, blend_accuracy, width=0.4, label=blend_name)
    axes.bar(positions + 0.2, other_accuracy, width=0.4, label=other_name)
    low = np.nanmin(np.concatenate([blend_accuracy, other_accuracy]))
    axes.set(xlabel="class", ylabel="validation accuracy", title="Per-class accuracy",
             ylim=(max(0.0, low - 0.05), 1.0))
    axes.set_xticks(positions, class_names, rotation="vertical" if len(class_names) > 10 else "horizontal")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, frameon=False)
    return _png(figure)


def plot_accuracy_vs_time(histories: dict[str, pd.DataFrame], blend: pd.DataFrame) -> bytes:
    """Each member's validation accuracy against the seconds it had trained, and the mean blend against the
    seconds all the members in it trained."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.5, 4))
    for name, history in histories.items():
        seconds = history["epoch_seconds"].cumsum() if "epoch_seconds" in history else history["epoch"] + 1
        axes.plot(seconds, history["val_accuracy"], marker=".", alpha=0.6, label=name if len(histories) <= 8 else None)
    axes.plot(blend["seconds"], blend["accuracy"], "ko-", label="mean blend, models added in order")
    axes.set(xlabel="training seconds (a member's own; the blend's: all its members')", ylabel="validation accuracy",
             title="Accuracy vs training time")
    axes.legend(loc="lower right", fontsize="small")
    return _png(figure)


def plot_mistakes(images: np.ndarray, mistakes: list, class_names: list[str]) -> bytes:
    """A grid of validation images the blend got wrong with most confidence: true and predicted class and the
    probability it gave the predicted one (seed 000's "most important errors")."""
    import matplotlib.pyplot as plt

    columns = min(6, max(len(mistakes), 1))
    rows = max(1, -(-len(mistakes) // columns))
    figure, grid = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.9 * rows), squeeze=False)
    for axes in grid.ravel():
        axes.axis("off")
    for axes, image, mistake in zip(grid.ravel(), images, mistakes):
        axes.imshow(np.asarray(image).reshape(image.shape[0], image.shape[1]), cmap="gray_r")
        axes.set_title(f"true {class_names[mistake.true]}\npred {class_names[mistake.predicted]} "
                       f"({mistake.probability:.2f})", fontsize=8)
    return _png(figure)
