"""The options that make training faster change no result (float32 on a CPU, dropout off).

`max_tokens_per_batch` runs a batch in pieces and adds their gradients; `compile` traces the
forward pass; frozen matrices held in bf16 are what bf16 autocast would have cast them to. Each
is compared with the plain loop on the same seed. Tolerances: pieces change only the order of
float32 sums; over 12 LoRA steps the largest loss difference measured was 1.2e-7 (one float32
step at 1.0, with ATEN_CPU_CAPABILITY=default, avx2 and avx512 alike); TRAINING_LOSS_ATOL
(1e-5) leaves room.
"""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset, DatasetDict

from peft_course.data import load_classification_data, tokenize
from peft_course.finetune import prepare
from peft_course.models import load_model
from peft_course.training import (
    TrainConfig,
    batch_pieces,
    frozen_matrices_in_bf16,
    loss_weight,
    train,
)
from peft_course.tolerances import TRAINING_LOSS_ATOL

NO_DROPOUT = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}


@pytest.fixture(scope="module")
def tokenized_sentiment():
    model, tokenizer = load_model("tiny-gpt2", "classification", num_labels=2)
    data = load_classification_data("synthetic-sentiment", max_examples=120)
    return tokenize(data, tokenizer), tokenizer


def lora_run(tokenized, tokenizer, rows: int = 120, **options):
    """Per-step training losses and the final trainable weights of `rows / 10` LoRA steps."""
    model, _ = load_model("tiny-gpt2", "classification", num_labels=2, **NO_DROPOUT)
    model = prepare(model, "lora", r=4, alpha=8)
    config = TrainConfig(
        epochs=1, batch_size=10, learning_rate=5e-3, eval_every=1, progress=False, **options
    )
    small = DatasetDict(
        {
            "train": tokenized["train"].select(range(rows)),
            "validation": tokenized["validation"].select(range(4)),
        }
    )
    result = train(model, small, tokenizer, config)
    return [h["train_loss"] for h in result.history], result.best_state


def test_pieces_take_every_row_once_within_the_budget(tokenized_sentiment):
    tokenized, tokenizer = tokenized_sentiment
    rows = (
        tokenized["train"]
        .select(range(16))
        .with_format(columns=["input_ids", "attention_mask", "labels"])
    )
    batch = tokenizer.pad([rows[i] for i in range(16)], return_tensors="pt")
    batch["labels"] = torch.tensor(rows["labels"])
    pieces = batch_pieces(batch, max_tokens=40)
    assert len(pieces) > 1, "a 40-token budget should split 16 rows of these lengths"
    for piece in pieces:
        assert len(piece["input_ids"]) == 1 or piece["input_ids"].numel() <= 40, (
            "a piece over its budget"
        )
        assert piece["attention_mask"][:, -1].any(), (
            "a piece kept a column that is padding in all its rows"
        )
    real = sorted(
        tuple(ids[m.bool()].tolist())
        for p in pieces
        for ids, m in zip(p["input_ids"], p["attention_mask"])
    )
    assert real == sorted(
        tuple(ids[m.bool()].tolist()) for ids, m in zip(batch["input_ids"], batch["attention_mask"])
    )
    assert sum(loss_weight(p, per_row=True) for p in pieces) == 16
    assert batch_pieces(batch, None) == [batch]
    (whole,) = batch_pieces(batch, batch["attention_mask"].numel())
    assert whole is batch, "a batch within the budget should run whole, its rows in their order"


def test_pieces_give_the_losses_of_the_whole_batch(tokenized_sentiment):
    plain, plain_state = lora_run(*tokenized_sentiment, max_tokens_per_batch=None)
    pieces, pieces_state = lora_run(*tokenized_sentiment, max_tokens_per_batch=48)
    assert len(plain) == 12
    assert max(abs(a - b) for a, b in zip(plain, pieces)) < TRAINING_LOSS_ATOL, (plain, pieces)
    assert all(
        torch.allclose(plain_state[n], pieces_state[n], atol=TRAINING_LOSS_ATOL)
        for n in plain_state
    )


def test_pieces_of_a_language_model_batch_weigh_their_predicted_tokens():
    """Labels per token: the loss is a mean over tokens, so pieces are weighted by token count."""
    model, tokenizer = load_model("tiny-gpt2", "causal-lm", **NO_DROPOUT)
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(4, 30, (24,), generator=generator).tolist()
    ids = [torch.randint(5, 200, (n,), generator=generator).tolist() for n in lengths]
    labels = [[-100] * (n // 2) + row[n // 2 :] for n, row in zip(lengths, ids)]
    rows = Dataset.from_dict(
        {"input_ids": ids, "attention_mask": [[1] * n for n in lengths], "labels": labels}
    )
    losses = {}
    for budget in (None, 64):
        torch.manual_seed(0)
        model_copy, _ = load_model("tiny-gpt2", "causal-lm", **NO_DROPOUT)
        config = TrainConfig(
            epochs=1,
            batch_size=8,
            learning_rate=1e-3,
            eval_every=1,
            progress=False,
            max_tokens_per_batch=budget,
        )
        result = train(
            model_copy,
            DatasetDict({"train": rows, "validation": rows.select(range(2))}),
            tokenizer,
            config,
            evaluator=lambda m: {"loss": 0.0, "accuracy": 0.0},
        )
        losses[budget] = [h["train_loss"] for h in result.history]
    assert max(abs(a - b) for a, b in zip(losses[None], losses[64])) < TRAINING_LOSS_ATOL, losses


def test_compile_gives_the_losses_of_the_plain_loop(tokenized_sentiment, monkeypatch):
    """Traced by TorchDynamo with the eager backend: no C++ compiler needed, the graph capture is
    what is checked."""
    real_compile = torch.compile
    calls = []
    monkeypatch.setattr(
        torch,
        "compile",
        lambda model, **kw: calls.append(kw) or real_compile(model, backend="eager", **kw),
    )
    plain, _ = lora_run(*tokenized_sentiment, rows=40)
    compiled, _ = lora_run(*tokenized_sentiment, rows=40, compile=True)
    assert calls == [{"dynamic": True}]
    assert max(abs(a - b) for a, b in zip(plain, compiled)) < TRAINING_LOSS_ATOL, (plain, compiled)


def test_frozen_matrices_in_bf16_give_the_autocast_numbers_and_come_back(tokenized_sentiment):
    tokenized, tokenizer = tokenized_sentiment
    model, _ = load_model("tiny-gpt2", "classification", num_labels=2, **NO_DROPOUT)
    model = prepare(model, "lora", r=4, alpha=8).eval()
    batch = tokenizer.pad(
        [{"input_ids": r} for r in tokenized["train"]["input_ids"][:6]], return_tensors="pt"
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model(**batch).logits
        with frozen_matrices_in_bf16(model, enabled=True):
            held = [n for n, p in model.named_parameters() if p.dtype == torch.bfloat16]
            got = model(**batch).logits
    trainable_or_shared = (
        "lora_",
        "wte",
        "modules_to_save",
    )  # the head trains; peft's frozen original may be held
    assert held and not [n for n in held if any(part in n for part in trainable_or_shared)], held
    assert any("c_attn.base_layer.weight" in n for n in held), (
        "the frozen attention matrices should be held"
    )
    assert torch.equal(expected, got), (
        "holding the frozen matrices in bf16 changed autocast's result"
    )
    assert all(
        p.dtype == torch.float32 and torch.equal(p, before[n]) for n, p in model.named_parameters()
    ), "the float32 weights were not put back exactly"


def test_bad_speed_options():
    for options, message in (
        ({"max_tokens_per_batch": 0}, "max_tokens_per_batch"),
        ({"log_every": 0}, "log_every"),
        ({"compile": "yes"}, "compile must be True or False"),
    ):
        with pytest.raises(Exception, match=message):
            TrainConfig(**options)
