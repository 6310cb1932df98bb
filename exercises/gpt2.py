"""Exercise: GPT-2 from scratch - the padding mask, the Conv1D transpose, top-p, greedy decoding.

Four pieces of `peft_course.gpt2`, written by you and graded against transformers on the same
weights: `pytest exercises -k gpt2`.
"""

from __future__ import annotations

import torch
from torch import nn


def attention_mask(padding_mask: torch.Tensor | None, queries: int, keys: int) -> torch.Tensor:
    """`(B or 1, 1, queries, keys)` booleans: True where a query position may attend to a key.

    The queries are the *last* `queries` of the `keys` positions (with a KV cache, `keys`
    includes the earlier ones). Causal: query `i` sees keys `0 ... keys - queries + i`.
    `padding_mask` (`(B, keys)`, 1 real, 0 padding) also hides the padding keys, but every
    query always sees its own position, so that no row is all False (softmax over nothing is
    NaN). With `padding_mask=None` the result has batch size 1.
    """
    raise NotImplementedError(
        "not written yet: pytest exercises/test_gpt2.py grades it, with hints"
    )


def copy_conv1d(linear: nn.Linear, weight: torch.Tensor, bias: torch.Tensor, name: str) -> None:
    """Copy a transformers `Conv1D`'s `weight` `(in, out)` and `bias` `(out,)` into `linear`.

    `Conv1D` computes `x @ weight + bias`; `nn.Linear` computes `x @ linear.weight.T + bias`
    with `linear.weight` stored `(out, in)`. Copy in place; raise `ValueError`, naming the layer
    by `name` (its name in the checkpoint), when the shapes do not fit `linear` (never copy a
    square weight without its transpose: that runs, and is wrong).
    """
    raise NotImplementedError(
        "not written yet: pytest exercises/test_gpt2.py grades it, with hints"
    )


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering of `(..., vocab)` logits: a new tensor, dropped tokens set to `-inf`.

    Sort each row from least to most likely and add up the probabilities (softmax) from the
    bottom: a token is dropped while that running total is at most `1 - p`. The most likely
    token is always kept. Raise `ValueError` unless `0 < p <= 1`.
    """
    raise NotImplementedError(
        "not written yet: pytest exercises/test_gpt2.py grades it, with hints"
    )


@torch.no_grad()
def greedy_decode(model: nn.Module, input_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """`(B, T + max_new_tokens)`: the prompt, then each step's most likely token, with a KV cache.

    `model(ids, past_key_values=past, use_cache=True)` returns `.logits` `(B, T, vocab)` and
    `.past_key_values`. The first call reads the whole prompt; every later call reads only the
    newest token and passes the `past_key_values` of the call before.
    """
    raise NotImplementedError(
        "not written yet: pytest exercises/test_gpt2.py grades it, with hints"
    )
