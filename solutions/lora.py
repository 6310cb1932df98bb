"""Exercise: LoRA by hand — the forward pass, the merge, and the injection.

A LoRA layer leaves a pretrained weight `W0` frozen and adds a rank-`r` update beside it:

    h = W0 x + b + scaling * B A x,    A: (r, in_features),  B: (out_features, r)

Careful with GPT-2: its projections are `transformers.pytorch_utils.Conv1D`, which stores its
weight as `(in_features, out_features)` and computes `x @ W + b`, the transpose of
`nn.Linear` (`(out, in)`, `x @ W.T + b`). `A` and `B` have the same shapes for both.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from peft_course.lora import LoRALayer


def lora_forward(
    x: torch.Tensor, base: nn.Module, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float
) -> torch.Tensor:
    """Return `base(x) + scaling * B A x` for a batch `x` of shape `(..., in_features)`.

    `base` is an `nn.Linear` or a `Conv1D`; `lora_A` is `(r, in_features)` and `lora_B` is
    `(out_features, r)`. Rows of `x` are vectors, so `B A x` is `x @ A.T @ B.T`.
    """
    return base(x) + (x @ lora_A.T @ lora_B.T) * scaling


def merged_weight(
    base: nn.Module, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float
) -> torch.Tensor:
    """Return `W0 + scaling * B A` laid out like `base.weight`, as a new tensor.

    `base` is left unchanged, and no gradient flows from the result back into `base.weight`.

    `B A` is `(out, in)`, the layout of `nn.Linear.weight`; `Conv1D.weight` is `(in, out)`,
    so there the update must be transposed.
    """
    delta = (lora_B @ lora_A) * scaling
    if isinstance(base, Conv1D):
        delta = delta.T
    return base.weight.detach() + delta


def matches(name: str, targets: Sequence[str]) -> bool:
    """peft's rule: `name` equals a target or ends with `"." + target`.

    `"c_proj"` matches `transformer.h.0.attn.c_proj`, `"attn.c_proj"` matches only the
    attention one, and `"proj"` matches nothing in GPT-2 (a name part must match whole).
    """
    return any(name == target or name.endswith("." + target) for target in targets)


def inject_lora(model: nn.Module, targets: Sequence[str], r: int, alpha: float) -> list[str]:
    """Wrap each module whose name matches `targets` in `LoRALayer(module, r, alpha)`, in place.

    Freeze every other parameter (only the new `lora_A`/`lora_B` train), return the wrapped
    names in `model.named_modules()` order, and raise `ValueError` naming any target that
    matches no module.
    """
    names = [name for name, _ in model.named_modules() if name and matches(name, targets)]
    for target in targets:
        if not any(matches(name, [target]) for name in names):
            raise ValueError(f"target '{target}' matches no module of the model")
    model.requires_grad_(False)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALayer(getattr(parent, child), r, alpha))
    return names
