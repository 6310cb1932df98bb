"""\
What QLoRA saves: model bytes, peak GPU memory and training speed on the GPT-2 small architecture.

Random weights (nothing is downloaded): memory and speed depend on the shapes, not the values.

Tables:

1. weight bytes of GPT-2 small, medium, large and XL by arithmetic (meta device): fp32, bf16,
   QLoRA - how the saving grows with size (runs anywhere, instantly);
2. `get_memory_footprint()` of GPT-2 small as full, LoRA and QLoRA models (CPU is enough);
3. with CUDA, one short training run per setting - full, LoRA, LoRA with gradient
   checkpointing, QLoRA with and without it - reporting peak GPU memory
   (`torch.cuda.max_memory_allocated`) and real tokens per second (no padding: every token of
   every row counts). Without CUDA this table is skipped unless `--device cpu` asks for it
   (then there is no peak-memory column to fill, only tokens/s).

Usage:

    python benchmarks/qlora_memory.py                       # tables 1, 2 (and 3 with CUDA)
    python benchmarks/qlora_memory.py --write docs/results  # also save qlora-*.md there
    python benchmarks/qlora_memory.py --steps 20 --batch-size 16 --length 512
    python benchmarks/qlora_memory.py --device cpu --steps 2 --batch-size 2 --length 64 # smoke test
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from transformers import GPT2ForSequenceClassification

from peft_course.models import count_parameters
from peft_course.methods import prepare_full, prepare_lora
from peft_course.qlora import (
    nf4_config,
    prepare_qlora,
    qlora_footprint_rows,
    require_4bit,
    save_random_gpt2,
    theoretical_rows,
)
from peft_course.tables import markdown_table

SETTINGS = (  # (method, gradient checkpointing)
    ("full", False),
    ("LoRA", False),
    ("LoRA", True),
    ("QLoRA", False),
    ("QLoRA", True),
)


def build(directory: Path, method: str, checkpointing: bool, device: torch.device) -> nn.Module:
    """The model of one setting, on `device`,
    LoRA r=8 on `c_attn` plus the head where it applies."""
    if method == "QLoRA":
        require_4bit(device.type)
        model = GPT2ForSequenceClassification.from_pretrained(
            directory, quantization_config=nf4_config(), device_map={"": device}
        )
        return prepare_qlora(model, r=8, alpha=16, gradient_checkpointing=checkpointing)
    model = GPT2ForSequenceClassification.from_pretrained(directory).to(device)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return prepare_full(model) if method == "full" else prepare_lora(model, r=8, alpha=16)


def time_training(
    model: nn.Module,
    device: torch.device,
    steps: int,
    batch_size: int,
    length: int,
    warmup: int = 2,
) -> tuple[float, float | None]:
    """(tokens per second, peak GPU MB or None) over `steps` AdamW steps
    on random full-length rows."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(
        0, model.config.vocab_size, (batch_size, length), generator=generator
    ).to(device)
    labels = torch.randint(0, 2, (batch_size,), generator=generator).to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    model.train()

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):  # kernels are compiled and the optimizer state is allocated here
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return steps * batch_size * length / seconds, peak


def training_rows(
    device: torch.device, steps: int, batch_size: int, length: int
) -> list[dict[str, str]]:
    """One row per setting in `SETTINGS`: trainable parameters, model MB, peak GPU MB, tokens/s."""
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        save_random_gpt2(directory, "gpt2", seed=0)
        for method, checkpointing in SETTINGS:
            model = build(Path(directory), method, checkpointing, device)
            tokens_per_second, peak = time_training(model, device, steps, batch_size, length)
            rows.append(
                {
                    "method": method,
                    "gradient checkpointing": "yes" if checkpointing else "no",
                    "trainable": f"{count_parameters(model)[0]:,}",
                    "model MB": f"{model.get_memory_footprint() / 1e6:,.0f}",
                    "peak GPU MiB": f"{peak:,.0f}" if peak is not None else "n/a (CPU)",
                    "tokens/s": f"{tokens_per_second:,.0f}",
                }
            )
            print(rows[-1], flush=True)
            del model
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device", help="cuda or cpu (default: cuda if present, else no training table)"
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--write", type=Path, help="directory to save the tables in as qlora-*.md")
    args = parser.parse_args(argv)

    tables = {"qlora-theory.md": theoretical_rows(), "qlora-footprint.md": qlora_footprint_rows()}
    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    if device is None:
        print(
            "CUDA is not available: skipping peak GPU memory "
            "and training speed (use --device cpu to time it)"
        )
    else:
        name = f"qlora-speed-{torch.device(device).type}.md"
        tables[name] = training_rows(torch.device(device), args.steps, args.batch_size, args.length)
    for name, rows in tables.items():
        print(f"\n{name}\n\n{markdown_table(rows)}")
        if args.write:
            args.write.mkdir(parents=True, exist_ok=True)
            (args.write / name).write_text(markdown_table(rows))


if __name__ == "__main__":
    main()
