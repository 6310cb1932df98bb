"""The options of each `peft-course` subcommand that are not a chapter's config, declared once.

Each subcommand's own options (its model, its output directory, what it prints) are the fields
of one dataclass here, with their help and their check; the configs it builds
(`peft_course.configs`) bring the rest. `peft_course.cli` generates the parser from both. The
class docstring's first line is the subcommand's one-line help, the rest its description.
Like `configs`, the module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from peft_course.configs import output_option, seed_option
from peft_course.errors import CourseError
from peft_course.options import (
    at_least,
    check_options,
    documented,
    distinct_strings,
    interval,
    non_negative_int,
    option,
    positive_int,
    positive_number,
)
from peft_course.registry import METHODS
from peft_course.settings import (
    ABLATION,
    COMPARE,
    COMPARED_METHODS,
    COUNTED_METHODS,
    COUNTED_MODELS,
    DECODING,
    DEFAULT_MODEL,
    DPO,
    EMBEDDED_MODEL,
    GRPO,
    INSTRUCT,
    LORA,
    PREFERENCE,
    PROMPTING,
    SWEEPS,
    TRAINING,
)

MAX_LENGTH_HELP = "tokens a text keeps (at most the model's context)"


def model_option(help: str = "") -> object:
    """`model`: the embedded tiny-gpt2, a local checkpoint directory or a hub id."""
    return option(
        EMBEDDED_MODEL,
        help=help
        or f"tiny-gpt2 (embedded), a local checkpoint directory, or a hub id such as "
        f"{DEFAULT_MODEL}",
    )


def checked(cls: type) -> type:
    """`cls` as a dataclass whose fields are checked when built and documented by their help."""
    cls.__post_init__ = check_options
    return documented(dataclass(cls))


@checked
class Info:
    """library versions, CUDA, 4-bit support, and whether smollm2-135m is installed"""


@checked
class Demo:
    """untrained vs fine-tuned: the results table on the embedded default

    Evaluate the untrained model, fine-tune with each method, print a table; then the quick
    ablation tables, the tuning table and the real model's.
    """

    model: str = model_option()
    max_length: int = option(TRAINING.max_length, help=MAX_LENGTH_HELP, check=at_least(2))
    seed: int = seed_option()
    output: Path = output_option("runs/demo", "where the tables are saved")
    progress: bool = option(True, help="show progress bars")
    real_model: bool = option(True, help="the last table: smollm2-135m prompted on reviews")
    tuning: bool = option(True, help="the instruction, entailment and six-class table (90 s)")


def learning_rates() -> str:
    """Each method's default learning rate, for `--help`."""
    return ", ".join(f"{name} {method.learning_rate:g}" for name, method in METHODS.items())


@checked
class Finetune:
    """fine-tune one method on one dataset and save the run

    Train with one method; write metrics.json, the history, plots and a results row.
    """

    method: str = option(help="what trains (docs: Fine-tuning)", choices=lambda: tuple(METHODS))
    model: str = model_option()
    max_length: int = option(TRAINING.max_length, help=MAX_LENGTH_HELP, check=at_least(2))
    learning_rate: float | None = option(
        None, help=lambda: f"default: the method's ({learning_rates()})", check=positive_number
    )
    output: Path | None = output_option(None, "run directory (default: runs/<method>-<dataset>)")
    overwrite: bool = option(False, help="replace a finished run in --output")
    resume: bool = option(False, help="continue an interrupted run from its checkpoint")
    log_dir: Path | None = option(
        None, help="where TensorBoard's event files go (default: the run directory)"
    )


@checked
class Predict:
    """classify texts with a saved run

    Reload a run directory and classify each text.
    """

    run: Path = option(help="a directory written by `peft-course finetune`")
    texts: tuple[str, ...] = option(help="texts to classify", positional=True)


@checked
class Export:
    """write a saved run as a checkpoint transformers and peft load, with a model card

    Write a fine-tuning run as a transformers checkpoint (config with the labels, tokenizer,
    safetensors) with a README.md model card: with --merged the adapters folded into the
    weights, so `transformers.pipeline("text-classification", model=OUT)` loads it; without,
    a peft adapter directory on the run's base model.
    """

    run: Path = option(help="a directory written by `peft-course finetune`", positional=True)
    output: Path = option(help="the directory to write", positional=True)
    merged: bool = option(
        False, help="fold the adapters into the weights: a plain transformers checkpoint"
    )


@checked
class Count:
    """trainable parameters of bitfit/adapter/lora, per module type, checked against a formula

    Apply a method to GPT-2 small (random weights, nothing downloaded) or to the course's
    1024-512-...-2-1 network, and print its trainable parameters per module type next to the
    closed-form formula's answer. With --family, print every fine-tuning method's formula and
    count on GPT-2 small and SmolLM2-135M instead.
    """

    method: str | None = option(None, help="what trains (or --family)", choices=COUNTED_METHODS)
    model: str = option("gpt2-small", help="the architecture", choices=COUNTED_MODELS)
    r: int = option(LORA.r, help="adapter bottleneck / LoRA rank", check=positive_int)
    targets: tuple[str, ...] | None = option(
        None,
        help="module names or suffixes (GPT-2: c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj; mlp: "
        "fc1 ... fc10). Default: c_attn (lora), attn.c_proj mlp.c_proj (adapter), every layer "
        "(lora on mlp) or every hidden layer (adapter on mlp)",
        metavar="MODULE",
    )
    labels: int = option(2, help="classes of GPT-2's classification head", check=positive_int)
    family: bool = option(
        False,
        help="every method of `finetune --method`: its formula and count on GPT-2 small and "
        "SmolLM2-135M (2 labels, default options)",
    )


@checked
class Lora:
    """LoRA from scratch: check it equals peft, then train both and compare

    Compare the course's LoRA layer with peft's (logits, merged logits, gradients), then
    fine-tune tiny-gpt2 with each on synthetic-sentiment.
    """

    model: str = model_option()
    output: Path = output_option("runs/lora", "where the tables are saved")


@checked
class Sampling:
    """How a continuation is decoded (the GPT-2 chapter by hand, the prompting chapter by
    transformers)."""

    max_new_tokens: int = option(
        DECODING.max_new_tokens, help="the most tokens a continuation gets", check=positive_int
    )
    temperature: float = option(
        DECODING.temperature, help="divides the logits before sampling", check=positive_number
    )
    top_k: int = option(
        DECODING.top_k, help="top-k: sample among the k likeliest", check=positive_int
    )
    top_p: float = option(
        DECODING.top_p,
        help="top-p: sample within this much probability",
        check=interval(0, 1, True),
    )


@checked
class Gpt2:
    """GPT-2 written from scratch: equal to transformers, LoRA counts, four decoding strategies

    Load a GPT-2 checkpoint into the course's own GPT-2, compare its logits with transformers',
    count what built-in LoRA trains, and continue a prompt with greedy, temperature, top-k and
    top-p decoding (KV cache on).
    """

    model: str = model_option()
    prompt: str = option(DECODING.prompt, help="text to continue")
    strategy: tuple[str, ...] = option(
        ("greedy", "temperature", "top-k", "top-p"),
        help="greedy, temperature, top-k, top-p (default: all four)",
        metavar="NAME",
        check=distinct_strings,
    )
    seed: int = seed_option(help="seeds each sampled continuation")
    check: bool = option(True, help="compare with transformers first")


@checked
class Instruct:
    """instruction tuning (loss on the response only), exact match before and after

    Answer the test instructions, train on the responses (LoRA or full), answer again; print
    exact match per task and a few answers before and after.
    """

    data: str = option(
        "generated",
        help="'generated' (five checkable tasks), 'dolly' (the hub) or a local CSV/JSONL/Parquet",
    )
    method: str = option("lora", help="what trains", choices=("lora", "full"))
    model: str = model_option()
    instruction_column: str = option("instruction", help="column of the instruction")
    context_column: str = option("context", help="column of the context (may be empty)")
    response_column: str = option("response", help="column of the response")
    max_examples: int | None = option(
        None, help="keep at most this many examples per split", check=positive_int
    )
    learning_rate: float | None = option(
        None,
        help=f"default: {', '.join(f'{m} {r:g}' for m, r in INSTRUCT.learning_rates.items())}",
        check=positive_number,
    )
    max_length: int = option(INSTRUCT.max_length, help=MAX_LENGTH_HELP, check=at_least(2))
    train_embeddings: bool = option(
        False, help="LoRA also trains the token embedding (tied to the LM head)"
    )
    output: Path = output_option("runs/instruct", "where the tables are saved")


@checked
class Prompt:
    """zero-/few-shot and chain-of-thought prompting on arithmetic word problems

    Prompt a causal LM with each strategy, extract the numbers it answers, and print the
    accuracy per strategy. No weights change.
    """

    strategy: tuple[str, ...] | None = option(
        None,
        help="zero-shot, few-shot, cot, zero-shot-cot, few-shot-cot "
        "(default: zero-shot few-shot cot zero-shot-cot)",
        metavar="NAME",
    )
    model: str = model_option()
    problems: str = option(
        "generated", help="'generated' (word problems solved by sympy) or a GSM8K-format JSONL"
    )
    n_problems: int = option(
        PROMPTING.n_problems,
        help="how many problems (generated, or the first N of the file)",
        check=positive_int,
    )
    shots: int = option(
        PROMPTING.shots,
        help="k, the solved examples of few-shot strategies",
        check=non_negative_int,
    )
    examples: str | None = option(
        None, help="GSM8K-format JSONL of solved examples (default: generated ones)"
    )
    sample: bool = option(False, help="sample instead of greedy decoding")
    chat: bool = option(
        False, help="wrap each prompt in the model's chat template (instruct models)"
    )
    seed: int = seed_option()
    output: Path = output_option("runs/prompt", "where completions.jsonl and results.md go")


@checked
class Dpo:
    """Direct Preference Optimization with TRL on preference pairs

    Train a causal LM with DPO (trl.DPOTrainer) on generated film pairs or a JSONL file of
    prompt/chosen/rejected pairs; print held-out preference accuracy and margin before and
    after; save the logged rewards (metrics.json) and their plot (rewards.png).
    """

    model: str = model_option()
    train_file: str | None = option(
        None, help="JSONL of {prompt, chosen, rejected} pairs (default: generated film pairs)"
    )
    test_fraction: float = option(
        DPO.test_fraction, help="pairs of --train-file held out", check=interval(0, 1, True, True)
    )
    prefer: str = option(
        "positive",
        help="generated pairs: the sentiment of the chosen completion",
        choices=("positive", "negative"),
    )
    n_train: int = option(DPO.n_train, help="generated training pairs", check=positive_int)
    n_test: int = option(DPO.n_test, help="generated held-out pairs", check=positive_int)
    output: Path = output_option("runs/dpo", "where metrics.json and rewards.png go")


# `peft-course align --loss`: the losses of peft_course.preference.LOSSES (which imports torch;
# tests/test_preference.py checks that the two lists agree)
ALIGN_LOSSES = ("dpo", "ipo", "hinge", "robust", "simpo", "orpo", "kto", "apo-zero")


def align_loss(name: str, value: object) -> str:
    """One of `ALIGN_LOSSES`, or a `CourseError` that lists them."""
    if value not in ALIGN_LOSSES:
        raise CourseError(
            f"{name}: unknown preference loss {value!r}; choose one of {', '.join(ALIGN_LOSSES)}"
        )
    return value


# `peft-course align --grpo-reward`: the rewards of peft_course.online_rl.REWARDS (which
# imports torch; tests/test_online_rl.py checks that the two lists agree)
GRPO_REWARDS = ("exact", "format")


def grpo_reward(name: str, value: object) -> str:
    """One of `GRPO_REWARDS`, or a `CourseError` that lists them."""
    if value not in GRPO_REWARDS:
        raise CourseError(
            f"{name}: unknown GRPO reward {value!r}; choose one of {', '.join(GRPO_REWARDS)}"
        )
    return value


@checked
class Align(Dpo):
    """DPO and its relatives (IPO, hinge, robust, SimPO, ORPO, KTO, APO-zero) with TRL

    Train a causal LM with one preference loss through its TRL trainer (DPOTrainer's loss types,
    CPOTrainer for SimPO, ORPOTrainer, KTOTrainer) on generated film pairs or a JSONL file of
    prompt/chosen/rejected pairs; print held-out reward accuracy (by the loss's own reward and by
    DPO's log-ratio), margins, the mean response length and the KL to the reference on sampled
    completions before and after; save metrics.json and rewards.png. With --reward-model, train
    a reward model (trl.RewardTrainer) and DPO beside it instead, and print both held-out
    accuracies. With --grpo, online RL on a checkable reward instead (trl.GRPOTrainer).
    """

    loss: str = option("dpo", help=f"the loss: {', '.join(ALIGN_LOSSES)}", check=align_loss)
    gamma: float = option(
        PREFERENCE.gamma, help="SimPO's target reward margin", check=interval(0, None)
    )
    label_smoothing: float = option(
        PREFERENCE.label_smoothing,
        help="robust: the probability that a pair's label is flipped",
        check=interval(0, 0.5, high_open=True),
    )
    orpo_lambda: float = option(
        PREFERENCE.orpo_lambda,
        help="ORPO: the weight of the odds-ratio term (ORPO ignores --beta)",
        check=positive_number,
    )
    reward_model: bool = option(
        False,
        help="train a reward model instead (trl.RewardTrainer: a scalar head on the base, with "
        "LoRA) and DPO beside it on the same pairs; print both held-out accuracies",
    )
    grpo: bool = option(
        False,
        help="online RL instead: GRPO (trl.GRPOTrainer) from an instruction-tuned tiny-gpt2 on "
        "the generated tasks, rewarded by exact match of the computed answer (--grpo-reward); "
        "print exact match and mean reward before and after (the pair options do not apply)",
    )
    grpo_reward: str = option(
        "exact",
        help="--grpo: exact (the computed answer) or format (the answer's shape only: gameable)",
        check=grpo_reward,
    )
    grpo_steps: int = option(GRPO.steps, help="--grpo: optimizer steps", check=positive_int)
    output: Path = output_option("runs/align", "where metrics.json and rewards.png go")


def distinct_seeds(name: str, seeds: tuple[int, ...]) -> None:
    """Training seeds: whole numbers of at least 0, none twice."""
    for seed in seeds:
        non_negative_int(name, seed)
    distinct_strings(name, [str(seed) for seed in seeds])


@checked
class Ablate:
    """rank / alpha / prompt-template ablation tables (or any other hyper-parameter)

    Fine-tune through the language-model head (prompt + label word, LM loss on the label word)
    once per value, score by verbalizer and by strict match of greedy generation, and write the
    table (Markdown + CSV) and every cell's validation-loss curve (PNG). Finished cells are
    reused on a rerun.
    """

    sweep: str = option(
        help="the table: rank (alpha = 4r, + full fine-tuning), alpha (r=16, + full), prompt "
        "(the five templates at r=128), or dropout/learning-rate/targets",
        choices=SWEEPS,
        positional=True,
    )
    values: tuple[str, ...] | None = option(
        None,
        help="replace the grid: ranks, alphas, template names, dropouts, learning rates, or "
        "comma-separated module lists (targets: c_attn c_attn,c_fc)",
        metavar="V",
    )
    model: str = model_option()
    seed: int = option(
        0,
        help="seed of the data subsample and split; fixed across --seeds",
        check=non_negative_int,
        flag="--data-seed",
    )
    seeds: tuple[int, ...] = option(
        (0,), help="training seeds; each cell runs once per seed (mean ± std)", check=distinct_seeds
    )
    quick: bool = option(
        False,
        help=f"{ABLATION.quick_examples} examples a split and {ABLATION.quick_epochs} epochs: "
        "about a CPU minute a sweep on the embedded default",
    )
    output: Path = output_option("runs/ablation", "where the tables, plots and cells/ go")
    fresh: bool = option(False, help="retrain cells that already finished")
    epochs: int | None = option(
        None,
        help=f"default {ABLATION.epochs} ({ABLATION.quick_epochs} with --quick)",
        check=positive_int,
    )
    learning_rate: float = option(
        ABLATION.lora_learning_rate,
        help="LoRA cells (measured for tiny-gpt2)",
        check=positive_number,
    )
    full_learning_rate: float = option(
        ABLATION.full_learning_rate, help="the full fine-tuning row", check=positive_number
    )
    full: bool = option(True, help="the full fine-tuning row")
    r: int | None = option(
        None,
        help=f"rank where the sweep does not set it (default {ABLATION.r}; {ABLATION.prompt_r} "
        "for prompt)",
        check=positive_int,
    )
    alpha: float | None = option(
        None,
        help=f"alpha where the sweep does not set it (default {ABLATION.alpha_ratio:g}r)",
        check=positive_number,
    )
    alpha_ratio: float = option(
        ABLATION.alpha_ratio, help="rank sweep: alpha = ratio * r", check=positive_number
    )
    dropout: float = option(
        ABLATION.dropout,
        help="LoRA dropout; the model's dropout for full",
        check=interval(0, 1, high_open=True),
    )
    targets: tuple[str, ...] | None = option(
        None, help="LoRA target modules (default: peft's, c_attn for GPT-2)"
    )
    template: str = option("default", help="prompt template where the sweep does not set it")


def compared_methods(name: str, methods: tuple[str, ...]) -> None:
    """Methods `peft-course compare` trains (`settings.COMPARED_METHODS`), none twice."""
    distinct_strings(name, methods)
    unknown = [m for m in methods if m not in COMPARED_METHODS]
    if unknown:
        raise CourseError(
            f"{name}: cannot compare {', '.join(unknown)}; choose from "
            f"{', '.join(COMPARED_METHODS)}"
        )


def budget_shares(name: str, shares: tuple[float, ...]) -> None:
    """Budgets as shares of the model's parameters: numbers in (0, 1], none twice."""
    for share in shares:
        interval(0, 1, low_open=True)(name, share)
    distinct_strings(name, [f"{share:g}" for share in shares])


@checked
class Compare:
    """the PEFT family side by side at matched budgets: accuracy, parameters, speed, forgetting

    Train every method at about 0.1%, 1% and 10% of the model's parameters (its rank, bottleneck
    or virtual tokens chosen for each budget, its learning rate by a small search on the
    validation split) under several seeds; write the table (test accuracy, trainable
    parameters, tokens/s, peak memory, forgetting), the budgets, the search and the plot of
    accuracy against trainable parameters with its Pareto front. Finished cells are reused.
    """

    methods: tuple[str, ...] = option(
        COMPARED_METHODS,
        help="the methods, in the table's order",
        metavar="METHOD",
        check=compared_methods,
    )
    budgets: tuple[float, ...] = option(
        COMPARE.budgets, help="shares of the model's parameters", check=budget_shares
    )
    model: str = model_option()
    max_length: int = option(TRAINING.max_length, help=MAX_LENGTH_HELP, check=at_least(2))
    seed: int = option(
        0,
        help="seed of the data subsample and split; fixed across --seeds",
        check=non_negative_int,
        flag="--data-seed",
    )
    seeds: tuple[int, ...] | None = option(
        None,
        help=f"training seeds; each cell runs once per seed (default: "
        f"{' '.join(map(str, COMPARE.seeds))}; {COMPARE.seeds[0]} with --quick)",
        check=distinct_seeds,
    )
    quick: bool = option(
        False,
        help=f"{COMPARE.quick_examples} examples a split, at most {COMPARE.quick_epochs} epochs "
        "and one seed: a few CPU minutes on the embedded default",
    )
    output: Path = output_option("runs/compare", "where the tables, the plot and cells/ go")
    fresh: bool = option(False, help="retrain cells that already finished")
    progress: bool = option(True, help="show progress bars")
