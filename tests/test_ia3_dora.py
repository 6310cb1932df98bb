"""(IA)³ and DoRA from scratch (`peft_course.ia3`, `peft_course.dora`): each layer's formula, its
start at the base model, its merge, its bad input, and equality with peft on the same weights.

Tolerance: `LOGITS_ATOL` (1e-5), as LoRA's. Measured across kernel sets (this CPU's own, `avx2`
and `default`, one thread, as `peft_course.tolerances` describes): (IA)³ against peft 0
everywhere (logits, gradients of l, merged weights and biases, merged logits: the same
operations in the same order), on tiny-gpt2 and on a random Llama; DoRA against peft at most
1.2e-7 on the logits (this CPU's kernels; 6.0e-8 `avx2`, 8.9e-8 `default`), 2.6e-8 on the
gradients of A, B and m, 0 on merged weights and logits. DoRA computes `W0 x` with `F.linear`
where peft subtracts the bias from the base output, another order of the same sum; 1e-5 is 80
times the largest seen, and a real mistake moves them by 50 times the bound or more
(`test_the_comparison_catches_a_wrong_layer`: a DoRA norm left in the gradient graph, 1.9e-3 on
A's gradient and 2.9e-2 on B's; an (IA)³ output scale that leaves the bias out, 5.2e-4 on
tiny-gpt2's logits).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from transformers.pytorch_utils import Conv1D

from peft_course import dora, ia3
from peft_course.lora import LoRAConfig, LoRAError, UnsupportedLayerError, random_llama
from peft_course.models import count_parameters, load_model
from peft_course.tolerances import LOGITS_ATOL, ROUNDING_ATOL


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    """tiny-gpt2's classifier (Conv1D projections) and a random Llama (nn.Linear), 2 and 3
    labels; each test works on copies."""
    return {
        "tiny-gpt2": load_model("tiny-gpt2", "classification", num_labels=2)[0].eval(),
        "llama": random_llama(seed=0),
    }


IA3_TARGETS = {  # peft's defaults, plus a layer of each side more
    "tiny-gpt2": (["c_attn", "mlp.c_proj", "c_fc"], ["mlp.c_proj"]),
    "llama": (["k_proj", "v_proj", "down_proj", "q_proj"], ["down_proj"]),
}
DORA_TARGETS = {"tiny-gpt2": ["c_attn", "mlp.c_proj"], "llama": ["q_proj", "v_proj", "down_proj"]}


def batch(model: nn.Module, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, model.config.vocab_size, (4, 12), generator=generator)
    return input_ids, torch.randint(0, model.config.num_labels, (4,), generator=generator)


def make_base(kind: str, d_in: int = 6, d_out: int = 5) -> nn.Module:
    torch.manual_seed(d_in * 10 + d_out)
    base = nn.Linear(d_in, d_out) if kind == "Linear" else Conv1D(d_out, d_in)
    nn.init.normal_(base.bias)
    return base


def dense(base: nn.Module) -> torch.Tensor:
    """The base weight as `(out, in)`."""
    return base.weight if isinstance(base, nn.Linear) else base.weight.T


# ---- (IA)^3 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Linear", "Conv1D"])
@pytest.mark.parametrize("feedforward", [False, True])
def test_ia3_scales_the_output_or_the_input_and_merges(kind, feedforward):
    base = make_base(kind)
    layer = ia3.IA3Layer(base, feedforward=feedforward)
    x = torch.randn(3, 2, 6)
    assert torch.equal(layer(x), base(x)), "l starts at 1: the layer starts as the base"
    assert layer.ia3_l.shape == ((6,) if feedforward else (5,))
    assert not any(p.requires_grad for p in base.parameters())
    with torch.no_grad():
        layer.ia3_l.uniform_(0.5, 1.5)
    W, b, scale = dense(base), base.bias, layer.ia3_l
    expected = (x * scale) @ W.T + b if feedforward else (x @ W.T + b) * scale
    assert torch.allclose(layer(x), expected, atol=LOGITS_ATOL)
    bias = base.bias.detach().clone()
    layer.merge()
    assert torch.allclose(base(x), expected, atol=LOGITS_ATOL), "the base alone gives it now"
    assert torch.allclose(layer(x), expected, atol=LOGITS_ATOL), (
        "and the scale is not applied twice"
    )
    assert torch.equal(base.bias, bias) == feedforward, "the bias is scaled with the output only"
    with pytest.raises(ia3.IA3Error, match="already merged"):
        layer.merge()


@pytest.mark.parametrize("name", ["tiny-gpt2", "llama"])
def test_ia3_equals_peft(models, name):
    """Logits, the gradient of every l, the merged weights and biases and the merged model's
    logits, on GPT-2's Conv1D and on Llama's nn.Linear."""
    base = models[name]
    targets, feedforward = IA3_TARGETS[name]
    input_ids, labels = batch(base)
    result = ia3.compare_with_peft(base, targets, feedforward, input_ids, labels)
    assert result["trainable (ours)"] == result["trainable (peft)"]
    for key in ("logits", "grad l", "merged weights", "merged biases", "merged logits"):
        assert result[key] <= LOGITS_ATOL, (key, result[key])
    scaled = copy.deepcopy(base)
    ia3.inject_ia3(scaled, targets, feedforward)
    ia3.randomize_scales(scaled)
    with torch.no_grad():
        effect = (scaled(input_ids=input_ids).logits - base(input_ids=input_ids).logits).abs()
    assert effect.max() > 1e-3, "the scales must change the output for the comparison to mean it"


def test_ia3_trains_only_the_scales_and_the_head(models):
    model = copy.deepcopy(models["tiny-gpt2"])
    names = ia3.inject_ia3(model, ["c_attn", "mlp.c_proj"], ["mlp.c_proj"], trainable=["score"])
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(n.endswith("ia3_l") for n in trainable if "score" not in n)
    d, layers = model.config.n_embd, model.config.n_layer
    assert len(names) == 2 * layers
    assert count_parameters(model)[0] == layers * (3 * d + 4 * d) + d * 2  # outputs, inputs, head


def test_ia3_bad_input_is_one_line(models):
    model = copy.deepcopy(models["tiny-gpt2"])
    with pytest.raises(ia3.IA3Error, match="feed-forward pattern 'c_fc' matches none"):
        ia3.inject_ia3(model, ["c_attn"], ["c_fc"])
    with pytest.raises(LoRAError, match="matches no module"):
        ia3.inject_ia3(model, ["nope"])
    with pytest.raises(UnsupportedLayerError, match="LayerNorm"):
        ia3.inject_ia3(model, ["ln_1"])
    assert not ia3.ia3_layers(model), "a refused call leaves the model as it was"
    ia3.inject_ia3(model, ["c_attn"])
    with pytest.raises(ia3.IA3Error, match="already has an"):
        ia3.inject_ia3(model, ["c_attn"])


# ---- DoRA -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Linear", "Conv1D"])
def test_dora_is_magnitude_times_direction_and_merges(kind):
    base = make_base(kind, 7, 4)
    layer = dora.DoRALayer(base, r=2, alpha=4)
    x = torch.randn(3, 7)
    W, b = dense(base).detach(), base.bias.detach()
    assert torch.allclose(layer.magnitude, W.norm(dim=1)), "m starts at ||W0||, row by row"
    assert torch.allclose(layer(x), base(x), atol=LOGITS_ATOL), "so the layer starts as the base"
    with torch.no_grad():
        nn.init.normal_(layer.lora_B)
        layer.magnitude.mul_(torch.tensor([0.5, 1.0, 1.5, 2.0]))
    V = W + 2.0 * layer.lora_B.detach() @ layer.lora_A.detach()
    expected = x @ (layer.magnitude.detach()[:, None] * V / V.norm(dim=1, keepdim=True)).T + b
    assert torch.allclose(layer(x), expected, atol=LOGITS_ATOL)
    original = base.weight.detach().clone()
    layer.merge()
    assert torch.allclose(base(x), expected, atol=LOGITS_ATOL)
    assert torch.allclose(layer(x), expected, atol=LOGITS_ATOL)
    layer.unmerge()
    assert torch.allclose(base.weight, original, atol=ROUNDING_ATOL)
    assert torch.allclose(layer(x), expected, atol=LOGITS_ATOL)


def test_dora_treats_the_norm_as_a_constant():
    """The gradient of A and B is that of `m V x / c` with c = ||V|| held fixed (peft, and the
    paper's section 4.3), not of the full quotient."""
    base = make_base("Linear", 7, 4)
    layer = dora.DoRALayer(base, r=2, alpha=4)
    with torch.no_grad():
        nn.init.normal_(layer.lora_B)
    x = torch.randn(5, 7)
    layer(x).square().sum().backward()

    def grads(detach: bool) -> torch.Tensor:
        A = layer.lora_A.detach().clone().requires_grad_(True)
        V = dense(base).detach() + 2.0 * layer.lora_B.detach() @ A
        norm = V.norm(dim=1, keepdim=True)
        weight = layer.magnitude.detach()[:, None] * V / (norm.detach() if detach else norm)
        (x @ weight.T + base.bias.detach()).square().sum().backward()
        return A.grad

    assert torch.allclose(layer.lora_A.grad, grads(detach=True), atol=LOGITS_ATOL)
    assert not torch.allclose(layer.lora_A.grad, grads(detach=False), atol=1e-3)


@pytest.mark.parametrize("name", ["tiny-gpt2", "llama"])
def test_dora_equals_peft(models, name):
    """Logits, the gradients of A, B and m, the merged weights and the merged model's logits."""
    base = models[name]
    config = LoRAConfig(4, 8, targets=DORA_TARGETS[name], trainable=["score"])
    input_ids, labels = batch(base, seed=1)
    result = dora.compare_with_peft(base, config, input_ids, labels)
    assert result["trainable (ours)"] == result["trainable (peft)"]
    for key in ("logits", "grad A", "grad B", "grad m", "merged weights", "merged logits"):
        assert result[key] <= LOGITS_ATOL, (key, result[key])


def test_dora_bad_input_is_one_line(models):
    model = copy.deepcopy(models["llama"])
    with pytest.raises(UnsupportedLayerError, match="DoRA wraps nn.Linear or Conv1D"):
        dora.inject_dora(model, LoRAConfig(targets=["embed_tokens"]))
    dora.inject_dora(model, LoRAConfig(targets=["q_proj"]))
    with pytest.raises(LoRAError, match="already has a LoRA layer"):
        dora.inject_dora(model, LoRAConfig(targets=["q_proj"]))
    layer = dora.DoRALayer(nn.Linear(3, 2))
    with pytest.raises(LoRAError, match="not merged"):
        layer.unmerge()


def test_the_comparison_catches_a_wrong_layer(models, monkeypatch):
    """The comparisons can fail: a DoRA norm left in the gradient graph moves the gradients (not
    the logits), an (IA)³ output scale that leaves the bias out moves the logits: each by more
    than 10 times the bound (measured in the module's docstring)."""
    base = models["llama"]
    input_ids, labels = batch(base, seed=1)
    config = LoRAConfig(4, 8, targets=DORA_TARGETS["llama"], trainable=["score"])

    def undetached(self: dora.DoRALayer, x: torch.Tensor) -> torch.Tensor:
        scale = self.magnitude / self.weight_norm()
        direction = (
            F.linear(x, self.frozen_weight()) + x @ self.lora_A.T @ self.lora_B.T * self.scaling
        )
        return (
            scale * direction + self.base.bias if self.base.bias is not None else scale * direction
        )

    with monkeypatch.context() as patch:
        patch.setattr(dora.DoRALayer, "forward", undetached)
        result = dora.compare_with_peft(base, config, input_ids, labels)
    assert result["logits"] <= LOGITS_ATOL and result["grad A"] > 10 * LOGITS_ATOL, result

    gpt2 = models["tiny-gpt2"]
    input_ids, labels = batch(gpt2)

    def bias_unscaled(self: ia3.IA3Layer, x: torch.Tensor) -> torch.Tensor:
        if self.feedforward:
            return self.base(x * self.ia3_l)
        return (self.base(x) - self.base.bias) * self.ia3_l + self.base.bias

    with monkeypatch.context() as patch:
        patch.setattr(ia3.IA3Layer, "forward", bias_unscaled)
        result = ia3.compare_with_peft(gpt2, *IA3_TARGETS["tiny-gpt2"], input_ids, labels)
    assert result["logits"] > 10 * LOGITS_ATOL, result


@pytest.mark.parametrize("module", [ia3, dora], ids=["ia3", "dora"])
def test_equivalence_tables_show_agreement_and_an_effect(module):
    """The docs' tables: both architectures, equal counts, every difference within the bound
    ((IA)³'s `effect` column shows the scales do move the logits)."""
    rows = module.equivalence_rows()
    assert [row["model"] for row in rows] == ["tiny-gpt2", "random LlamaConfig"]
    for row in rows:
        ours, theirs = row["trainable (ours / peft)"].split(" / ")
        assert ours == theirs
        for key, value in row.items():
            if key in ("logits", "grad l", "grad A", "grad B", "grad m", "merged weights"):
                assert float(value) <= LOGITS_ATOL, (row["model"], key, value)
        if "effect" in row:
            assert float(row["effect"]) > 1e-3


@pytest.mark.parametrize("name", ["ia3", "dora"])
def test_the_docs_page_is_what_the_package_computes(name):
    """docs/results/<name>-equivalence.md (python -m peft_course.pages family): the same models
    and counts as a fresh run, and every difference within the 1e-5 the tests hold."""
    from pathlib import Path

    from peft_course.tables import read_markdown_table

    page = Path(__file__).resolve().parents[1] / "docs" / "results" / f"{name}-equivalence.md"
    shown = read_markdown_table(page.read_text())
    fresh = {"ia3": ia3, "dora": dora}[name].equivalence_rows()
    assert [(r["model"], r["trainable (ours / peft)"]) for r in shown] == [
        (r["model"], r["trainable (ours / peft)"]) for r in fresh
    ]
    skip = {"model", "config", "targets (feed-forward)", "trainable (ours / peft)", "effect"}
    for row in shown:
        assert all(float(v) <= 1e-5 for k, v in row.items() if k not in skip), row
