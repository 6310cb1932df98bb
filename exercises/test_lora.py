"""Grades exercises/lora.py: the LoRA forward pass, the merge, and the injection.

Every check runs on several random shapes and weights, for both `nn.Linear` and GPT-2's
`Conv1D`, against direct math, the reference layer `peft_course.lora.LoRALayer`, or peft.
Float32 results computed in a different order differ by rounding (~1e-6 at these sizes), so
comparisons allow 1e-5 of the output's largest value (`peft_course.tolerances.LORA_OUTPUT_RTOL`).
"""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.tuners_utils import check_target_module_exists
from torch import nn
from transformers import GPT2Config, GPT2ForSequenceClassification
from transformers.pytorch_utils import Conv1D

from peft_course.lora import LoRALayer
from peft_course.tolerances import LORA_OUTPUT_RTOL

KINDS = ["Linear", "Conv1D"]


@pytest.fixture
def lora(load):
    return load("lora")


def random_case(kind: str, seed: int):
    """A base layer of random shape with random weights and bias, random A, B, scaling and input."""
    generator = torch.Generator().manual_seed(seed)
    d_in, d_out, r = (int(v) for v in torch.randint(2, 24, (3,), generator=generator))
    base = nn.Linear(d_in, d_out) if kind == "Linear" else Conv1D(d_out, d_in)
    with torch.no_grad():
        for p in base.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    lora_A = torch.randn(r, d_in, generator=generator)
    lora_B = torch.randn(d_out, r, generator=generator)
    scaling = float(torch.rand(1, generator=generator)) * 4
    x = torch.randn(3, 5, d_in, generator=generator)  # (batch, sequence, features)
    return base, lora_A, lora_B, scaling, x


def by_hand(kind: str, base, lora_A, lora_B, scaling, x):
    """The formula with the weight layout written out: Linear is x W^T + b, Conv1D is x W + b."""
    W = base.weight if kind == "Linear" else base.weight.T  # now (out, in) for both
    return x @ W.T + base.bias + scaling * (x @ lora_A.T @ lora_B.T)


def describe(kind, base, lora_A):
    return f"{kind} with weight {tuple(base.weight.shape)}, r={lora_A.shape[0]}"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(4))
def test_forward_matches_the_formula(lora, kind, seed):
    base, lora_A, lora_B, scaling, x = random_case(kind, seed)
    with torch.no_grad():
        got = lora.lora_forward(x, base, lora_A, lora_B, scaling)
        expected = by_hand(kind, base, lora_A, lora_B, scaling, x)
    assert got.shape == expected.shape, (
        f"{describe(kind, base, lora_A)}: expected output shape {tuple(expected.shape)}, "
        f"got {tuple(got.shape)}"
    )
    error = (got - expected).abs().max().item()
    assert error < LORA_OUTPUT_RTOL * expected.abs().max().item(), (
        f"{describe(kind, base, lora_A)}, scaling={scaling:.3f}: output differs from "
        f"W0 x + b + scaling * B A x by up to {error:.3g}"
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(3))
def test_forward_matches_the_reference_layer(lora, kind, seed):
    base, lora_A, lora_B, _, x = random_case(kind, seed + 10)
    r = lora_A.shape[0]
    reference = LoRALayer(base, r=r, alpha=2.0 * r)
    with torch.no_grad():
        reference.lora_A.copy_(lora_A)
        reference.lora_B.copy_(lora_B)
        got = lora.lora_forward(x, base, lora_A, lora_B, reference.scaling)
        expected = reference(x)
    error = (got - expected).abs().max().item()
    assert error < LORA_OUTPUT_RTOL * expected.abs().max().item(), (
        f"{describe(kind, base, lora_A)}: differs from peft_course.lora.LoRALayer by {error:.3g}"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_zero_B_changes_nothing(lora, kind):
    base, lora_A, lora_B, scaling, x = random_case(kind, 20)
    with torch.no_grad():
        got = lora.lora_forward(x, base, lora_A, torch.zeros_like(lora_B), scaling)
        expected = base(x)
    assert torch.equal(got, expected), (
        "with B = 0 the output must be exactly base(x): that is why B starts at zero"
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(4))
def test_merged_weight_reproduces_the_lora_output(lora, kind, seed):
    base, lora_A, lora_B, scaling, x = random_case(kind, seed + 30)
    original = base.weight.detach().clone()
    with torch.no_grad():
        expected = by_hand(kind, base, lora_A, lora_B, scaling, x)  # the unmerged LoRA output
        merged = lora.merged_weight(base, lora_A, lora_B, scaling)
    assert merged.shape == base.weight.shape, (
        f"{describe(kind, base, lora_A)}: the merged weight must have base.weight's shape "
        f"{tuple(base.weight.shape)}, got {tuple(merged.shape)}"
        + (" (Conv1D stores (in, out): transpose B A)" if kind == "Conv1D" else "")
    )
    assert torch.equal(base.weight, original), (
        "merged_weight must return a new tensor, not change base.weight"
    )
    assert merged.data_ptr() != base.weight.data_ptr(), (
        "merged_weight must return a new tensor, not base.weight"
    )
    with torch.no_grad():
        base.weight.copy_(merged)
        got = base(x)  # the plain layer, no LoRA code
    error = (got - expected).abs().max().item()
    assert error < LORA_OUTPUT_RTOL * expected.abs().max().item(), (
        f"{describe(kind, base, lora_A)}, scaling={scaling:.3f}: the layer holding the merged "
        f"weight differs from the unmerged LoRA output by {error:.3g}"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_merged_weight_takes_no_gradient_path_into_the_base(lora, kind):
    base, lora_A, lora_B, scaling, _ = random_case(kind, 40)
    assert base.weight.requires_grad, "the fixture's base weight is a trainable parameter"
    merged = lora.merged_weight(base, lora_A, lora_B, scaling)  # not under torch.no_grad()
    assert not merged.requires_grad, (
        "the merged weight still carries autograd history back to base.weight: start from "
        "base.weight.detach()"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_forward_lets_gradients_reach_A_and_B(lora, kind):
    base, lora_A, lora_B, scaling, x = random_case(kind, 50)
    lora_A.requires_grad_(True)
    lora_B.requires_grad_(True)
    lora.lora_forward(x, base, lora_A, lora_B, scaling).sum().backward()
    for name, tensor in (("lora_A", lora_A), ("lora_B", lora_B)):
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0, (
            f"{name} got no gradient from lora_forward: training would not change it"
        )


GPT2_NAMES = [
    "transformer.h.0.attn.c_attn",
    "transformer.h.0.attn.c_proj",
    "transformer.h.1.mlp.c_fc",
    "transformer.h.1.mlp.c_proj",
    "transformer.h.11.mlp.c_proj",
    "transformer.wte",
    "score",
    "transformer.h.0.ln_1",
    "transformer.h.0.attn",
]
PATTERN_SETS = [
    ["c_attn"],
    ["c_proj"],
    ["attn.c_proj"],
    ["mlp.c_proj", "c_fc"],
    ["proj"],
    ["score"],
    ["h.1.mlp.c_proj"],
    ["1.mlp.c_proj"],
    ["transformer.h.0.attn"],
    ["attn"],
    ["c_attn", "wte", "ln_1"],
]


@pytest.mark.parametrize("targets", PATTERN_SETS, ids="+".join)
def test_matches_target_like_peft(lora, targets):
    config = LoraConfig(target_modules=targets)
    for name in GPT2_NAMES:
        expected = bool(check_target_module_exists(config, name))
        got = lora.matches(name, targets)
        assert type(got) is bool, (
            f"matches({name!r}, {targets}) must return True or False, got {got!r}"
        )
        assert got == expected, (
            f"matches({name!r}, {targets}) should be {expected} (peft's rule), got {got}"
        )


def random_gpt2(seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    n_layer = int(torch.randint(1, 4, (1,), generator=generator))
    n_head = int(torch.randint(1, 4, (1,), generator=generator))
    config = GPT2Config(
        vocab_size=50,
        n_positions=16,
        n_embd=8 * n_head,
        n_layer=n_layer,
        n_head=n_head,
        num_labels=2,
        pad_token_id=0,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(seed)
    return GPT2ForSequenceClassification(config).eval()


INJECTION_CASES = [
    (["c_attn"], 4, 8.0),
    (["attn.c_proj", "c_fc"], 2, 4.0),
    (["c_attn", "c_proj", "c_fc"], 8, 8.0),
    (["mlp.c_proj"], 3, 1.0),
]


@pytest.mark.parametrize("case", range(len(INJECTION_CASES)))
def test_inject_lora_wraps_what_peft_wraps(lora, case):
    targets, r, alpha = INJECTION_CASES[case]
    model = random_gpt2(case)
    twin = get_peft_model(
        random_gpt2(case),
        LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, fan_in_fan_out=True),
    )
    input_ids = torch.randint(1, 50, (2, 7), generator=torch.Generator().manual_seed(case))
    with torch.no_grad():
        before = model(input_ids=input_ids).logits
    names = lora.inject_lora(model, targets, r, alpha)
    expected = sorted(twin.targeted_module_names)
    assert sorted(names) == expected, (
        f"targets {targets}: expected to wrap {expected}, wrapped {sorted(names)}"
    )
    for name in expected:
        module = model.get_submodule(name)
        assert isinstance(module, LoRALayer), (
            f"{name} should now be a LoRALayer, it is a {type(module).__name__}"
        )
        assert (module.r, module.alpha) == (r, alpha), f"{name}: expected r={r}, alpha={alpha}"
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert all(n.endswith((".lora_A", ".lora_B")) for n in trainable), (
        "only lora_A and lora_B may train; also trainable: "
        f"{[n for n in trainable if 'lora_' not in n][:5]}"
    )
    assert len(trainable) == 2 * len(expected), "every wrapped layer's lora_A and lora_B must train"
    ours = sum(p.numel() for p in model.parameters() if p.requires_grad)
    theirs = sum(p.numel() for p in twin.parameters() if p.requires_grad)
    assert ours == theirs, f"expected {theirs:,} trainable parameters (peft's count), got {ours:,}"
    with torch.no_grad():
        after = model(input_ids=input_ids).logits
    assert torch.equal(before, after), (
        "right after injection (B = 0) the model's output must not change"
    )


def test_inject_lora_returns_names_in_module_order(lora, returns):
    """12 blocks: `h.10` sorts before `h.2`, so module order and sorted order differ."""
    config = GPT2Config(
        vocab_size=50, n_positions=16, n_embd=8, n_layer=12, n_head=2, num_labels=2, pad_token_id=0
    )
    model = GPT2ForSequenceClassification(config)
    targets = ["mlp.c_proj", "c_attn"]
    expected = [
        name for name, _ in model.named_modules() if name.endswith(("mlp.c_proj", "c_attn"))
    ]
    names = lora.inject_lora(model, targets, 2, 4.0)
    returns(names, list, "inject_lora")
    assert names == expected, (
        f"expected the wrapped names in model.named_modules() order, {expected[:4]}..., "
        f"got {names[:4]}..."
    )


@pytest.mark.parametrize("targets", [["q_proj"], ["c_attn", "nonexistent"]])
def test_inject_lora_rejects_a_target_that_matches_nothing(lora, targets):
    with pytest.raises(ValueError, match="nonexistent|q_proj"):
        lora.inject_lora(random_gpt2(0), targets, 4, 8.0)
