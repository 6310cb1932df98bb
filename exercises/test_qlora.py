"""Grades exercises/qlora.py: the NF4 config, which modules it quantizes, and the bytes it costs.

Configs are checked field by field and by loading tiny-gpt2 with them, for several dtypes,
double-quantization settings and skip lists. Byte counts are checked against what bitsandbytes
actually stores when it quantizes random tensors of random sizes; they are integers, so they
must match exactly. Bytes per parameter is a ratio of integers; 1e-9
(`peft_course.tolerances.FLOAT64_ATOL`) absorbs float division.
"""

import bitsandbytes as bnb
import pytest
import torch
from torch import nn

from peft_course.models import load_model
from peft_course.models import count_parameters
from peft_course.qlora import quantized_modules, stored_quant_bytes
from peft_course.tolerances import FLOAT64_ATOL

CONFIGS = [  # (compute dtype, double quantization, modules left unquantized)
    (torch.bfloat16, True, ("score", "classifier", "lm_head")),
    (torch.float32, True, ("score",)),
    (torch.bfloat16, False, ("score", "c_fc")),
    (torch.float32, False, ("score", "attn.c_proj")),
]


@pytest.fixture
def qlora(load):
    return load("qlora")


def load_with(config, num_labels=2):
    model, _ = load_model(
        "tiny-gpt2", "classification", num_labels=num_labels, seed=0, quantization_config=config
    )
    return model


@pytest.mark.parametrize("dtype,double_quant,skip", CONFIGS)
def test_config_sets_every_field(qlora, dtype, double_quant, skip):
    config = qlora.nf4_config(dtype, double_quant, skip)
    got = {
        "load_in_4bit": config.load_in_4bit,
        "bnb_4bit_quant_type": config.bnb_4bit_quant_type,
        "bnb_4bit_use_double_quant": config.bnb_4bit_use_double_quant,
        "bnb_4bit_compute_dtype": config.bnb_4bit_compute_dtype,
        "llm_int8_skip_modules": sorted(config.llm_int8_skip_modules or []),
    }
    expected = {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": double_quant,
        "bnb_4bit_compute_dtype": dtype,
        "llm_int8_skip_modules": sorted(skip),
    }
    wrong = {k: (got[k], expected[k]) for k in expected if got[k] != expected[k]}
    assert not wrong, f"nf4_config{(dtype, double_quant, skip)}: field: (got, expected) {wrong}"


def test_defaults_are_qlora_not_the_library_defaults(qlora):
    config = qlora.nf4_config()
    assert (
        config.bnb_4bit_quant_type,
        config.bnb_4bit_use_double_quant,
        config.bnb_4bit_compute_dtype,
    ) == ("nf4", True, torch.bfloat16), "defaults must be NF4, double quantization and bf16 compute"
    assert "score" in config.llm_int8_skip_modules, "the classification head must stay unquantized"


@pytest.mark.parametrize("dtype,double_quant,skip", CONFIGS)
def test_config_quantizes_the_blocks_and_spares_the_skipped(qlora, dtype, double_quant, skip):
    model = load_with(qlora.nf4_config(dtype, double_quant, skip))
    expected = [
        f"transformer.h.{i}.{m}"
        for i in range(2)
        for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
        if not any(f"{i}.{m}".endswith(s) for s in skip)
    ]
    assert quantized_modules(model) == expected, f"skip={skip}: expected 4-bit modules {expected}"
    layer = model.get_submodule(expected[0])
    assert (
        layer.weight.quant_state.quant_type == "nf4"
        and layer.weight.quant_state.nested == double_quant
    )
    assert layer.compute_dtype == dtype
    assert type(model.score) is nn.Linear, "the head must not be quantized"


@pytest.mark.parametrize("dtype,double_quant,skip", CONFIGS)
def test_quantized_module_names(qlora, dtype, double_quant, skip):
    from peft_course.qlora import nf4_config

    model = load_with(nf4_config(dtype, double_quant, skip))
    expected = quantized_modules(model)
    got = qlora.quantized_modules(model)
    assert got == expected, f"skip={skip}: expected {expected}, got {got}"


def test_quantized_module_names_in_module_order(qlora, returns):
    """12 numbered layers, 4-bit and plain ones mixed: `layers.10` sorts before `layers.2`, so
    module order and sorted order differ."""
    model = nn.Module()
    model.layers = nn.ModuleList(
        bnb.nn.Linear4bit(4, 4) if i % 3 else nn.Linear(4, 4) for i in range(12)
    )
    expected = [f"layers.{i}" for i in range(12) if i % 3]
    got = qlora.quantized_modules(model)
    returns(got, list, "quantized_modules")
    assert got == expected, (
        f"expected the 4-bit modules in named_modules() order, {expected}, got {got}"
    )


def test_an_unquantized_model_has_no_quantized_modules(qlora):
    model, _ = load_model("tiny-gpt2", "classification", num_labels=2)
    assert qlora.quantized_modules(model) == []


@pytest.mark.parametrize("double_quant", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_storage_bytes_match_bitsandbytes(qlora, double_quant, seed):
    generator = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 200_000, (1,), generator=generator))
    codes, state = bnb.functional.quantize_4bit(
        torch.randn(n, generator=generator),
        blocksize=64,
        quant_type="nf4",
        compress_statistics=double_quant,
    )
    stored = (
        codes.numel() * codes.element_size() + state.absmax.numel() * state.absmax.element_size()
    )
    if state.nested:
        stored += state.state2.absmax.numel() * state.state2.absmax.element_size()
    got = qlora.nf4_bytes(n, double_quant)
    assert got == stored, (
        f"{n} weights, double_quant={double_quant}: bitsandbytes stores {stored} bytes, "
        f"you said {got}"
    )


def stored_bytes(n: int, double_quant: bool, blocksize: int) -> int:
    """What bitsandbytes keeps for `n` random weights: packed codes, absmax, nested absmax."""
    codes, state = bnb.functional.quantize_4bit(
        torch.randn(n, generator=torch.Generator().manual_seed(n)),
        blocksize=blocksize,
        quant_type="nf4",
        compress_statistics=double_quant,
    )
    stored = (
        codes.numel() * codes.element_size() + state.absmax.numel() * state.absmax.element_size()
    )
    if state.nested:
        stored += state.state2.absmax.numel() * state.state2.absmax.element_size()
    return stored


@pytest.mark.parametrize("double_quant", [True, False])
@pytest.mark.parametrize("blocksize", [32, 64, 128, 256])
def test_storage_bytes_at_every_block_size_and_boundary(qlora, returns, double_quant, blocksize):
    """Block and 256-block-group boundaries: one weight, a full block, one past it, an odd count."""
    for n in (1, blocksize, blocksize + 1, 256 * blocksize, 256 * blocksize + 1, 3 * blocksize - 1):
        expected = stored_bytes(n, double_quant, blocksize)
        got = qlora.nf4_bytes(n, double_quant, blocksize)
        returns(got, int, "nf4_bytes")
        assert got == expected, (
            f"{n} weights, blocksize {blocksize}, double_quant={double_quant}: bitsandbytes stores "
            f"{expected} bytes, you said {got}"
        )
    assert qlora.nf4_bytes(1000, double_quant) == stored_bytes(1000, double_quant, 64), (
        "the default block size is 64"
    )
    assert qlora.nf4_bytes(1000) == stored_bytes(1000, True, 64), (
        "the default is double quantization"
    )


@pytest.mark.parametrize(
    "dtype,size", [(torch.float32, 4.0), (torch.bfloat16, 2.0), (torch.float16, 2.0)]
)
def test_bytes_per_parameter_of_plain_models(qlora, returns, dtype, size):
    model, _ = load_model("tiny-gpt2", "classification", num_labels=2)
    got = qlora.bytes_per_parameter(model.to(dtype))
    returns(got, float, "bytes_per_parameter")
    assert abs(got - size) < FLOAT64_ATOL, (
        f"a {dtype} model stores {size} bytes per parameter, you said {got}"
    )


@pytest.mark.parametrize("dtype,double_quant,skip", CONFIGS)
def test_bytes_per_parameter_of_quantized_models(qlora, dtype, double_quant, skip):
    from peft_course.qlora import nf4_config

    model = load_with(nf4_config(dtype, double_quant, skip), num_labels=3)
    plain = sum(p.numel() * p.element_size() for p in model.parameters() if p.dtype != torch.uint8)
    expected = (plain + stored_quant_bytes(model)) / count_parameters(model)[1]
    got = qlora.bytes_per_parameter(model)
    assert abs(got - expected) < FLOAT64_ATOL, (
        f"double_quant={double_quant}, skip={skip}: expected {expected:.6f} bytes per parameter, "
        f"got {got:.6f}"
    )
    assert got < 4.0, "a 4-bit model must cost less than fp32"


def test_bytes_per_parameter_counts_a_tied_tensor_once(qlora):
    """tiny-gpt2 as a language model, 4-bit blocks and an fp32 head tied to the fp32 input
    embedding: one tensor with two names, stored once. Counting it per module (or per name)
    counts it twice, and the average moves from about 2.16 to about 2.57 bytes."""
    from peft_course.qlora import nf4_config

    model, _ = load_model(
        "tiny-gpt2",
        "causal-lm",
        seed=0,
        quantization_config=nf4_config(torch.float32, True, ("lm_head",)),
    )
    assert model.lm_head.weight is model.transformer.wte.weight, "the fixture's head is tied"
    plain = sum(p.numel() * p.element_size() for p in model.parameters() if p.dtype != torch.uint8)
    expected = (plain + stored_quant_bytes(model)) / count_parameters(model)[1]
    got = qlora.bytes_per_parameter(model)
    assert abs(got - expected) < FLOAT64_ATOL, (
        f"a 4-bit language model whose fp32 head is tied to its embedding: expected "
        f"{expected:.6f} bytes per parameter, got {got:.6f}. A tied tensor is one parameter, "
        "stored once: count each parameter once (model.parameters() yields it once)"
    )
