"""One process of the data-parallel test: run by `torchrun` from tests/test_distributed.py.

It trains tiny-gpt2 with LoRA (dropout off, float32) on 40 rows, `--batch-size` rows per
process: for 2 epochs in random batches and for 2 in batches grouped by length, and in full
fine-tuning with `fsdp=True` for 2 epochs and for 1 that is then resumed to 2; it writes each
run's per-step losses, its final weights' checksum and how often it saved a checkpoint to
`OUT/rank<r>.json`. `report` alone, in one process, is the one-process reference.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from datasets import DatasetDict

from peft_course import distributed, training
from peft_course.data import load_classification_data, tokenize
from peft_course.finetune import prepare
from peft_course.models import load_model
from peft_course.training import TrainConfig, train, trainable_state

NO_DROPOUT = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}


def run(
    batch_size: int,
    checkpoint: Path,
    epochs: int,
    resume: bool,
    grouped: bool,
    method: str = "lora",
) -> dict:
    model, tokenizer = load_model("tiny-gpt2", "classification", num_labels=2, **NO_DROPOUT)
    model = prepare(model, "lora", r=4, alpha=8) if method == "lora" else prepare(model, "full")
    data = tokenize(load_classification_data("synthetic-sentiment", max_examples=40), tokenizer)
    data = DatasetDict({"train": data["train"], "validation": data["validation"].select(range(4))})
    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=5e-3 if method == "lora" else 1e-3,
        eval_every=1,
        progress=False,
        group_by_length=grouped,
        fsdp=method == "full",
    )
    result = train(model, data, tokenizer, config, checkpoint, resume)
    weights = sum(float(t.double().abs().sum()) for t in trainable_state(model).values())
    return {"losses": [h["train_loss"] for h in result.history], "weights": weights}


def report(out: Path, batch_size: int) -> dict:
    """Every run of the test, and how many files this process wrote into place."""
    saves = []  # files this process wrote into place (four a checkpoint)
    real_replacing = training.replacing
    training.replacing = lambda path: saves.append(path) or real_replacing(path)
    try:
        whole = run(batch_size, out / "whole", 2, False, grouped=False)
        grouped = run(batch_size, out / "grouped", 2, False, grouped=True)
        full = run(batch_size, out / "full", 2, False, grouped=False, method="full")
        run(batch_size, out / "full-resumed", 1, False, grouped=False, method="full")
        full_resumed = run(batch_size, out / "full-resumed", 2, True, grouped=False, method="full")
    finally:
        training.replacing = real_replacing
    return {
        "world": distributed.world_size(),
        "whole": whole,
        "grouped": grouped,
        "full": full,
        "full_resumed": full_resumed,
        "saves": len(saves),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--batch-size", type=int, required=True)
    args = parser.parse_args()
    result = report(args.out, args.batch_size)
    (args.out / f"rank{distributed.rank()}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
