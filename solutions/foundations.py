"""Foundations: the causal-LM loss the model was pretrained with, padding, and where a
classifier reads.

Three small pieces of the foundations chapter, written by you.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def next_token_loss(
    logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """The causal language-model loss: the mean cross-entropy of predicting each next token.

    `logits` is `(B, T, V)`, `input_ids` and `attention_mask` are `(B, T)` (1 = a real token,
    0 = padding). The logits at position t predict the token at t + 1; a target that is padding
    does not count, and the mean is over the targets that count. This is the loss transformers
    computes from `labels` equal to `input_ids` with -100 on the padding.
    """
    targets = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)
    predictions = logits[:, :-1].float()
    return F.cross_entropy(predictions.reshape(-1, predictions.size(-1)), targets.reshape(-1))


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """`input_ids` and `attention_mask`, two `(B, L)` int64 tensors, `L` the batch's longest row.

    Each row is padded on the right with `pad_id` up to the longest row of this batch (not to a
    fixed length); the mask is 1 on the row's own tokens and 0 on the padding. GPT-2's pad id is
    its end-of-text id, so a row may itself hold `pad_id`: that token is real. An empty batch or
    an empty row is a ValueError.
    """
    if not rows or not all(rows):
        raise ValueError("pad_batch needs at least one row and no empty row")
    longest = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        attention_mask[i, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def last_token_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """`(B,)` int64: the position of each row's last real token (the last 1 of its mask).

    A GPT-2 classifier reads its features there. Rows may be padded on the right or on the
    left. A row with no real token is a ValueError.
    """
    real = attention_mask.bool()
    if not real.any(dim=1).all():
        raise ValueError("a row of the attention mask has no real token")
    positions = torch.arange(real.size(1), device=real.device).expand_as(real)
    return torch.where(real, positions, -1).max(dim=1).values
