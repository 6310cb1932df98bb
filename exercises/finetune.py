"""Fine-tuning for classification: choose what trains, and pick the checkpoint to report.

Three small pieces of the fine-tuning chapter, written by you.
"""

from __future__ import annotations

from collections.abc import Sequence

from peft import LoraConfig
from torch import nn


def freeze_all_but(model: nn.Module, trainable: Sequence[str]) -> nn.Module:
    """Set `requires_grad` in place so that exactly the parameters in `trainable` train.

    Returns `model` itself. Head-only fine-tuning is `freeze_all_but(model, ["score.weight"])`.
    A name that is not a parameter of `model` is an error (a typo would otherwise silently
    train nothing).
    """
    raise NotImplementedError(
        "not written yet: pytest exercises/test_finetune.py grades it, with hints"
    )


def lora_classification_config(r: int, alpha: float, targets: Sequence[str]) -> LoraConfig:
    """A peft `LoraConfig` for sequence classification, so the new head trains too."""
    raise NotImplementedError(
        "not written yet: pytest exercises/test_finetune.py grades it, with hints"
    )


def best_evaluation(history: Sequence[dict[str, float]]) -> dict[str, float]:
    """The history entry with the highest `val_accuracy`; on a tie, the one with the lowest `step`.

    The entries need not be in step order.
    """
    raise NotImplementedError(
        "not written yet: pytest exercises/test_finetune.py grades it, with hints"
    )
