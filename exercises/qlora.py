"""Exercise: the QLoRA quantization config, and what 4-bit storage really costs.

QLoRA loads a model with its linear weights in 4-bit NormalFloat (NF4). You describe the
quantization to transformers with a `BitsAndBytesConfig` passed as `quantization_config=` to
`from_pretrained`. Its defaults are *not* QLoRA's (they are fp4, no double quantization, fp32
compute), so every field must be set.

How bitsandbytes stores a matrix of n weights in NF4:

* the 4-bit codes, two per byte: ceil(n / 2) bytes, in a `Params4bit` parameter of dtype uint8
  (so `parameter.numel()` is half the number of weights);
* one scale ("absmax") per block of `blocksize` = 64 weights: fp32, 4 bytes each;
* with double quantization those scales are stored as 1 byte each instead, plus one fp32
  scale per 256 of them.

A quantized parameter's scales live in `parameter.quant_state`: `quant_state.absmax`, and when
`quant_state.nested` is true, also `quant_state.state2.absmax`.
"""

from __future__ import annotations

import math  # noqa: F401  (for nf4_bytes)

import bitsandbytes as bnb  # noqa: F401  (its 4-bit layer and parameter classes)
import torch
from torch import nn
from transformers import BitsAndBytesConfig


def nf4_config(
    compute_dtype: torch.dtype = torch.bfloat16,
    double_quant: bool = True,
    skip_modules: tuple[str, ...] = ("score", "classifier", "lm_head"),
) -> BitsAndBytesConfig:
    """A 4-bit NF4 `BitsAndBytesConfig`: matrix products in `compute_dtype`, double
    quantization on or off, and the modules named in `skip_modules` left unquantized (the
    classification and language-model heads)."""
    raise NotImplementedError(
        "not written yet: pytest exercises/test_qlora.py grades it, with hints"
    )


def quantized_modules(model: nn.Module) -> list[str]:
    """Names of the modules whose weights are 4-bit, in `named_modules()` order."""
    raise NotImplementedError(
        "not written yet: pytest exercises/test_qlora.py grades it, with hints"
    )


def nf4_bytes(weights: int, double_quant: bool = True, blocksize: int = 64) -> int:
    """Bytes bitsandbytes stores for `weights` NF4 weights: packed codes plus scales
    (the shared code books are not counted)."""
    raise NotImplementedError(
        "not written yet: pytest exercises/test_qlora.py grades it, with hints"
    )


def bytes_per_parameter(model: nn.Module) -> float:
    """Average stored bytes per model parameter, 4-bit weights and their scales included.

    Count every parameter's storage (`numel() * element_size()`) plus, for each
    `bnb.nn.Params4bit`, its absmax tensors; count its weights as 2 per stored byte.
    An fp32 model gives 4.0, a bf16 one 2.0.
    """
    raise NotImplementedError(
        "not written yet: pytest exercises/test_qlora.py grades it, with hints"
    )
