"""One place that loads a model and its tokenizer.

`load_model` takes a hub id (default `openai-community/gpt2`), a local checkpoint directory
of any architecture transformers knows, or the embedded `tiny-gpt2`, and returns a model for
sequence classification or causal language modelling plus its tokenizer, with GPT-2's missing
pad token set. Weights are only read from safetensors and remote code is never run.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    DataCollatorWithPadding,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from peft_course.distributed import ShardedBatches
from peft_course.errors import (
    CourseError,
    check_int,
    check_module,
    check_positive_int,
    check_string_list,
    describe,
)
from peft_course.settings import DEFAULT_MODEL
from peft_course.smollm2 import SMOLLM2, smollm2_path
from peft_course.tiny_gpt2 import TINY_GPT2, length_grouped_batches, tiny_gpt2_path
from peft_course.tiny_llama import TINY_LLAMA, tiny_llama_path

if TYPE_CHECKING:  # in annotations only: `datasets` takes a second to import
    from datasets import Dataset

Task = Literal["classification", "causal-lm"]


class ModelLoadError(CourseError):
    """A model or tokenizer could not be loaded (unreachable hub, bad directory, ...)."""


# What a local checkpoint directory needs: any one file of each group.
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.json",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def resolve_model_path(name_or_path: str, seed: int = 0) -> str:
    """Map the named models to their cached directories; return any other name unchanged.

    `tiny-gpt2` and `tiny-llama` are built on first use (about 20 s each), `smollm2-135m`
    converted from the installed GGUF file on first use (about 30 s); both are read from the
    course cache afterwards.

    Args:
        name_or_path: `tiny-gpt2`, `tiny-llama`, `smollm2-135m`, a hub id or a local directory.
        seed: the seed `tiny-gpt2` and `tiny-llama` are built with (each seed is its own model).

    Raises:
        ModelLoadError: if `name_or_path` is not a non-blank string.
    """
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ModelLoadError(
            f"the model must be a name or a directory, got {describe(name_or_path)}"
        )
    if name_or_path == TINY_GPT2:
        return str(tiny_gpt2_path(seed))
    if name_or_path == TINY_LLAMA:
        return str(tiny_llama_path(seed))
    if name_or_path == SMOLLM2:
        return str(smollm2_path())
    return name_or_path


def model_identity(name_or_path: str) -> dict[str, str] | None:
    """Where a local model is and a fingerprint of its files, to tell later whether it changed.

    For a local directory: its absolute path and a SHA-256 over `config.json` and, for each
    weight file, its size with its first and last MiB (a fingerprint, not a full hash: reading
    a 500 MB model whole on every `predict` would cost seconds). The built-in models are built
    from their seed and hub ids are not read here: None.

    Args:
        name_or_path: the model as the user gave it.
    """
    if name_or_path in (TINY_GPT2, TINY_LLAMA, SMOLLM2) or not Path(name_or_path).is_dir():
        return None
    directory = Path(name_or_path).resolve()
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.json")) + sorted(directory.glob("*.safetensors")):
        digest.update(path.name.encode())
        if path.suffix == ".json":
            digest.update(path.read_bytes())
            continue
        size = path.stat().st_size
        digest.update(str(size).encode())
        with open(path, "rb") as handle:
            digest.update(handle.read(1 << 20))
            handle.seek(max(size - (1 << 20), 0))
            digest.update(handle.read(1 << 20))
    return {"path": str(directory), "fingerprint": digest.hexdigest()}


def looks_like_a_path(name: str) -> bool:
    """True for what can only be a local path: it exists, or it is not shaped like `org/name`.

    Args:
        name: a model name or path, as the user gave it.
    """
    return (
        Path(name).exists()
        or name.startswith(("/", ".", "~"))
        or name.count("/") > 1
        or name.endswith("/")
        or "\\" in name
    )


def check_model_directory(path: str, tokenizer: bool = True, weights: bool = True) -> None:
    """Refuse a local path that is not a loadable checkpoint, saying everything it lacks.

    Without this check transformers answers an empty directory with "you need sentencepiece or
    tiktoken", and one holding only `pytorch_model.bin` with a message about safetensors that
    does not say the file is refused on purpose (unpickling a `.bin` can run code).

    Args:
        path: the local checkpoint directory.
        tokenizer: require tokenizer files.
        weights: require safetensors weights.

    Raises:
        ModelLoadError: if `path` does not exist, is a file, or lacks `config.json` or the
            tokenizer files or weights asked for.
    """
    directory = Path(path).expanduser()
    if not directory.exists():
        raise ModelLoadError(f"cannot load the model '{path}': no such directory")
    if not directory.is_dir():
        raise ModelLoadError(
            f"cannot load the model '{path}': it is a file, not a checkpoint directory"
        )
    missing = []
    if not (directory / "config.json").is_file():
        missing.append("config.json")
    if tokenizer and not any((directory / f).is_file() for f in TOKENIZER_FILES):
        missing.append(
            "tokenizer files (tokenizer.json, or vocab.json and merges.txt, or vocab.txt)"
        )
    if weights and not (
        any((directory / f).is_file() for f in WEIGHT_FILES) or any(directory.glob("*.safetensors"))
    ):
        pickled = [f.name for f in directory.glob("*.bin")] + [
            f.name for f in directory.glob("*.pt")
        ]
        why = (
            (
                f" (it holds {', '.join(sorted(pickled))}: pickled weights, not loaded because "
                "unpickling can run code; convert them with "
                "save_pretrained(..., safe_serialization=True))"
            )
            if pickled
            else ""
        )
        missing.append(f"safetensors weights (model.safetensors){why}")
    if missing:
        raise ModelLoadError(
            f"'{path}' is not a usable model directory: it has no {', no '.join(missing)}"
        )


def model_config(name_or_path: str, seed: int = 0) -> Any:
    """The model's config, read without loading its weights: a cheap check that the model is there.

    A local directory must hold everything `load_model` needs (`check_model_directory`); a hub
    id must be reachable or cached. Either failure is a `ModelLoadError` saying what to do.

    Args:
        name_or_path: a hub id, a local directory, or a model named in `resolve_model_path`.
        seed: the seed the tiny models are built with.

    Raises:
        ModelLoadError: if a local directory's config cannot be read, or the hub cannot
            provide the model.
    """
    path = resolve_model_path(name_or_path, seed)
    if looks_like_a_path(path):
        check_model_directory(path)
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError) as error:
        if Path(path).is_dir():
            raise ModelLoadError(
                f"cannot read the config of '{path}': {str(error).strip().splitlines()[0]}"
            ) from error
        raise _hub_error(name_or_path, error) from error


def context_length(model_or_name: Any, seed: int = 0) -> int | None:
    """How many positions the model has (`n_positions` or `max_position_embeddings`), if known.

    Takes a model, a config, or a name/path (whose config is read without loading weights);
    None when the config cannot be read here (an unreachable hub id) or names no limit.

    Args:
        model_or_name: a model, its config, or a name or path as `load_model` takes it.
        seed: the seed the tiny models are built with (for a name).
    """
    config = getattr(model_or_name, "config", model_or_name)
    if isinstance(model_or_name, str):
        try:
            config = model_config(model_or_name, seed)
        except ModelLoadError:
            return None
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_max_length(max_length: Any, model_or_name: Any, name: str = "max_length") -> int:
    """`max_length` if it is at least 2 and fits the model's positions, else a `CourseError`.

    A row longer than the position table does not fail cleanly: GPT-2 indexes past its
    learned positions and stops with an `IndexError` deep in the forward pass.

    Args:
        max_length: the tokens a row may keep, as the user gave it.
        model_or_name: the model whose positions bound it (a model, a config or a name).
        name: the option the message names.

    Raises:
        CourseError: if `max_length` is longer than the model's position table.
    """
    max_length = check_int(name, max_length, minimum=2)
    limit = context_length(model_or_name)
    if limit is not None and max_length > limit:
        model = model_or_name if isinstance(model_or_name, str) else type(model_or_name).__name__
        raise CourseError(
            f"{name} {max_length} is longer than the model '{model}' can read: it has {limit} "
            f"positions; use {name} {limit} or less"
        )
    return max_length


def _four_bit_parameter_type() -> type | tuple:
    """bitsandbytes' packed 4-bit parameter class, or `()` (matches nothing) while bitsandbytes
    is not loaded.

    A model holds a 4-bit weight only once something has imported bitsandbytes, so a count never
    imports it itself (that takes seconds, and most counts have no 4-bit weight)."""
    bnb = sys.modules.get("bitsandbytes")
    return bnb.nn.Params4bit if bnb is not None else ()


# --8<-- [start:count_parameters]
def count_parameters(module: nn.Module) -> tuple[int, int]:
    """`(trainable, total)` parameter counts of `module`.

    Shared tensors (GPT-2 ties its input and output embeddings) are counted once, because
    `Module.parameters()` yields each tensor once. A 4-bit weight (bitsandbytes' `Params4bit`)
    packs two weights into each uint8 element, so it counts twice its `numel()`; peft's
    `print_trainable_parameters` corrects it the same way.

    Args:
        module: the model or layer to count, submodules included.
    """
    check_module("module", module)
    packed = _four_bit_parameter_type()
    trainable = total = 0
    for parameter in module.parameters():
        count = parameter.numel() * (2 if isinstance(parameter, packed) else 1)
        total += count
        if parameter.requires_grad:
            trainable += count
    return trainable, total


# --8<-- [end:count_parameters]


# --8<-- [start:ensure_pad]
def ensure_pad_token(model: PreTrainedModel | None, tokenizer: PreTrainedTokenizerBase) -> None:
    """Give GPT-2 a pad token (pad = eos) and tell the model's config about it.

    GPT-2 was trained without padding. A classifier built on it must know the pad id to find
    the last real token of each row, and refuses batches larger than one without it.

    Args:
        model: its config gets the pad id (its generation config too, if unset); None: only
            the tokenizer is changed.
        tokenizer: gets its eos token as the pad token if it has no pad token.

    Raises:
        ModelLoadError: if the tokenizer has neither a pad nor an eos token.
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
    """The error for a name that is no local directory and that the hub could not provide."""
    return ModelLoadError(
        f"could not load '{name}': it is not a local directory, and the Hugging Face hub could "
        f"not provide it ({type(error).__name__}: "
        f"{str(error).splitlines()[0] if str(error) else ''}). Offline, pass a local checkpoint "
        f"directory (--model PATH) or the embedded model (--model {TINY_GPT2})."
    )


def check_head_size(path: str, num_labels: int) -> None:
    """Refuse a local classifier checkpoint whose trained head has a different label count.

    Args:
        path: the checkpoint directory; a path without a `config.json` (a hub id) is not checked.
        num_labels: the number of labels in the data.

    Raises:
        ModelLoadError: if the config cannot be read, or its classification head has another
            number of labels.
    """
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        return
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise ModelLoadError(
            f"cannot read '{config_file}': {str(error).strip().splitlines()[0]}"
        ) from error
    is_classifier = any(a.endswith("ForSequenceClassification") for a in config.architectures or [])
    if is_classifier and config.num_labels != num_labels:
        raise ModelLoadError(
            f"the checkpoint '{path}' has a classification head for {config.num_labels} labels, "
            f"but the data has {num_labels}; use a dataset with {config.num_labels} labels or a "
            f"checkpoint without a classification head"
        )


def load_tokenizer(name_or_path: str = DEFAULT_MODEL, seed: int = 0) -> PreTrainedTokenizerBase:
    """Load only the tokenizer (pad token set), from the same sources as `load_model`.

    Args:
        name_or_path: a hub id, a local directory, or a model named in `resolve_model_path`.
        seed: the seed the tiny models are built with.

    Raises:
        ModelLoadError: if a local directory holds no usable tokenizer, or the hub cannot
            provide it.
    """
    path = resolve_model_path(name_or_path, seed)
    if looks_like_a_path(path):
        check_model_directory(path, tokenizer=True, weights=False)
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
    call gives the same head.

    Args:
        name_or_path: a hub id, a local directory, or `tiny-gpt2`, `tiny-llama`, `smollm2-135m`.
        task: `classification` (a sequence-classification head) or `causal-lm`.
        num_labels: the classes of the classification head.
        label_names: the classes' names in label-id order, saved in the config's `id2label`
            and `label2id`; None keeps transformers' default names.
        seed: seeds a freshly added head, and the build of the tiny models.
        **from_pretrained_kwargs: extra keyword arguments (`dtype=`, `quantization_config=`,
            ...) go to `from_pretrained`.

    Returns:
        The model and its tokenizer, both with the pad token set.

    Raises:
        CourseError: if `task` is unknown, or `label_names` does not name `num_labels` labels.
        ModelLoadError: if no model can be loaded from the directory or the hub.
    """
    if task not in ("classification", "causal-lm"):
        raise CourseError(f"unknown task {task!r}: use 'classification' or 'causal-lm'")
    num_labels = check_positive_int("num_labels", num_labels)
    if label_names is not None:
        label_names = check_string_list("label_names", label_names)
        if len(label_names) != num_labels:
            raise CourseError(
                f"{len(label_names)} label names given for num_labels={num_labels}: {label_names}"
            )
    path = resolve_model_path(name_or_path, seed)
    if looks_like_a_path(path):
        check_model_directory(path, tokenizer=True, weights=True)
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
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a bar per load would bury the course's own output
    try:
        model = auto_class.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as error:
        if Path(path).is_dir():
            raise ModelLoadError(f"could not load a model from '{path}': {error}") from error
        raise _hub_error(name_or_path, error) from error
    except RuntimeError as error:
        if "mismatched_sizes" not in str(error):
            raise
        raise ModelLoadError(
            f"the weights in '{path}' do not fit its config.json (tensors of other shapes): the "
            "config describes another architecture or size than the weights were saved from"
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    ensure_pad_token(model, tokenizer)
    return model, tokenizer


def logits_at(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    positions: torch.Tensor,
    **inputs: Any,
) -> torch.Tensor:
    """`[n_kept, vocab]`: the next-token logits at the `True` entries of `positions` only,
    row by row.

    The LM head runs on those positions' hidden states alone (transformers' `logits_to_keep`
    with a boolean mask). A classifier reads one or two positions a row; a full pass would
    compute SmolLM2's 49,152 logits at every position of every row, about 0.2 GB a batch.

    Args:
        model: a causal language model.
        input_ids: the batch's token ids, `[rows, length]`.
        attention_mask: the batch's attention mask, shaped like `input_ids`.
        positions: a boolean mask shaped like `input_ids`, True where logits are wanted.
        **inputs: other inputs (a key/value `cache`) go to the model unchanged.
    """
    if positions.shape != input_ids.shape or positions.dtype != torch.bool:
        raise ValueError(
            f"positions must be a boolean mask shaped like input_ids {tuple(input_ids.shape)}"
        )
    return model(
        input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=positions, **inputs
    ).logits


class LengthGroupedSampler(Sampler[list[int]]):
    """Batches of rows of similar length, drawn afresh from `generator` on every pass.

    Padding is wasted work; grouping rows by length cuts it while the order stays random and,
    since it depends only on the generator's seed, a resumed run sees the same batches.

    Args:
        lengths: the length (in tokens) of every row.
        batch_size: rows a batch.
        generator: draws the order; the caller seeds it.
    """

    def __init__(self, lengths: list[int], batch_size: int, generator: torch.Generator) -> None:
        self.lengths, self.batch_size, self.generator = lengths, batch_size, generator

    def __iter__(self) -> Iterator[list[int]]:
        return iter(length_grouped_batches(self.lengths, self.batch_size, self.generator))

    def __len__(self) -> int:
        return -(
            -len(self.lengths) // self.batch_size
        )  # groups hold whole batches: ceil(n / batch)


def make_loader(
    dataset: Dataset,
    tokenizer: Any,
    batch_size: int,
    shuffle: bool,
    seed: int,
    device: torch.device,
    group_by_length: bool = False,
    rank: int = 0,
    world: int = 1,
) -> DataLoader:
    """Batches padded to their longest row (to a multiple of 8 on a GPU, where odd shapes are slow).

    A class id per row (`labels` is a number) pads only the inputs; a label per *token*
    (language-model training, `labels` is a list) is padded with -100, which the loss ignores.

    Args:
        dataset: a tokenized split; only `input_ids`, `attention_mask`, `token_type_ids` and
            `labels` are kept.
        tokenizer: pads each batch.
        batch_size: rows a batch (on each process).
        shuffle: draw the rows in random order rather than in the dataset's.
        seed: seeds the loader's `generator`, which draws the order.
        device: the device the batches are for; a CUDA device pads to a multiple of 8.
        group_by_length: (with `shuffle`) puts rows of similar length together.
        rank: this process's place among the `world` processes.
        world: the number of processes; with `shuffle`, each draws the same batches of
            `world * batch_size` rows and keeps its share.
    """
    multiple = 8 if device.type == "cuda" else None
    per_token = (
        "labels" in dataset.column_names
        and len(dataset) > 0
        and isinstance(dataset[0]["labels"], list)
    )
    if per_token:
        collator = DataCollatorForSeq2Seq(
            tokenizer, pad_to_multiple_of=multiple, label_pad_token_id=-100
        )
    else:
        collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=multiple)
    columns = [
        c
        for c in ("input_ids", "attention_mask", "token_type_ids", "labels")
        if c in dataset.column_names
    ]
    generator = torch.Generator().manual_seed(seed)
    rows = dataset.with_format(columns=columns)
    if shuffle and (group_by_length or world > 1):
        size = world * batch_size  # every process draws the same global batches
        batches = (
            LengthGroupedSampler([len(ids) for ids in dataset["input_ids"]], size, generator)
            if group_by_length
            else BatchSampler(RandomSampler(rows, generator=generator), size, False)
        )
        if world > 1:
            batches = ShardedBatches(batches, rank, world, len(dataset) % size)
        return DataLoader(rows, batch_sampler=batches, collate_fn=collator, generator=generator)
    return DataLoader(
        rows, batch_size=batch_size, shuffle=shuffle, collate_fn=collator, generator=generator
    )
