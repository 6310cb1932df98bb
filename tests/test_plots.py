"""The figures: ticks that match the data."""

from __future__ import annotations

import matplotlib.pyplot as plt

from peft_course.plots import whole_epoch_ticks


def test_whole_epochs_get_whole_ticks():
    figure, axes = plt.subplots()
    axes.plot([1, 2, 3], [0.5, 0.6, 0.7])
    whole_epoch_ticks(axes, [1, 2, 3])
    figure.canvas.draw()
    assert all(float(t).is_integer() for t in axes.get_xticks())
    axes.clear()
    axes.plot([0.5, 1.0, 1.5], [0.5, 0.6, 0.7])
    whole_epoch_ticks(axes, [0.5, 1.0, 1.5])  # validation every half epoch: fractional ticks stay
    figure.canvas.draw()
    assert not all(float(t).is_integer() for t in axes.get_xticks())
    plt.close(figure)
