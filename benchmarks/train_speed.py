"""\
Training speed, side by side on one workload: the seed projects' recipe against the course's loop.

The workload: the GPT-2 architecture with random weights (nothing downloaded), a 2-label
classifier with peft LoRA r=4 on c_attn, attn.c_proj, c_fc and mlp.c_proj (the IMDB seed's
configuration), and token sequences with IMDB's lengths: measured with GPT-2's tokenizer on
`../shared/data/imdb/train.jsonl.gz` when both are there, else drawn from a log-normal with
IMDB's median (230 tokens), cut at 512. Each recipe runs `--warmup` steps, then is timed for
`--steps` steps:

* (a) the seeds' recipe: `transformers.Trainer`, float32, every row padded to 512, batch 16;
* (b) `peft_course.training.train` with its defaults, as a learner runs it (dynamic padding,
  and a batch of more than `TrainConfig.max_tokens_per_batch` padded tokens run in pieces of
  rows of similar length, with the whole batch's gradient; on CUDA at a budget of 4096 and
  also bf16 autocast, frozen matrices held in bf16, fused AdamW, padding to a multiple of 8);
* (c) the course's loop at its fastest: batches grouped by length (on CUDA at batch 64, and
  with `--compile`, compiled);
* (d) (b)'s batches, each run whole (`max_tokens_per_batch=None`, the default before the
  pieces were): the same gradient as (b) with all the padding;
* on CUDA, (e) QLoRA (NF4, double quantization, bf16 compute, gradient checkpointing) at (c)'s
  batch, and (f) QLoRA at the largest batch (doubling from (c)'s) whose peak memory stays
  within (c)'s.

It prints, and with `--write DIR` saves as `train-speed-<device>.md`, real (non-pad) and padded
tokens per second, the time one IMDB epoch (25,000 reviews) would take at that rate, peak
memory (CUDA `max_memory_allocated` per row; on a CPU the whole process's peak RSS), on CUDA
the model FLOPs utilisation, and each row's speed as a multiple of (a). `--device cpu` uses a
smaller model (4 layers of width 256) and finishes in a few minutes on 2 cores; on CUDA the
model is GPT-2 small.

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
    DataCollatorWithPadding,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2TokenizerFast,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from peft_course.models import load_tokenizer
from peft_course.system import provenance
from peft_course.tables import markdown_table
from peft_course.tiny_gpt2 import length_grouped_batches
from peft_course.training import TrainConfig, batch_pieces, train

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
        return [
            int(x) for x in rng.choice(lengths, n)
        ], f"IMDB train reviews tokenized with GPT-2 ({reviews})"
    lengths = np.clip(rng.lognormal(np.log(230), 0.7, n).astype(int), 8, MAX_LENGTH)
    return (
        lengths.tolist(),
        "log-normal with IMDB's median of 230 tokens, cut at 512 (no IMDB file here)",
    )


def workload(lengths: list[int], vocab: int, seed: int) -> Dataset:
    """Rows of random token ids with the given lengths, and random 0/1 labels."""
    generator = torch.Generator().manual_seed(seed)
    ids = [
        torch.randint(1, vocab, (n,), generator=generator).tolist() for n in lengths
    ]  # 0 is the pad id
    return Dataset.from_dict(
        {
            "input_ids": ids,
            "attention_mask": [[1] * n for n in lengths],
            "labels": torch.randint(0, 2, (len(lengths),), generator=generator).tolist(),
        }
    )


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


def run_trainer(
    config: GPT2Config, rows: Dataset, tokenizer, warmup: int, steps: int, device: str, seed: int
):
    """(a): the Trainer in float32 with every row padded to 512."""
    model = lora_model(config, seed)
    clock = StepClock(warmup)
    with tempfile.TemporaryDirectory() as output:
        args = TrainingArguments(
            output,
            per_device_train_batch_size=BATCH,
            max_steps=warmup + steps,
            learning_rate=5e-4,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            use_cpu=device == "cpu",
            seed=seed,
            dataloader_drop_last=True,
            disable_tqdm=True,
        )
        collator = DataCollatorWithPadding(tokenizer, padding="max_length", max_length=MAX_LENGTH)
        Trainer(
            model=model, args=args, train_dataset=rows, data_collator=collator, callbacks=[clock]
        ).train()
    timed = rows.select(range(warmup * BATCH, (warmup + steps) * BATCH))
    return (
        clock.end - clock.start,
        sum(len(r) for r in timed["input_ids"]),
        steps * BATCH * MAX_LENGTH,
    )


def course_model(config: GPT2Config, seed: int, qlora: bool, device: str) -> torch.nn.Module:
    """(b)-(d): the LoRA model; (e), (f): the same, loaded in NF4 with gradient checkpointing."""
    if not qlora:
        return lora_model(config, seed)
    from peft_course.qlora import nf4_config, prepare_qlora  # bitsandbytes: only when QLoRA runs

    with tempfile.TemporaryDirectory() as directory:
        torch.manual_seed(seed)
        GPT2ForSequenceClassification(config).save_pretrained(directory)
        model = GPT2ForSequenceClassification.from_pretrained(
            directory, quantization_config=nf4_config(torch.bfloat16), device_map={"": device}
        )
    return prepare_qlora(model, r=4, alpha=8, targets=TARGETS, gradient_checkpointing=True)


def run_course(
    config: GPT2Config,
    rows: Dataset,
    tokenizer,
    warmup: int,
    steps: int,
    device: str,
    seed: int,
    batch: int,
    qlora: bool = False,
    **options,
):
    """(b)-(f): one epoch of `warmup + steps` batches through `peft_course.training.train`."""

    def epoch_seconds(n_batches: int) -> float:
        model = course_model(config, seed, qlora, device)
        data = DatasetDict(
            {"train": rows.select(range(n_batches * batch)), "validation": rows.select(range(2))}
        )
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        train(
            model,
            data,
            tokenizer,
            TrainConfig(
                epochs=1,
                batch_size=batch,
                learning_rate=5e-4,
                device=device,
                seed=seed,
                progress=False,
                **options,
            ),
        )
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    reset_peak(device)
    seconds = epoch_seconds(warmup + steps) - epoch_seconds(
        warmup
    )  # the warm-up and validation cancel out
    timed = rows.select(range((warmup + steps) * batch))["input_ids"]
    real = sum(len(r) for r in timed) * steps / (warmup + steps)
    pieces = options.get("max_tokens_per_batch", TrainConfig().max_tokens_per_batch)
    padded = real * padding_factor(
        timed, batch, options.get("group_by_length", False), pieces, seed
    )
    return seconds, real, padded, peak_gib(device)


def padding_factor(
    ids: list[list[int]], batch: int, grouped: bool, max_tokens: int | None, seed: int
) -> float:
    """Padded tokens per real token: random or length-grouped batches, whole or in pieces."""
    lengths = [len(r) for r in ids]
    generator = torch.Generator().manual_seed(seed)
    batches = (
        length_grouped_batches(lengths, batch, generator)
        if grouped
        else [list(range(i, i + batch)) for i in range(0, len(lengths), batch)]
    )
    padded = 0
    for rows in batches:
        mask = torch.zeros(len(rows), max(lengths[i] for i in rows), dtype=torch.long)
        for j, i in enumerate(rows):
            mask[j, : lengths[i]] = 1
        padded += sum(
            p["attention_mask"].numel() for p in batch_pieces({"attention_mask": mask}, max_tokens)
        )
    return padded / sum(lengths)


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    """Peak GPU memory since `reset_peak` (CUDA), or None on a CPU
    (the note gives the process's)."""
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def process_peak() -> str:
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (process RSS)"


# Dense bf16 peak of the GPUs the course is run on (vendor data sheets), for the MFU column.
PEAK_BF16_FLOPS = {
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10": 125e12,
}


def flops_per_token(config: GPT2Config, mean_length: float) -> float:
    """LoRA's model FLOPs per token: the forward pass (2 per weight) and the backward pass to the
    inputs (2 more; frozen weights need no weight gradient), plus attention's scores and mixing
    (4 x length x width a layer forward, twice that backward). The LM head is not used."""
    weights = config.n_layer * 12 * config.n_embd**2
    return 4 * weights + 12 * config.n_layer * config.n_embd * mean_length


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def mfu(rate: float, config: GPT2Config, mean_length: float, device: str) -> str:
    if device != "cuda":
        return "—"
    name = torch.cuda.get_device_name()
    peak = next((flops for chip, flops in PEAK_BF16_FLOPS.items() if chip in name), None)
    return f"{rate * flops_per_token(config, mean_length) / peak:.1%}" if peak else "n/a"


def largest_qlora_batch(
    config, rows, tokenizer, device, seed, start: int, budget_gib: float, options
) -> int:
    """The largest batch, doubling from `start` up to 8x,
    whose QLoRA peak stays within `budget_gib`."""
    batch = start
    while 2 * batch <= 8 * start:
        reset_peak(device)
        try:
            run_course(
                config, rows, tokenizer, 1, 1, device, seed, 2 * batch, qlora=True, **options
            )
        except torch.cuda.OutOfMemoryError:
            break
        if torch.cuda.max_memory_allocated() / 2**30 > budget_gib:
            break
        batch *= 2
    return batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, help="timed steps (default: 20 on CUDA, 6 on a CPU)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--max-tokens",
        type=int,
        help="(b)'s budget per piece (default: 4096 on CUDA, TrainConfig's on a CPU)",
    )
    parser.add_argument(
        "--compile", action="store_true", help="compile (c) with torch.compile (CUDA)"
    )
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument(
        "--write", type=Path, help="also save the table as DIR/train-speed-<device>.md"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cuda = args.device == "cuda"
    steps = args.steps or (20 if cuda else 6)
    fast_batch = 64 if cuda else BATCH
    max_tokens = args.max_tokens or (4096 if cuda else TrainConfig().max_tokens_per_batch)
    config = (
        GPT2Config(num_labels=2, pad_token_id=0)
        if cuda
        else GPT2Config(n_embd=256, n_layer=4, n_head=4, num_labels=2, pad_token_id=0)
    )
    lengths, source = imdb_lengths(
        args.data_dir, (args.warmup + steps) * (8 * fast_batch if cuda else BATCH), args.seed
    )
    rows = workload(lengths, config.vocab_size, args.seed)
    tokenizer = load_tokenizer(
        "tiny-gpt2"
    )  # only its padding is used: pad id 0, never drawn in a row
    run = {
        "config": config,
        "rows": rows,
        "tokenizer": tokenizer,
        "warmup": args.warmup,
        "steps": steps,
        "device": args.device,
        "seed": args.seed,
    }
    fastest = {"group_by_length": True, "compile": args.compile, "max_tokens_per_batch": max_tokens}
    reset_peak(args.device)
    results = {
        "(a) seeds' recipe: Trainer, fp32, padded to 512, batch 16": (
            *run_trainer(config, rows, tokenizer, args.warmup, steps, args.device, args.seed),
            peak_gib(args.device),
        )
    }
    results[f"(b) course loop, defaults (pieces of ≤ {max_tokens} tokens), batch 16"] = run_course(
        **run, batch=BATCH, max_tokens_per_batch=max_tokens
    )
    results[
        f"(c) course loop, group_by_length, batch {fast_batch}"
        + (", compiled" if args.compile else "")
    ] = run_course(**run, batch=fast_batch, **fastest)
    results["(d) (b)'s batches whole (dynamic padding only)"] = run_course(
        **run, batch=BATCH, max_tokens_per_batch=None
    )
    if cuda:
        lora_peak = list(results.values())[2][3]
        results[f"(e) QLoRA NF4, double quant, checkpointing, batch {fast_batch}"] = run_course(
            **run, batch=fast_batch, qlora=True, **fastest
        )
        big = largest_qlora_batch(
            config, rows, tokenizer, args.device, args.seed, fast_batch, lora_peak, fastest
        )
        results[f"(f) QLoRA at the largest batch within (c)'s memory: {big}"] = run_course(
            **run, batch=big, qlora=True, **fastest
        )
    mean_length = sum(lengths) / len(lengths)
    base, table = None, []
    for name, (seconds, real, padded, peak) in results.items():
        rate = real / seconds
        base = base or rate
        row = {
            "recipe": name,
            "real tokens/s": f"{rate:,.0f}",
            "padded tokens/s": f"{padded / seconds:,.0f}",
            "IMDB epoch": f"{IMDB_REVIEWS * mean_length / rate / 60:,.1f} min",
        }
        if cuda:  # a CPU has one peak for the whole process (in the note) and no MFU figure
            row |= {
                "peak memory": f"{peak:.2f} GiB",
                "MFU": mfu(rate, config, mean_length, args.device),
            }
        table.append(row | {"vs (a)": f"{rate / base:.2f}x"})
    width = f"{config.n_layer} layers of width {config.n_embd}"
    note = (
        f"GPT-2 architecture ({width}, random weights), LoRA r=4 on {', '.join(TARGETS)}; {steps} "
        f"timed steps after {args.warmup}; lengths: {source}; device {args.device} "
        f"({device_name(args.device)}), torch {torch.__version__}; "
        f"peak memory of the whole process {process_peak()}."
    )
    command = f"python benchmarks/train_speed.py --device {args.device}" + (
        " --compile" if args.compile else ""
    )
    text = markdown_table(table) + "\n" + note + "\n\n" + provenance(command) + "\n"
    print(text)
    if args.write:
        args.write.mkdir(parents=True, exist_ok=True)
        (args.write / f"train-speed-{args.device}.md").write_text(text)


if __name__ == "__main__":
    main()
