"""Counting what a method trains: write the formulas.

Every function returns a number (or a formula) that the tests compare with a real module
tree: a network built from the widths, a model wrapped by `peft`, a weight quantized by
bitsandbytes. Work it out on paper first; the code is one line or two each.
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy as sp


def mlp_parameter_count(widths: list[int]) -> int:
    """Parameters of a feed-forward network of `nn.Linear` layers with these widths.

    `widths[0]` is the input, `widths[-1]` the output; each layer has a weight matrix and a
    bias vector.
    """
    raise NotImplementedError(
        "not written yet: pytest exercises/test_counting.py grades it, with hints"
    )


def bitfit_parameter_count(widths: list[int]) -> int:
    """Parameters BitFit trains in that network: the biases only."""
    raise NotImplementedError(
        "not written yet: pytest exercises/test_counting.py grades it, with hints"
    )


def adapter_parameter_count(
    widths: list[int], rank: int, placement: str = "hidden", bias: str = "both"
) -> int:
    """Parameters of bottleneck adapters (`width -> rank -> width`) after the chosen layers.

    `placement`: `"hidden"` (after every hidden layer) or `"hidden+output"` (after the
    output layer too). `bias`: which projections have a bias: `"both"`, `"down"` (a
    `rank`-vector), `"up"` (a `width`-vector) or `"none"`.
    """
    raise NotImplementedError(
        "not written yet: pytest exercises/test_counting.py grades it, with hints"
    )


def lora_count(rank: int, shapes: Sequence[tuple[int, int]]) -> int:
    """LoRA parameters for layers of the given `(d_in, d_out)` shapes at rank `rank`.

    Each targeted layer gets `A` (`rank x d_in`) and `B` (`d_out x rank`).
    """
    raise NotImplementedError(
        "not written yet: pytest exercises/test_counting.py grades it, with hints"
    )


def gpt2_lora_formula(targets: list[str]) -> sp.Expr:
    """LoRA parameters on GPT-2 as a sympy formula in `r`, `d_model` and `n_layer`.

    `targets` are some of `attn.c_attn` (d -> 3d), `attn.c_proj` (d -> d), `mlp.c_fc`
    (d -> 4d) and `mlp.c_proj` (4d -> d); every block has each of them.
    """
    raise NotImplementedError(
        "not written yet: pytest exercises/test_counting.py grades it, with hints"
    )


def nf4_bits_per_parameter(double_quant: bool, blocksize: int = 64) -> float:
    """Bits one weight occupies in 4-bit NF4: the 4-bit code plus its share of the scales.

    Each block of `blocksize` weights has one absmax scale, stored in fp32 (32 bits); with
    double quantization it is stored in 8 bits instead, and every 256 of those 8-bit scales
    share one fp32 scale of their own.
    """
    raise NotImplementedError(
        "not written yet: pytest exercises/test_counting.py grades it, with hints"
    )
