"""Reference answers for exercises/qlora.py: the QLoRA quantization config and its bytes."""

from __future__ import annotations

import math

import bitsandbytes as bnb
import torch
from torch import nn
from transformers import BitsAndBytesConfig


def nf4_config(
    compute_dtype: torch.dtype = torch.bfloat16,
    double_quant: bool = True,
    skip_modules: tuple[str, ...] = ("score", "classifier", "lm_head"),
) -> BitsAndBytesConfig:
    """A 4-bit NF4 `BitsAndBytesConfig` with every choice explicit (see the exercise)."""
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=list(skip_modules),
    )


def quantized_modules(model: nn.Module) -> list[str]:
    """Names of the modules whose weights are 4-bit, in `named_modules()` order."""
    return [name for name, module in model.named_modules() if isinstance(module, bnb.nn.Linear4bit)]


def nf4_bytes(weights: int, double_quant: bool = True, blocksize: int = 64) -> int:
    """Bytes bitsandbytes stores for `weights` NF4 weights: packed codes plus scales."""
    blocks = math.ceil(weights / blocksize)
    packed = math.ceil(weights / 2)
    if double_quant:
        return packed + blocks + 4 * math.ceil(blocks / 256)
    return packed + 4 * blocks


def bytes_per_parameter(model: nn.Module) -> float:
    """Average stored bytes per model parameter, 4-bit weights and their scales included."""
    stored = weights = 0
    for parameter in model.parameters():
        stored += parameter.numel() * parameter.element_size()
        if isinstance(parameter, bnb.nn.Params4bit):
            weights += 2 * parameter.numel()
            state = parameter.quant_state
            stored += state.absmax.numel() * state.absmax.element_size()
            if state.nested:
                stored += state.state2.absmax.numel() * state.state2.absmax.element_size()
        else:
            weights += parameter.numel()
    return stored / weights
