"""The figures: ticks that match the data."""

from __future__ import annotations

import matplotlib.pyplot as plt

from peft_course.plots import COUNT_POINTS, count_colour, plot_curves, whole_epoch_ticks


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


def test_counts_contrast_with_their_cell():
    assert count_colour((0.97, 0.98, 1.0)) == "black"  # the palest blue of "Blues"
    assert count_colour((0.03, 0.19, 0.42)) == "white"  # its navy
    assert COUNT_POINTS / 72 * 100 >= 10  # pixels at the figures' 100 dpi


def test_one_point_each_is_a_dot_per_label(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(
        plt.Figure, "savefig", lambda figure, path, **_: drawn.update(axes=figure.axes[0])
    )
    plot_curves({"r=16": [(1.0, 0.45)], "r=128": [(1.0, 0.41)]}, tmp_path / "one.png")
    axes = drawn["axes"]
    assert [t.get_text() for t in axes.get_xticklabels()] == ["r=16", "r=128"]
    assert axes.get_xlabel() == "after epoch 1"
    assert [len(line.get_xdata()) for line in axes.get_lines()] == [1, 1]
