"""Grades exercises/finetune.py: freezing, the LoRA config for classification, the best checkpoint."""

import random

import pytest
import torch
from peft import get_peft_model
from transformers import GPT2Config, GPT2ForSequenceClassification


@pytest.fixture
def finetune(load):
    return load("finetune")


def tiny_classifier(seed: int, n_embd: int = 16, n_layer: int = 2, labels: int = 2):
    torch.manual_seed(seed)
    config = GPT2Config(n_embd=n_embd, n_layer=n_layer, n_head=2, vocab_size=50, n_positions=32,
                        num_labels=labels, pad_token_id=0)
    return GPT2ForSequenceClassification(config)


@pytest.mark.parametrize("names", [["score.weight"], ["transformer.h.0.attn.c_attn.bias", "score.weight"], []])
def test_freeze_all_but(finetune, names):
    model = finetune.freeze_all_but(tiny_classifier(0), names)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(trainable) == sorted(names), f"expected exactly {names} to train, got {trainable}"


def test_freeze_all_but_unfreezes_too(finetune):
    model = tiny_classifier(0)
    for p in model.parameters():
        p.requires_grad = False
    finetune.freeze_all_but(model, ["score.weight"])
    assert model.score.weight.requires_grad, "a frozen parameter named in `trainable` must train again"


def test_freeze_all_but_rejects_unknown_names(finetune):
    with pytest.raises(ValueError, match="scor.weight"):
        finetune.freeze_all_but(tiny_classifier(0), ["scor.weight"])


@pytest.mark.parametrize("seed", range(3))
def test_lora_config_trains_adapters_and_head(finetune, seed):
    rng = random.Random(seed)
    r, n_embd, n_layer, labels = rng.choice([1, 2, 4, 8]), rng.choice([16, 32]), rng.randint(1, 3), rng.randint(2, 5)
    targets = rng.choice([["c_attn"], ["c_attn", "c_fc"], ["attn.c_proj"]])
    widths = {"c_attn": (n_embd, 3 * n_embd), "c_fc": (n_embd, 4 * n_embd), "attn.c_proj": (n_embd, n_embd)}
    config = finetune.lora_classification_config(r, 2 * r, targets)
    model = get_peft_model(tiny_classifier(seed, n_embd, n_layer, labels), config)
    trainable, _ = model.get_nb_trainable_parameters()
    expected = n_layer * sum(r * sum(widths[t]) for t in targets) + n_embd * labels
    assert trainable == expected, (
        f"r={r}, targets={targets}: expected {expected:,} trainable (adapters + the {n_embd}x{labels} head), "
        f"got {trainable:,}. Is the head trained (task_type)?")
    assert config.lora_alpha == 2 * r


def test_best_evaluation(finetune):
    history = [{"step": 10, "val_accuracy": 0.6}, {"step": 20, "val_accuracy": 0.8},
               {"step": 30, "val_accuracy": 0.8}, {"step": 40, "val_accuracy": 0.7}]
    assert finetune.best_evaluation(history)["step"] == 20, "expected the earliest of the tied best (step 20)"
    rng = random.Random(0)
    for _ in range(20):
        history = [{"step": s, "val_accuracy": round(rng.random(), 1)} for s in range(1, 8)]
        best = max(h["val_accuracy"] for h in history)
        expected = min(h["step"] for h in history if h["val_accuracy"] == best)
        assert finetune.best_evaluation(history)["step"] == expected, f"history {history}: expected step {expected}"
    with pytest.raises(ValueError):
        finetune.best_evaluation([])
