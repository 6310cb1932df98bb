"""GPT-2 from scratch: the padding mask, the Conv1D transpose, the nucleus filter, greedy decoding.

Reference answers. The package's versions are `peft_course.gpt2.attention_mask` and
`copy_conv1d`, and `peft_course.decoding.top_p_filter` and `generate`.
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
    causal = torch.ones(queries, keys, dtype=torch.bool).tril(diagonal=keys - queries)
    if padding_mask is None:
        return causal[None, None]
    own = torch.zeros(queries, keys, dtype=torch.bool)
    own[:, keys - queries :] = torch.eye(queries, dtype=torch.bool)
    return (causal & padding_mask.bool()[:, None, None, :]) | own


def copy_conv1d(linear: nn.Linear, weight: torch.Tensor, bias: torch.Tensor, name: str) -> None:
    """Copy a transformers `Conv1D`'s `weight` `(in, out)` and `bias` `(out,)` into `linear`.

    `Conv1D` computes `x @ weight + bias`; `nn.Linear` computes `x @ linear.weight.T + bias`
    with `linear.weight` stored `(out, in)`. Copy in place; raise `ValueError`, naming the layer
    by `name` (its name in the checkpoint), when the shapes do not fit `linear` (never copy a
    square weight without its transpose: that runs, and is wrong).
    """
    fits = tuple(weight.shape) == (linear.in_features, linear.out_features)
    if not fits or tuple(bias.shape) != (linear.out_features,):
        raise ValueError(
            f"{name}: a Conv1D weight {tuple(weight.shape)} / bias {tuple(bias.shape)} does "
            f"not fit Linear({linear.in_features}, {linear.out_features})"
        )
    with torch.no_grad():
        linear.weight.copy_(weight.T)
        linear.bias.copy_(bias)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering of `(..., vocab)` logits: a new tensor, dropped tokens set to `-inf`.

    Sort each row from least to most likely and add up the probabilities (softmax) from the
    bottom: a token is dropped while that running total is at most `1 - p`. The most likely
    token is always kept. Raise `ValueError` unless `0 < p <= 1`.
    """
    if not 0 < p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    ascending, order = torch.sort(logits, dim=-1)
    drop = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1 - p
    drop[..., -1] = False
    return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))


@torch.no_grad()
def greedy_decode(model: nn.Module, input_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """`(B, T + max_new_tokens)`: the prompt, then each step's most likely token, with a KV cache.

    `model(ids, past_key_values=past, use_cache=True)` returns `.logits` `(B, T, vocab)` and
    `.past_key_values`. The first call reads the whole prompt; every later call reads only the
    newest token and passes the `past_key_values` of the call before.
    """
    ids, past = input_ids, None
    for _ in range(max_new_tokens):
        output = model(ids if past is None else ids[:, -1:], past_key_values=past, use_cache=True)
        past = output.past_key_values
        ids = torch.cat([ids, output.logits[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
    return ids
