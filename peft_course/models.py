"""One place that loads a model and its tokenizer.

`load_model` takes a hub id (default `openai-community/gpt2`), a local checkpoint directory
of any architecture transformers knows, or the embedded `tiny-gpt2`, and returns a model for
sequence classification or causal language modelling plus its tokenizer, with GPT-2's missing
pad token set. Weights are only read from safetensors and remote code is never run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from peft_course.tiny_gpt2 import TINY_GPT2, tiny_gpt2_path

DEFAULT_MODEL = "openai-community/gpt2"
Task = Literal["classification", "causal-lm"]


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be loaded (unreachable hub, bad directory, ...)."""


def resolve_model_path(name_or_path: str, seed: int = 0) -> str:
    """Map `tiny-gpt2` to its cached directory; return any other name unchanged."""
    if name_or_path == TINY_GPT2:
        return str(tiny_gpt2_path(seed))
    return name_or_path


# --8<-- [start:ensure_pad]
def ensure_pad_token(model: PreTrainedModel | None, tokenizer: PreTrainedTokenizerBase) -> None:
    """Give GPT-2 a pad token (pad = eos) and tell the model's config about it.

    GPT-2 was trained without padding. A classifier built on it must know the pad id to find
    the last real token of each row, and refuses batches larger than one without it.
    """
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError("the tokenizer has neither a pad nor an eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        generation_config = getattr(model, "generation_config", None)
        if generation_config is not None and generation_config.pad_token_id is None:
            generation_config.pad_token_id = tokenizer.pad_token_id
# --8<-- [end:ensure_pad]


def _hub_error(name: str, error: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"could not load '{name}': it is not a local directory, and the Hugging Face hub could "
        f"not provide it ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
        f"Offline, pass a local checkpoint directory (--model PATH) or the embedded model "
        f"(--model {TINY_GPT2})."
    )


def check_head_size(path: str, num_labels: int) -> None:
    """Refuse a local classifier checkpoint whose trained head has a different label count."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        return
    config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    is_classifier = any(a.endswith("ForSequenceClassification") for a in config.architectures or [])
    if is_classifier and config.num_labels != num_labels:
        raise ModelLoadError(
            f"the checkpoint '{path}' has a classification head for {config.num_labels} labels, "
            f"but the data has {num_labels}; use a dataset with {config.num_labels} labels or a "
            f"checkpoint without a classification head"
        )


def load_tokenizer(name_or_path: str = DEFAULT_MODEL, seed: int = 0) -> PreTrainedTokenizerBase:
    """Load only the tokenizer (pad token set), from the same sources as `load_model`."""
    path = resolve_model_path(name_or_path, seed)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError) as error:
        if Path(path).is_dir():
            raise ModelLoadError(f"'{path}' holds no usable tokenizer: {error}") from error
        raise _hub_error(name_or_path, error) from error
    ensure_pad_token(None, tokenizer)
    return tokenizer


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    task: Task = "classification",
    num_labels: int = 2,
    label_names: list[str] | None = None,
    seed: int = 0,
    **from_pretrained_kwargs: Any,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load `(model, tokenizer)` for `task` from a hub id, a local directory or `tiny-gpt2`.

    A classification head that the checkpoint lacks is initialised under `seed`, so the same
    call gives the same head. Extra keyword arguments (`dtype=`, `quantization_config=`, ...)
    go to `from_pretrained`.
    """
    if task not in ("classification", "causal-lm"):
        raise ValueError(f"unknown task '{task}': use 'classification' or 'causal-lm'")
    if num_labels < 1:
        raise ValueError(f"num_labels must be at least 1, got {num_labels}")
    if label_names is not None and len(label_names) != num_labels:
        raise ValueError(f"{len(label_names)} label names given for num_labels={num_labels}")
    path = resolve_model_path(name_or_path, seed)
    tokenizer = load_tokenizer(name_or_path, seed)
    kwargs: dict[str, Any] = {"trust_remote_code": False, "use_safetensors": True}
    kwargs.update(from_pretrained_kwargs)
    if task == "classification":
        auto_class = AutoModelForSequenceClassification
        kwargs["num_labels"] = num_labels
        if label_names is not None:
            kwargs["id2label"] = dict(enumerate(label_names))
            kwargs["label2id"] = {name: i for i, name in enumerate(label_names)}
    else:
        auto_class = AutoModelForCausalLM
    if task == "classification":
        check_head_size(path, num_labels)
    torch.manual_seed(seed)  # a freshly added head is drawn from this seed
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized score weights" is expected here
    try:
        model = auto_class.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as error:
        if Path(path).is_dir():
            raise ModelLoadError(f"could not load a model from '{path}': {error}") from error
        raise _hub_error(name_or_path, error) from error
    finally:
        hf_logging.set_verbosity(verbosity)
    ensure_pad_token(model, tokenizer)
    return model, tokenizer
