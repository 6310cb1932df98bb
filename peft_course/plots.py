"""Figures the course saves next to its numbers: training curves and confusion matrices.

Matplotlib's non-interactive backend is used, so plotting works on a machine with no screen.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.ticker import MaxNLocator  # noqa: E402

# A confusion matrix's counts: 9 points at the figures' 100 dpi is 12.5 px, legible on any cell.
COUNT_POINTS = 9


def save_figure(figure: Any, path: str | Path, title: str = "") -> Path:
    """Give `figure` its title, lay it out, write it to `path` at 100 dpi and close it.

    Args:
        figure: a matplotlib figure.
        path: the image file to write (its suffix picks the format).
        title: the figure's title.

    Returns:
        `path`, as a `Path`.
    """
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def count_colour(cell: tuple[float, ...]) -> str:
    """Black on a light cell, white on a dark one (by the cell's luminance, ITU-R BT.709), so a
    count reads on every shade of the colour map.

    Args:
        cell: the cell's RGB(A) colour, each channel in [0, 1].
    """
    red, green, blue = cell[:3]
    return "black" if 0.2126 * red + 0.7152 * green + 0.0722 * blue > 0.5 else "white"


def whole_epoch_ticks(axes, epochs: Sequence[float]) -> None:
    """Tick only whole epochs when every point is at one (no "1.5" between epoch 1 and 2).

    Args:
        axes (matplotlib.axes.Axes): the axes whose x axis is ticked.
        epochs: the x values plotted on it.
    """
    if all(float(e).is_integer() for e in epochs):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_history(history: Sequence[dict[str, float]], path: str | Path, title: str = "") -> Path:
    """Train and validation loss (left) and validation accuracy (right) against the epoch.

    Args:
        history: one entry per validation with `epoch`, `train_loss`, `val_loss` and
            `val_accuracy` (as `TrainResult.history` holds them).
        path: the image file to write; matplotlib picks the format from its suffix.
        title: the figure's title; empty for none.

    Returns:
        `path`, as a `Path`.
    """
    epochs = [h["epoch"] for h in history]
    figure, (losses, accuracy) = plt.subplots(1, 2, figsize=(9, 3.5))
    losses.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    losses.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation")
    losses.set(xlabel="epoch", ylabel="loss")
    losses.legend()
    accuracy.plot(epochs, [h["val_accuracy"] for h in history], marker="o", color="tab:green")
    accuracy.set(xlabel="epoch", ylabel="validation accuracy")
    for axes in (losses, accuracy):
        whole_epoch_ticks(axes, epochs)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def plot_confusion(
    matrix: Sequence[Sequence[int]], label_names: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """A confusion matrix as a heat map with counts: rows are true labels, columns predictions.

    Args:
        matrix: the counts, rows by true label and columns by predicted label.
        label_names: the label names, in label-id order; the figure grows with their number.
        path: the image file to write; matplotlib picks the format from its suffix.
        title: the figure's title; empty for none.

    Returns:
        `path`, as a `Path`.
    """
    size = max(4.0, 0.5 * len(label_names) + 2.5)
    figure, axes = plt.subplots(figsize=(size, size))
    image = axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(label_names)), label_names, rotation=90)
    axes.set_yticks(range(len(label_names)), label_names)
    axes.set(xlabel="predicted", ylabel="true", title=title)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            if count:
                axes.text(
                    j, i, str(count), ha="center", va="center", fontsize=COUNT_POINTS,
                    color=count_colour(image.cmap(image.norm(count))),
                )  # fmt: skip
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def plot_curves(
    curves: dict[str, Sequence[tuple[float, float]]],
    path: str | Path,
    title: str = "",
    ylabel: str = "",
    reference: tuple[float, str] | None = None,
) -> Path:
    """Several (epoch, value) curves on one axis, one line and legend entry each (e.g. one per sweep
    cell); `reference=(value, label)` adds a dashed horizontal line, such as chance level. When
    every curve is one point at the same epoch, each is a dot above its label instead.

    Args:
        curves: each curve's legend label and its (epoch, value) points.
        path: the image file to write; matplotlib picks the format from its suffix.
        title: the figure's title; empty for none.
        ylabel: the y axis's label; empty for none.
        reference: a (value, label) pair drawn as a dashed horizontal line; None for none.

    Returns:
        `path`, as a `Path`.
    """
    figure, axes = plt.subplots(figsize=(7, 4))
    epochs = {x for points in curves.values() for x, _ in points}
    if all(len(points) == 1 for points in curves.values()) and len(epochs) == 1:
        # One validation each: a dot per curve above its label, not one-point lines on an epoch axis
        for i, [(_, y)] in enumerate(curves.values()):
            axes.plot([i], [y], marker="o", markersize=9, linestyle="none")
        axes.set_xticks(range(len(curves)), list(curves), rotation=20, ha="right")
        axes.set_xlim(-0.5, len(curves) - 0.5)
        xlabel = f"after epoch {next(iter(epochs)):g}"
    else:
        for label, points in curves.items():
            axes.plot([x for x, _ in points], [y for _, y in points], marker="o", label=label)
        whole_epoch_ticks(axes, sorted(epochs))
        xlabel = "epoch"
    if reference is not None:
        axes.axhline(reference[0], color="grey", linestyle="--", label=reference[1])
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)
