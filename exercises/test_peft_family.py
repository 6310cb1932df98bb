"""Grades exercises/peft_family.py: (IA)³'s scales, DoRA's magnitude and direction, and prompt
tuning's virtual tokens.

Each check builds peft's own layer (an `IA3Config` or `LoraConfig(use_dora=True)` model of one
`nn.Linear` or GPT-2 `Conv1D`, a prompt-tuning model of a random GPT-2) on random weights and
compares your answer with it: outputs, merged weights and gradients. Shapes are random and
mostly non-square; a square layer is added where the wrong layout would run without an error.
When an answer is off, the check tries the plausible misreadings (the other side of a Conv1D,
the norm over the wrong dimension or left in the gradient, the bias scaled or not) and names the
one it matches. Float32 results computed in another order differ by rounding, so comparisons
allow 1e-5 of the largest |value| (`peft_course.tolerances.LORA_OUTPUT_RTOL`). The reference
answers against peft, across kernel sets (one thread): (IA)³'s output and merge, DoRA's
magnitude and the virtual tokens 0; DoRA's output at most 1.5e-7 of the largest |value|, its
gradients 2.0e-7 (`avx2`): 1e-5 is 50 times that.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from peft import IA3Config, LoraConfig, PromptTuningConfig, TaskType, get_peft_model
from torch import nn
from transformers.pytorch_utils import Conv1D

from peft_course.lora import random_gpt2
from peft_course.tolerances import LORA_OUTPUT_RTOL

KINDS = ["Linear", "Conv1D"]


@pytest.fixture
def family(load):
    return load("peft_family")


class Holder(nn.Module):
    """One layer, as a model peft can wrap."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def random_base(kind: str, seed: int, square: bool = False, bias: bool = True) -> nn.Module:
    """A layer of random (non-square unless `square`) shape, standard-normal weights and bias."""
    generator = torch.Generator().manual_seed(seed)
    d_in, d_out = (int(v) for v in torch.randint(3, 17, (2,), generator=generator))
    if square:
        d_out = d_in
    elif d_out == d_in:
        d_out += 2
    base = nn.Linear(d_in, d_out, bias=bias) if kind == "Linear" else Conv1D(d_out, d_in)
    with torch.no_grad():
        for p in base.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    return base.requires_grad_(False)


def dense(base: nn.Module) -> torch.Tensor:
    """The weight as `(out, in)`, whichever way it is stored."""
    return base.weight.T if isinstance(base, Conv1D) else base.weight


def close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    """Within LORA_OUTPUT_RTOL of the expected tensor's largest |value|."""
    if got.shape != expected.shape:
        return False
    scale = max(expected.abs().max().item(), 1e-6)
    return (got.detach().float() - expected.detach().float()).abs().max().item() < (
        LORA_OUTPUT_RTOL * scale
    )


def shapes_failed(what: str, call, text: str):
    """`call()`; a shape error inside the learner's arithmetic is reported with `text`."""
    try:
        return call()
    except RuntimeError as error:
        if not any(word in str(error) for word in ("size", "shape")):
            raise
        cause = f"{what} failed inside your code: {str(error).splitlines()[0]}\n  {text}"
    pytest.fail(cause, pytrace=False)


# ---- (IA)^3 ---------------------------------------------------------------------------------


def peft_ia3(base: nn.Module, scale: torch.Tensor, feedforward: bool) -> nn.Module:
    """peft's (IA)³ layer on `base` (a copy), its `l` set to `scale`."""
    import copy

    config = IA3Config(
        target_modules=["layer"],
        feedforward_modules=["layer"] if feedforward else [],
        fan_in_fan_out=isinstance(base, Conv1D),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer = get_peft_model(Holder(copy.deepcopy(base)), config).base_model.model.layer
    with torch.no_grad():
        target = layer.ia3_l["default"]
        target.copy_(scale.view_as(target))
    return layer


def ia3_case(kind: str, seed: int, feedforward: bool, square: bool = False):
    base = random_base(kind, seed, square)
    generator = torch.Generator().manual_seed(seed + 100)
    d_in, d_out = dense(base).shape[1], dense(base).shape[0]
    scale = 1 + 0.5 * torch.randn(d_in if feedforward else d_out, generator=generator)
    x = torch.randn(2, 3, d_in, generator=generator)
    return base, scale, x


def ia3_side(kind: str, base: nn.Module, feedforward: bool) -> str:
    d_out, d_in = dense(base).shape
    side = f"its input ({d_in} features)" if feedforward else f"its output ({d_out} features)"
    target = "a feed-forward target" if feedforward else "a target"
    return f"a {kind} from {d_in} to {d_out} features; {target} scales {side}"


@pytest.mark.parametrize("feedforward", [False, True], ids=["output", "feedforward"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(3))
def test_ia3_forward_equals_peft(family, kind, feedforward, seed):
    base, scale, x = ia3_case(kind, seed, feedforward)
    text = ia3_side(kind, base, feedforward) + f"; scale has {len(scale)} entries"
    got = shapes_failed(
        "ia3_forward", lambda: family.ia3_forward(x, base, scale, feedforward), text
    )
    expected = peft_ia3(base, scale, feedforward)(x)
    if close(got, expected):
        return
    W, b = dense(base), base.bias
    if not feedforward and close(got, (x @ W.T) * scale + b):
        pytest.fail(
            f"{text}: your output leaves the bias unscaled; (IA)³ scales the layer's whole "
            "output, l * (W0 x + b), bias included",
            pytrace=False,
        )
    if feedforward and close(got, (x * scale) @ W.T):
        pytest.fail(f"{text}: your output drops the bias; base(l * x) keeps it", pytrace=False)
    if close(got, base(x)):
        pytest.fail(f"{text}: your output is base(x): the scale is not applied", pytrace=False)
    pytest.fail(
        f"{text}: your output differs from peft's (IA)³ layer by up to "
        f"{(got - expected).abs().max().item():.3g}",
        pytrace=False,
    )


@pytest.mark.parametrize("feedforward", [False, True], ids=["output", "feedforward"])
@pytest.mark.parametrize("kind", KINDS)
def test_ia3_forward_trains_the_scale(family, kind, feedforward):
    """The gradient of the output reaches `scale`, and equals peft's gradient of its `l`."""
    base, scale, x = ia3_case(kind, 7, feedforward)
    ours = scale.clone().requires_grad_(True)
    got = family.ia3_forward(x, base, ours, feedforward)
    assert got.requires_grad, (
        "no gradient reaches scale through your output: l is what (IA)³ trains, so it must stay "
        "in the computation (no detach, no copy of its values)"
    )
    got.square().sum().backward()
    layer = peft_ia3(base, scale, feedforward)
    layer(x).square().sum().backward()
    expected = layer.ia3_l["default"].grad.flatten()
    assert ours.grad is not None and close(ours.grad, expected), (
        f"{ia3_side(kind, base, feedforward)}: the gradient of scale differs from peft's"
    )


@pytest.mark.parametrize("square", [False, True], ids=["non-square", "square"])
@pytest.mark.parametrize("feedforward", [False, True], ids=["output", "feedforward"])
@pytest.mark.parametrize("kind", KINDS)
def test_ia3_merged_equals_peft_merge(family, kind, feedforward, square):
    """A layer holding your weight and bias computes the (IA)³ output; the weight and bias are
    peft's merged ones. On a square layer the wrong side runs without an error: checked too."""
    base, scale, x = ia3_case(kind, 11, feedforward, square)
    before = [p.detach().clone() for p in base.parameters()]
    text = ia3_side(kind, base, feedforward) + f", weight stored {tuple(base.weight.shape)}"
    weight, bias = shapes_failed(
        "ia3_merged", lambda: family.ia3_merged(base, scale, feedforward), text
    )
    assert all(torch.equal(a, b) for a, b in zip(before, base.parameters())), (
        "ia3_merged changed base: it must return new tensors and leave the layer as it was"
    )
    layer = peft_ia3(base, scale, feedforward)
    layer.merge()
    merged = layer.get_base_layer()
    if not close(weight, merged.weight):
        stored = "(in, out)" if kind == "Conv1D" else "(out, in)"
        if feedforward:
            want = "columns" if kind == "Linear" else "rows"
            what = "an input scale multiplies each input's weights"
        else:
            want = "rows" if kind == "Linear" else "columns"
            what = "an output scale multiplies each output's weights"
        other = base.weight * (scale[None, :] if want == "rows" else scale[:, None])
        if square and close(weight, other):
            pytest.fail(
                f"{text}: your weight scales the wrong side; {what}, which are the {want} of a "
                f"{kind} stored {stored}",
                pytrace=False,
            )
        pytest.fail(f"{text}: your merged weight differs from peft's merge", pytrace=False)
    assert bias is not None and close(bias, merged.bias), (
        f"{text}: your bias differs from peft's merge: "
        + (
            "an input scale does not touch the bias (it is added after the product)"
            if feedforward
            else "an output scale multiplies the bias too, l * (W0 x + b)"
        )
    )
    assert bias.data_ptr() != base.bias.data_ptr(), (
        "the bias you return is base.bias itself: return a new tensor, as the docstring promises"
    )


def test_ia3_merged_without_a_bias(family):
    base = random_base("Linear", 3, bias=False)
    scale = torch.linspace(0.5, 1.5, base.out_features)
    weight, bias = family.ia3_merged(base, scale, False)
    assert bias is None, f"base has no bias, so the bias returned must be None, got {bias!r}"
    assert close(weight, base.weight * scale[:, None])


# ---- DoRA -----------------------------------------------------------------------------------


def peft_dora(base: nn.Module, lora_A, lora_B, magnitude, scaling: float) -> nn.Module:
    """peft's DoRA layer (`use_dora=True`) on a copy of `base`, with these A, B and m."""
    import copy

    r = lora_A.shape[0]
    config = LoraConfig(
        r=r,
        lora_alpha=scaling * r,
        target_modules=["layer"],
        use_dora=True,
        fan_in_fan_out=isinstance(base, Conv1D),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer = get_peft_model(Holder(copy.deepcopy(base)), config).base_model.model.layer
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(lora_A)
        layer.lora_B["default"].weight.copy_(lora_B)
        if magnitude is not None:
            layer.lora_magnitude_vector["default"].weight.copy_(magnitude)
    return layer


def dora_case(kind: str, seed: int, square: bool = False):
    base = random_base(kind, seed, square)
    generator = torch.Generator().manual_seed(seed + 200)
    d_out, d_in = dense(base).shape
    r = int(torch.randint(1, 4, (1,), generator=generator))
    lora_A = torch.randn(r, d_in, generator=generator) * 0.5
    lora_B = torch.randn(d_out, r, generator=generator) * 0.5
    magnitude = dense(base).norm(dim=1) * (1 + 0.3 * torch.randn(d_out, generator=generator))
    scaling = 0.5 + float(torch.rand(1, generator=generator))
    x = torch.randn(2, 3, d_in, generator=generator)
    return base, lora_A, lora_B, magnitude, scaling, x


@pytest.mark.parametrize("square", [False, True], ids=["non-square", "square"])
@pytest.mark.parametrize("kind", KINDS)
def test_dora_magnitude_equals_peft(family, kind, square):
    """One length per output, peft's starting magnitude, detached from a weight that trains."""
    base = random_base(kind, 21, square).requires_grad_(True)  # as a layer is before wrapping
    got = family.dora_magnitude(base)
    r = 2
    layer = peft_dora(
        base, torch.zeros(r, dense(base).shape[1]), torch.zeros(dense(base).shape[0], r), None, 1.0
    )
    expected = layer.lora_magnitude_vector["default"].weight
    stored = "(in, out)" if kind == "Conv1D" else "(out, in)"
    text = f"a {kind} stored {stored} = {tuple(base.weight.shape)}"
    if not close(got, expected):
        across = base.weight.norm(dim=0 if kind == "Linear" else 1)
        if square and close(got, across):
            pytest.fail(
                f"{text}: your norm is taken over the wrong dimension; the magnitude is the "
                f"length of each output's weights: the {'rows' if kind == 'Linear' else 'columns'} "
                f"of a {kind}'s stored weight",
                pytrace=False,
            )
        outputs = "the columns of its stored weight" if kind == "Conv1D" else "its rows"
        same = " (the right shape, other values)" if got.shape == expected.shape else ""
        pytest.fail(
            f"{text}: expected one length per output, shape {tuple(expected.shape)}, got "
            f"{tuple(got.shape)}{same}; a {kind}'s outputs are {outputs}",
            pytrace=False,
        )
    assert got.grad_fn is None and not got.requires_grad, (
        "the magnitude you return still carries base.weight's gradient history: detach it (it "
        "becomes a parameter of its own)"
    )


def dora_misreading(kind, base, lora_A, lora_B, magnitude, scaling, x, got) -> str | None:
    """Which plausible misreading `got` is, if any."""
    W, b = dense(base), base.bias
    V = W + scaling * lora_B @ lora_A
    product = x @ W.T + scaling * x @ lora_A.T @ lora_B.T
    readings = {
        "your norm is over the wrong dimension: ||V|| is the length of each output's row of the "
        "(out, in) matrix V (a Conv1D stores the transpose)": V.norm(dim=0)
        if V.shape[0] == V.shape[1]
        else None,
        "you divide by ||W0||: the norm is that of the updated weight V = W0 + scaling * B A, "
        "recomputed from A and B": W.norm(dim=1),
    }
    for message, norm in readings.items():
        if norm is not None and close(got, (magnitude / norm) * product + b):
            return message
    if close(got, (magnitude / V.norm(dim=1)) * (product + b)):
        return (
            "your output scales the bias too: b + (m / ||V||) (W0 x + scaling B A x) leaves b "
            "as it is"
        )
    if close(got, (magnitude / V.norm(dim=1)) * (x @ W.T + x @ lora_A.T @ lora_B.T) + b):
        return "the update is missing its scaling: V = W0 + scaling * B A"
    return None


@pytest.mark.parametrize("square", [False, True], ids=["non-square", "square"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(2))
def test_dora_forward_equals_peft(family, kind, square, seed):
    base, lora_A, lora_B, magnitude, scaling, x = dora_case(kind, seed + 30, square)
    text = f"a {kind} stored {tuple(base.weight.shape)}, r={lora_A.shape[0]}, scaling={scaling:.3f}"
    got = shapes_failed(
        "dora_forward",
        lambda: family.dora_forward(x, base, lora_A, lora_B, magnitude, scaling),
        text + "; lora_A is (r, in), lora_B (out, r), magnitude (out,)",
    )
    with torch.no_grad():
        expected = peft_dora(base, lora_A, lora_B, magnitude, scaling).eval()(x)
    if close(got, expected):
        return
    with torch.no_grad():
        reason = dora_misreading(kind, base, lora_A, lora_B, magnitude, scaling, x, got)
    pytest.fail(
        f"{text}: {reason or 'your output differs from peft DoRA layer by up to'}"
        + ("" if reason else f" {(got - expected).abs().max().item():.3g}"),
        pytrace=False,
    )


def test_dora_forward_on_a_layer_without_bias(family):
    """Llama's projections have no bias: the output is then (m / ||V||) (W0 x + scaling B A x)."""
    base = random_base("Linear", 50, bias=False)
    generator = torch.Generator().manual_seed(50)
    d_out, d_in = base.weight.shape
    lora_A, lora_B = (
        torch.randn(2, d_in, generator=generator),
        torch.randn(d_out, 2, generator=generator),
    )
    magnitude = torch.rand(d_out, generator=generator) + 0.5
    x = torch.randn(4, d_in, generator=generator)
    got = family.dora_forward(x, base, lora_A, lora_B, magnitude, 0.7)
    with torch.no_grad():
        expected = peft_dora(base, lora_A, lora_B, magnitude, 0.7).eval()(x)
    assert close(got, expected), "on a layer without a bias your output differs from peft's"


@pytest.mark.parametrize("kind", KINDS)
def test_dora_forward_gradients_equal_peft(family, kind):
    """The gradients of A, B and m are peft's: the norm is held fixed (detached)."""
    base, lora_A, lora_B, magnitude, scaling, x = dora_case(kind, 40)
    ours = [t.clone().requires_grad_(True) for t in (lora_A, lora_B, magnitude)]
    family.dora_forward(x, base, *ours, scaling).square().sum().backward()
    layer = peft_dora(base, lora_A, lora_B, magnitude, scaling).eval()
    layer(x).square().sum().backward()
    theirs = [
        layer.lora_A["default"].weight.grad,
        layer.lora_B["default"].weight.grad,
        layer.lora_magnitude_vector["default"].weight.grad,
    ]
    for name, mine, expected in zip(("lora_A", "lora_B", "magnitude"), ours, theirs):
        assert mine.grad is not None, f"no gradient reaches {name}: it trains, keep it in the graph"
        if name != "magnitude" and not close(mine.grad, expected):
            pytest.fail(
                f"the gradient of {name} differs from peft's: the norm ||V|| counts as a constant "
                "for the gradient (detach it), so A and B get their gradient only through the "
                "direction's numerator",
                pytrace=False,
            )
        assert close(mine.grad, expected), f"the gradient of {name} differs from peft's"


# ---- prompt tuning --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prompt_model():
    """A random GPT-2 classifier with peft's prompt tuning (5 virtual tokens), and a hook that
    records the embeddings and the mask peft hands the model."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = random_gpt2(seed=3, n_embd=16)
        config = PromptTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=5)
        model = get_peft_model(base, config).eval()
    seen = {}

    def record(module, args, kwargs):
        seen["embeds"], seen["mask"] = kwargs["inputs_embeds"], kwargs["attention_mask"]

    model.base_model.register_forward_pre_hook(record, with_kwargs=True)
    return model, seen


def text_batch(vocab: int, seed: int, left: bool):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, vocab, (3, 6), generator=generator)
    mask = torch.ones(3, 6, dtype=torch.long)
    for row, pads in enumerate((0, 2, 4)):
        if pads:
            mask[row, :pads] = 0 if left else 1
            mask[row, -pads:] = 1 if left else 0
    return input_ids, mask


@pytest.mark.parametrize("left", [False, True], ids=["right-padded", "left-padded"])
def test_prepend_virtual_tokens_equals_peft(family, prompt_model, left):
    """What peft's prompt tuning hands the model: its prompt, then the text, and the mask."""
    model, seen = prompt_model
    input_ids, mask = text_batch(model.config.vocab_size, 5, left)
    with torch.no_grad():
        model(input_ids=input_ids, attention_mask=mask)
        embeds = model.get_input_embeddings()(input_ids)
        prompt = model.prompt_encoder["default"].embedding.weight
        got_embeds, got_mask = family.prepend_virtual_tokens(embeds, mask, prompt)
    n, length = prompt.shape[0], input_ids.shape[1]
    assert got_embeds.shape == seen["embeds"].shape, (
        f"embeddings (3, {length}, 16) and a prompt of {n} virtual tokens: expected "
        f"{tuple(seen['embeds'].shape)}, got {tuple(got_embeds.shape)}"
    )
    if not close(got_embeds, seen["embeds"]):
        if close(got_embeds[:, :length], embeds) and close(
            got_embeds[:, length:], seen["embeds"][:, :n]
        ):
            pytest.fail(
                "your virtual tokens come after the text: prompt tuning puts them first, so that "
                "every text token can attend to them",
                pytrace=False,
            )
        rows = [r for r in range(3) if not close(got_embeds[r], seen["embeds"][r])]
        pytest.fail(
            f"rows {rows} differ from peft's: every row starts with the same {n} virtual tokens, "
            "then its own text",
            pytrace=False,
        )
    assert got_mask.shape == seen["mask"].shape, (
        f"the mask must grow with the embeddings: expected {tuple(seen['mask'].shape)}, got "
        f"{tuple(got_mask.shape)}"
    )
    assert got_mask.dtype == mask.dtype, f"keep the mask's dtype {mask.dtype}, got {got_mask.dtype}"
    if not torch.equal(got_mask[:, :n], torch.ones_like(got_mask[:, :n])):
        pytest.fail(
            "the virtual tokens' mask must be 1: they are attended like real tokens, got "
            f"{got_mask[:, :n].tolist()}",
            pytrace=False,
        )
    assert torch.equal(got_mask, seen["mask"]), (
        f"after the virtual tokens comes the text's own mask, padding kept where it was: expected "
        f"{seen['mask'].tolist()}, got {got_mask.tolist()}"
    )


def test_prepend_virtual_tokens_keeps_the_texts_dtype(family):
    """A float32 prompt before bfloat16 text (a model loaded in bfloat16): bfloat16 out, as peft
    casts its prompt; a plain join would promote the whole batch to float32."""
    generator = torch.Generator().manual_seed(4)
    embeds = torch.randn(2, 3, 8, generator=generator).to(torch.bfloat16)
    prompt = torch.randn(2, 8, generator=generator)
    got, _ = family.prepend_virtual_tokens(embeds, torch.ones(2, 3, dtype=torch.long), prompt)
    assert got.dtype == torch.bfloat16, (
        f"the embeddings must stay in the text's dtype, bfloat16, got {got.dtype}: cast the "
        "prompt to it before joining"
    )
    assert torch.equal(got[:, 2:], embeds) and torch.equal(got[0, :2], prompt.to(torch.bfloat16))


def test_prepend_virtual_tokens_trains_the_prompt(family):
    """The gradient of the result reaches the prompt: each virtual token's gradient is the sum
    of its positions' gradients over the rows."""
    generator = torch.Generator().manual_seed(9)
    embeds = torch.randn(4, 3, 8, generator=generator)
    prompt = torch.randn(2, 8, generator=generator).requires_grad_(True)
    weights = torch.randn(4, 5, 8, generator=generator)
    got, _ = family.prepend_virtual_tokens(embeds, torch.ones(4, 3, dtype=torch.long), prompt)
    assert got.requires_grad, (
        "no gradient reaches the prompt through your embeddings: the virtual tokens are what "
        "prompt tuning trains, so use the prompt tensor itself (no detach, no copy of its values)"
    )
    (got * weights).sum().backward()
    assert prompt.grad is not None and close(prompt.grad, weights[:, :2].sum(0)), (
        "the prompt's gradient is not the sum over rows of its positions' gradients: the same "
        "prompt must come first in every row"
    )
