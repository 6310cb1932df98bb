"""The course's default settings, each written once.

Every default a chapter trains or decodes with lives here and nowhere else: the modules that
use a setting (their dataclasses' defaults, the demo's rows) and the
`peft-course` command's `--help` both read it from here. The module imports nothing heavy, so
`peft-course --help` shows the real defaults without importing torch.

A fine-tuning method's own defaults (its learning rate, its demo epochs) are in its entry of
`peft_course.registry`, the one place a method is declared. The learning rates were measured on
the embedded tiny-gpt2 (docs/ablation.md, docs/demo.md); another model usually wants others,
which is why every command takes `--learning-rate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_MODEL = "openai-community/gpt2"  # what a real user fine-tunes when no model is named
EMBEDDED_MODEL = "tiny-gpt2"  # built in-process, no download: the default of every command
DEFAULT_DATASET = "synthetic-sentiment"  # generated in-process: the default of every command
# what the counting chapter applies (`peft-course count --method`), and to which architectures
COUNTED_METHODS = ("bitfit", "adapter", "lora")
COUNTED_MODELS = ("gpt2-small", "mlp")
# the tables `peft-course ablate` makes (`peft_course.ablation.named_sweep`)
SWEEPS = ("rank", "alpha", "prompt", "dropout", "learning-rate", "targets")
ANSWER_CUE = "\nSentiment:"  # what follows the text when a causal LM answers with a label word


@dataclass(frozen=True)
class LoraSettings:
    """LoRA's hyper-parameters where a chapter does not sweep them
    (the update is scaled by alpha/r).

    Attributes:
        r: the rank of the update.
        alpha: the update's scale is alpha/r.
        dropout: dropout on the LoRA path (0: none).
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0


@dataclass(frozen=True)
class TrainingSettings:
    """The fine-tuning loop of `peft_course.training` (`peft-course finetune`).

    Attributes:
        epochs: passes over the training split.
        batch_size: rows a step.
        learning_rate: AdamW's learning rate where no method or chapter sets one.
        weight_decay: AdamW's weight decay.
        max_length: tokens a text keeps.
        seed: the training seed.
        log_every: steps between reads of the loss (each read waits for a GPU to finish).
        max_tokens_per_batch: the padded tokens of the most a forward pass takes; a batch with
            more runs in pieces of rows of similar length (the same gradient, less padding). It
            suits a CPU, where compute grows with the padded tokens; a GPU takes more at once.
    """

    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 5e-4
    weight_decay: float = 0.0
    max_length: int = 256
    seed: int = 0
    log_every: int = 10
    max_tokens_per_batch: int = 2048


@dataclass(frozen=True)
class AblationSettings:
    """The ablation tables (`peft_course.ablation`):
    LoRA and full fine-tuning through the LM head.

    Attributes:
        lora_learning_rate: the learning rate of the LoRA cells (5e-3 collapsed r=128 and r=196
            on tiny-gpt2).
        full_learning_rate: the learning rate of the full fine-tuning row.
        epochs: passes over the training split.
        batch_size: rows a step.
        r: the rank where a sweep does not set it.
        prompt_r: the rank of the prompt table (the seed project ran it at r=128).
        alpha_ratio: alpha is `alpha_ratio * r` unless set (alpha = 4r).
        dropout: dropout on the LoRA path.
        quick_examples: with `--quick`, the rows a split keeps.
        quick_epochs: with `--quick`, the epochs.
    """

    lora_learning_rate: float = 2e-3
    full_learning_rate: float = 1e-3
    epochs: int = 3
    batch_size: int = 16
    r: int = 16
    prompt_r: int = 128
    alpha_ratio: float = 4.0
    dropout: float = 0.05
    quick_examples: int = 400
    quick_epochs: int = 3


@dataclass(frozen=True)
class DPOSettings:
    """Direct Preference Optimization (`peft_course.dpo`), LoRA on tiny-gpt2 by default.

    Attributes:
        beta: the weight of the KL penalty.
        learning_rate: suits LoRA on tiny-gpt2; full fine-tuning wants about 1e-3.
        epochs: passes over the training pairs.
        batch_size: pairs a step.
        n_train: generated training pairs.
        n_test: generated held-out pairs.
        test_fraction: the share of a training file's pairs held out as the test split.
    """

    beta: float = 0.1
    learning_rate: float = 1e-2
    epochs: int = 2
    batch_size: int = 16
    n_train: int = 256
    n_test: int = 64
    test_fraction: float = 0.2


@dataclass(frozen=True)
class PreferenceSettings:
    """The preference losses' parameters beside beta (`peft_course.preference.LossSettings`,
    `peft-course align`).

    Attributes:
        gamma: SimPO's target reward margin.
        label_smoothing: robust DPO's probability that a label is flipped.
        orpo_lambda: ORPO's weight of the odds-ratio term (the paper's 0.1 left the held-out
            reward accuracy at 0 in the chapter's 8 steps: docs/images/preference/orpo-lambda.md).
    """

    gamma: float = 0.5
    label_smoothing: float = 0.1
    orpo_lambda: float = 2.0


@dataclass(frozen=True)
class PromptingSettings:
    """Decoding for the prompting chapter (`peft_course.prompting`).

    Attributes:
        n_problems: how many problems (generated, or the first N of a file).
        shots: k, the solved examples of the few-shot strategies.
        max_new_tokens: the most tokens a completion gets.
        temperature: the sampling temperature (when sampling instead of greedy decoding).
        top_p: the nucleus of top-p sampling (when sampling instead of greedy decoding).
    """

    n_problems: int = 27
    shots: int = 2
    max_new_tokens: int = 96
    temperature: float = 0.7
    top_p: float = 0.95


@dataclass(frozen=True)
class DecodingSettings:
    """Decoding by hand in the GPT-2 chapter (`peft_course.gpt2`, `peft-course gpt2`).

    Attributes:
        prompt: the text to continue.
        max_new_tokens: the most tokens a continuation gets.
        temperature: the temperature of temperature sampling.
        top_k: the k of top-k sampling.
        top_p: the nucleus of top-p sampling.
    """

    prompt: str = "Review: the acting was"
    max_new_tokens: int = 20
    temperature: float = 1.0
    top_k: int = 5
    top_p: float = 0.8


@dataclass(frozen=True)
class InstructSettings:
    """Instruction tuning (`peft_course.instruct`, `peft-course instruct`)
    on the generated tasks.

    Attributes:
        learning_rates: the learning rate of each method, `lora` and `full`.
        epochs: passes over the training split.
        batch_size: rows a step.
        r: the LoRA rank.
        alpha: LoRA's alpha.
        targets: the modules LoRA adapts; None: every projection of the model (LM head aside).
        max_length: tokens a training example keeps.
        max_new_tokens: the most tokens an answer gets.
        n_train: generated training examples.
        n_validation: generated validation examples.
        n_test: generated test examples.
    """

    learning_rates: dict[str, float] = field(default_factory=lambda: {"lora": 5e-3, "full": 3e-3})
    epochs: int = 15
    batch_size: int = 16
    r: int = 16
    alpha: float = 32.0
    targets: tuple[str, ...] | None = None
    max_length: int = 128
    max_new_tokens: int = 12
    n_train: int = 2000
    n_validation: int = 100
    n_test: int = 200


# what `peft-course compare` trains side by side (`peft_course.compare`), in its table's order
COMPARED_METHODS = (
    "head",
    "bitfit",
    "ln-tuning",
    "ia3",
    "houlsby",
    "pfeiffer",
    "prompt-tuning",
    "prefix-tuning",
    "p-tuning",
    "lora",
    "rslora",
    "dora",
    "pissa",
    "vera",
    "adalora",
    "lora-plus",
    "full",
)


@dataclass(frozen=True)
class CompareSettings:
    """The PEFT family side by side at matched budgets (`peft_course.compare`).

    Attributes:
        budgets: the targets, as shares of the model's parameters (0.001 is 0.1%).
        tolerance: a size knob reaches a budget when its count is within this factor of it.
        seeds: the training seeds of every cell (mean ± std).
        rate_factors: the learning-rate search tries the method's registry rate times each.
        search_examples: training rows of the learning-rate search (validation: the whole split).
        general_texts: held-out pretraining-style documents the forgetting figure is measured on.
        general_seed: the seed those documents are generated with; tiny-gpt2 seed k was
            pretrained on seed k's, so it must be none of `seeds`.
        quick_examples: with `--quick`, the rows a split keeps (the search uses them all).
        quick_epochs: with `--quick`, the most epochs a method trains.
        docs_examples: the rows a split keeps in the docs' comparison (`python -m
            peft_course.compare`: 140 runs, about 6 minutes on one CPU thread).
    """

    budgets: tuple[float, ...] = (0.001, 0.01, 0.1)
    tolerance: float = 1.5
    seeds: tuple[int, ...] = (0, 1, 2)
    rate_factors: tuple[float, ...] = (1 / 3, 1.0, 3.0)
    search_examples: int = 500
    general_texts: int = 64
    general_seed: int = 100
    quick_examples: int = 200
    quick_epochs: int = 2
    docs_examples: int = 400


@dataclass(frozen=True)
class GRPOSettings:
    """Online RL on the instruction chapter's generated tasks (`peft_course.online_rl`,
    `peft-course align --grpo`).

    Attributes:
        tasks: the generated tasks trained on; the start answers them above 0 but far from 1.
        start_tasks: the tasks the instruction-tuned start is trained on; None: all five, as
            the instruction chapter's model is.
        start_examples: generated examples (of all five tasks, before `start_tasks` picks) of
            the start's training split.
        start_epochs: its epochs of full fine-tuning (learning rate 3e-3, the chapter's).
        n_test: generated held-out examples (those of `tasks` among them are scored).
        steps: GRPO optimizer steps.
        learning_rate: the policy's learning rate (full fine-tuning).
        beta: the weight of the KL term to the start.
        num_generations: completions sampled per prompt (the group).
        prompts_per_step: prompts a step; each brings `num_generations` completions.
        max_completion_length: the most tokens a completion gets.
        temperature: the sampling temperature of training and of the held-out reward.
        samples: completions sampled per held-out prompt for the held-out mean reward.
    """

    tasks: tuple[str, ...] = ("sentiment", "nth word", "reverse")
    start_tasks: tuple[str, ...] | None = None
    start_examples: int = 2000
    start_epochs: int = 4
    n_test: int = 200
    steps: int = 100
    learning_rate: float = 3e-4
    beta: float = 0.04
    num_generations: int = 4
    prompts_per_step: int = 8
    max_completion_length: int = 8
    temperature: float = 1.0
    samples: int = 4


LORA = LoraSettings()
GRPO = GRPOSettings()
TRAINING = TrainingSettings()
ABLATION = AblationSettings()
DPO = DPOSettings()
PREFERENCE = PreferenceSettings()
PROMPTING = PromptingSettings()
DECODING = DecodingSettings()
INSTRUCT = InstructSettings()
COMPARE = CompareSettings()
