"""What a training step costs, LoRA beside full fine-tuning, from each run's own cost record.

Each method trains the embedded model (`tiny-gpt2`, or `--model`) for one epoch on the generated
sentiment set through `peft_course.finetune.finetune`, each in a fresh process, so that the peak
resident memory of one run is not the other's. The table is the runs' `training.cost`
(`peft_course.cost`): real and padded tokens/s, peak memory, the optimizer's state, FLOPs a token,
and the share of this machine's measured matrix-product peak.

    python benchmarks/step_cost.py --write docs/results      # about a minute on 2 cores
    python benchmarks/step_cost.py --model smollm2-135m --examples 200 --write docs/results
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

METHODS = ("lora", "full")


def one_run(method: str, model: str, examples: int, seed: int) -> dict:
    """Train `method` once in this process and return its cost record and trainable count."""
    from peft_course.data import load_classification_data
    from peft_course.finetune import finetune
    from peft_course.registry import get_method
    from peft_course.training import TrainConfig

    data = load_classification_data("synthetic-sentiment", max_examples=examples, seed=seed)
    config = TrainConfig(
        epochs=1, learning_rate=get_method(method).learning_rate, seed=seed, progress=False
    )
    result = finetune(data, method, model, config)
    return {**result.training.cost, "trainable": result.trainable, "total": result.total}


def table(rows: dict[str, dict]) -> str:
    """The Markdown table, one row a method."""
    lines = [
        "| method | trainable | real tok/s | padded tok/s | peak RSS | optimizer state "
        "| MFLOP/token | GFLOP/s | MFU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method, cost in rows.items():
        lines.append(
            f"| {method} | {cost['trainable']:,} | {cost['real_tokens_per_second']:,.0f} "
            f"| {cost['padded_tokens_per_second']:,.0f} "
            f"| {cost['peak_memory_bytes'] / 2**20:,.0f} MiB "
            f"| {cost['optimizer_state_bytes'] / 2**10:,.1f} KiB "
            f"| {cost['flops_per_token'] / 1e6:.2f} "
            f"| {cost['achieved_flops_per_second'] / 1e9:.2f} | {cost['utilisation']:.1%} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-gpt2")
    parser.add_argument(
        "--examples", type=int, default=800, help="rows of the data set, all splits"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", type=Path, help="save step-cost-<model>.md in this directory")
    parser.add_argument("--one", choices=METHODS, help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one, args.model, args.examples, args.seed)))
        return
    rows = {}
    for method in METHODS:
        child = [sys.executable, __file__, "--one", method, "--model", args.model]
        child += ["--examples", str(args.examples), "--seed", str(args.seed)]
        output = subprocess.run(child, capture_output=True, text=True, check=True).stdout
        rows[method] = json.loads(output.strip().splitlines()[-1])
    from peft_course.system import provenance

    command = f"python benchmarks/step_cost.py --model {args.model} --examples {args.examples}"
    text = table(rows) + "\n" + provenance(command) + "\n"
    print(text)
    if args.write:
        path = args.write / f"step-cost-{args.model}.md"
        path.write_text(text)
        print(f"saved: {path}")


if __name__ == "__main__":
    main()
