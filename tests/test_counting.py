"""Counting chapter: every number is checked twice, from its formula and on a real module tree."""

from __future__ import annotations

import copy

import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from peft_course import counting as c
from peft_course import qlora, registry
from peft_course.errors import CourseError
from peft_course.models import load_model
from peft_course.system import bnb_4bit_support
from peft_course.tolerances import FLOAT64_SAME_FORMULA

GPT2_SMALL = c.ARCHITECTURES["gpt2-small"]


@pytest.fixture(scope="module")
def gpt2_cpu() -> nn.Module:
    """One randomly initialised GPT-2 small classifier on the CPU, shared by this module."""
    return c.build_classifier("gpt2-small", labels=2, device="cpu", seed=0)


@pytest.fixture(scope="module")
def bnb_4bit() -> None:
    works, why = bnb_4bit_support("cpu")
    if not works:
        pytest.skip(why)


# --- the feed-forward network --------------------------------------------------------


def test_mlp_size_and_bitfit_from_formula_and_modules():
    model = c.build_mlp(c.MLP_WIDTHS)
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 10
    assert sum(c.MLP_WIDTHS[1:-1]) == 1022  # hidden units
    assert c.evaluate_mlp(c.MLP_PARAMETERS, c.MLP_WIDTHS) == count_all(model) == 700_073
    trainable, total = c.count_parameters(c.bitfit(model))
    assert c.evaluate_mlp(c.MLP_BIASES, c.MLP_WIDTHS) == trainable == 1_023
    assert f"{100 * trainable / total:.3f}" == "0.146"


def count_all(model: nn.Module) -> int:
    return c.count_parameters(model)[1]


EXPECTED_ADAPTERS = {  # (placement, bias) -> adapter parameters for rank 4
    ("hidden", "both"): 9_234,
    ("hidden", "down"): 8_212,
    ("hidden", "up"): 9_198,
    ("hidden", "none"): 8_176,
    ("hidden+output", "both"): 9_247,
    ("hidden+output", "down"): 8_224,
    ("hidden+output", "up"): 9_207,
    ("hidden+output", "none"): 8_184,
}


def test_adapter_conventions_table_and_which_give_1_31_percent():
    rows = c.adapter_convention_table(c.MLP_WIDTHS, rank=4)
    assert len(rows) == 16
    for row in rows:
        assert (
            row.adapter_parameters
            == row.counted_parameters
            == EXPECTED_ADAPTERS[row.placement, row.bias]
        )
        whole = 700_073 + (row.adapter_parameters if row.denominator == "base+adapters" else 0)
        assert row.percent == pytest.approx(
            100 * row.adapter_parameters / whole, rel=FLOAT64_SAME_FORMULA
        )
    rounded = c.matching_conventions(rows, 1.31)
    assert [(r.placement, r.bias, r.denominator) for r in rounded] == [("hidden", "up", "base")]
    truncated = c.matching_conventions(rows, 1.31, rounding="truncate")
    assert {(r.placement, r.bias, r.denominator) for r in truncated} == {
        ("hidden", "both", "base"),
        ("hidden", "up", "base"),
        ("hidden+output", "up", "base"),
    }


@settings(max_examples=25, deadline=None)
@given(
    widths=st.lists(st.integers(1, 48), min_size=2, max_size=7),
    rank=st.integers(1, 6),
    placement=st.sampled_from(c.PLACEMENTS),
    bias=st.sampled_from(c.ADAPTER_BIASES),
)
def test_formulas_equal_module_counts_for_any_widths(widths, rank, placement, bias):
    model = c.build_mlp(widths)
    assert c.evaluate_mlp(c.MLP_PARAMETERS, widths) == count_all(model)
    assert (
        c.evaluate_mlp(c.MLP_BIASES, widths) == c.count_parameters(c.bitfit(c.build_mlp(widths)))[0]
    )
    adapted = c.add_adapters(model, c.mlp_adapter_targets(widths, placement), rank, bias)
    assert (
        c.evaluate_mlp(c.adapter_formula(placement, bias), widths, rank)
        == c.count_parameters(adapted)[0]
    )


def test_adapter_starts_as_the_identity_and_then_changes_the_output():
    torch.manual_seed(0)
    x = torch.randn(5, 12)
    base = c.build_mlp([12, 9, 6, 3])
    expected = base(x)
    adapted = c.add_adapters(base, ["fc1", "fc2"], rank=2)
    assert torch.equal(adapted(x), expected)
    with torch.no_grad():
        adapted.fc1.adapter.up.weight.fill_(0.5)
    assert not torch.allclose(adapted(x), expected)
    assert all(not p.requires_grad for n, p in adapted.named_parameters() if ".adapter." not in n)


def test_adapters_in_a_gpt2_start_as_the_identity():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50)).eval()
    ids = torch.randint(0, 50, (2, 6))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        c.add_adapters(model, ["attn.c_proj", "mlp.c_proj"], rank=4)
        assert torch.equal(model(input_ids=ids).logits, expected)
    trainable = c.count_parameters(model)[0]
    formula = 2 * c.n_layer * c.adapter_term(c.d_model)  # two adapters per block
    assert (
        trainable
        == formula.subs({c.n_layer: 2, c.d_model: 32, c.r: 4})
        == 2 * 2 * (2 * 32 * 4 + 4 + 32)
    )


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: c.check_widths([5]), "input and an output"),
        (lambda: c.check_widths([5, 0]), "positive integer"),
        (lambda: c.Adapter(8, 0), "rank"),
        (lambda: c.adapter_formula("everywhere"), "unknown placement"),
        (lambda: c.adapter_term(c.d[1], "sideways"), "unknown adapter bias"),
        (lambda: c.match_modules(c.build_mlp([4, 2]), ["fc9"]), "no module"),
        (lambda: c.count_method("bitfit", "mlp", targets=["fc1"]), "takes no targets"),
        (lambda: c.count_method("lora", "mlp", targets=["fc99"]), "not a layer"),
        (lambda: c.count_method("prefix"), "unknown method"),
        (lambda: c.lora_formulas(GPT2_SMALL, ["q_proj"]), "no layer of gpt2-small"),
    ],
)
def test_bad_input_is_named(call, message):
    with pytest.raises(c.CountingError, match=message):
        call()


# --- GPT-2 small and LoRA ---------------------------------------------------------------


def test_gpt2_small_base_and_head(gpt2_cpu):
    assert (
        c.evaluate_architecture(c.GPT2_BASE, GPT2_SMALL)
        == count_all(gpt2_cpu.transformer)
        == 124_439_808
    )
    assert (
        c.evaluate_architecture(c.HEAD, GPT2_SMALL, labels=2) == count_all(gpt2_cpu.score) == 1_536
    )
    meta = c.build_classifier("gpt2-small", labels=2)  # what every count below is made on
    assert {n: p.shape for n, p in meta.named_parameters()} == {
        n: p.shape for n, p in gpt2_cpu.named_parameters()
    }
    assert c.evaluate_architecture(c.GPT2_BIASES, GPT2_SMALL) == sum(
        p.numel() for n, p in gpt2_cpu.named_parameters() if n.endswith("bias")
    )


EXPECTED_LORA = {  # case name -> (trainable, all params)
    "LoraConfig(): head left frozen": (294_912, 124_736_256),
    "r=8 on c_attn, SEQ_CLS": (294_912 + 1_536, 124_737_792),
    "r=4 on 4 projections, SEQ_CLS": (589_824 + 1_536, 124_441_344 + 589_824 + 1_536),
    "r=128, lora_only bias, 20 labels": (4_761_600, 129_189_120),
    "r=8 on separate q, k, v (OPT-125m)": (442_368, 125_240_832 + 442_368),
}


@pytest.fixture(scope="module")
def lora_counts() -> dict[str, c.LoraCount]:
    """Every named LoRA case counted once, by formula and by peft on a meta-device model."""
    return {case.name: c.count_lora_case(case) for case in c.LORA_CASES}


@pytest.mark.parametrize("name", EXPECTED_LORA)
def test_lora_cases_formula_equals_peft(lora_counts, name):
    counted = lora_counts[name]
    assert (counted.formula_trainable, counted.formula_total) == EXPECTED_LORA[name]
    assert (counted.peft_trainable, counted.peft_total) == EXPECTED_LORA[name]


def test_lora_parameters_alone(lora_counts):
    assert {name: count.lora_parameters for name, count in lora_counts.items()} == {
        "LoraConfig(): head left frozen": 294_912,
        "r=8 on c_attn, SEQ_CLS": 294_912,
        "r=4 on 4 projections, SEQ_CLS": 589_824,
        "r=128, lora_only bias, 20 labels": 4_718_592,
        "r=8 on separate q, k, v (OPT-125m)": 442_368,
    }


def test_lora_without_task_type_leaves_the_new_head_frozen():
    frozen = c.peft_model(c.LORA_CASES[0])
    assert not any(p.requires_grad for n, p in frozen.named_parameters() if "score" in n)
    saved = c.peft_model(c.LORA_CASES[1])
    trained = [n for n, p in saved.named_parameters() if "score" in n and p.requires_grad]
    assert trained == ["base_model.model.score.modules_to_save.default.weight"]


def test_modules_to_save_keeps_the_head_twice(lora_counts):
    model = c.peft_model(c.LORA_CASES[3])
    heads = {n: p for n, p in model.named_parameters() if "score" in n}
    assert sorted(heads) == [
        "base_model.model.score.modules_to_save.default.weight",
        "base_model.model.score.original_module.weight",
    ]
    original, copy = heads.values()
    assert original is not copy and original.shape == copy.shape == (20, 768)
    counted = lora_counts["r=128, lora_only bias, 20 labels"]
    assert counted.peft_total - (124_439_808 + 20 * 768 + counted.lora_parameters) == 20 * 768
    assert f"{counted.percent:.2f}" == "3.69"


@pytest.mark.parametrize(
    "model, targets, rank",
    [
        ("gpt2-small", ("c_attn",), 1),
        ("gpt2-small", ("c_proj",), 16),
        ("gpt2-small", ("c_fc", "c_attn"), 3),
        ("opt-125m", ("q_proj", "k_proj", "v_proj"), 8),
    ],
)
def test_general_lora_formula_against_module_tree_and_peft(model, targets, rank):
    arch = c.architecture(model)
    base = c.build_classifier(model)
    shapes = c.lora_target_shapes(base, targets)  # read before peft wraps the layers
    case = c.LoraCase("check", model, r=rank, targets=targets)
    peft_trainable, _ = c.apply_lora(base, case.lora_config()).get_nb_trainable_parameters()
    closed_form = c.lora_formulas(arch, targets)[0]
    assert len(shapes) == 12 * (len(targets) + (targets == ("c_proj",)))  # c_proj: attn and mlp
    assert (
        c.lora_count(rank, shapes)
        == c.evaluate_architecture(closed_form, arch, rank=rank)
        == peft_trainable
    )


def test_closed_forms_of_the_named_configurations():
    lora = c.lora_formulas(GPT2_SMALL, ["c_attn"])[0]
    assert sp.simplify(lora - 4 * c.r * c.d_model * c.n_layer) == 0
    four = c.lora_formulas(GPT2_SMALL, ["c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"])[0]
    assert sp.simplify(four - 16 * c.r * c.d_model * c.n_layer) == 0
    qkv = c.lora_formulas(c.architecture("opt-125m"), ["q_proj", "k_proj", "v_proj"])[0]
    assert (
        c.evaluate_architecture(qkv, c.architecture("opt-125m"), rank=8)
        == 12 * 3 * 8 * (768 + 768)
        == 442_368
    )


def test_peft_lora_on_the_real_gpt2_starts_as_the_base(gpt2_cpu):
    """LoRA's B starts at zero, so a wrapped c_attn of the real (random) GPT-2 returns what
    it did before; once B is non-zero it does not. One layer, not a full forward: same check,
    a fraction of the time."""
    x = torch.randn(1, 5, 768, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = gpt2_cpu.transformer.h[3].attn.c_attn(x)
        peft = c.apply_lora(gpt2_cpu, c.LORA_CASES[0].lora_config())
        try:
            assert (
                peft.get_nb_trainable_parameters()
                == EXPECTED_LORA["LoraConfig(): head left frozen"]
            )
            wrapped = gpt2_cpu.transformer.h[3].attn.c_attn
            assert type(wrapped).__module__.startswith("peft") and torch.equal(wrapped(x), before)
            wrapped.lora_B["default"].weight.fill_(0.01)
            assert not torch.allclose(wrapped(x), before)
        finally:
            peft.unload()
    assert type(gpt2_cpu.transformer.h[3].attn.c_attn).__name__ == "Conv1D"


# --- the count command's breakdowns ---------------------------------------------------------


@pytest.mark.parametrize(
    "method, model, rank, expected",
    [
        ("bitfit", "mlp", 8, 1_023),
        ("bitfit", "gpt2-small", 8, 11 * 768 * 12 + 768 + 1_536),
        ("adapter", "mlp", 4, 9_234),
        ("adapter", "gpt2-small", 8, 24 * (2 * 768 * 8 + 8 + 768) + 1_536),
        ("lora", "mlp", 4, 4 * (1024 + 1 + 2 * 1022)),
        ("lora", "gpt2-small", 8, 294_912 + 1_536),
    ],
)
def test_count_method_breakdown(method, model, rank, expected):
    result = c.count_method(method, model, rank=rank)
    assert (
        result.trainable
        == result.formula_value
        == sum(row.trainable for row in result.rows)
        == expected
    )
    text = c.format_method_count(result)
    assert f"{expected:,}" in text and "(matches the module count)" in text


def test_count_method_reports_the_share_of_the_base_too():
    result = c.count_method("adapter", "mlp", rank=4)
    assert (result.trainable, result.total, result.base_total) == (9_234, 709_307, 700_073)
    assert "1.319% of the 700,073 before the method" in c.format_method_count(result)


def test_count_method_breakdown_groups_blocks():
    rows = c.count_method("lora", "gpt2-small", rank=4, targets=["c_fc"]).rows
    assert [(r.module, r.modules, r.each) for r in rows] == [
        ("transformer.h.*.mlp.c_fc.lora_A", 12, 4 * 768),
        ("transformer.h.*.mlp.c_fc.lora_B", 12, 4 * 3072),
        ("score.modules_to_save", 1, 1_536),
    ]


# --- QLoRA storage (peft_course.qlora), as the page shows it -------------------------------


def test_nf4_bits_formulas():
    assert qlora.nf4_bits_per_parameter(double_quant=False) == sp.Rational(9, 2)
    assert qlora.nf4_bits_per_parameter(double_quant=True) == 4 + sp.Rational(8, 64) + sp.Rational(
        32, 64 * 256
    )
    assert f"{float(qlora.nf4_bits_per_parameter(True)):.3f}" == "4.127"
    assert f"{float(qlora.nf4_bits_per_parameter(True)) / 8:.4f}" == "0.5159"  # bytes per parameter


@pytest.mark.parametrize("double_quant", [False, True])
def test_nf4_storage_of_c_attn_matches_the_formula(bnb_4bit, double_quant):
    # Linear4bit: out x in
    weight = torch.randn(2304, 768, generator=torch.Generator().manual_seed(0))
    stored = qlora.quantize_nf4(weight, double_quant)
    assert stored.packed_shape == (884_736, 1) and stored.packed_dtype == "uint8"
    assert stored.absmax_bytes == 27_648 * (1 if double_quant else 4)  # one scale per 64 weights
    assert stored.nested_absmax_bytes == (27_648 // 256 * 4 if double_quant else 0)
    assert stored.bits_per_parameter == float(qlora.nf4_bits_per_parameter(double_quant))


def test_quantized_gpt2_small_blocks(bnb_4bit):
    """One of GPT-2 small's twelve blocks, to stay within the time budget: every block's
    c_attn has the same 768 x 2304 shape, and the quantized count is checked per block."""
    import bitsandbytes as bnb

    model = qlora.load_quantized_gpt2(double_quant=True, n_layer=1)
    c_attn = model.transformer.h[0].attn.c_attn
    assert isinstance(c_attn, bnb.nn.Linear4bit)
    assert tuple(c_attn.weight.shape) == (884_736, 1) and c_attn.weight.dtype == torch.uint8
    assert c_attn.bias.shape == (2304,) and c_attn.bias.dtype == torch.float32
    assert isinstance(model.score, nn.Linear) and model.score.weight.dtype == torch.float32
    stored = qlora.quant_storage(c_attn.weight, c_attn.weight.quant_state)
    assert stored.shape == (2304, 768)
    assert stored.bits_per_parameter == float(qlora.nf4_bits_per_parameter(True))
    quantized = sum(
        m.weight.quant_state.shape.numel()
        for m in model.modules()
        if isinstance(m, bnb.nn.Linear4bit)
    )
    assert quantized == c.GPT2_PROJECTION_WEIGHTS.subs({c.d_model: 768, c.n_layer: 1}) == 7_077_888


# --- the docs page -------------------------------------------------------------------------


def test_docs_page_shows_the_numbers_the_package_computes(bnb_4bit):
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "counting.md").read_text()
    for name, table in c.counting_tables().items():
        assert table in page, (
            f"docs/counting.md is out of date: the '{name}' table differs (print_tables())"
        )


# --- the PEFT family, counted before trained -------------------------------------------------

# counted on the tiny models, loaded for real: QLoRA needs 4-bit layers, which the meta device
# cannot hold, and PiSSA and OLoRA decompose the weights they adapt (SVD, QR): real numbers
ON_TINY_MODELS = ("qlora", "pissa", "olora")


def meta_model(method: str, arch: c.Architecture) -> nn.Module:
    """The classifier `method` starts from, on the meta device (shapes only, no memory):
    `gpt2-scratch` starts from the course's own GPT-2."""
    if method == "gpt2-scratch":
        from peft_course.gpt2 import GPT2, GPT2Config

        with torch.device("meta"):
            return GPT2(GPT2Config(num_labels=2, pad_token_id=50256))
    return c.build_classifier(arch.name, labels=2)


@pytest.fixture(scope="module")
def tiny_classifiers() -> dict[str, nn.Module]:
    """tiny-gpt2's and tiny-llama's classifiers (2 labels), copied by each test that changes one."""
    return {
        name: load_model(name, "classification", num_labels=2)[0]
        for name in ("tiny-gpt2", "tiny-llama")
    }


@pytest.mark.parametrize("method", list(registry.METHODS))
def test_every_registry_method_has_a_formula(method):
    """A method added to the registry without a formula fails here (and in the next test), and
    every method is counted on at least one of the two architectures."""
    formulas = [c.family_formula(method, c.architecture(a)) for a in c.FAMILY_ARCHITECTURES]
    assert any(f is not None for f in formulas)


@pytest.mark.parametrize("arch_name", c.FAMILY_ARCHITECTURES)
@pytest.mark.parametrize("method", list(registry.METHODS))
def test_family_formula_predicts_the_wrapped_models_count(method, arch_name):
    """The formula, at the method's default options, equals the trainable parameters its
    `prepare` leaves on GPT-2 small and SmolLM2-135M (head included), or the method refuses the
    architecture in one line (`ON_TINY_MODELS` are LoRA's count here, checked on the tiny
    models below)."""
    arch = c.architecture(arch_name)
    expected = c.family_count(method, arch)
    lora_count = c.family_count("lora", arch)
    if method in ON_TINY_MODELS:
        assert expected == (None if method == "olora" and arch.family == "gpt2" else lora_count)
        return
    if method == "gpt2-scratch" and arch.family != "gpt2":
        assert expected is None  # the course's GPT-2 loads GPT-2 checkpoints only
        return
    prepare = registry.get_method(method).function("prepare")
    model = meta_model(method, arch)
    if expected is None:
        with pytest.raises(CourseError, match="cannot adapt GPT-2's Conv1D"):
            prepare(model)
        return
    trainable, _ = c.count_parameters(prepare(model))
    assert trainable == expected, (
        f"{method} on {arch_name}: the formula {c.family_formula(method, arch)} gives "
        f"{expected:,}, the wrapped model trains {trainable:,}"
    )


@pytest.mark.parametrize("model_name", ["tiny-gpt2", "tiny-llama"])
def test_qlora_formula_on_the_tiny_models_loaded_in_4_bit(bnb_4bit, model_name):
    """QLoRA's count, on a model really quantized, is LoRA's formula: 4-bit storage changes what
    the frozen weights occupy, not what trains."""
    from peft_course.qlora import load_qlora_model, prepare_qlora

    model, _ = load_qlora_model(model_name, num_labels=2)
    arch = c.architecture_of(model.config)
    trainable, _ = c.count_parameters(prepare_qlora(model, gradient_checkpointing=False))
    assert trainable == c.family_count("qlora", arch) > 0


@pytest.mark.parametrize("method", ["full", "dora", "pissa", "olora"])
@pytest.mark.parametrize("model_name", ["tiny-gpt2", "tiny-llama"])
def test_family_formula_on_the_tiny_models(tiny_classifiers, model_name, method):
    """The formulas hold at another size (`architecture_of` reads it from the config), and
    PiSSA's and OLoRA's starts, from each weight's SVD or QR, train what LoRA trains."""
    model = copy.deepcopy(tiny_classifiers[model_name])
    arch = c.architecture_of(model.config)
    expected = c.family_count(method, arch)
    prepare = registry.get_method(method).function("prepare")
    if expected is None:
        with pytest.raises(CourseError, match="cannot adapt GPT-2's Conv1D"):
            prepare(model)
        return
    assert c.count_parameters(prepare(model))[0] == expected


def test_no_formula_is_a_one_line_error():
    with pytest.raises(c.CountingError, match="no formula counts method 'nope'"):
        c.family_formula("nope", GPT2_SMALL)
    config = type("Config", (), {"model_type": "bert"})()
    with pytest.raises(c.CountingError, match="gpt2 and llama only"):
        c.architecture_of(config)


def test_family_results_file_is_what_the_package_computes():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "docs" / "results" / "peft-family-count.md"
    table = path.read_text().split("\n\n*Made by `")[0]
    assert table == c.family_table(), (
        f"{path.name} is out of date: python -m peft_course.pages counting"
    )


def test_count_command_prints_the_family_table(capsys):
    from peft_course.cli import main

    assert main(["count", "--family"]) == 0
    assert capsys.readouterr().out.strip() == c.family_table()
    assert main(["count"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        "peft-course count: error: say what to count: --method bitfit, adapter or lora, or --family"
    )
