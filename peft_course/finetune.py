"""Fine-tuning a model for classification: choose what trains, train it, score it.

A *method* is a choice of which parameters train, plus an optional step after training:

* `head`: the classification head alone (GPT-2's `score`, hidden x num_labels, no bias);
* `lora`: low-rank adapters through `peft` (plus a trained copy of the head);
* `lora-scratch`: the same idea with the course's own LoRA layer (`peft_course.lora`);
* `gpt2-scratch`: GPT-2 itself written out (`peft_course.gpt2`), its LoRA built into the
  attention's q, k and v projections (`--targets` from q k v out fc proj), head trained too;
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

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from peft_course import lora
from peft_course.models import count_parameters
from peft_course.data import ClassificationData, tokenize
from peft_course.errors import CourseError, check_int, describe
from peft_course.methods import head_parameter_names
from peft_course.models import check_max_length
from peft_course.registry import get_method
from peft_course.registry import method_options as checked_options
from peft_course.settings import EMBEDDED_MODEL, LORA, TRAINING
from peft_course.tables import result_row
from peft_course.training import (
    TrainConfig,
    TrainResult,
    evaluate_classifier,
    load_trainable_state,
    train,
)


def prepare_lora_scratch(model: nn.Module, **options: Any) -> nn.Module:
    """The course's own LoRA layer (`peft_course.lora`), training the head too.

    Args:
        model: the classifier to add LoRA layers to.
        **options: keyword options of `lora.prepare_lora_scratch`; `trainable` defaults to the
            classification head's parameter names.
    """
    options.setdefault("trainable", head_parameter_names(model))
    return lora.prepare_lora_scratch(model, **options)


def prepare(model: nn.Module, method: str, **options: Any) -> nn.Module:
    """Apply `method` to `model` (see `METHODS`) and return the model to train.

    Args:
        model: the loaded classifier.
        method: a key of `METHODS`.
        **options: the method's keyword options (checked first).
    """
    return get_method(method).function("prepare")(model, **checked_options(method, options))


def check_label_count(model: nn.Module, data: ClassificationData) -> None:
    """Refuse a model whose head has a different number of labels than the data.

    Args:
        model: the loaded classifier; a config without `num_labels` is not checked.
        data: the classification data.

    Raises:
        CourseError: if the head's label count differs from the data's.
    """
    num_labels = getattr(model.config, "num_labels", None)
    if num_labels is not None and num_labels != data.num_labels:
        raise CourseError(
            f"the model's classification head has {num_labels} labels but '{data.name}' has "
            f"{data.num_labels} ({data.label_names})"
        )


@dataclass
class FinetuneResult:
    """Scores of one run: the untrained baseline, best-validation and last-iteration test scores.

    Attributes:
        method: the method's name.
        trainable: parameters the method trains (counted before any merge).
        total: all parameters of the prepared model (counted before any merge).
        untrained: test scores before training; None when not measured.
        best: test scores of the best-validation weights (after `finish`, if any).
        last: test scores of the last iteration's weights; None when not measured.
        training: the training loop's result (history, best state).
        model: the model with the best-validation weights (merged, for `merged`).
        tokenizer: the model's tokenizer.
        predictions: the best model's test predictions (label ids).
    """

    method: str
    trainable: int
    total: int
    untrained: dict[str, Any] | None
    best: dict[str, Any]
    last: dict[str, Any] | None
    training: TrainResult
    model: nn.Module = field(repr=False)
    tokenizer: Any = field(repr=False)
    predictions: list[int] = field(default_factory=list, repr=False)


def _scores(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics without the predictions."""
    return {k: v for k, v in metrics.items() if k != "predictions"}


def finetune(
    data: ClassificationData,
    method: str = "head",
    model_name: str = EMBEDDED_MODEL,
    config: TrainConfig | None = None,
    max_length: int = TRAINING.max_length,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    on_validate: Callable[[dict[str, float]], None] | None = None,
    score_untrained: bool = True,
    score_last: bool = True,
    **method_options: Any,
) -> FinetuneResult:
    """Load `model_name`, apply `method`, train on `data`, and score on its test split.

    The returned model holds the best-validation weights (merged, for `merged`). Parameter
    counts are taken before any merge, i.e. what the method trains.

    Args:
        data: the classification data (train, validation and test splits).
        method: a key of `METHODS`.
        model_name: the model to load.
        config: the training loop's settings; None uses `TrainConfig` with the method's
            learning rate.
        max_length: tokens a text keeps; at least 2 and no more than the model's context.
        checkpoint_dir: where a checkpoint is written after every epoch; None writes none.
        resume: continue from the checkpoint in `checkpoint_dir`.
        on_validate: called with each validation's history entry as it ends (`training.train`).
        score_untrained: score the model on the test split before training (`untrained`).
            Runs that share a model, data and seed share their untrained classifier (the new
            head is drawn from the seed), so a table of several methods measures it once.
        score_last: score the last iteration's weights on the test split too (`last`).
        **method_options: the method's keyword options (e.g. `r`, `alpha`, `targets`).

    Raises:
        CourseError: if `data` is not a `ClassificationData` or `config` is not a `TrainConfig`.
    """
    spec = get_method(method)
    options = checked_options(method, method_options)
    if not isinstance(data, ClassificationData):
        raise CourseError(
            f"data must be a ClassificationData (see peft_course.data.load_classification_data), "
            f"got {describe(data)}"
        )
    config = config or TrainConfig(learning_rate=spec.learning_rate)
    if not isinstance(config, TrainConfig):
        raise CourseError(f"config must be a TrainConfig, got {describe(config)}")
    check_int("max_length", max_length, minimum=2)
    model, tokenizer = spec.function("load")(
        model_name, "classification", data.num_labels, data.label_names, seed=config.seed
    )
    check_label_count(model, data)
    check_max_length(max_length, model)
    tokenized = tokenize(data, tokenizer, max_length)
    untrained = (
        evaluate_classifier(model, tokenized["test"], tokenizer, device=config.device)
        if score_untrained
        else None
    )
    model = spec.function("prepare")(model, **options)
    trainable, total = count_parameters(model)
    training = train(
        model, tokenized, tokenizer, config, checkpoint_dir, resume, on_validate=on_validate
    )
    last = (
        evaluate_classifier(model, tokenized["test"], tokenizer, device=config.device)
        if score_last
        else None
    )
    load_trainable_state(model, training.best_state)
    if spec.finish is not None:
        model = spec.function("finish")(model)
    best = evaluate_classifier(model, tokenized["test"], tokenizer, device=config.device)
    return FinetuneResult(
        method,
        trainable,
        total,
        None if untrained is None else _scores(untrained),
        _scores(best),
        None if last is None else _scores(last),
        training,
        model,
        tokenizer,
        best["predictions"],
    )


def finish_as(
    result: FinetuneResult,
    method: str,
    data: ClassificationData,
    max_length: int = TRAINING.max_length,
    device: str | None = None,
) -> FinetuneResult:
    """`result` finished the way `method` finishes, scored on the test split: `merged` from a
    `lora` run is the same training, so it need not run twice.

    The finishing step (e.g. `merge_and_unload`) takes `result.model` apart, so use the returned
    model, not `result`'s. The last iteration's scores stay `result`'s (its weights before the
    finishing step).

    Args:
        result: a run of a method with no finishing step of its own.
        method: a method that trains as `result.method` does and then finishes.
        data: the classification data `result` was trained on.
        max_length: tokens a text keeps, as in training.
        device: where to score; None picks CUDA when present, else the CPU.

    Raises:
        CourseError: if `method` does not train as `result.method` does, or has no finishing step.
    """
    spec, trained = get_method(method), get_method(result.method)
    if (
        spec.finish is None
        or trained.finish is not None
        or (spec.load, spec.prepare) != (trained.load, trained.prepare)
    ):
        raise CourseError(
            f"'{method}' is not '{result.method}' and then a finishing step: train it with finetune"
        )
    model = spec.function("finish")(result.model)
    tokenized = tokenize(data, result.tokenizer, max_length)
    best = evaluate_classifier(model, tokenized["test"], result.tokenizer, device=device)
    return replace(
        result, method=method, best=_scores(best), model=model, predictions=best["predictions"]
    )


def lora_training_rows(
    data: ClassificationData,
    model_name: str = EMBEDDED_MODEL,
    seed: int = 0,
    epochs: int = get_method("lora").demo_epochs,
    learning_rate: float = get_method("lora").learning_rate,
    r: int = LORA.r,
    alpha: float = LORA.alpha,
    progress: bool = False,
) -> list[dict[str, str]]:
    """Untrained, LoRA from scratch and peft's LoRA with the same settings
    (best-validation test scores).

    Both rows come from `finetune` (methods `lora-scratch` and `lora`): same model, data, seed,
    loop and hyper-parameters, LoRA on `c_attn` plus the head. They differ only in who built
    the LoRA layers, and in the random draw of `A` (same seed, but peft draws it in another
    order), which is worth a few points of accuracy on 400 test sentences.

    Args:
        data: the classification data.
        model_name: the model both rows start from.
        seed: the seed of both rows.
        epochs: training epochs (default: the demo's LoRA epochs).
        learning_rate: the learning rate (default: the demo's LoRA learning rate).
        r: LoRA rank.
        alpha: LoRA scale numerator (the update is scaled by alpha/r).
        progress: show progress bars.
    """
    config = TrainConfig(epochs=epochs, learning_rate=learning_rate, seed=seed, progress=progress)
    rows: list[dict[str, str]] = []
    for name in ("lora-scratch", "lora"):
        result = finetune(data, name, model_name, config, r=r, alpha=alpha)
        if not rows:
            rows.append(result_row("untrained", 0, result.untrained, 0.0))
        label = get_method(name).label or name
        rows.append(result_row(label, result.trainable, result.best, result.training.seconds))
    return rows
