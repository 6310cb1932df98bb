"""Counting parameters: how many a method trains, and of how many in all.

The counting chapter builds on `count_parameters`: every table in the course that says
"trainable params" gets its number from here, read off the real module tree.
"""

from __future__ import annotations

from torch import nn


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """`(trainable, total)` parameter counts of `module`.

    Shared tensors (GPT-2 ties its input and output embeddings) are counted once, because
    `Module.parameters()` yields each tensor once.
    """
    trainable = total = 0
    for parameter in module.parameters():
        total += parameter.numel()
        if parameter.requires_grad:
            trainable += parameter.numel()
    return trainable, total
