"""Exercise: LoRA by hand — the forward pass, the merge, and the injection.

A LoRA layer leaves a pretrained weight `W0` frozen and adds a rank-`r` update beside it:

    h = W0 x + b + scaling * B A x,    A: (r, in_features),  B: (out_features, r)

Careful with GPT-2: its projections are `transformers.pytorch_utils.Conv1D`, which stores its
weight as `(in_features, out_features)` and computes `x @ W + b`, the transpose of
`nn.Linear` (`(out, in)`, `x @ W.T + b`). `A` and `B` have the same shapes for both.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D  # noqa: F401  (you will need it in merged_weight)

from peft_course.lora import LoRAConfig, LoRALayer  # noqa: F401  (inject_lora's config, its layer)


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


def matches(name: str, patterns: Iterable[str]) -> bool:
    """peft's rule: `name` equals a pattern or ends with `"." + pattern`.

    `"c_proj"` matches `transformer.h.0.attn.c_proj`, `"attn.c_proj"` matches only the
    attention one, and `"proj"` matches nothing in GPT-2 (a name part must match whole).
    """
    raise NotImplementedError(
        "not written yet: pytest exercises/test_lora.py grades it, with hints"
    )


def inject_lora(model: nn.Module, config: LoRAConfig) -> list[str]:
    """Wrap each module whose name matches `config.targets` in a `LoRALayer`, in place.

    Each new layer is `LoRALayer(module, config.r, config.alpha, config.dropout,
    config.use_rslora)`. Freeze every other parameter (only the new `lora_A`/`lora_B` train)
    except what `config.trainable` names: a parameter whose name matches one of its patterns,
    and every parameter of a module whose name matches one (`"score"` and `"score.weight"` both
    train GPT-2's head). Return the wrapped names in `model.named_modules()` order. Raise
    `ValueError` naming any target or trainable pattern that matches nothing, before the model
    is changed.
    """
    raise NotImplementedError(
        "not written yet: pytest exercises/test_lora.py grades it, with hints"
    )
