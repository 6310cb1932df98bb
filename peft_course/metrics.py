"""Classification metrics as the seed projects report them: accuracy and *weighted* P/R/F1.

"Weighted" averages the per-class scores with each class's share of the true labels, so a
20-topic dataset with a dominant class is not judged as if all classes were equally common.
scikit-learn computes them; this module only fixes the conventions in one place.
"""

from __future__ import annotations

from collections.abc import Sequence

from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from peft_course.errors import CourseError, check_positive_int


def classification_metrics(labels: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
    """Accuracy and weighted precision, recall and F1 (a class never predicted scores 0).

    Args:
        labels: the true class id of every example.
        predictions: the predicted class id of every example, in the same order.

    Returns:
        The scores under the keys `accuracy`, `precision`, `recall` and `f1`.

    Raises:
        CourseError: if the two lists differ in length, or are empty.
    """
    if len(labels) != len(predictions):
        raise CourseError(f"{len(labels)} labels but {len(predictions)} predictions")
    if len(labels) == 0:
        raise CourseError("no examples to score")
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predictions, average="weighted", zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
    }


def confusion(
    labels: Sequence[int], predictions: Sequence[int], num_labels: int
) -> list[list[int]]:
    """The confusion matrix (rows: true label, columns: predicted), every label included.

    Args:
        labels: the true class id of every example.
        predictions: the predicted class id of every example, in the same order.
        num_labels: the number of classes; the matrix is `num_labels` by `num_labels`, a class
            that never occurs included.
    """
    check_positive_int("num_labels", num_labels)
    return confusion_matrix(labels, predictions, labels=list(range(num_labels))).tolist()
