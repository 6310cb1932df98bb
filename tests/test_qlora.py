"""QLoRA on tiny-gpt2, on the CPU: what gets quantized, what trains, what is saved, what it
costs in bytes, and the error when 4-bit layers cannot run.

Tolerances (`peft_course.tolerances` gives what was measured): NF4 rounds each weight to the
nearest of 16 levels in [-1, 1] times its block's absmax; the widest gap between levels is 0.304
(from -1 to -0.696), so no weight moves by more than 0.152 absmax (`NF4_MAX_ERROR`). Double
quantization also rounds the absmax itself to an 8-bit code whose steps are a few percent, which
lets the error pass that: that test allows `NF4_DOUBLE_QUANT_MAX_ERROR`. Quantization is
deterministic, so a reloaded run computes the very same numbers; `ROUNDING_ATOL` only guards
against a different summation order.
"""

from __future__ import annotations

import sys

import bitsandbytes as bnb
import pytest
import sympy as sp
import torch
from datasets import DatasetDict
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.pytorch_utils import Conv1D

from peft_course import qlora
from peft_course.models import count_parameters
from peft_course.data import ClassificationData
from peft_course.finetune import finetune
from peft_course.methods import prepare_lora
from peft_course.models import load_model
from peft_course.qlora import (
    QLoRAUnavailableError,
    gpt2_config,
    load_qlora_model,
    nf4_bits_per_parameter,
    nf4_bytes,
    nf4_config,
    prepare_qlora,
    quantized_modules,
    stored_quant_bytes,
    weight_split,
)
from peft_course.system import bnb_4bit_support
from peft_course.training import TrainConfig, trainable_state
from peft_course.tolerances import (
    NF4_DOUBLE_QUANT_MAX_ERROR,
    NF4_MAX_ERROR,
    NF4_MEAN_ERROR,
    ROUNDING_ATOL,
    THREE_DECIMALS_ATOL,
)

BLOCK_MATRICES = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def batch(
    vocab: int, labels: int, seed: int = 0, rows: int = 8, length: int = 16
) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(1, vocab, (rows, length), generator=generator),
        "labels": torch.randint(0, labels, (rows,), generator=generator),
    }


def no_dropout(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


# ---- the config and the quantized model --------------------------------------------------------


def test_config_spells_out_nf4_double_quant_bf16_and_spares_the_heads():
    config = nf4_config()
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_use_double_quant and config.bnb_4bit_compute_dtype == torch.bfloat16
    assert {"score", "classifier", "lm_head"} <= set(config.llm_int8_skip_modules)
    with pytest.raises(ValueError, match="fp16"):
        nf4_config(torch.float16)


def test_block_weights_are_packed_nf4_and_the_head_is_not():
    model, _ = load_qlora_model("tiny-gpt2", num_labels=3, seed=0)
    reference, _ = load_model("tiny-gpt2", "classification", num_labels=3, seed=0)
    expected = [
        f"transformer.h.{i}.{m}" for i in range(model.config.n_layer) for m in BLOCK_MATRICES
    ]
    assert quantized_modules(model) == expected
    for name in expected:
        layer, original = model.get_submodule(name), reference.get_submodule(name)
        assert isinstance(layer, bnb.nn.Linear4bit) and isinstance(original, Conv1D)
        assert layer.weight.dtype == torch.uint8, "4-bit weights are stored packed, two per byte"
        assert layer.weight.numel() * 2 == original.weight.numel()
        assert layer.weight.quant_state.quant_type == "nf4" and layer.weight.quant_state.nested
    assert type(model.score) is nn.Linear and model.score.weight.dtype == torch.float32
    assert torch.equal(model.score.weight, reference.score.weight), (
        "the head must be the same seeded head"
    )


def test_transformers_default_also_spares_the_score_head():
    """Without our skip list transformers keeps "the last parameter" in full precision: `score`.
    The course lists the heads anyway, so that it does not depend on module order."""
    config = nf4_config()
    config.llm_int8_skip_modules = None
    model, _ = load_model("tiny-gpt2", "classification", num_labels=2, quantization_config=config)
    assert (
        type(model.score) is nn.Linear and len(quantized_modules(model)) == 4 * model.config.n_layer
    )


@pytest.mark.parametrize(
    "double_quant,bound", [(False, NF4_MAX_ERROR), (True, NF4_DOUBLE_QUANT_MAX_ERROR)]
)
def test_dequantized_weights_stay_within_half_the_widest_nf4_gap(double_quant, bound):
    config = nf4_config(double_quant=double_quant)
    model, _ = load_model(
        "tiny-gpt2", "classification", num_labels=2, seed=0, quantization_config=config
    )
    reference, _ = load_model("tiny-gpt2", "classification", num_labels=2, seed=0)
    for name in quantized_modules(model):
        weight = model.get_submodule(name).weight
        restored = bnb.functional.dequantize_4bit(weight.data, weight.quant_state).float()
        # Conv1D stores (in, out); Linear4bit (out, in)
        original = reference.get_submodule(name).weight.T
        blocks = original.reshape(-1, 64)
        absmax = blocks.abs().amax(dim=1, keepdim=True)
        error = (restored.reshape(-1, 64) - blocks).abs() / absmax
        assert error.max() <= bound, (
            f"{name}: NF4 error {error.max():.4f} absmax, more than {bound}"
        )
        assert error.mean() < NF4_MEAN_ERROR, (
            f"{name}: mean error {error.mean():.4f} absmax, too coarse for NF4"
        )


# ---- preparing and training ----------------------------------------------------------------------


@pytest.fixture
def prepared():
    model, tokenizer = load_qlora_model("tiny-gpt2", num_labels=3, seed=0)
    return prepare_qlora(model, r=4, alpha=8), tokenizer


def test_only_adapters_and_the_head_copy_train(prepared):
    model, _ = prepared
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == [
        f"base_model.model.transformer.h.{i}.attn.c_attn.lora_{ab}.default.weight"
        for i in range(2)
        for ab in "AB"
    ] + ["base_model.model.score.modules_to_save.default.weight"]
    assert all(
        p.dtype == torch.float32 for n, p in model.named_parameters() if p.dtype != torch.uint8
    )
    assert model.base_model.model.transformer.gradient_checkpointing
    # the same counts as LoRA on the unquantized model, once the packed weights count double
    lora = prepare_lora(
        load_model("tiny-gpt2", "classification", num_labels=3, seed=0)[0], r=4, alpha=8
    )
    assert count_parameters(model) == count_parameters(lora)


def test_prepare_refuses_a_model_that_is_not_quantized():
    model, _ = load_model("tiny-gpt2", "classification", num_labels=2)
    with pytest.raises(ValueError, match="load_qlora_model"):
        prepare_qlora(model)


def test_head_gets_gradients_and_the_loss_falls(prepared):
    model, _ = prepared
    inputs = batch(model.config.vocab_size, 3)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    head = model.base_model.model.score.modules_to_save["default"].weight
    model.train()
    losses = []
    for step in range(15):
        loss = model(**inputs).loss
        loss.backward()
        if step == 0:
            assert head.grad is not None and head.grad.abs().sum() > 0, (
                "the head copy must receive gradients"
            )
            lora_b = model.base_model.model.transformer.h[0].attn.c_attn.lora_B["default"].weight
            assert lora_b.grad.abs().sum() > 0, (
                "gradients must flow through the 4-bit weights to LoRA"
            )
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], f"loss did not fall: {losses[0]:.3f} -> {losses[-1]:.3f}"


def test_gradient_checkpointing_changes_memory_not_gradients():
    """Recomputing activations in the backward pass gives the same gradients (dropout off)."""
    grads = []
    for checkpointing in (True, False):
        model, _ = load_qlora_model("tiny-gpt2", num_labels=2, seed=0)
        model = no_dropout(prepare_qlora(model, gradient_checkpointing=checkpointing))
        torch.manual_seed(0)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                nn.init.normal_(p, std=0.1)  # with B = 0 the gradient of A would be 0 in both runs
        model.train()
        model(**batch(model.config.vocab_size, 2)).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
        assert model.base_model.model.transformer.gradient_checkpointing == checkpointing
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], atol=ROUNDING_ATOL), name


def test_saved_trainable_weights_reload_into_a_fresh_quantized_model(prepared, tmp_path):
    model, _ = prepared
    inputs = batch(model.config.vocab_size, 3, seed=1)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):
        model(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    state = trainable_state(model)
    assert any("score" in name for name in state), "the trained head must be saved"
    assert not any(t.dtype == torch.uint8 for t in state.values()), (
        "the frozen 4-bit base is not saved"
    )
    save_file(state, tmp_path / "weights.safetensors")

    fresh, _ = load_qlora_model("tiny-gpt2", num_labels=3, seed=0)
    fresh = prepare_qlora(fresh, r=4, alpha=8)
    weights = load_file(tmp_path / "weights.safetensors")
    assert set(weights) == {n for n, p in fresh.named_parameters() if p.requires_grad}
    parameters = dict(fresh.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            parameters[name].copy_(value)
        model.eval(), fresh.eval()
        expected, got = (
            model(input_ids=inputs["input_ids"]).logits,
            fresh(input_ids=inputs["input_ids"]).logits,
        )
    assert torch.allclose(got, expected, atol=ROUNDING_ATOL)
    assert got.argmax(-1).tolist() == expected.argmax(-1).tolist()


def test_a_training_step_after_evaluation_works(prepared):
    """Evaluate (eval mode, no gradients), then train: on a CPU with AVX512-BF16, bitsandbytes
    would repack the 4-bit weights for inference at the evaluation and the step would fail."""
    model, tokenizer = prepared
    assert not any(getattr(m, "support_avx512bf16_for_cpu", False) for m in model.modules())
    batch = tokenizer(
        ["the film was superb", "I hated the plot"], return_tensors="pt", padding=True
    )
    model.eval()
    with torch.no_grad():
        model(**batch)
    model.train()
    model(**batch, labels=torch.tensor([1, 2])).loss.backward()
    assert model.base_model.model.score.modules_to_save["default"].weight.grad is not None


def test_finetune_qlora_runs_the_shared_loop(sentiment):
    small = ClassificationData(
        sentiment.name,
        DatasetDict(
            {
                "train": sentiment.splits["train"].select(range(64)),
                "validation": sentiment.splits["validation"].select(range(32)),
                "test": sentiment.splits["test"].select(range(32)),
            }
        ),
        sentiment.label_names,
    )
    result = finetune(
        small,
        "qlora",
        config=TrainConfig(epochs=1, batch_size=16, learning_rate=5e-3, progress=False),
    )
    base = sum(p.numel() for p in load_model("tiny-gpt2", num_labels=2)[0].parameters())
    # 4,224 trainable: r=8 A and B on two c_attn layers (2 x 8 x (64 + 192)) plus the 128-weight
    # head copy; the total is the unquantized model's count plus the LoRA layers (4-bit weights
    # counted as unpacked)
    assert (result.trainable, result.total) == (4224, base + 4224)
    assert len(result.training.history) == 1 and 0.0 <= result.best["accuracy"] <= 1.0


# ---- bytes ---------------------------------------------------------------------------------------


def test_nf4_byte_formula_matches_what_bitsandbytes_stores():
    model, _ = load_qlora_model("tiny-gpt2", num_labels=2, seed=0)
    matrices = [
        model.get_submodule(n).weight.quant_state.shape.numel() for n in quantized_modules(model)
    ]
    assert stored_quant_bytes(model) == sum(nf4_bytes(n) for n in matrices)
    n = 64 * 256 * 100  # whole blocks: the paper's bits per weight come out exactly
    assert nf4_bytes(n, double_quant=False) * 8 / n == 4.5
    assert abs(nf4_bytes(n) * 8 / n - 4.127) < THREE_DECIMALS_ATOL
    for double_quant in (False, True):  # the byte count and the bits formula: one storage
        assert sp.Rational(8 * nf4_bytes(n, double_quant), n) == nf4_bits_per_parameter(
            double_quant
        )


def test_gpt2_small_split_by_arithmetic():
    split = weight_split(gpt2_config("gpt2"))
    d, blocks = 768, 12
    # c_attn 3d^2, c_proj d^2, c_fc 4d^2, mlp.c_proj 4d^2
    assert split["quantized"] == blocks * 12 * d * d
    assert split["embeddings"] == (50257 + 1024) * d
    assert split["total"] == 124_439_808 + 2 * d  # GPT-2 small plus a 2-label head
    with pytest.raises(ValueError, match="gpt2-medium"):
        gpt2_config("gpt2-huge")


# ---- when 4-bit cannot run -----------------------------------------------------------------------


def test_clear_error_when_4bit_is_unavailable(monkeypatch):
    monkeypatch.setattr(
        qlora,
        "bnb_4bit_support",
        lambda device=None: (False, "bitsandbytes 0.42 cannot run 4-bit NF4 on 'cpu'"),
    )
    with pytest.raises(QLoRAUnavailableError, match="pip install") as error:
        load_qlora_model("tiny-gpt2")
    assert "--method lora" in str(error.value) and "0.42" in str(error.value)


def test_missing_bitsandbytes_is_reported_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # makes `import bitsandbytes` fail
    works, why = bnb_4bit_support("cpu")
    assert not works and "pip install bitsandbytes" in why
    with pytest.raises(QLoRAUnavailableError, match="cannot be imported"):
        qlora.require_4bit("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_qlora_trains_on_cuda():
    model, _ = load_qlora_model("tiny-gpt2", num_labels=2, seed=0)
    model = prepare_qlora(model)
    assert next(model.parameters()).device.type == "cuda"
    inputs = {k: v.cuda() for k, v in batch(model.config.vocab_size, 2).items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(**inputs).loss
    loss.backward()
    assert torch.isfinite(loss)
