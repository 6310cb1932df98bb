"""Fine-tuning a model for classification: choose what trains, train it, score it.

A *method* is only a choice of which parameters keep `requires_grad=True`:

* `head`: the classification head alone (GPT-2's `score`, 768 x num_labels, no bias);
* `full`: every parameter.

`finetune` loads the model, applies the method, trains with the shared loop of
`peft_course.training`, and reports the test score of both the best-validation checkpoint
and the last iteration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from peft_course.counting import count_parameters
from peft_course.data import ClassificationData, tokenize
from peft_course.models import load_model
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
        raise ValueError(f"{type(model).__name__} has no parameters outside its backbone: no head to train")
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


METHODS: dict[str, Callable[..., nn.Module]] = {"head": prepare_head_only, "full": prepare_full}
METHOD_LABELS = {"untrained": "untrained", "head": "head only", "full": "full fine-tuning"}
DEFAULT_LEARNING_RATES = {"head": 2e-2, "full": 1e-3}


def prepare(model: nn.Module, method: str, **options: Any) -> nn.Module:
    """Apply `method` to `model` (see `METHODS`) and return the model to train."""
    try:
        prepare_method = METHODS[method]
    except KeyError:
        raise ValueError(f"unknown method '{method}': choose one of {sorted(METHODS)}") from None
    return prepare_method(model, **options)


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


def _scores(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k != "predictions"}


def finetune(
    data: ClassificationData,
    method: str = "head",
    model_name: str = "tiny-gpt2",
    config: TrainConfig | None = None,
    max_length: int = 256,
    **method_options: Any,
) -> FinetuneResult:
    """Load `model_name`, apply `method`, train on `data`, and score on its test split.

    The returned model holds the best-validation weights.
    """
    config = config or TrainConfig(learning_rate=DEFAULT_LEARNING_RATES.get(method, 5e-4))
    model, tokenizer = load_model(
        model_name, "classification", data.num_labels, data.label_names, seed=config.seed
    )
    tokenized = tokenize(data, tokenizer, max_length)
    untrained = evaluate(model, tokenized["test"], tokenizer, device=config.device)
    model = prepare(model, method, **method_options)
    trainable, total = count_parameters(model)
    training = train(model, tokenized, tokenizer, config)
    last = evaluate(model, tokenized["test"], tokenizer, device=config.device)
    load_trainable_state(model, training.best_state)
    best = evaluate(model, tokenized["test"], tokenizer, device=config.device)
    return FinetuneResult(
        method, trainable, total, _scores(untrained), _scores(best), _scores(last),
        training, model, tokenizer,
    )
