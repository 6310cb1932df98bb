"""Grades exercises/counting.py: parameter formulas, checked against real module trees."""

import random
import warnings

import pytest
import sympy as sp
import torch
from torch import nn

from peft_course.counting import add_adapters, build_mlp, mlp_adapter_targets
from peft_course.tolerances import FLOAT64_ATOL


@pytest.fixture
def counting(load):
    return load("counting")


def random_widths(rng: random.Random) -> list[int]:
    return [rng.randint(1, 300) for _ in range(rng.randint(2, 8))]


def check(got, expected: int, what: str) -> None:
    assert got == expected, f"{what}: expected {expected:,}, got {got!r}"


def test_mlp_parameter_count(counting, returns):
    rng = random.Random(0)
    cases = [[1024, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1], [3, 1]] + [
        random_widths(rng) for _ in range(6)
    ]
    for widths in cases:
        model = nn.Sequential(*[nn.Linear(a, b) for a, b in zip(widths, widths[1:])])
        got = counting.mlp_parameter_count(widths)
        returns(got, int, "mlp_parameter_count")
        check(
            got,
            sum(p.numel() for p in model.parameters()),
            f"parameters of an MLP with widths {widths}",
        )


def test_bitfit_parameter_count(counting, returns):
    rng = random.Random(1)
    for widths in [[1024, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1]] + [
        random_widths(rng) for _ in range(6)
    ]:
        model = nn.Sequential(*[nn.Linear(a, b) for a, b in zip(widths, widths[1:])])
        biases = sum(p.numel() for name, p in model.named_parameters() if name.endswith("bias"))
        got = counting.bitfit_parameter_count(widths)
        returns(got, int, "bitfit_parameter_count")
        check(got, biases, f"BitFit parameters for widths {widths}")


@pytest.mark.parametrize("placement", ["hidden", "hidden+output"])
@pytest.mark.parametrize("bias", ["both", "down", "up", "none"])
def test_adapter_parameter_count(counting, returns, placement, bias):
    rng = random.Random(f"{placement}-{bias}")
    for widths in [[1024, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1]] + [
        random_widths(rng) for _ in range(3)
    ]:
        rank = rng.randint(1, 8)
        model = add_adapters(build_mlp(widths), mlp_adapter_targets(widths, placement), rank, bias)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        got = counting.adapter_parameter_count(widths, rank, placement, bias)
        returns(got, int, "adapter_parameter_count")
        check(
            got, trainable, f"rank-{rank} adapters ({placement}, bias={bias}) for widths {widths}"
        )


def test_adapter_defaults_are_hidden_layers_with_both_biases(counting):
    for widths in [[10, 20, 30, 2], [4, 7, 1]]:
        expected = counting.adapter_parameter_count(widths, 3, "hidden", "both")
        got = counting.adapter_parameter_count(widths, 3)
        assert got == expected, (
            f"widths {widths}, rank 3: the defaults are placement='hidden', bias='both' "
            f"({expected:,}), got {got:,}"
        )


class Layers(nn.Module):
    """Independent linear layers (shapes need not chain) for peft to wrap."""

    def __init__(self, shapes: list[tuple[int, int]]) -> None:
        super().__init__()
        self.layers = nn.ModuleDict(
            {f"layer{k}": nn.Linear(a, b) for k, (a, b) in enumerate(shapes)}
        )


def peft_trainable(model: nn.Module, config) -> int:
    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_peft_model(model, config).get_nb_trainable_parameters()[0]


def test_lora_parameter_count(counting, returns):
    from peft import LoraConfig

    rng = random.Random(2)
    cases = [(8, [(768, 2304)] * 12), (8, [(768, 768)] * 36)]
    cases += [
        (
            rng.randint(1, 16),
            [(rng.randint(1, 200), rng.randint(1, 200)) for _ in range(rng.randint(1, 5))],
        )
        for _ in range(5)
    ]
    for rank, shapes in cases:
        with torch.device("meta"):  # shapes only: nothing is allocated
            model = Layers(shapes)
        expected = peft_trainable(model, LoraConfig(r=rank, target_modules=list(model.layers)))
        got = counting.lora_count(rank, shapes)
        returns(got, int, "lora_count")
        check(got, expected, f"LoRA r={rank} on layers {shapes}")


@pytest.mark.parametrize(
    "targets",
    [
        ["attn.c_attn"],
        ["attn.c_proj", "mlp.c_proj"],
        ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"],
    ],
)
def test_gpt2_lora_formula(counting, targets):
    from peft import LoraConfig
    from transformers import GPT2Config, GPT2LMHeadModel

    formula = counting.gpt2_lora_formula(targets)
    assert isinstance(formula, sp.Expr), f"return a sympy expression, got {type(formula).__name__}"
    names = {symbol.name for symbol in formula.free_symbols}
    assert names <= {"r", "d_model", "n_layer"}, (
        f"use only the symbols r, d_model, n_layer; got {sorted(names)}"
    )
    for d_model, n_layer, rank in [(768, 12, 8), (64, 2, 4), (128, 3, 1), (96, 5, 16)]:
        with torch.device("meta"):  # shapes only: nothing is allocated
            model = GPT2LMHeadModel(
                GPT2Config(n_embd=d_model, n_layer=n_layer, n_head=4, vocab_size=100)
            )
        expected = peft_trainable(model, LoraConfig(r=rank, target_modules=targets))
        values = {"r": rank, "d_model": d_model, "n_layer": n_layer}
        got = formula.subs({symbol: values[symbol.name] for symbol in formula.free_symbols})
        check(
            got, expected, f"LoRA on {targets} with d_model={d_model}, n_layer={n_layer}, r={rank}"
        )


@pytest.mark.parametrize("double_quant", [False, True])
def test_nf4_bits_per_parameter(counting, returns, double_quant):
    """bitsandbytes' own storage is the reference: the packed 4-bit codes, the absmax scales,
    and (double quantization) the scales of the scales. The per-tensor code tables are left
    out: they do not grow with the weight. The tensors hold a whole number of 256-block
    groups, so the match is exact up to float rounding (FLOAT64_ATOL, 1e-9)."""
    from peft_course.system import bnb_4bit_support

    works, why = bnb_4bit_support("cpu")
    if not works:
        pytest.skip(why)
    from bitsandbytes.functional import quantize_4bit

    for blocksize, shape in [
        (64, (2304, 768)),
        (128, (256, 256)),
        (256, (512, 256)),
        (32, (256, 64)),
    ]:
        weight = torch.randn(shape, generator=torch.Generator().manual_seed(blocksize))
        packed, state = quantize_4bit(
            weight, blocksize=blocksize, quant_type="nf4", compress_statistics=double_quant
        )
        stored = packed.numel() + state.absmax.numel() * state.absmax.element_size()
        if double_quant:
            stored += state.state2.absmax.numel() * state.state2.absmax.element_size()
        expected = 8 * stored / weight.numel()
        got = counting.nf4_bits_per_parameter(double_quant, blocksize)
        returns(got, float, "nf4_bits_per_parameter")
        if blocksize == 64:
            default = counting.nf4_bits_per_parameter(double_quant)
            assert default == got, (
                f"the default block size is 64: expected {got} bits, got {default}"
            )
        assert got == pytest.approx(expected, abs=FLOAT64_ATOL), (
            f"blocksize {blocksize}, double_quant={double_quant}: expected {expected} bits, "
            f"got {got}"
        )
