"""Grades exercises/lora.py: the LoRA forward pass, the merge, and the injection.

Every check runs on several random shapes and weights, for both `nn.Linear` and GPT-2's
`Conv1D`, against direct math, the reference layer `peft_course.lora.LoRALayer`, or peft.
Float32 results computed in a different order differ by rounding (~1e-6 at these sizes), so
comparisons allow 1e-5 of the output's largest value (`peft_course.tolerances.LORA_OUTPUT_RTOL`).
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peft import LoraConfig, get_peft_model
from peft.tuners.tuners_utils import check_target_module_exists
from torch import nn
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

from peft_course import lora as package
from peft_course.lora import LoRAConfig, LoRALayer
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


def layouts(kind, base, lora_A, lora_B, x=None) -> str:
    """The shapes a shape error comes from, each with what its axes are."""
    d_out, d_in = lora_B.shape[0], lora_A.shape[1]
    stored = "(in, out)" if kind == "Conv1D" else "(out, in)"
    text = (
        f"base is a {kind}, whose weight is stored {stored}: {tuple(base.weight.shape)}; "
        f"lora_A is (r, in) = {tuple(lora_A.shape)}, lora_B is (out, r) = {tuple(lora_B.shape)}, "
        f"so B A is (out, in) = ({d_out}, {d_in})"
    )
    if x is not None:
        text += (
            f"; x is (..., in) = {tuple(x.shape)}.\n  The LoRA path goes (..., in) -> (..., r) "
            "through A, then (..., r) -> (..., out) through B: rows of x are vectors, so each "
            "matrix multiplies from the right, transposed"
        )
    return text


def graded_call(what: str, call, kind, base, lora_A, lora_B, x=None):
    """`call()` runs your function; a shape error inside your own arithmetic (the `+` of two
    layouts that do not fit, a product the wrong way round) is reported with the shapes it came
    from, not as a traceback into your code."""
    try:
        return call()
    except RuntimeError as error:
        if not any(word in str(error) for word in ("size", "shape")):
            raise
        cause = f"{what} failed inside your code: {str(error).splitlines()[0]}\n  " + layouts(
            kind, base, lora_A, lora_B, x
        )
        if kind == "Conv1D" and what == "merged_weight":
            cause += (
                f".\n  Your update is (out, in) = {tuple(lora_B.shape[:1] + lora_A.shape[1:])}; "
                f"W is {tuple(base.weight.shape)}: Conv1D stores (in, out), so transpose the "
                "update before adding it"
            )
    pytest.fail(cause, pytrace=False)  # outside `except`: no chained traceback


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(4))
def test_forward_matches_the_formula(lora, kind, seed):
    base, lora_A, lora_B, scaling, x = random_case(kind, seed)
    with torch.no_grad():
        got = graded_call(
            "lora_forward",
            lambda: lora.lora_forward(x, base, lora_A, lora_B, scaling),
            kind,
            base,
            lora_A,
            lora_B,
            x,
        )
        expected = by_hand(kind, base, lora_A, lora_B, scaling, x)
    assert got.shape == expected.shape, (
        f"{describe(kind, base, lora_A)}: expected output shape {tuple(expected.shape)}, "
        f"got {tuple(got.shape)}\n  {layouts(kind, base, lora_A, lora_B, x)}"
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
        got = graded_call(
            "lora_forward",
            lambda: lora.lora_forward(x, base, lora_A, lora_B, reference.scaling),
            kind,
            base,
            lora_A,
            lora_B,
            x,
        )
        expected = reference(x)
    error = (got - expected).abs().max().item()
    assert error < LORA_OUTPUT_RTOL * expected.abs().max().item(), (
        f"{describe(kind, base, lora_A)}: differs from peft_course.lora.LoRALayer by {error:.3g}"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_zero_B_changes_nothing(lora, kind):
    base, lora_A, lora_B, scaling, x = random_case(kind, 20)
    with torch.no_grad():
        got = graded_call(
            "lora_forward",
            lambda: lora.lora_forward(x, base, lora_A, torch.zeros_like(lora_B), scaling),
            kind,
            base,
            lora_A,
            lora_B,
            x,
        )
        expected = base(x)
    assert torch.equal(got, expected), (
        "with B = 0 the output must be exactly base(x): that is why B starts at zero"
    )


def layout_mistake(kind, base, merged, lora_A, lora_B, scaling) -> str | None:
    """On a square weight the other layout runs without an error: say so when that is what
    `merged` is."""
    if base.weight.shape[0] != base.weight.shape[1] or merged.shape != base.weight.shape:
        return None
    update = scaling * (lora_B @ lora_A)  # (out, in)
    other = base.weight + (update if kind == "Conv1D" else update.T)
    right = base.weight + (update.T if kind == "Conv1D" else update)
    if torch.allclose(other, right):
        return None
    if not torch.allclose(merged, other, atol=1e-5, rtol=1e-5):
        return None
    if kind == "Conv1D":
        return (
            f"a square Conv1D {tuple(base.weight.shape)}: your merged weight is W + scaling * B A "
            "laid out (out, in), as for nn.Linear; Conv1D stores (in, out): transpose B A for it"
        )
    return (
        f"a square Linear {tuple(base.weight.shape)}: your merged weight is W + scaling * (B A)^T; "
        "nn.Linear stores (out, in), the layout of B A itself: no transpose for it"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_merged_weight_of_a_square_layer_has_the_layout_of_its_weight(lora, kind):
    """On a square weight the wrong layout runs without an error, and is wrong: checked first."""
    generator = torch.Generator().manual_seed(35)
    base = nn.Linear(6, 6) if kind == "Linear" else Conv1D(6, 6)
    lora_A, lora_B = torch.randn(2, 6, generator=generator), torch.randn(6, 2, generator=generator)
    with torch.no_grad():
        merged = lora.merged_weight(base, lora_A, lora_B, 0.5)
        update = 0.5 * (lora_B @ lora_A)  # (out, in)
        right = base.weight + (update.T if kind == "Conv1D" else update)
        mistake = layout_mistake(kind, base, merged, lora_A, lora_B, 0.5)
    if mistake:
        pytest.fail(mistake, pytrace=False)
    assert torch.allclose(merged, right, atol=1e-6), (
        f"a square {kind}: expected W + scaling * B A in the layout of base.weight"
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(4))
def test_merged_weight_reproduces_the_lora_output(lora, kind, seed):
    base, lora_A, lora_B, scaling, x = random_case(kind, seed + 30)
    original = base.weight.detach().clone()
    with torch.no_grad():
        expected = by_hand(kind, base, lora_A, lora_B, scaling, x)  # the unmerged LoRA output
        merged = graded_call(
            "merged_weight",
            lambda: lora.merged_weight(base, lora_A, lora_B, scaling),
            kind,
            base,
            lora_A,
            lora_B,
        )
    assert merged.shape == base.weight.shape, (
        f"{describe(kind, base, lora_A)}: the merged weight must have base.weight's shape "
        f"{tuple(base.weight.shape)}, got {tuple(merged.shape)}"
        + (
            ": Conv1D stores (in, out), so transpose B A for it"
            if kind == "Conv1D"
            else ": nn.Linear stores (out, in), the layout of B A itself"
        )
    )
    assert torch.equal(base.weight, original), (
        "merged_weight must return a new tensor, not change base.weight"
    )
    assert merged.data_ptr() != base.weight.data_ptr(), (
        "merged_weight must return a new tensor, not base.weight"
    )
    with torch.no_grad():
        mistake = layout_mistake(kind, base, merged, lora_A, lora_B, scaling)
    if mistake:
        pytest.fail(mistake, pytrace=False)
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
    merged = graded_call(  # not under torch.no_grad()
        "merged_weight",
        lambda: lora.merged_weight(base, lora_A, lora_B, scaling),
        kind,
        base,
        lora_A,
        lora_B,
    )
    assert not merged.requires_grad, (
        "the merged weight still carries autograd history back to base.weight: start from "
        "base.weight.detach()"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_forward_lets_gradients_reach_A_and_B(lora, kind):
    base, lora_A, lora_B, scaling, x = random_case(kind, 50)
    lora_A.requires_grad_(True)
    lora_B.requires_grad_(True)
    got = graded_call(
        "lora_forward",
        lambda: lora.lora_forward(x, base, lora_A, lora_B, scaling),
        kind,
        base,
        lora_A,
        lora_B,
        x,
    )
    got.sum().backward()
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
    names = lora.inject_lora(model, LoRAConfig(r=r, alpha=alpha, targets=targets))
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
    names = lora.inject_lora(model, LoRAConfig(r=2, alpha=4.0, targets=targets))
    returns(names, list, "inject_lora")
    assert names == expected, (
        f"expected the wrapped names in model.named_modules() order, {expected[:4]}..., "
        f"got {names[:4]}..."
    )


def test_inject_lora_passes_dropout_and_rslora_on(lora):
    config = LoRAConfig(r=4, alpha=8.0, dropout=0.25, targets=["c_attn"], use_rslora=True)
    model = random_gpt2(1)
    for name in lora.inject_lora(model, config):
        layer = model.get_submodule(name)
        assert layer.dropout.p == 0.25, (
            f"{name}: expected the config's dropout 0.25, got {layer.dropout.p}"
        )
        assert layer.scaling == pytest.approx(8.0 / 2.0), (
            f"{name}: with use_rslora the scale is alpha / sqrt(r) = 4.0, got {layer.scaling}: "
            "pass config.use_rslora on to the LoRALayer"
        )


TRAINABLE_CASES = [
    ["score"],
    ["score.weight"],
    ["ln_f", "score"],
    ["h.0.attn.c_attn"],
    ["wpe.weight"],
]


@pytest.mark.parametrize("trainable", TRAINABLE_CASES, ids="+".join)
def test_inject_lora_trains_what_trainable_names(lora, trainable):
    """`config.trainable` names modules (all their parameters train) or single parameters;
    the package's `inject_lora` on a twin model is the reference."""
    config = LoRAConfig(r=2, alpha=4.0, targets=["c_attn", "mlp.c_proj"], trainable=trainable)
    model, twin = random_gpt2(2), random_gpt2(2)
    lora.inject_lora(model, config)
    package.inject_lora(twin, config)
    ours = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    theirs = sorted(n for n, p in twin.named_parameters() if p.requires_grad)
    assert ours == theirs, (
        f"trainable={trainable}: expected to train {theirs}, trains {ours} (a pattern names "
        "a parameter, or a module whose parameters all train)"
    )


@pytest.mark.parametrize(
    "targets, trainable",
    [
        (["q_proj"], []),
        (["c_attn", "nonexistent"], []),
        (["c_attn"], ["head"]),
        (["c_attn", "score.weight"], []),
    ],
)
def test_inject_lora_rejects_a_pattern_that_matches_nothing(lora, targets, trainable):
    model = random_gpt2(0)
    config = LoRAConfig(r=4, alpha=8.0, targets=targets, trainable=trainable)
    unmatched = next(p for p in [*targets, *trainable] if p not in ("c_attn",))
    module = (
        "a target names a module to wrap, and 'score.weight' is a parameter: "
        if unmatched == "score.weight"
        else ""
    )
    try:
        lora.inject_lora(model, config)
    except ValueError as error:
        assert unmatched in str(error), (
            f"targets={targets}, trainable={trainable}: the ValueError should name the pattern "
            f"that matches nothing ({unmatched!r}), even beside patterns that match; got: {error}"
        )
    else:
        pytest.fail(
            f"targets={targets}, trainable={trainable}: {module}{unmatched!r} matches nothing "
            "in the model, yet no ValueError: every pattern must match something",
            pytrace=False,
        )
    wrapped = [n for n, m in model.named_modules() if isinstance(m, LoRALayer)]
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert not wrapped and not frozen, (
        "a pattern that matches nothing must be refused before the model is changed: "
        f"wrapped {wrapped[:3]}, froze {frozen[:3]}"
    )


# --- the second sweep: gradients everywhere, any leading shape, any iterable, harder trees ----

GRADED = settings(  # deterministic: the same examples on every run and machine, no database
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def input_and_update_gradients(function, x, lora_A, lora_B, upstream):
    """(d/dx, d/dA, d/dB) of `sum(function(x, A, B) * upstream)`, on fresh leaves."""
    x, lora_A, lora_B = (t.detach().clone().requires_grad_(True) for t in (x, lora_A, lora_B))
    (function(x, lora_A, lora_B) * upstream).sum().backward()
    return x.grad, lora_A.grad, lora_B.grad


def close(got, expected) -> bool:
    scale = max(expected.abs().max().item(), 1e-12)
    return got is not None and (got - expected).abs().max().item() < LORA_OUTPUT_RTOL * scale


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(2))
def test_forward_passes_the_gradient_to_the_input(lora, kind, seed):
    """The base is frozen for training (its weights get no update), not for backpropagation:
    the layer's output depends on x through the base *and* the update, so the gradient must
    reach x through both, and from x every layer below."""
    base, lora_A, lora_B, scaling, x = random_case(kind, seed + 60)
    base.requires_grad_(False)  # frozen, as inside a LoRALayer
    upstream = torch.randn(
        x.shape[:-1] + (lora_B.shape[0],), generator=torch.Generator().manual_seed(seed)
    )

    def yours(x, A, B):
        return graded_call(
            "lora_forward", lambda: lora.lora_forward(x, base, A, B, scaling), kind, base, A, B, x
        )

    got_x, got_A, got_B = input_and_update_gradients(yours, x, lora_A, lora_B, upstream)
    formula = input_and_update_gradients(
        lambda x, A, B: by_hand(kind, base, A, B, scaling, x), x, lora_A, lora_B, upstream
    )
    for name, got, expected in (("lora_A", got_A, formula[1]), ("lora_B", got_B, formula[2])):
        assert close(got, expected), (
            f"{describe(kind, base, lora_A)}: the gradient of {name} differs from that of "
            "W0 x + b + scaling * B A x: training would update it wrongly"
        )
    base_only = input_and_update_gradients(lambda x, A, B: base(x), x, lora_A, lora_B, upstream)[0]
    update_only = formula[0] - base_only
    if got_x is None:
        pytest.fail(
            f"{describe(kind, base, lora_A)}: x got no gradient from lora_forward. The base is "
            "frozen, but its output still depends on x: the gradient must flow through it to the "
            "layers below (no torch.no_grad() or detach() on the way from x to the output)",
            pytrace=False,
        )
    if close(got_x, update_only):
        pytest.fail(
            f"{describe(kind, base, lora_A)}: x's gradient comes through the LoRA update only; "
            "the base path was cut (base(x) under torch.no_grad(), or detached). Frozen weights "
            "get no update, yet they still pass the gradient on to the input, and so to every "
            "layer below",
            pytrace=False,
        )
    if close(got_x, base_only):
        pytest.fail(
            f"{describe(kind, base, lora_A)}: x's gradient comes through the base only; the "
            "update's input was detached. The update depends on x too: its gradient must reach x",
            pytrace=False,
        )
    assert close(got_x, formula[0]), (
        f"{describe(kind, base, lora_A)}: the gradient with respect to x differs from that of "
        "W0 x + b + scaling * B A x"
    )


@GRADED
@given(
    kind=st.sampled_from(KINDS),
    leading=st.lists(st.integers(1, 4), min_size=0, max_size=3),
    seed=st.integers(0, 1000),
)
def test_forward_takes_any_leading_shape(lora, kind, leading, seed):
    """`x` is `(..., in_features)`: a single vector, a batch of rows, a batch of sequences of
    any depth."""
    base, lora_A, lora_B, scaling, _ = random_case(kind, seed)
    x = torch.randn(*leading, lora_A.shape[1], generator=torch.Generator().manual_seed(seed))
    rule = ": x is (..., in_features), with any number of leading axes (none, too)"
    with torch.no_grad():
        try:
            got = lora.lora_forward(x, base, lora_A, lora_B, scaling)
        except NotImplementedError:
            raise
        except RuntimeError as error:
            got = f"failed inside your code: {str(error).splitlines()[0]}"
        expected = by_hand(kind, base, lora_A, lora_B, scaling, x)
    case = f"{describe(kind, base, lora_A)}: x of shape {tuple(x.shape)}"
    if isinstance(got, str):
        pytest.fail(f"{case}: lora_forward {got}{rule}", pytrace=False)
    assert got.shape == expected.shape, (
        f"{case} must give {tuple(expected.shape)}, got {tuple(got.shape)}{rule}"
    )
    assert close(got, expected), f"{case}: the output differs from base(x) + scaling * B A x{rule}"


REGEX_LOOKALIKES = ["transformer.h_1", "transformer.hx1", "transformer.h.1", "blocks.h.10"]
REGEX_LOOKALIKES += ["head+1", "headd1", "layer.c_proj", "layerxc_proj", "mlp.c_fc(2)"]


@pytest.mark.parametrize(
    "targets",
    [["h.1"], ["layer.c_proj"], ["head+1"], ["c_fc(2)"], ["h.1", "r.c_proj"]],
    ids="+".join,
)
def test_matches_reads_patterns_as_names_not_regular_expressions(lora, targets):
    """A pattern is compared as text: its "." is a dot and "+" or "(" mean themselves."""
    config = LoraConfig(target_modules=targets)
    for name in REGEX_LOOKALIKES:
        expected = bool(check_target_module_exists(config, name))
        got = lora.matches(name, targets)
        assert got == expected, (
            f"matches({name!r}, {targets}) should be {expected}, got {got}: a pattern is a "
            "name compared as text, not a regular expression ('.' is a dot, '+' a plus)"
        )


ITERABLES = {
    "tuple": tuple,
    "set": set,
    "generator": lambda patterns: (p for p in patterns),
    "dict keys": lambda patterns: dict.fromkeys(patterns).keys(),
}


@pytest.mark.parametrize("kind", list(ITERABLES))
def test_matches_takes_any_iterable_of_patterns(lora, kind):
    for targets in PATTERN_SETS:
        config = LoraConfig(target_modules=targets)
        for name in GPT2_NAMES:
            expected = bool(check_target_module_exists(config, name))
            got = lora.matches(name, ITERABLES[kind](targets))
            assert got == expected, (
                f"matches({name!r}, <a {kind} of {targets}>) should be {expected}, got {got}: "
                "patterns may be any iterable, and a generator can be gone through only once"
            )


class Tree(nn.Module):
    """Two layers of the same shape, a module name that starts another one's ("head",
    "head_norm"), and a BatchNorm whose running statistics are buffers beside its parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(6, 6)
        self.head = nn.Linear(6, 6)
        self.head_norm = nn.LayerNorm(6)
        self.bn = nn.BatchNorm1d(6)


def deep_gpt2() -> nn.Module:
    """12 blocks: `h.1` is the start of `h.10` and `h.11`."""
    config = GPT2Config(
        vocab_size=50, n_positions=16, n_embd=8, n_layer=12, n_head=2, num_labels=2, pad_token_id=0
    )
    torch.manual_seed(0)
    return GPT2ForSequenceClassification(config)


@pytest.mark.parametrize(
    "make, targets, trainable",
    [
        (Tree, ["body"], ["head"]),
        (Tree, ["head"], ["bn"]),
        (deep_gpt2, ["c_attn"], ["h.1"]),
        (deep_gpt2, ["c_attn"], ["h.1.ln_1", "ln_f.weight"]),
    ],
    ids=["head-not-head_norm", "bn", "h.1-not-h.10", "h.1.ln_1"],
)
def test_inject_lora_trains_the_named_modules_and_no_namesakes(lora, make, targets, trainable):
    """A module's parameters are the names under `name + "."`: "head" is not the start of
    "head_norm", "h.1" not of "h.10"."""
    config = LoRAConfig(r=2, alpha=4.0, targets=targets, trainable=trainable)
    model, twin = make(), make()
    lora.inject_lora(model, config)
    package.inject_lora(twin, config)
    ours = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    theirs = sorted(n for n, p in twin.named_parameters() if p.requires_grad)
    extra, missing = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    assert ours == theirs, (
        f"targets={targets}, trainable={trainable}: trains {extra[:4]} too, misses {missing[:4]}"
        ": a module's parameters are the names under the module's name and a dot (so 'h.1' "
        "does not reach 'h.10', nor 'head' 'head_norm')"
        if extra
        else f"targets={targets}, trainable={trainable}: expected to train {missing[:4]} too"
    )


def tied_lm() -> nn.Module:
    config = GPT2Config(
        vocab_size=50, n_positions=16, n_embd=8, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(config)


@pytest.mark.parametrize(
    "make, trainable, what",
    [
        (Tree, ["bn.running_mean"], "a buffer (state_dict() lists it, named_parameters() not)"),
        (
            tied_lm,
            ["lm_head.weight"],
            "the second name of a tied tensor (named_parameters() lists it once, as "
            "'transformer.wte.weight')",
        ),
    ],
    ids=["buffer", "tied alias"],
)
def test_inject_lora_refuses_what_is_no_parameter(lora, make, trainable, what):
    """A trainable pattern must match a module or a parameter: one that names anything else
    would train nothing, and is refused like a typo, before the model is changed."""
    model = make()
    targets = ["c_attn"] if make is tied_lm else ["body"]
    config = LoRAConfig(r=2, alpha=4.0, targets=targets, trainable=trainable)
    try:
        lora.inject_lora(model, config)
    except ValueError as error:
        assert trainable[0] in str(error), (
            f"the ValueError should name the pattern {trainable[0]!r}, got: {error}"
        )
    else:
        pytest.fail(
            f"trainable={trainable} was accepted: {trainable[0]!r} is {what}, so it matches no "
            "module or parameter and would train nothing; raise ValueError naming it",
            pytrace=False,
        )
    wrapped = [n for n, m in model.named_modules() if isinstance(m, LoRALayer)]
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert not wrapped and not frozen, (
        f"refuse before the model is changed: wrapped {wrapped[:3]}, froze {frozen[:3]}"
    )
