"""LoRA from scratch: the layer's math, merging, injection, saving, bad input, equality with
peft, and a short training run on tiny-gpt2 that learns and lands near peft's.

Tolerances: our layer and peft's run the same float32 operations in the same order (base
output, then `x A^T`, then `B`, then the scaling), so logits and gradients agree to the bit on
this CPU (the table on the docs page shows 0). The tests allow `LOGITS_ATOL` (1e-5), as the
chapter promises: a different BLAS or device may sum in another order, which moves float32
results by ~1e-7 relative, far below that at these magnitudes (logits ~1). Merging changes the
order (`(W + s B A) x` instead of `W x + s B A x`), hence the same bound for merged-vs-unmerged.
`peft_course.tolerances` gives what was measured.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from peft import get_peft_model
from torch import nn
from transformers.pytorch_utils import Conv1D

from peft_course.models import count_parameters
from peft_course.lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    GPT2_TARGETS,
    LoRAConfig,
    LoRAError,
    LoRALayer,
    UnsupportedLayerError,
    adapter_state_dict,
    compare_with_peft,
    inject_lora,
    load_adapter,
    lora_layers,
    merge_and_unload,
    merge_lora,
    peft_lora_config,
    prepare_lora_scratch,
    random_gpt2,
    randomize_b,
    save_adapter,
    unmerge_lora,
)
from peft_course.models import load_model
from peft_course.tolerances import ADAM_STEP_RTOL, LOGITS_ATOL, LORA_SPREAD, ROUNDING_ATOL


@pytest.fixture(scope="module")
def tiny():
    model, _ = load_model("tiny-gpt2", "classification", num_labels=2, seed=0)
    return model.eval()


def batch(model: nn.Module, seed: int = 0, rows: int = 4, length: int = 12):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, model.config.vocab_size, (rows, length), generator=generator)
    labels = torch.randint(0, model.config.num_labels, (rows,), generator=generator)
    return input_ids, labels


def make_base(kind: str, d_in: int, d_out: int) -> nn.Module:
    torch.manual_seed(d_in * 100 + d_out)
    base = nn.Linear(d_in, d_out) if kind == "Linear" else Conv1D(d_out, d_in)
    nn.init.normal_(base.bias)
    return base


# ---- the layer ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Linear", "Conv1D"])
@pytest.mark.parametrize("d_in,d_out,r", [(7, 5, 2), (16, 48, 4), (33, 9, 8)])
def test_layer_computes_base_plus_scaled_low_rank_update(kind, d_in, d_out, r):
    base = make_base(kind, d_in, d_out)
    layer = LoRALayer(base, r=r, alpha=3.0)
    torch.nn.init.normal_(layer.lora_B)
    x = torch.randn(2, 3, d_in)
    W = base.weight if kind == "Linear" else base.weight.T  # (out, in) either way
    expected = x @ W.T + base.bias + (3.0 / r) * (x @ layer.lora_A.T @ layer.lora_B.T)
    assert layer.lora_A.shape == (r, d_in) and layer.lora_B.shape == (d_out, r)
    assert not any(p.requires_grad for p in base.parameters()), "the wrapped layer must be frozen"
    assert layer.lora_A.requires_grad and layer.lora_B.requires_grad
    assert torch.allclose(layer(x), expected, atol=LOGITS_ATOL)


@pytest.mark.parametrize("kind", ["Linear", "Conv1D"])
def test_initialisation_leaves_the_output_unchanged(kind):
    """B = 0 makes the update zero; A follows nn.Linear's init: uniform within 1/sqrt(in)."""
    base = make_base(kind, 64, 32)
    layer = LoRALayer(base, r=16, alpha=32)
    x = torch.randn(5, 64)
    assert torch.equal(layer(x), base(x))
    assert torch.count_nonzero(layer.lora_B) == 0
    bound = 1 / math.sqrt(64)  # kaiming_uniform_(a=sqrt(5)) on fan_in = 64
    assert layer.lora_A.abs().max() <= bound and layer.lora_A.abs().max() > 0.8 * bound
    # not collapsed: uniform std is bound/sqrt(3)
    assert layer.lora_A.std() > 0.5 * bound / math.sqrt(3)


@pytest.mark.parametrize("use_rslora,expected", [(False, 32 / 16), (True, 32 / 4)])
def test_scaling_alpha_over_r_or_sqrt_r(use_rslora, expected):
    layer = LoRALayer(nn.Linear(4, 4), r=16, alpha=32, use_rslora=use_rslora)
    assert layer.scaling == expected


def test_dropout_acts_on_the_lora_path_only():
    base = make_base("Linear", 20, 10)
    layer = LoRALayer(base, r=4, alpha=4, dropout=0.5).train()
    x = torch.randn(64, 20)
    assert torch.equal(layer(x), base(x)), "with B = 0 dropout must not touch the base path"
    torch.nn.init.normal_(layer.lora_B)
    torch.manual_seed(0)
    first, second = layer(x), layer(x)
    assert not torch.allclose(first, second), "in train mode the LoRA path is dropped at random"
    layer.eval()
    assert torch.equal(layer(x), layer(x))


@pytest.mark.parametrize("kind", ["Linear", "Conv1D"])
def test_merge_and_unmerge(kind):
    base = make_base(kind, 24, 40)
    layer = LoRALayer(base, r=4, alpha=8)
    torch.nn.init.normal_(layer.lora_B)
    original = base.weight.detach().clone()
    x = torch.randn(6, 24)
    unmerged = layer(x)
    layer.merge()
    assert not torch.allclose(base.weight, original), "merge must change the base weight"
    assert torch.allclose(base(x), unmerged, atol=LOGITS_ATOL), (
        "the base layer alone must now give the LoRA output"
    )
    assert torch.allclose(layer(x), unmerged, atol=LOGITS_ATOL), (
        "a merged layer must not add the update twice"
    )
    with pytest.raises(LoRAError, match="already merged"):
        layer.merge()
    layer.unmerge()
    assert torch.allclose(base.weight, original, atol=ROUNDING_ATOL)
    assert torch.allclose(layer(x), unmerged, atol=LOGITS_ATOL)


def test_merge_and_unload_gives_a_plain_model(tiny):
    model = copy.deepcopy(tiny)
    inject_lora(model, LoRAConfig(4, 8, targets=list(GPT2_TARGETS)))
    randomize_b(model, std=0.05)
    input_ids, _ = batch(model)
    with torch.no_grad():
        adapted = model(input_ids=input_ids).logits
        base = tiny(input_ids=input_ids).logits
        merged_model = merge_and_unload(model)
        merged = merged_model(input_ids=input_ids).logits
    assert not lora_layers(merged_model)
    assert merged_model.state_dict().keys() == tiny.state_dict().keys()
    assert (adapted - base).abs().max() > 1e-3, (
        "the adapter must change the output for this test to mean anything"
    )
    assert torch.allclose(merged, adapted, atol=LOGITS_ATOL)


def test_merge_lora_and_unmerge_lora_on_a_model(tiny):
    model = copy.deepcopy(tiny)
    inject_lora(model, LoRAConfig(4, 8, targets=["c_attn"]))
    randomize_b(model, std=0.05)
    input_ids, _ = batch(model)
    with torch.no_grad():
        before = model(input_ids=input_ids).logits
        merge_lora(model)
        assert all(layer.merged for layer in lora_layers(model).values())
        assert torch.allclose(model(input_ids=input_ids).logits, before, atol=LOGITS_ATOL)
        unmerge_lora(model)
        assert torch.allclose(model(input_ids=input_ids).logits, before, atol=LOGITS_ATOL)


def test_alpha_multiplies_the_first_adam_step():
    """Adam's first step moves each weight by about `lr` whatever the gradient's size, so B moves
    the same for any alpha and the change of the layer's output is proportional to alpha: alpha
    acts as a learning-rate multiplier for the LoRA path."""
    torch.manual_seed(0)
    base, x, target = make_base("Linear", 16, 8), torch.randn(32, 16), torch.randn(32, 8)
    changes = []
    for alpha in (4.0, 8.0, 32.0):
        layer = LoRALayer(copy.deepcopy(base), r=4, alpha=alpha)
        torch.manual_seed(1)
        nn.init.kaiming_uniform_(layer.lora_A, a=math.sqrt(5))  # the same A for every alpha
        optimizer = torch.optim.Adam([layer.lora_A, layer.lora_B], lr=1e-3)
        before = layer(x).detach()
        ((layer(x) - target) ** 2).mean().backward()
        optimizer.step()
        changes.append((layer(x) - before).abs().mean().item())
    # Adam's eps (1e-8) against gradients of ~1e-2 bends the proportionality by < 1e-5 relative
    assert changes[1] / changes[0] == pytest.approx(2.0, rel=ADAM_STEP_RTOL)
    assert changes[2] / changes[0] == pytest.approx(8.0, rel=ADAM_STEP_RTOL)


# ---- injection and counts -------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:fan_in_fan_out is set to True")  # peft on the Linear `score`
@pytest.mark.parametrize(
    "targets",
    [["c_attn"], ["c_proj"], ["attn.c_proj"], list(GPT2_TARGETS), ["h.0.mlp.c_fc", "score"]],
)
def test_targets_match_peft(tiny, targets):
    ours = copy.deepcopy(tiny)
    names = inject_lora(ours, LoRAConfig(4, 8, targets=targets))
    theirs = get_peft_model(
        copy.deepcopy(tiny), peft_lora_config(LoRAConfig(4, 8, targets=targets), None)
    )
    assert sorted(names) == sorted(theirs.targeted_module_names)


def test_trainable_counts_match_peft_with_the_head(tiny):
    """peft with task_type=SEQ_CLS trains a *copy* of `score` (modules_to_save) and keeps the
    original frozen beside it: trainable counts agree, but peft's total holds the head twice."""
    config = LoRAConfig(8, 16, targets=["c_attn"], trainable=["score"])
    ours = prepare_lora_scratch(copy.deepcopy(tiny), r=8, alpha=16, targets=["c_attn"])
    theirs = get_peft_model(copy.deepcopy(tiny), peft_lora_config(config, "SEQ_CLS"))
    head = tiny.score.weight.numel()  # 64 x 2
    lora = 2 * (8 * 64 + 192 * 8)  # two layers of c_attn, 64 -> 192
    assert count_parameters(ours) == (lora + head, count_parameters(tiny)[1] + lora)
    assert count_parameters(theirs)[0] == count_parameters(ours)[0]
    assert count_parameters(theirs)[1] == count_parameters(ours)[1] + head


def test_trainable_counts_match_peft_without_a_head(tiny):
    config = LoRAConfig(4, 4, targets=list(GPT2_TARGETS))
    ours = copy.deepcopy(tiny)
    inject_lora(ours, config)
    theirs = get_peft_model(copy.deepcopy(tiny), peft_lora_config(config, None))
    assert count_parameters(ours) == count_parameters(theirs)
    assert {n for n, p in ours.named_parameters() if p.requires_grad} == {
        n for n, p in ours.named_parameters() if n.endswith((".lora_A", ".lora_B"))
    }


def test_trainable_takes_module_or_parameter_names(tiny):
    """`finetune`'s `lora-scratch` passes the head's parameter names (`score.weight`)."""
    by_module, by_parameter = copy.deepcopy(tiny), copy.deepcopy(tiny)
    prepare_lora_scratch(by_module, targets=["c_attn"], trainable=["score"])
    prepare_lora_scratch(by_parameter, targets=["c_attn"], trainable=["score.weight"])
    trained = {n for n, p in by_parameter.named_parameters() if p.requires_grad}
    assert trained == {n for n, p in by_module.named_parameters() if p.requires_grad}
    assert "score.weight" in trained and count_parameters(by_parameter) == count_parameters(
        by_module
    )


# ---- equality with peft ---------------------------------------------------------------------

EQUIVALENCE_CASES = [
    ("tiny", LoRAConfig(8, 16, targets=["c_attn"], trainable=["score"])),
    ("tiny", LoRAConfig(4, 8, targets=list(GPT2_TARGETS), trainable=["score"], use_rslora=True)),
    ("random", LoRAConfig(16, 8, targets=["c_attn", "mlp.c_proj"])),
    ("random", LoRAConfig(2, 32, targets=["attn.c_proj", "c_fc"], trainable=["score"])),
]


@pytest.mark.parametrize("case", range(len(EQUIVALENCE_CASES)))
def test_logits_and_gradients_equal_peft(tiny, case):
    which, config = EQUIVALENCE_CASES[case]
    base = tiny if which == "tiny" else random_gpt2(case, n_embd=48, n_head=6, n_layer=3)
    input_ids, labels = batch(base, case)
    result = compare_with_peft(base, config, input_ids, labels, seed=case)
    for key in ("logits", "merged logits", "grad A", "grad B"):
        assert result[key] < LOGITS_ATOL, f"{key} differ from peft's by {result[key]:.2e}"
    assert result["trainable (ours)"] == result["trainable (peft)"]


def test_the_comparison_can_fail(tiny, monkeypatch):
    """A wrong layer (the update added twice) must show up as a difference: the check is not
    vacuous."""
    config = LoRAConfig(8, 16, targets=["c_attn"], trainable=["score"])
    input_ids, labels = batch(tiny)
    correct = LoRALayer.forward

    def doubled(self, x):
        return correct(self, x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling

    monkeypatch.setattr(LoRALayer, "forward", doubled)
    result = compare_with_peft(tiny, config, input_ids, labels)
    assert result["logits"] > 1e-3 and result["grad B"] > 1e-5


# ---- saving and loading ---------------------------------------------------------------------


def test_save_and_load_only_the_adapter(tiny, tmp_path):
    model = copy.deepcopy(tiny)
    prepare_lora_scratch(model, r=4, alpha=8, targets=["c_attn", "mlp.c_proj"], trainable=["score"])
    randomize_b(model, std=0.05)
    with torch.no_grad():
        model.score.weight.add_(0.1)
    save_adapter(model, tmp_path)
    saved = json.loads((tmp_path / ADAPTER_CONFIG).read_text())
    assert saved == {
        "r": 4,
        "alpha": 8,
        "dropout": 0.0,
        "targets": ["c_attn", "mlp.c_proj"],
        "trainable": ["score"],
        "use_rslora": False,
    }
    keys = set(adapter_state_dict(model))
    assert keys == {n for n, p in model.named_parameters() if p.requires_grad}
    assert len(keys) == 2 * 2 * 2 + 1  # 2 blocks x 2 targets x (A, B) + score
    size = (tmp_path / ADAPTER_WEIGHTS).stat().st_size
    assert size < 4 * count_parameters(tiny)[1] / 10, (
        "the adapter file must not hold the base weights"
    )

    fresh = load_adapter(copy.deepcopy(tiny), tmp_path)
    input_ids, _ = batch(tiny)
    with torch.no_grad():
        assert torch.equal(fresh(input_ids=input_ids).logits, model(input_ids=input_ids).logits)
        assert not torch.equal(fresh(input_ids=input_ids).logits, tiny(input_ids=input_ids).logits)


def test_loading_onto_the_wrong_model_fails(tiny, tmp_path):
    model = prepare_lora_scratch(copy.deepcopy(tiny), r=4, alpha=8, targets=["c_attn"])
    save_adapter(model, tmp_path)
    with pytest.raises(LoRAError, match="shape"):
        load_adapter(random_gpt2(0, n_embd=32, num_labels=2), tmp_path)
    with pytest.raises(LoRAError, match="holds no adapter"):
        load_adapter(copy.deepcopy(tiny), tmp_path / "missing")


# ---- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "r,alpha,message",
    [(0, 8, "rank r"), (-2, 8, "rank r"), (2.5, 8, "rank r"), (4, 0, "alpha"), (4, -1.0, "alpha")],
)
def test_bad_rank_or_alpha(r, alpha, message):
    with pytest.raises(LoRAError, match=message):
        LoRALayer(nn.Linear(4, 4), r=r, alpha=alpha)
    with pytest.raises(LoRAError, match=message):
        LoRAConfig(r, alpha)


def test_a_target_that_matches_nothing(tiny):
    with pytest.raises(LoRAError, match="'q_proj' matches no module"):
        inject_lora(copy.deepcopy(tiny), LoRAConfig(targets=["c_attn", "q_proj"]))
    with pytest.raises(
        LoRAError, match="trainable pattern 'classifier' matches no module or parameter"
    ):
        inject_lora(copy.deepcopy(tiny), LoRAConfig(targets=["c_attn"], trainable=["classifier"]))


def test_unsupported_module_types(tiny):
    with pytest.raises(TypeError, match="got a Embedding"):
        LoRALayer(nn.Embedding(10, 4))
    model = copy.deepcopy(tiny)
    with pytest.raises(UnsupportedLayerError, match="'transformer.h.0.ln_1' is a LayerNorm"):
        inject_lora(model, LoRAConfig(targets=["c_attn", "ln_1"]))
    assert not lora_layers(model), "a failed injection must leave the model untouched"
    with pytest.raises(ValueError):  # also a ValueError, so the command line reports it in one line
        inject_lora(model, LoRAConfig(targets=["attn"]))


def test_injecting_twice_fails(tiny):
    model = copy.deepcopy(tiny)
    inject_lora(model, LoRAConfig(targets=["c_attn"]))
    with pytest.raises(LoRAError, match="already has a LoRA layer"):
        inject_lora(model, LoRAConfig(targets=["c_attn"]))


# ---- training -------------------------------------------------------------------------------

TRAINING = dict(epochs=4, learning_rate=5e-3, seed=0, progress=False)  # the demo's LoRA setting


def run_lora(method: str):
    """`finetune` with method `lora-scratch` (ours) or `lora` (peft), r=8, alpha=16 on c_attn +
    head."""
    from peft_course.data import load_classification_data
    from peft_course.finetune import finetune
    from peft_course.training import TrainConfig

    data = load_classification_data("synthetic-sentiment")
    return finetune(
        data, method, "tiny-gpt2", TrainConfig(**TRAINING), max_length=64, r=8, alpha=16
    )


@pytest.fixture(scope="module")
def scratch_run():
    """Four epochs on synthetic-sentiment (2,000 rows), LoRA r=8 on c_attn plus the head: ~10 s."""
    return run_lora("lora-scratch")


def test_lora_from_scratch_learns(scratch_run):
    """Untrained, tiny-gpt2's new head scores 0.52 on the test split; LoRA must beat that
    clearly."""
    assert scratch_run.trainable == 2 * (8 * 64 + 192 * 8) + 128  # two c_attn layers + score
    assert scratch_run.best["accuracy"] > scratch_run.untrained["accuracy"] + 0.2
    assert scratch_run.training.history[-1]["val_loss"] < scratch_run.untrained["loss"]


def test_lora_from_scratch_lands_near_peft(scratch_run):
    """Same loop, seed and settings with peft's LoRA. Only the random draw of `A` differs (peft
    draws it in another order), so the accuracies may differ by a few points, not more."""
    peft = run_lora("lora")
    assert peft.trainable == scratch_run.trainable
    assert abs(scratch_run.best["accuracy"] - peft.best["accuracy"]) < 2 * LORA_SPREAD, (
        f"scratch {scratch_run.best['accuracy']:.4f} vs peft {peft.best['accuracy']:.4f}"
    )
