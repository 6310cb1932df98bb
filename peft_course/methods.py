"""The peft building blocks of fine-tuning: which parameters train, and peft's LoRA on top.

Every fine-tuning method of the course differs only in what it makes trainable before the one
training loop runs: the head alone (`prepare_head_only`), everything (`prepare_full`), or LoRA
adapters through `peft` (`prepare_lora`, folded back into the weights by
`merge_and_unload_peft`). The course's own LoRA layer is `peft_course.lora`; the pipeline that
loads, prepares, trains and scores is `peft_course.finetune`.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from peft_course.errors import CourseError, check_string_list, describe
from peft_course.lora import check_hyperparameters
from peft_course.settings import LORA


# --8<-- [start:head_only]
def head_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters outside the backbone: the task head added on top.

    Every transformers model keeps its backbone under `model.base_model_prefix`
    (`transformer` for GPT-2, `bert` for BERT); whatever lies outside it is the head.

    Args:
        model: a transformers model with a task head.

    Raises:
        CourseError: if no parameter lies outside the backbone.
    """
    prefix = getattr(model, "base_model_prefix", "") + "."
    names = [n for n, _ in model.named_parameters() if not n.startswith(prefix)]
    if not names:
        raise CourseError(
            f"{type(model).__name__} has no parameters outside its backbone: no head to train"
        )
    return names


def prepare_head_only(model: nn.Module) -> nn.Module:
    """Freeze the backbone; train only the head (1,536 parameters for GPT-2 small and 2 labels).

    Args:
        model: a transformers model with a task head, changed in place.
    """
    head = set(head_parameter_names(model))
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name in head
    return model


# --8<-- [end:head_only]


def prepare_full(model: nn.Module) -> nn.Module:
    """Train every parameter.

    Args:
        model: the model, changed in place.
    """
    for parameter in model.parameters():
        parameter.requires_grad = True
    return model


# --8<-- [start:prepare_lora]
def prepare_lora(
    model: nn.Module,
    r: int = LORA.r,
    alpha: float = LORA.alpha,
    dropout: float = 0.0,
    targets: list[str] | None = None,
    bias: str = "none",
    modules_to_save: list[str] | None = None,
    use_rslora: bool = False,
    task_type: str = "SEQ_CLS",
    use_dora: bool = False,
    init_lora_weights: bool | str = True,
) -> nn.Module:
    """Wrap `model` with peft LoRA adapters for sequence classification.

    `task_type=SEQ_CLS` matters: it makes peft train a copy of the new classification head
    (`score` for GPT-2, `classifier` for BERT). Without it the head stays frozen at its random
    initialisation. A language model that classifies through its label words has no new head:
    `task_type=TaskType.CAUSAL_LM` (see `peft_course.lm_classification`).

    Args:
        model: the transformers model to wrap.
        r: the LoRA rank.
        alpha: peft's `lora_alpha`: the update is scaled by `alpha / r`.
        dropout: peft's `lora_dropout`, on the input of the LoRA path.
        targets: names of the modules to adapt; `targets=None` takes peft's default for the
            architecture (`c_attn` for GPT-2).
        bias: which biases train: `"none"`, `"all"` or `"lora_only"`.
        modules_to_save: modules peft trains a full copy of, beside what `task_type` saves.
        use_rslora: scale by `alpha / sqrt(r)` instead of `alpha / r`.
        task_type: peft's task type: `SEQ_CLS` for a classifier, `CAUSAL_LM` for a language model.
        use_dora: DoRA: a learned magnitude per output beside LoRA's direction
            (`peft_course.peft_family.prepare_dora`).
        init_lora_weights: peft's start for `A` and `B`: True (Kaiming `A`, zero `B`), or an
            initialiser such as `"pissa"` (`peft_course.peft_family.prepare_pissa`).

    Returns:
        peft's model wrapping `model`.

    Raises:
        CourseError: if a setting is of the wrong type or range, or peft cannot apply LoRA to
            the targets (e.g. none of them is found).
    """
    check_lora_options(
        r=r,
        alpha=alpha,
        dropout=dropout,
        targets=targets,
        bias=bias,
        modules_to_save=modules_to_save,
        use_rslora=use_rslora,
    )
    from peft import LoraConfig, get_peft_model  # here: peft takes seconds to import

    config = LoraConfig(
        task_type=task_type,
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(targets) if targets is not None else None,
        bias=bias,
        modules_to_save=list(modules_to_save) if modules_to_save is not None else None,
        use_rslora=use_rslora,
        use_dora=use_dora,
        init_lora_weights=init_lora_weights,
    )
    try:
        with warnings.catch_warnings():  # peft sets fan_in_fan_out=True for GPT-2's Conv1D itself
            warnings.filterwarnings("ignore", message="fan_in_fan_out is set to False")
            return get_peft_model(model, config)
    except ValueError as error:  # e.g. "Target modules {...} not found in the base model"
        raise CourseError(
            f"cannot apply LoRA with targets={targets}: {str(error).splitlines()[0]}"
        ) from error


# --8<-- [end:prepare_lora]


# --8<-- [start:check_lora_options]
def check_lora_options(
    r: Any = LORA.r,
    alpha: Any = LORA.alpha,
    dropout: Any = 0.0,
    targets: Any = None,
    bias: Any = "none",
    modules_to_save: Any = None,
    use_rslora: Any = False,
    trainable: Any = None,
    gradient_checkpointing: Any = True,
) -> None:
    """Refuse LoRA settings of the wrong type or range, naming the one that is wrong.

    The rank is a whole number (8.5 and True are refused), alpha is positive, dropout is a
    probability below 1, and the module lists are lists, since a single string such as
    `targets="c_attn"` would otherwise be read letter by letter.

    Args:
        r: the LoRA rank.
        alpha: the numerator of the update's scale.
        dropout: the dropout probability on the LoRA path.
        targets: names of the modules to adapt, or None.
        bias: `"none"`, `"all"` or `"lora_only"`.
        modules_to_save: names of the modules peft trains a copy of, or None.
        use_rslora: True or False.
        trainable: patterns of the modules that train in full, or None.
        gradient_checkpointing: True or False.

    Raises:
        CourseError: naming the first setting of the wrong type or range.
    """
    check_hyperparameters(r, alpha, dropout)
    for name, value in (
        ("targets", targets),
        ("modules_to_save", modules_to_save),
        ("trainable", trainable),
    ):
        if value is not None:
            check_string_list(name, value)
    if bias not in ("none", "all", "lora_only"):
        raise CourseError(f"bias must be 'none', 'all' or 'lora_only', got {describe(bias)}")
    for name, value in (
        ("use_rslora", use_rslora),
        ("gradient_checkpointing", gradient_checkpointing),
    ):
        if not isinstance(value, bool):
            raise CourseError(f"{name} must be True or False, got {describe(value)}")


# --8<-- [end:check_lora_options]


# --8<-- [start:merge_and_unload_peft]
def merge_and_unload_peft(model: nn.Module) -> nn.Module:
    """Fold the adapters into the weights (W <- W + (alpha/r) B A) and drop the LoRA code.

    Args:
        model: a peft model with LoRA adapters.

    Returns:
        The plain model underneath, with the adapters merged in.
    """
    with warnings.catch_warnings():  # a deprecation inside peft, not in this code
        warnings.filterwarnings("ignore", category=FutureWarning)
        return model.merge_and_unload()


# --8<-- [end:merge_and_unload_peft]
