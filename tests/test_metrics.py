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


def test_a_confusion_table_keeps_label_names_with_a_bar_in_one_column():
    """Twitter's topics are named like 'Fed | Central Banks': the header escapes the bar too, or
    the table has more header cells than columns."""
    from peft_course.tables import confusion_rows, markdown_table, read_markdown_table

    names = ["Fed | Central Banks", "Macro"]
    table = markdown_table(confusion_rows([[3, 1], [0, 4]], names))
    header, separator = table.splitlines()[:2]
    assert header.count(" | ") == separator.count(" | ") == 2, table
    rows = read_markdown_table(table)
    assert [row["true label"] for row in rows] == names
    assert rows[0]["Fed | Central Banks"] == "3"
