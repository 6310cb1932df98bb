"""Metrics equal hand-computed values."""

import pytest

from peft_course.metrics import classification_metrics, confusion


def test_weighted_metrics_by_hand():
    labels = [0, 0, 0, 1, 1, 2]
    predictions = [0, 0, 1, 1, 0, 2]
    # per class: precision 2/3, 1/2, 1; recall 2/3, 1/2, 1; supports 3, 2, 1
    precision = (3 * 2 / 3 + 2 * 1 / 2 + 1 * 1) / 6
    f1 = (3 * 2 / 3 + 2 * 1 / 2 + 1 * 1) / 6  # F1 equals P = R per class here
    scores = classification_metrics(labels, predictions)
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["precision"] == pytest.approx(precision)
    assert scores["recall"] == pytest.approx(4 / 6)
    assert scores["f1"] == pytest.approx(f1)


def test_never_predicted_class_scores_zero_not_nan():
    scores = classification_metrics([0, 1, 1, 1], [1, 1, 1, 1])
    assert scores["accuracy"] == 0.75
    # class 0: 0 (zero_division), class 1: 3/4
    assert scores["precision"] == pytest.approx(0.75 * 0.75)


def test_confusion_matrix_keeps_every_label():
    assert confusion([0, 1, 1], [0, 0, 1], num_labels=3) == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]


def test_bad_input():
    with pytest.raises(ValueError, match="3 labels but 2 predictions"):
        classification_metrics([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="no examples"):
        classification_metrics([], [])
