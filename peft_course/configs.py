"""The configs a run is built from, each option declared once: as a field, with its help and check.

The chapters take these dataclasses (`training.train` a `TrainConfig`, `dpo.train_dpo` a
`DPORunConfig`, `ablation.run_sweep` a `SweepSettings`), and the `peft-course` command makes
its options from the same fields (`peft_course.cli.add_options`), so an option, its
default (from `peft_course.settings`), its help and its range are written in one place. The
module imports no torch: `peft-course --help` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peft_course.errors import CourseError, describe
from peft_course.options import (
    at_least,
    check_options,
    documented,
    device_name,
    distinct_strings,
    interval,
    non_negative_int,
    option,
    positive_int,
    positive_number,
    shown_name,
)
from peft_course.settings import (
    ABLATION,
    ANSWER_CUE,
    DEFAULT_DATASET,
    DPO,
    EMBEDDED_MODEL,
    LORA,
    TRAINING,
)


def seed_option(default: int = TRAINING.seed, help: str = "seeds the run") -> Any:
    """`seed`: a whole number of at least 0, declared once for every config that has one."""
    return option(default, help=help, check=non_negative_int)


def device_option() -> Any:
    """`device`: cpu, cuda, cuda:1, ...; None picks CUDA when present, else the CPU."""
    return option(None, help="cpu, cuda, cuda:1, ... (default: cuda if present)", check=device_name)


def progress_option() -> Any:
    """`progress`: show progress bars (`--no-progress` hides them)."""
    return option(True, help="show progress bars")


@documented
@dataclass
class TrainConfig:
    """Hyper-parameters of the training loop (`peft_course.training.train`).

    `bf16=None` uses bf16 autocast where the GPU has it.
    """

    epochs: int = option(TRAINING.epochs, help="passes over the training split", check=positive_int)
    batch_size: int = option(
        TRAINING.batch_size, help="rows a step (on each process under torchrun)", check=positive_int
    )
    learning_rate: float = option(
        TRAINING.learning_rate, help="AdamW's learning rate", check=positive_number
    )
    weight_decay: float = option(
        TRAINING.weight_decay, help="AdamW's weight decay", check=interval(0, None)
    )
    max_grad_norm: float = option(
        1.0, help="clip each step's gradients to this total norm", check=positive_number
    )
    eval_every: int | None = option(
        None, help="validate every N steps (default: every epoch)", check=positive_int
    )
    group_by_length: bool = option(
        False,
        help="batch rows of similar length together (less padding; other batches than the default)",
    )
    max_tokens_per_batch: int | None = option(
        TRAINING.max_tokens_per_batch,
        help="run a batch of more padded tokens than N in pieces of similar length, at most N "
        "each (the same gradient with less padding and memory; raise it on a GPU)",
        check=positive_int,
    )
    log_every: int = option(
        TRAINING.log_every,
        help="steps between reads of the loss (each read waits for a GPU to finish)",
        check=positive_int,
        cli=False,
    )
    compile: bool = option(False, help="torch.compile the model's forward pass")
    fsdp: bool = option(
        False,
        help="under torchrun: shard parameters, gradients and optimizer state (full fine-tuning)",
    )
    seed: int = seed_option(help="seeds the run; each epoch's batch order depends on it alone")
    device: str | None = device_option()
    bf16: bool | None = option(None, help="bf16 autocast on or off (default: where the GPU has it)")
    progress: bool = progress_option()

    def __post_init__(self) -> None:
        """Check every field, so that a bad value fails before any work starts."""
        check_options(self)


@documented
@dataclass
class DataOptions:
    """Which classification data to load: a registered dataset or local files, and its columns."""

    dataset: str | None = option(
        None,
        help="a registered dataset (a name it does not know lists the known ones); default: "
        f"{DEFAULT_DATASET}, or with --train-file the file's own columns and labels",
    )
    train_file: str | None = option(
        None, help="local CSV/TSV/JSONL/Parquet training file (instead of the hub)"
    )
    validation_file: str | None = option(
        None, help="local validation file, with --train-file (default: 10%% of train)"
    )
    test_file: str | None = option(
        None, help="local test file, with --train-file (default: 10%% of train)"
    )
    text_column: str | None = option(None, help="column holding the text")
    text_pair_column: str | None = option(None, help="column holding the second text of a pair")
    label_column: str | None = option(None, help="column holding the label")
    label_names: tuple[str, ...] | None = option(
        None, help="label names, in label-id order", check=distinct_strings
    )
    max_examples: int | None = option(
        None, help="keep at most this many rows per split (seeded)", check=positive_int
    )

    def __post_init__(self) -> None:
        """Check the fields; local validation and test files need a local training file."""
        check_options(self)
        for name in ("validation_file", "test_file"):
            if getattr(self, name) is not None and self.train_file is None:
                given, train = shown_name(self, name), shown_name(self, "train_file")
                raise CourseError(
                    f"{given} needs {train}: local validation and test files go with a local "
                    f"training file (without one, {self.dataset} would be used and {given} ignored)"
                )


@documented
@dataclass
class TargetOptions:
    """Where a method goes: the modules it adapts (every method of the PEFT family has them)."""

    targets: tuple[str, ...] | None = option(
        None, help="module-name patterns to adapt (default: the method's, e.g. c_attn for GPT-2)"
    )

    def __post_init__(self) -> None:
        """Check every field before a model is loaded."""
        check_options(self)


@documented
@dataclass
class RankOptions(TargetOptions):
    """A low-rank method's rank (VeRA's random matrices; a bottleneck adapter's width)."""

    r: int = option(LORA.r, help="rank of the update (an adapter's bottleneck)", check=positive_int)


@documented
@dataclass
class LoraOptions(RankOptions):
    """LoRA's numbers and where it goes: what every LoRA method takes (`gpt2-scratch` alone)."""

    alpha: float = option(
        LORA.alpha, help="scale: the update is multiplied by alpha/r", check=positive_number
    )
    dropout: float = option(
        LORA.dropout, help="dropout on the LoRA path", check=interval(0, 1, high_open=True)
    )


@documented
@dataclass
class RsLoraOptions(LoraOptions):
    """LoRA that can scale by alpha/sqrt(r) (rank-stabilised LoRA)."""

    use_rslora: bool = option(
        False, help="scale by alpha/sqrt(r) instead of alpha/r", flag="--rslora"
    )


@documented
@dataclass
class PeftLoraOptions(RsLoraOptions):
    """peft's LoRA (`lora`, `merged`): also which biases train and which modules train in full."""

    bias: str = option(
        "none", help="which biases train (peft)", choices=("none", "all", "lora_only")
    )
    modules_to_save: tuple[str, ...] | None = option(
        None, help="extra modules trained in full (peft)"
    )


@documented
@dataclass
class ScratchLoraOptions(RsLoraOptions):
    """The course's own LoRA layer (`lora-scratch`): also what trains in full beside it."""

    trainable: tuple[str, ...] | None = option(
        None, help="parameters trained in full beside the adapters (default: the head)", cli=False
    )


@documented
@dataclass
class QLoraOptions(LoraOptions):
    """LoRA on a 4-bit model (`qlora`): also whether activations are recomputed."""

    gradient_checkpointing: bool = option(
        True, help="QLoRA: recompute activations in the backward pass (less memory, slower)"
    )


@documented
@dataclass
class AdaLoraOptions(LoraOptions):
    """AdaLoRA (`adalora`): every layer starts at rank r; the budget is pruned to target_r."""

    target_r: int = option(
        4, help="AdaLoRA: the average rank left after pruning", check=positive_int
    )


@documented
@dataclass
class LoraPlusOptions(LoraOptions):
    """LoRA+ (`lora-plus`): LoRA whose B learns faster than its A."""

    loraplus_ratio: float = option(
        16.0, help="LoRA+: B's learning rate over A's", check=positive_number
    )


@documented
@dataclass
class IA3Options(TargetOptions):
    """(IA)³ (`ia3`): the layers it scales, and those of them scaled at their input."""

    feedforward: tuple[str, ...] | None = option(
        None,
        help="(IA)³: targets scaled at their input (default: mlp.c_proj for GPT-2, down_proj for "
        "Llama)",
    )


@documented
@dataclass
class PromptOptions:
    """A soft prompt's length: what every soft-prompt method learns."""

    virtual_tokens: int = option(
        8, help="soft prompts: the virtual tokens learned", check=positive_int
    )

    def __post_init__(self) -> None:
        """Check every field before a model is loaded."""
        check_options(self)


@documented
@dataclass
class PromptTuningOptions(PromptOptions):
    """Prompt tuning (`prompt-tuning`): also how the virtual tokens start."""

    prompt_init: str = option(
        "vocab",
        help="prompt tuning: start from random vocabulary embeddings or from N(0, 1) vectors",
        choices=("vocab", "random"),
    )


@documented
@dataclass
class PromptEncoderOptions(PromptOptions):
    """P-tuning (`p-tuning`): also the width of the MLP that makes the virtual tokens."""

    encoder_hidden: int = option(
        128,
        help="P-tuning, prefix tuning with --prefix-projection: the MLP's hidden width",
        check=positive_int,
    )


@documented
@dataclass
class PrefixOptions(PromptEncoderOptions):
    """Prefix tuning (`prefix-tuning`): also whether an MLP makes the keys and values."""

    prefix_projection: bool = option(
        False, help="prefix tuning: make the keys and values with an MLP"
    )


def beta_check(name: str, value: Any) -> float:
    """DPO's beta: a positive, finite number (it weights the KL penalty)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0 < value < float("inf")
    ):
        raise CourseError(
            f"{name} must be a positive number (it weights the KL penalty), got {describe(value)}"
        )
    return float(value)


@documented
@dataclass
class DPORunConfig:
    """What a DPO run exposes (`peft_course.dpo.train_dpo`). `lora=False` trains every weight
    against a frozen copy; with `lora` the reference is the base with the adapters off."""

    beta: float = option(DPO.beta, help="weight of the KL penalty", check=beta_check)
    learning_rate: float = option(
        DPO.learning_rate,
        help="the optimizer's learning rate (suits LoRA on tiny-gpt2; try 1e-3 with --no-lora)",
        check=positive_number,
    )
    epochs: int = option(DPO.epochs, help="passes over the training pairs", check=positive_int)
    batch_size: int = option(DPO.batch_size, help="pairs a training step", check=positive_int)
    lora: bool = option(
        True, help="LoRA (reference = base with adapters off) or full (a frozen reference copy)"
    )
    r: int = option(LORA.r, help="LoRA rank", check=positive_int)
    alpha: float = option(
        LORA.alpha, help="LoRA alpha: the update is scaled by alpha/r", check=positive_number
    )
    seed: int = seed_option(help="seeds the model's initialisation and the training")
    logging_steps: int = option(2, help="training steps between logged metrics", check=positive_int)
    max_length: int = option(128, help="longest prompt + completion in tokens", check=at_least(2))
    progress: bool = progress_option()

    def __post_init__(self) -> None:
        """Check every field, so that a bad value fails before a model is loaded."""
        check_options(self)


@documented
@dataclass(frozen=True)
class SweepSettings:
    """What every cell of an ablation sweep shares (`peft_course.ablation.run_sweep`)."""

    model: str = option(EMBEDDED_MODEL, help="the causal LM every cell starts from", cli=False)
    epochs: int = option(ABLATION.epochs, help="training epochs of every cell", check=positive_int)
    batch_size: int = option(
        ABLATION.batch_size,
        help="training batch size (validation uses twice as many rows)",
        check=positive_int,
    )
    max_length: int = option(
        TRAINING.max_length, help="prompt + text + label word, in tokens", check=at_least(2)
    )
    cue: str = option(ANSWER_CUE, help="answer cue after the text (\\n for a newline)")
    label_words: tuple[str, ...] | None = option(
        None, help="one per label (default: ' ' + each label name)", check=distinct_strings
    )
    device: str | None = device_option()
    progress: bool = progress_option()

    def __post_init__(self) -> None:
        """Check every field before any cell trains."""
        check_options(self)


def output_option(default: str | None, help: str) -> Any:
    """`output`: the directory a command writes; declared once for every command."""
    return option(None if default is None else Path(default), help=help)
