"""Ablations through the language-model head: the four small pieces behind every table cell.

Fill in each function; `pytest exercises -k ablation` grades them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def answer_labels(
    prompt_ids: Sequence[int], answer_ids: Sequence[int]
) -> tuple[list[int], list[int]]:
    """`(input_ids, labels)` for training on the answer only: the prompt's labels are -100.

    The model reads `prompt + answer`; the LM loss ignores every -100, so only the label word's
    tokens are learned (transformers shifts the labels by one position itself).
    """
    raise NotImplementedError(
        "not written yet: pytest exercises/test_ablation.py grades it, with hints"
    )


def verbalizer_predictions(
    next_token_logits: torch.Tensor, label_token_ids: Sequence[int]
) -> list[int]:
    """For each row of `[n, vocab]` logits, the index of the label whose token scores highest.

    Only the label tokens compete: the verbalizer always names a label.
    """
    raise NotImplementedError(
        "not written yet: pytest exercises/test_ablation.py grades it, with hints"
    )


def is_strict_match(completion: str, label_word: str) -> bool:
    """Strict match: the generated text is the label word, surrounding whitespace aside."""
    raise NotImplementedError(
        "not written yet: pytest exercises/test_ablation.py grades it, with hints"
    )


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (divide by n - 1); the std of one value is 0."""
    raise NotImplementedError(
        "not written yet: pytest exercises/test_ablation.py grades it, with hints"
    )
