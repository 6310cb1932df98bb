"""The `peft-course` command's parser: one subcommand per thing the course runs.

This module only describes the command line; what each subcommand does is in
`peft_course.commands`, imported after the arguments are parsed, so `peft-course --help`
(and a mistyped option) imports no torch. Defaults come from `peft_course.settings`, the one
place each is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from peft_course.data import REGISTRY
from peft_course.errors import CourseError, one_line
from peft_course.settings import (
    ABLATION,
    DECODING,
    DEFAULT_MODEL,
    DPO,
    EMBEDDED_MODEL,
    INSTRUCT,
    LORA,
    METHOD_OPTIONS,
    METHODS,
    PROMPTING,
    TRAINING,
)


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """`--model`: the embedded tiny-gpt2 by default, a local directory, or a hub id.

    Args:
        parser: the subcommand's parser.
    """
    parser.add_argument(
        "--model",
        default=EMBEDDED_MODEL,
        help=(
            "tiny-gpt2 (embedded), a local checkpoint "
            f"directory, or a hub id such as {DEFAULT_MODEL}"
        ),
    )


def add_data_arguments(parser: argparse.ArgumentParser, default_dataset: str) -> None:
    """`--dataset` or local files, their column names, and subsampling.

    Args:
        parser: the subcommand's parser (the options go in a `data` group).
        default_dataset: the registered dataset `--dataset` defaults to.
    """
    group = parser.add_argument_group("data")
    group.add_argument(
        "--dataset",
        default=default_dataset,
        help=f"a registered dataset ({', '.join(sorted(REGISTRY))}); default: %(default)s",
    )
    group.add_argument(
        "--train-file", help="local CSV/TSV/JSONL/Parquet training file (instead of the hub)"
    )
    group.add_argument(
        "--validation-file",
        help="local validation file, with --train-file (default: 10%% of train)",
    )
    group.add_argument(
        "--test-file", help="local test file, with --train-file (default: 10%% of train)"
    )
    group.add_argument("--text-column", help="column holding the text")
    group.add_argument("--text-pair-column", help="column holding the second text of a pair")
    group.add_argument("--label-column", help="column holding the label")
    group.add_argument("--label-names", nargs="+", help="label names, in label-id order")
    group.add_argument(
        "--max-examples", type=int, help="keep at most this many rows per split (seeded)"
    )


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The loop's hyper-parameters and the LoRA options.

    Args:
        parser: the subcommand's parser (the options go in a `training` group).
    """
    group = parser.add_argument_group("training")
    rates = ", ".join(f"{name} {method.learning_rate:g}" for name, method in METHODS.items())
    group.add_argument("--epochs", type=int, default=TRAINING.epochs, help="default: %(default)s")
    group.add_argument(
        "--batch-size", type=int, default=TRAINING.batch_size, help="default: %(default)s"
    )
    group.add_argument("--learning-rate", type=float, help=f"default: the method's ({rates})")
    group.add_argument(
        "--weight-decay", type=float, default=TRAINING.weight_decay, help="default: %(default)s"
    )
    group.add_argument(
        "--eval-every", type=int, help="validate every N steps (default: every epoch)"
    )
    group.add_argument(
        "--group-by-length",
        action="store_true",
        help="batch rows of similar length together (less padding; other batches than the default)",
    )
    group.add_argument(
        "--max-tokens-per-batch",
        type=int,
        help="run each batch in pieces of similar length, at most N padded tokens each (the same "
        "gradient with less padding and memory)",
    )
    group.add_argument(
        "--compile", action="store_true", help="torch.compile the model's forward pass"
    )
    group.add_argument(
        "--fsdp",
        action="store_true",
        help="under torchrun: shard parameters, gradients and optimizer state (full fine-tuning)",
    )
    group.add_argument(
        "--max-length",
        type=int,
        default=TRAINING.max_length,
        help="truncate texts to this many tokens (default: %(default)s)",
    )
    group.add_argument("--seed", type=int, default=TRAINING.seed)
    group.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if present)")
    lora = parser.add_argument_group(
        "LoRA (methods lora, lora-scratch, gpt2-scratch, merged, qlora)"
    )
    lora.add_argument(
        "--r", type=int, default=LORA.r, help="rank of the update (default: %(default)s)"
    )
    lora.add_argument(
        "--alpha",
        type=float,
        default=LORA.alpha,
        help="scale: the update is multiplied by alpha/r (default: %(default)s)",
    )
    lora.add_argument(
        "--dropout", type=float, default=LORA.dropout, help="dropout on the LoRA path"
    )
    lora.add_argument(
        "--targets", nargs="+", help="module-name patterns to adapt (default: c_attn for peft)"
    )
    lora.add_argument(
        "--bias", default="none", choices=["none", "all", "lora_only"], help="peft only"
    )
    lora.add_argument(
        "--modules-to-save", nargs="+", help="peft only: extra modules trained in full"
    )
    lora.add_argument(
        "--rslora", action="store_true", help="scale by alpha/sqrt(r) instead of alpha/r"
    )
    lora.add_argument(
        "--no-gradient-checkpointing",
        action="store_true",
        help="qlora only: keep activations instead of recomputing them (faster, more memory)",
    )


def add_count_command(subcommands) -> None:
    """`peft-course count`: what BitFit, adapters or LoRA train, per module type.

    Args:
        subcommands (argparse._SubParsersAction): the `add_subparsers()` action of the
            `peft-course` parser.
    """
    count = subcommands.add_parser(
        "count",
        help=(
            "trainable parameters of bitfit/adapter/lora, "
            "per module type, checked against a formula"
        ),
        description=(
            "Apply a method to GPT-2 small (random weights, nothing downloaded) or to the course's "
            "1024-512-...-2-1 network, and print its trainable parameters per module type next to "
            "the closed-form formula's answer."
        ),
    )
    count.add_argument("--method", required=True, choices=("bitfit", "adapter", "lora"))
    count.add_argument(
        "--model", default="gpt2-small", choices=("gpt2-small", "mlp"), help="default: %(default)s"
    )
    count.add_argument(
        "--r",
        type=int,
        default=LORA.r,
        help="adapter bottleneck / LoRA rank (default: %(default)s)",
    )
    count.add_argument(
        "--targets",
        nargs="+",
        metavar="MODULE",
        help="module names or suffixes (GPT-2: c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj; "
        "mlp: fc1 ... fc10). Default: c_attn (lora), attn.c_proj mlp.c_proj (adapter), "
        "every layer (lora on mlp) or every hidden layer (adapter on mlp)",
    )
    count.add_argument(
        "--labels", type=int, default=2, help="classes of GPT-2's classification head"
    )


def add_lora_command(subcommands) -> None:
    """`peft-course lora`: the LoRA chapter's two tables (equality with peft, then training).

    Args:
        subcommands (argparse._SubParsersAction): the `add_subparsers()` action of the
            `peft-course` parser.
    """
    lora = subcommands.add_parser(
        "lora",
        help="LoRA from scratch: check it equals peft, then train both and compare",
        description=(
            "Compare the course's LoRA layer with peft's (logits, merged logits, gradients), "
            "then fine-tune tiny-gpt2 with each on synthetic-sentiment."
        ),
    )
    add_model_argument(lora)
    lora.add_argument(
        "--epochs", type=int, default=METHODS["lora"].demo_epochs, help="default: %(default)s"
    )
    lora.add_argument(
        "--learning-rate",
        type=float,
        default=METHODS["lora"].learning_rate,
        help="default: %(default)s",
    )
    lora.add_argument(
        "--r", type=int, default=LORA.r, help="rank of the update (default: %(default)s)"
    )
    lora.add_argument(
        "--alpha",
        type=float,
        default=LORA.alpha,
        help="the update is multiplied by alpha/r (default: %(default)s)",
    )
    lora.add_argument("--seed", type=int, default=0)
    lora.add_argument(
        "--output", type=Path, default=Path("runs/lora"), help="where the tables are saved"
    )
    lora.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_gpt2_command(subcommands) -> None:
    """`peft-course gpt2`:
    the from-scratch GPT-2 checked against transformers, then decoding by hand.

    Args:
        subcommands (argparse._SubParsersAction): the `add_subparsers()` action of the
            `peft-course` parser.
    """
    gpt2 = subcommands.add_parser(
        "gpt2",
        help=(
            "GPT-2 written from scratch: equal to "
            "transformers, LoRA counts, four decoding strategies"
        ),
        description="Load a GPT-2 checkpoint into the course's own GPT-2, compare its logits with "
        "transformers', count what built-in LoRA trains, and continue a prompt with greedy, "
        "temperature, top-k and top-p decoding (KV cache on).",
    )
    add_model_argument(gpt2)
    gpt2.add_argument(
        "--prompt", default=DECODING.prompt, help="text to continue (default: %(default)r)"
    )
    gpt2.add_argument(
        "--strategy",
        nargs="+",
        default=["greedy", "temperature", "top-k", "top-p"],
        metavar="NAME",
        help="greedy, temperature, top-k, top-p (default: all four)",
    )
    gpt2.add_argument(
        "--max-new-tokens", type=int, default=DECODING.max_new_tokens, help="default: %(default)s"
    )
    gpt2.add_argument(
        "--temperature", type=float, default=DECODING.temperature, help="default: %(default)s"
    )
    gpt2.add_argument("--top-k", type=int, default=DECODING.top_k, help="default: %(default)s")
    gpt2.add_argument("--top-p", type=float, default=DECODING.top_p, help="default: %(default)s")
    gpt2.add_argument("--seed", type=int, default=0, help="seeds each sampled continuation")
    gpt2.add_argument(
        "--no-check", action="store_true", help="skip the comparison with transformers"
    )


def add_instruct_command(subcommands) -> None:
    """`peft-course instruct`: instruction tuning with the loss on the response only.

    Args:
        subcommands (argparse._SubParsersAction): the `add_subparsers()` action of the
            `peft-course` parser.
    """
    instruct = subcommands.add_parser(
        "instruct",
        help="instruction tuning (loss on the response only), exact match before and after",
        description=(
            "Answer the test instructions, train on the responses (LoRA or full), answer again; "
            "print exact match per task and a few answers before and after."
        ),
    )
    instruct.add_argument(
        "--data",
        default="generated",
        help=(
            "'generated' (five checkable tasks), 'dolly' "
            "(the hub) or a local CSV/JSONL/Parquet file"
        ),
    )
    instruct.add_argument("--method", default="lora", choices=("lora", "full"))
    add_model_argument(instruct)
    instruct.add_argument("--instruction-column", default="instruction")
    instruct.add_argument("--context-column", default="context")
    instruct.add_argument("--response-column", default="response")
    instruct.add_argument(
        "--max-examples", type=int, help="keep at most this many examples per split"
    )
    instruct.add_argument(
        "--epochs", type=int, default=INSTRUCT.epochs, help="default: %(default)s"
    )
    instruct.add_argument(
        "--learning-rate",
        type=float,
        help=f"default: {', '.join(f'{m} {r:g}' for m, r in INSTRUCT.learning_rates.items())}",
    )
    instruct.add_argument(
        "--batch-size", type=int, default=INSTRUCT.batch_size, help="default: %(default)s"
    )
    instruct.add_argument(
        "--max-length", type=int, default=INSTRUCT.max_length, help="default: %(default)s"
    )
    instruct.add_argument(
        "--r", type=int, default=INSTRUCT.r, help="LoRA rank (default: %(default)s)"
    )
    instruct.add_argument(
        "--alpha", type=float, default=INSTRUCT.alpha, help="default: %(default)s"
    )
    instruct.add_argument("--targets", nargs="+", help="LoRA targets (default: every projection)")
    instruct.add_argument(
        "--train-embeddings",
        action="store_true",
        help="LoRA also trains the token embedding (tied to the LM head)",
    )
    instruct.add_argument("--seed", type=int, default=0)
    instruct.add_argument(
        "--output", type=Path, default=Path("runs/instruct"), help="where the tables are saved"
    )
    instruct.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_prompt_command(subcommands) -> None:
    """`peft-course prompt`: zero-/few-shot and chain-of-thought prompting on word problems.

    Args:
        subcommands (argparse._SubParsersAction): the `add_subparsers()` action of the
            `peft-course` parser.
    """
    prompt = subcommands.add_parser(
        "prompt",
        help="zero-/few-shot and chain-of-thought prompting on arithmetic word problems",
        description="Prompt a causal LM with each strategy, extract the numbers it answers, and "
        "print the accuracy per strategy. No weights change.",
    )
    prompt.add_argument(
        "--strategy",
        nargs="+",
        metavar="NAME",
        help="zero-shot, few-shot, cot, zero-shot-cot, few-shot-cot "
        "(default: zero-shot few-shot cot zero-shot-cot)",
    )
    add_model_argument(prompt)
    prompt.add_argument(
        "--problems",
        default="generated",
        help="'generated' (word problems solved by sympy) or a GSM8K-format JSONL file",
    )
    prompt.add_argument(
        "--n-problems",
        type=int,
        default=PROMPTING.n_problems,
        help="how many problems (generated, or the first N of the file)",
    )
    prompt.add_argument(
        "--shots",
        type=int,
        default=PROMPTING.shots,
        help="k, the solved examples of the few-shot strategies",
    )
    prompt.add_argument(
        "--examples", help="GSM8K-format JSONL of solved examples (default: generated ones)"
    )
    prompt.add_argument(
        "--max-new-tokens", type=int, default=PROMPTING.max_new_tokens, help="default: %(default)s"
    )
    prompt.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    prompt.add_argument(
        "--chat",
        action="store_true",
        help="wrap each prompt in the model's chat template (instruct models such as smollm2-135m)",
    )
    prompt.add_argument(
        "--temperature", type=float, default=PROMPTING.temperature, help="default: %(default)s"
    )
    prompt.add_argument("--top-p", type=float, default=PROMPTING.top_p, help="default: %(default)s")
    prompt.add_argument("--seed", type=int, default=0)
    prompt.add_argument(
        "--output",
        type=Path,
        default=Path("runs/prompt"),
        help="where completions.jsonl and results.md are saved",
    )


def add_dpo_command(subcommands) -> None:
    """`peft-course dpo`: Direct Preference Optimization through TRL,
    before/after on held-out pairs.

    Args:
        subcommands (argparse._SubParsersAction): the `add_subparsers()` action of the
            `peft-course` parser.
    """
    dpo = subcommands.add_parser(
        "dpo",
        help="Direct Preference Optimization with TRL on preference pairs",
        description=(
            "Train a causal LM with DPO (trl.DPOTrainer) on generated film pairs or a JSONL file "
            "of prompt/chosen/rejected pairs; print held-out preference accuracy and margin before "
            "and after; save the logged rewards (metrics.json) and their plot (rewards.png)."
        ),
    )
    add_model_argument(dpo)
    dpo.add_argument(
        "--train-file",
        help="JSONL of {prompt, chosen, rejected} pairs (default: generated film pairs)",
    )
    dpo.add_argument(
        "--test-fraction",
        type=float,
        default=DPO.test_fraction,
        help="pairs of --train-file held out",
    )
    dpo.add_argument(
        "--prefer",
        default="positive",
        choices=("positive", "negative"),
        help="generated pairs: the sentiment of the chosen completion (default: %(default)s)",
    )
    dpo.add_argument("--n-train", type=int, default=DPO.n_train, help="generated training pairs")
    dpo.add_argument("--n-test", type=int, default=DPO.n_test, help="generated held-out pairs")
    dpo.add_argument(
        "--beta",
        type=float,
        default=DPO.beta,
        help="weight of the KL penalty (default: %(default)s)",
    )
    dpo.add_argument(
        "--learning-rate",
        type=float,
        default=DPO.learning_rate,
        help="default: %(default)s (suits LoRA on tiny-gpt2; try 1e-3 with --no-lora)",
    )
    dpo.add_argument("--epochs", type=int, default=DPO.epochs, help="default: %(default)s")
    dpo.add_argument("--batch-size", type=int, default=DPO.batch_size, help="default: %(default)s")
    dpo.add_argument(
        "--lora",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=(
            "LoRA (reference = base with adapters off) or "
            "--no-lora (full, explicit frozen reference)"
        ),
    )
    dpo.add_argument("--r", type=int, default=LORA.r, help="LoRA rank (default: %(default)s)")
    dpo.add_argument(
        "--alpha", type=float, default=LORA.alpha, help="LoRA alpha (default: %(default)s)"
    )
    dpo.add_argument("--seed", type=int, default=0)
    dpo.add_argument(
        "--output",
        type=Path,
        default=Path("runs/dpo"),
        help="where metrics.json and rewards.png go",
    )


SWEEPS = ("rank", "alpha", "prompt", "dropout", "learning-rate", "targets")


def add_ablate_command(subcommands) -> None:
    """`peft-course ablate`: the rank, alpha and prompt-template tables,
    or a sweep of any other setting.

    Args:
        subcommands (argparse._SubParsersAction): the `add_subparsers()` action of the
            `peft-course` parser.
    """
    ablate = subcommands.add_parser(
        "ablate",
        help="rank / alpha / prompt-template ablation tables (or any other hyper-parameter)",
        description=(
            "Fine-tune through the language-model head (prompt + label word, LM loss on the label "
            "word) once per value, score by verbalizer and by strict match of greedy generation, "
            "and write the table (Markdown + CSV) and every cell's validation-loss curve (PNG). "
            "Finished cells are reused on a rerun."
        ),
    )
    ablate.add_argument(
        "sweep",
        choices=SWEEPS,
        help="the table: rank (alpha = 4r, + full fine-tuning), alpha "
        "(r=16, + full), prompt (the five templates at r=128), or dropout/learning-rate/targets",
    )
    ablate.add_argument(
        "--values",
        nargs="+",
        metavar="V",
        help="replace the grid: ranks, alphas, template names, dropouts, learning rates, or "
        "comma-separated module lists (targets: c_attn c_attn,c_fc)",
    )
    add_model_argument(ablate)
    add_data_arguments(ablate, "synthetic-sentiment")
    ablate.add_argument(
        "--data-seed",
        dest="seed",
        type=int,
        default=0,
        help="seed of the data subsample and split; fixed across --seeds",
    )
    ablate.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=[0],
        help="training seeds; each cell runs once per seed and reports mean ± std",
    )
    ablate.add_argument(
        "--quick",
        action="store_true",
        help=(
            f"{ABLATION.quick_examples} examples a split and {ABLATION.quick_epochs} epochs: about "
            "a CPU minute a sweep on the embedded default"
        ),
    )
    ablate.add_argument(
        "--output",
        type=Path,
        default=Path("runs/ablation"),
        help="where the tables, plots and cells/ go (default: %(default)s)",
    )
    ablate.add_argument("--fresh", action="store_true", help="retrain cells that already finished")
    ablate.add_argument("--no-progress", action="store_true", help="hide progress bars")
    group = ablate.add_argument_group("every cell")
    group.add_argument(
        "--epochs",
        type=int,
        help=f"default {ABLATION.epochs} ({ABLATION.quick_epochs} with --quick)",
    )
    group.add_argument(
        "--batch-size", type=int, default=ABLATION.batch_size, help="default: %(default)s"
    )
    group.add_argument(
        "--learning-rate",
        type=float,
        help=f"LoRA cells (default: {ABLATION.lora_learning_rate:g}, measured for tiny-gpt2)",
    )
    group.add_argument(
        "--full-learning-rate",
        type=float,
        help=f"the full fine-tuning row (default: {ABLATION.full_learning_rate:g})",
    )
    group.add_argument("--no-full", action="store_true", help="leave out the full fine-tuning row")
    group.add_argument(
        "--r",
        type=int,
        help=f"rank where the sweep does not set it (default {ABLATION.r}; "
        f"{ABLATION.prompt_r} for prompt)",
    )
    group.add_argument(
        "--alpha",
        type=float,
        help=f"alpha where the sweep does not set it (default {ABLATION.alpha_ratio:g}r)",
    )
    group.add_argument(
        "--alpha-ratio",
        type=float,
        default=ABLATION.alpha_ratio,
        help="rank sweep: alpha = ratio * r (default: %(default)s)",
    )
    group.add_argument(
        "--dropout",
        type=float,
        default=ABLATION.dropout,
        help="LoRA dropout; the model's dropout for full (default: %(default)s)",
    )
    group.add_argument(
        "--targets", nargs="+", help="LoRA target modules (default: peft's, c_attn for GPT-2)"
    )
    group.add_argument(
        "--template", default="default", help="prompt template where the sweep does not set it"
    )
    group.add_argument(
        "--max-length",
        type=int,
        default=TRAINING.max_length,
        help="prompt + text + label word, in tokens (default: %(default)s)",
    )
    group.add_argument(
        "--cue", default="\\nSentiment:", help="answer cue after the text (default: %(default)s)"
    )
    group.add_argument(
        "--label-words", nargs="+", help="one per label (default: ' ' + each label name)"
    )
    group.add_argument("--device", help="cpu, cuda, ... (default: cuda if present)")


def add_info_command(subcommands) -> None:
    """`peft-course info`: versions, devices, and which models are ready.

    Args:
        subcommands (argparse._SubParsersAction): the `add_subparsers()` action of the
            `peft-course` parser.
    """
    subcommands.add_parser(
        "info", help="library versions, CUDA, 4-bit support, and whether smollm2-135m is installed"
    )


def add_demo_command(subcommands) -> None:
    """`peft-course demo`: the untrained baseline and every method, then the ablation tables.

    Args:
        subcommands (argparse._SubParsersAction): the `add_subparsers()` action of the
            `peft-course` parser.
    """
    demo = subcommands.add_parser(
        "demo",
        help="untrained vs fine-tuned: the results table on the embedded default",
        description="Evaluate the untrained model, fine-tune with each method, print a table.",
    )
    add_model_argument(demo)
    add_data_arguments(demo, "synthetic-sentiment")
    demo.add_argument(
        "--max-length",
        type=int,
        default=TRAINING.max_length,
        help="truncate texts to this many tokens (default: %(default)s)",
    )
    demo.add_argument("--seed", type=int, default=TRAINING.seed)
    demo.add_argument(
        "--output", type=Path, default=Path("runs/demo"), help="where the table is saved"
    )
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.add_argument(
        "--no-real-model",
        action="store_true",
        help="leave out the last table (smollm2-135m prompted on generated reviews)",
    )
    demo.add_argument(
        "--no-tuning",
        action="store_true",
        help="leave out the instruction, entailment and six-class table (about 90 s)",
    )


def add_finetune_command(subcommands) -> None:
    """`peft-course finetune`: one method on one dataset, saved as a run directory.

    Args:
        subcommands (argparse._SubParsersAction): the `add_subparsers()` action of the
            `peft-course` parser.
    """
    finetune = subcommands.add_parser(
        "finetune",
        help="fine-tune one method on one dataset and save the run",
        description=(
            "Train with one method; write metrics.json, the history, plots and a results row."
        ),
    )
    finetune.add_argument("--method", required=True, choices=list(METHOD_OPTIONS))
    add_model_argument(finetune)
    add_data_arguments(finetune, "synthetic-sentiment")
    add_training_arguments(finetune)
    finetune.add_argument(
        "--output", type=Path, help="run directory (default: runs/<method>-<dataset>)"
    )
    finetune.add_argument(
        "--overwrite", action="store_true", help="replace a finished run in --output"
    )
    finetune.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from its checkpoint"
    )
    finetune.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_predict_command(subcommands) -> None:
    """`peft-course predict`: classify texts with a saved run.

    Args:
        subcommands (argparse._SubParsersAction): the `add_subparsers()` action of the
            `peft-course` parser.
    """
    predict = subcommands.add_parser(
        "predict",
        help="classify texts with a saved run",
        description="Reload a run directory and classify each text.",
    )
    predict.add_argument(
        "--run", required=True, type=Path, help="a directory written by `peft-course finetune`"
    )
    predict.add_argument("texts", nargs="+", help="texts to classify")


SUBCOMMANDS = (
    add_info_command,
    add_demo_command,
    add_finetune_command,
    add_predict_command,
    add_count_command,
    add_lora_command,
    add_gpt2_command,
    add_instruct_command,
    add_prompt_command,
    add_dpo_command,
    add_ablate_command,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with `--help` on every subcommand; `peft_course.commands` runs them."""
    parser = argparse.ArgumentParser(
        prog="peft-course", description="Parameter-efficient fine-tuning and alignment on GPT-2."
    )
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subcommands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the subcommand; a user's mistake prints one line and returns 2.

    Only `CourseError` is a user's mistake; any other exception is a bug and keeps its
    traceback. Ctrl-C prints one line saying how to continue and returns 130, as shells do.

    Args:
        argv: the command-line arguments; None reads `sys.argv`.

    Returns:
        The exit status: 0, 2 after a `CourseError`, 130 after Ctrl-C.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    from peft_course import (
        commands,
    )  # here, after parsing: `--help` and usage errors import no torch

    try:
        commands.check_arguments(args, parser)
        getattr(commands, f"command_{args.command}")(args)
    except CourseError as error:
        print(f"peft-course {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"peft-course {args.command}: {commands.interrupted_message(args)}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
