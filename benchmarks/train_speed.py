"""Training speed, side by side on one workload: the seed projects' recipe against the course's loop.

The workload: the GPT-2 architecture with random weights (nothing downloaded), a 2-label
classifier with peft LoRA r=4 on c_attn, attn.c_proj, c_fc and mlp.c_proj (the IMDB seed's
configuration), and token sequences with IMDB's lengths: measured with GPT-2's tokenizer on
`../shared/data/imdb/train.jsonl.gz` when both are there, else drawn from a log-normal with
IMDB's median (230 tokens), cut at 512. Each recipe runs `--warmup` steps, then is timed for
`--steps` steps:

* (a) the seeds' recipe: `transformers.Trainer`, float32, every row padded to 512, batch 16;
* (b) `peft_course.training.train` with its defaults, as a learner runs it (dynamic padding);
* (c) the course's loop with `group_by_length=True` (batches of similar length: less padding).

It prints, and with `--write DIR` saves as `train-speed-<device>.md`, real (non-pad) and padded
tokens per second, the time one IMDB epoch (25,000 reviews) would take at that rate, peak
memory (CUDA `max_memory_allocated`, or the process's peak RSS on a CPU) and each row's speed
as a multiple of (a). `--device cpu` uses a smaller model (4 layers of width 256) and finishes
in a few minutes on 2 cores.

    python benchmarks/train_speed.py --device cpu --write docs/results
    python benchmarks/train_speed.py --device cuda --write docs/results   # GPT-2 small
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from peft import LoraConfig, TaskType, get_peft_model
from transformers import (
    DataCollatorWithPadding, GPT2Config, GPT2ForSequenceClassification, GPT2TokenizerFast, Trainer,
    TrainerCallback, TrainingArguments,
)

from peft_course.models import load_tokenizer
from peft_course.system import provenance
from peft_course.tables import markdown_table
from peft_course.tiny_gpt2 import length_grouped_batches
from peft_course.training import TrainConfig, train

IMDB_REVIEWS, MAX_LENGTH, BATCH = 25_000, 512, 16
TARGETS = ["c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"]


def imdb_lengths(data_dir: Path, n: int, seed: int) -> tuple[list[int], str]:
    """`n` token counts with IMDB's distribution, and where they came from."""
    reviews, tokenizer_dir = data_dir / "imdb" / "train.jsonl.gz", data_dir / "gpt2_tokenizer"
    rng = np.random.default_rng(seed)
    if reviews.is_file() and tokenizer_dir.is_dir():
        tokenizer = GPT2TokenizerFast.from_pretrained(str(tokenizer_dir))
        with gzip.open(reviews, "rt") as handle:
            texts = [json.loads(line)["text"] for _, line in zip(range(4 * n), handle)]
        lengths = [min(len(ids), MAX_LENGTH) for ids in tokenizer(texts)["input_ids"]]
        return [int(x) for x in rng.choice(lengths, n)], f"IMDB train reviews tokenized with GPT-2 ({reviews})"
    lengths = np.clip(rng.lognormal(np.log(230), 0.7, n).astype(int), 8, MAX_LENGTH)
    return lengths.tolist(), "log-normal with IMDB's median of 230 tokens, cut at 512 (no IMDB file here)"


def workload(lengths: list[int], vocab: int, seed: int) -> Dataset:
    """Rows of random token ids with the given lengths, and random 0/1 labels."""
    generator = torch.Generator().manual_seed(seed)
    ids = [torch.randint(1, vocab, (n,), generator=generator).tolist() for n in lengths]  # 0 is the pad id
    return Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * n for n in lengths],
                              "labels": torch.randint(0, 2, (len(lengths),), generator=generator).tolist()})


def lora_model(config: GPT2Config, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = GPT2ForSequenceClassification(config)
    peft_config = LoraConfig(task_type=TaskType.SEQ_CLS, r=4, lora_alpha=8, target_modules=TARGETS)
    return get_peft_model(model, peft_config)


class StepClock(TrainerCallback):
    """Wall time at the end of the warm-up and of the last step (the Trainer's own loop)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.start = time.perf_counter()
        self.end = time.perf_counter()


def run_trainer(config: GPT2Config, rows: Dataset, tokenizer, warmup: int, steps: int, device: str, seed: int):
    """(a): the Trainer in float32 with every row padded to 512."""
    model = lora_model(config, seed)
    clock = StepClock(warmup)
    with tempfile.TemporaryDirectory() as output:
        args = TrainingArguments(output, per_device_train_batch_size=BATCH, max_steps=warmup + steps,
                                 learning_rate=5e-4, report_to=[], save_strategy="no", logging_strategy="no",
                                 use_cpu=device == "cpu", seed=seed, dataloader_drop_last=True,
                                 disable_tqdm=True)
        collator = DataCollatorWithPadding(tokenizer, padding="max_length", max_length=MAX_LENGTH)
        Trainer(model=model, args=args, train_dataset=rows, data_collator=collator, callbacks=[clock]).train()
    timed = rows.select(range(warmup * BATCH, (warmup + steps) * BATCH))
    return clock.end - clock.start, sum(len(r) for r in timed["input_ids"]), steps * BATCH * MAX_LENGTH


def run_course(config: GPT2Config, rows: Dataset, tokenizer, warmup: int, steps: int, device: str, seed: int,
               group_by_length: bool):
    """(b) and (c): one epoch of `warmup + steps` batches through `peft_course.training.train`."""
    def epoch_seconds(n_batches: int) -> float:
        model = lora_model(config, seed)
        data = DatasetDict({"train": rows.select(range(n_batches * BATCH)), "validation": rows.select(range(2))})
        started = time.perf_counter()
        train(model, data, tokenizer, TrainConfig(epochs=1, batch_size=BATCH, learning_rate=5e-4, device=device,
                                                  seed=seed, progress=False, group_by_length=group_by_length))
        return time.perf_counter() - started
    seconds = epoch_seconds(warmup + steps) - epoch_seconds(warmup)  # the warm-up and validation cancel out
    timed = rows.select(range((warmup + steps) * BATCH))
    real = sum(len(r) for r in timed["input_ids"]) * steps / (warmup + steps)
    padded = real * (padding_factor(timed["input_ids"], group_by_length, seed))
    return seconds, real, padded


def padding_factor(ids: list[list[int]], grouped: bool, seed: int) -> float:
    """Padded tokens per real token for batches of 16: random batches, or grouped by length."""
    lengths = [len(r) for r in ids]
    generator = torch.Generator().manual_seed(seed)
    batches = (length_grouped_batches(lengths, BATCH, generator) if grouped else
               [list(range(i, i + BATCH)) for i in range(0, len(lengths), BATCH)])
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return padded / sum(lengths)


def peak_memory(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (process RSS)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, help="timed steps (default: 20 on CUDA, 6 on a CPU)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--write", type=Path, help="also save the table as DIR/train-speed-<device>.md")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    steps = args.steps or (20 if args.device == "cuda" else 6)
    config = (GPT2Config(num_labels=2, pad_token_id=0) if args.device == "cuda" else
              GPT2Config(n_embd=256, n_layer=4, n_head=4, num_labels=2, pad_token_id=0))
    lengths, source = imdb_lengths(args.data_dir, (args.warmup + steps) * BATCH, args.seed)
    rows = workload(lengths, config.vocab_size, args.seed)
    tokenizer = load_tokenizer("tiny-gpt2")  # only its padding is used: pad id 0, never drawn in a row
    results = {"(a) seeds' recipe: Trainer, fp32, padded to 512": run_trainer(
        config, rows, tokenizer, args.warmup, steps, args.device, args.seed)}
    results["(b) course loop, defaults (dynamic padding)"] = run_course(
        config, rows, tokenizer, args.warmup, steps, args.device, args.seed, False)
    results["(c) course loop, group_by_length"] = run_course(
        config, rows, tokenizer, args.warmup, steps, args.device, args.seed, True)
    base = None
    table = []
    for name, (seconds, real, padded) in results.items():
        rate = real / seconds
        base = base or rate
        epoch = IMDB_REVIEWS * (sum(lengths) / len(lengths)) / rate
        table.append({"recipe": name, "real tokens/s": f"{rate:,.0f}", "padded tokens/s": f"{padded / seconds:,.0f}",
                      "IMDB epoch": f"{epoch / 60:,.1f} min", "vs (a)": f"{rate / base:.2f}x"})
    width = f"{config.n_layer} layers of width {config.n_embd}"
    note = (f"GPT-2 architecture ({width}, random weights), LoRA r=4 on {', '.join(TARGETS)}, batch {BATCH}, "
            f"{steps} timed steps after {args.warmup}; lengths: {source}; device {args.device} "
            f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), torch "
            f"{torch.__version__}; peak memory of the whole run {peak_memory(args.device)}.")
    command = f"python benchmarks/train_speed.py --device {args.device}"
    text = markdown_table(table) + "\n" + note + "\n\n" + provenance(command) + "\n"
    print(text)
    if args.write:
        args.write.mkdir(parents=True, exist_ok=True)
        (args.write / f"train-speed-{args.device}.md").write_text(text)


if __name__ == "__main__":
    main()
