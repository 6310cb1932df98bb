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
from transformers.pytorch_utils import Conv1D  # noqa: F401  (you will need it in merged_weight)

from peft_course.lora import LoRALayer  # noqa: F401  (the layer inject_lora puts in place)


def lora_forward(
    x: torch.Tensor, base: nn.Module, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float
) -> torch.Tensor:
    """Return `base(x) + scaling * B A x` for a batch `x` of shape `(..., in_features)`.

    `base` is an `nn.Linear` or a `Conv1D`; `lora_A` is `(r, in_features)` and `lora_B` is
    `(out_features, r)`. Rows of `x` are vectors, so `B A x` is `x @ A.T @ B.T`.
    """
    raise NotImplementedError(
        "not written yet: pytest exercises/test_lora.py grades it, with hints"
    )


def merged_weight(
    base: nn.Module, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float
) -> torch.Tensor:
    """Return `W0 + scaling * B A` laid out like `base.weight`, as a new tensor.

    `base` is left unchanged, and no gradient flows from the result back into `base.weight`.

    `B A` is `(out, in)`, the layout of `nn.Linear.weight`; `Conv1D.weight` is `(in, out)`,
    so there the update must be transposed.
    """
    raise NotImplementedError(
        "not written yet: pytest exercises/test_lora.py grades it, with hints"
    )


def matches(name: str, targets: Sequence[str]) -> bool:
    """peft's rule: `name` equals a target or ends with `"." + target`.

    `"c_proj"` matches `transformer.h.0.attn.c_proj`, `"attn.c_proj"` matches only the
    attention one, and `"proj"` matches nothing in GPT-2 (a name part must match whole).
    """
    raise NotImplementedError(
        "not written yet: pytest exercises/test_lora.py grades it, with hints"
    )


def inject_lora(model: nn.Module, targets: Sequence[str], r: int, alpha: float) -> list[str]:
    """Wrap each module whose name matches `targets` in `LoRALayer(module, r, alpha)`, in place.

    Freeze every other parameter (only the new `lora_A`/`lora_B` train), return the wrapped
    names in `model.named_modules()` order, and raise `ValueError` naming any target that
    matches no module.
    """
    raise NotImplementedError(
        "not written yet: pytest exercises/test_lora.py grades it, with hints"
    )
