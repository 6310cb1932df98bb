"""Fine-tuning a model for classification: choose what trains, train it, score it.

A *method* is a choice of which parameters train, plus an optional step after training:

* `head`: the classification head alone (GPT-2's `score`, hidden x num_labels, no bias);
* `lora`: low-rank adapters through `peft` (plus a trained copy of the head);
* `lora-scratch`: the same idea with the course's own LoRA layer (`peft_course.lora`);
* `merged`: `lora`, then `merge_and_unload()` - the adapters folded into the weights, so the
  evaluated model has no LoRA code at all and predicts what the unmerged model predicts;
* `full`: every parameter;
* `qlora`: `lora` on a model whose projections were quantized to 4-bit NF4 while loading
  (`peft_course.qlora`).

`finetune` loads the model, applies the method, trains with the shared loop of
`peft_course.training`, and reports the untrained baseline and the test scores of both the
best-validation checkpoint and the last iteration (the seed projects report both).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peft import LoraConfig, TaskType, get_peft_model
from torch import nn

from peft_course.counting import count_parameters
from peft_course.data import ClassificationData, tokenize
from peft_course.errors import (
    CourseError, check_int, check_number, check_positive_int, check_positive_number, check_string_list, describe,
)
from peft_course.models import check_max_length, load_model
from peft_course.qlora import QLORA_LEARNING_RATE, load_qlora_model, prepare_qlora
from peft_course.training import TrainConfig, TrainResult, evaluate, load_trainable_state, train


# --8<-- [start:head_only]
def head_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters outside the backbone: the task head added on top.

    Every transformers model keeps its backbone under `model.base_model_prefix`
    (`transformer` for GPT-2, `bert` for BERT); whatever lies outside it is the head.
    """
    prefix = getattr(model, "base_model_prefix", "") + "."
    names = [n for n, _ in model.named_parameters() if not n.startswith(prefix)]
    if not names:
        raise CourseError(f"{type(model).__name__} has no parameters outside its backbone: no head to train")
    return names


def prepare_head_only(model: nn.Module) -> nn.Module:
    """Freeze the backbone; train only the head (1,536 parameters for GPT-2 small and 2 labels)."""
    head = set(head_parameter_names(model))
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name in head
    return model
# --8<-- [end:head_only]


def prepare_full(model: nn.Module) -> nn.Module:
    """Train every parameter."""
    for parameter in model.parameters():
        parameter.requires_grad = True
    return model


# --8<-- [start:lora]
def prepare_lora(
    model: nn.Module, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
    targets: list[str] | None = None, bias: str = "none",
    modules_to_save: list[str] | None = None, use_rslora: bool = False,
    task_type: TaskType = TaskType.SEQ_CLS,
) -> nn.Module:
    """Wrap `model` with peft LoRA adapters for sequence classification.

    `task_type=SEQ_CLS` matters: it makes peft train a copy of the new classification head
    (`score` for GPT-2, `classifier` for BERT). Without it the head stays frozen at its random
    initialisation. `targets=None` takes peft's default for the architecture (`c_attn` for GPT-2).
    A language model that classifies through its label words has no new head:
    `task_type=TaskType.CAUSAL_LM` (see `peft_course.lm_classification`).
    """
    check_lora_options(r=r, alpha=alpha, dropout=dropout, targets=targets, bias=bias,
                       modules_to_save=modules_to_save, use_rslora=use_rslora)
    config = LoraConfig(
        task_type=task_type, r=r, lora_alpha=alpha, lora_dropout=dropout,
        target_modules=list(targets) if targets is not None else None, bias=bias,
        modules_to_save=list(modules_to_save) if modules_to_save is not None else None, use_rslora=use_rslora,
    )
    try:
        with warnings.catch_warnings():  # peft sets fan_in_fan_out=True for GPT-2's Conv1D itself
            warnings.filterwarnings("ignore", message="fan_in_fan_out is set to False")
            return get_peft_model(model, config)
    except ValueError as error:  # e.g. "Target modules {...} not found in the base model"
        raise CourseError(f"cannot apply LoRA with targets={targets}: {str(error).splitlines()[0]}") from error


def check_lora_options(
    r: Any = 8, alpha: Any = 16.0, dropout: Any = 0.0, targets: Any = None, bias: Any = "none",
    modules_to_save: Any = None, use_rslora: Any = False, trainable: Any = None,
    gradient_checkpointing: Any = True,
) -> None:
    """Refuse LoRA settings of the wrong type or range, naming the one that is wrong.

    The rank is a whole number (8.5 and True are refused), alpha is positive, dropout is a
    probability below 1, and the module lists are lists, since a single string such as
    `targets="c_attn"` would otherwise be read letter by letter.
    """
    check_positive_int("the LoRA rank r", r)
    check_positive_number("alpha", alpha)
    check_number("dropout", dropout, 0, 1, high_open=True)
    for name, value in (("targets", targets), ("modules_to_save", modules_to_save), ("trainable", trainable)):
        if value is not None:
            check_string_list(name, value)
    if bias not in ("none", "all", "lora_only"):
        raise CourseError(f"bias must be 'none', 'all' or 'lora_only', got {describe(bias)}")
    for name, value in (("use_rslora", use_rslora), ("gradient_checkpointing", gradient_checkpointing)):
        if not isinstance(value, bool):
            raise CourseError(f"{name} must be True or False, got {describe(value)}")


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold the adapters into the weights (W <- W + (alpha/r) B A) and drop the LoRA code."""
    with warnings.catch_warnings():  # a deprecation inside peft, not in this code
        warnings.filterwarnings("ignore", category=FutureWarning)
        return model.merge_and_unload()
# --8<-- [end:lora]


def prepare_lora_scratch(model: nn.Module, **options: Any) -> nn.Module:
    """The course's own LoRA layer (`peft_course.lora`), training the head too."""
    from peft_course.lora import prepare_lora_scratch as prepare

    options.setdefault("trainable", head_parameter_names(model))
    return prepare(model, **options)


@dataclass(frozen=True)
class Method:
    """How a method loads and sets up the model before training, and what it does after."""

    prepare: Callable[..., nn.Module]
    finish: Callable[[nn.Module], nn.Module] | None = None
    label: str = ""
    learning_rate: float = 5e-4
    load: Callable[..., tuple[nn.Module, Any]] = load_model  # QLoRA quantizes while loading
    options: tuple[str, ...] = ()  # the keyword options `prepare` takes


PEFT_OPTIONS = ("r", "alpha", "dropout", "targets", "bias", "modules_to_save", "use_rslora")
METHODS: dict[str, Method] = {
    "head": Method(prepare_head_only, label="head only", learning_rate=2e-2),
    "lora": Method(prepare_lora, label="LoRA (peft)", learning_rate=5e-3, options=PEFT_OPTIONS),
    "lora-scratch": Method(prepare_lora_scratch, label="LoRA (from scratch)", learning_rate=5e-3,
                           options=("r", "alpha", "dropout", "targets", "trainable", "use_rslora")),
    "merged": Method(prepare_lora, merge_lora, label="merged LoRA", learning_rate=5e-3, options=PEFT_OPTIONS),
    "full": Method(prepare_full, label="full fine-tuning", learning_rate=1e-3),
    "qlora": Method(prepare_qlora, label="QLoRA (NF4)", learning_rate=QLORA_LEARNING_RATE, load=load_qlora_model,
                    options=("r", "alpha", "dropout", "targets", "gradient_checkpointing")),
}


def get_method(name: str) -> Method:
    """The method called `name`, or an error listing the known ones."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise CourseError(f"unknown method {name!r}: choose one of {sorted(METHODS)}") from None


def check_method_options(method: str, options: dict[str, Any]) -> None:
    """Refuse options `method` does not take, or values its `prepare` would refuse, before any work.

    Checked up front, a bad `--r` or a misspelt option fails before the model is loaded or
    anything is written, not after the untrained model has been evaluated.
    """
    accepted = get_method(method).options
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        takes = f"it takes {', '.join(accepted)}" if accepted else "it takes none"
        raise CourseError(f"method {method!r} has no option(s) {', '.join(unknown)}: {takes}")
    if accepted:
        check_lora_options(**options)


def prepare(model: nn.Module, method: str, **options: Any) -> nn.Module:
    """Apply `method` to `model` (see `METHODS`) and return the model to train."""
    check_method_options(method, options)
    return get_method(method).prepare(model, **options)


def check_label_count(model: nn.Module, data: ClassificationData) -> None:
    """Refuse a model whose head has a different number of labels than the data."""
    num_labels = getattr(model.config, "num_labels", None)
    if num_labels is not None and num_labels != data.num_labels:
        raise CourseError(
            f"the model's classification head has {num_labels} labels but '{data.name}' has "
            f"{data.num_labels} ({data.label_names})"
        )


@dataclass
class FinetuneResult:
    """Scores of one run: the untrained baseline, best-validation and last-iteration test scores."""

    method: str
    trainable: int
    total: int
    untrained: dict[str, Any]
    best: dict[str, Any]
    last: dict[str, Any]
    training: TrainResult
    model: nn.Module = field(repr=False)
    tokenizer: Any = field(repr=False)
    predictions: list[int] = field(default_factory=list, repr=False)


def _scores(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k != "predictions"}


def finetune(
    data: ClassificationData,
    method: str = "head",
    model_name: str = "tiny-gpt2",
    config: TrainConfig | None = None,
    max_length: int = 256,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    **method_options: Any,
) -> FinetuneResult:
    """Load `model_name`, apply `method`, train on `data`, and score on its test split.

    The returned model holds the best-validation weights (merged, for `merged`). Parameter
    counts are taken before any merge, i.e. what the method trains.
    """
    spec = get_method(method)
    check_method_options(method, method_options)
    if not isinstance(data, ClassificationData):
        raise CourseError(f"data must be a ClassificationData (see peft_course.data.load_classification_data), "
                          f"got {describe(data)}")
    config = config or TrainConfig(learning_rate=spec.learning_rate)
    if not isinstance(config, TrainConfig):
        raise CourseError(f"config must be a TrainConfig, got {describe(config)}")
    check_int("max_length", max_length, minimum=2)
    model, tokenizer = spec.load(model_name, "classification", data.num_labels, data.label_names, seed=config.seed)
    check_label_count(model, data)
    check_max_length(max_length, model)
    tokenized = tokenize(data, tokenizer, max_length)
    untrained = evaluate(model, tokenized["test"], tokenizer, device=config.device)
    model = spec.prepare(model, **method_options)
    trainable, total = count_parameters(model)
    training = train(model, tokenized, tokenizer, config, checkpoint_dir, resume)
    last = evaluate(model, tokenized["test"], tokenizer, device=config.device)
    load_trainable_state(model, training.best_state)
    if spec.finish is not None:
        model = spec.finish(model)
    best = evaluate(model, tokenized["test"], tokenizer, device=config.device)
    return FinetuneResult(
        method, trainable, total, _scores(untrained), _scores(best), _scores(last),
        training, model, tokenizer, best["predictions"],
    )
