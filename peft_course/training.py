"""One training loop for every method: a plain PyTorch loop a learner can read top to bottom.

Head-only, LoRA, full fine-tuning and QLoRA differ only in *which* parameters have
`requires_grad=True`; this loop trains whatever is trainable. It pads each batch to its own
longest row (dynamic padding), evaluates on the validation split after every epoch (or every
`eval_every` steps), keeps the trainable weights of the best validation accuracy, and records
a history of losses and accuracies.
"""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, DatasetDict
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import set_seed

from peft_course.errors import (
    CourseError, check_int, check_number, check_positive_int, check_positive_number, describe,
)
from peft_course.files import replacing
from peft_course.metrics import classification_metrics
from peft_course.models import make_loader
from peft_course.settings import TRAINING
from peft_course.system import check_device, pick_device, use_bf16


@dataclass
class TrainConfig:
    """Hyper-parameters of the loop. `bf16=None` means: use bf16 autocast where the GPU has it."""

    epochs: int = TRAINING.epochs
    batch_size: int = TRAINING.batch_size
    learning_rate: float = 5e-4
    weight_decay: float = TRAINING.weight_decay
    max_grad_norm: float = 1.0
    eval_every: int | None = None
    group_by_length: bool = False  # batches of similar length: less padding, same rows each epoch
    seed: int = 0
    device: str | None = None
    bf16: bool | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        """Check every field's type and range here, so a bad value fails before any work starts."""
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        check_positive_number("learning_rate", self.learning_rate)
        check_number("weight_decay", self.weight_decay, 0)
        check_positive_number("max_grad_norm", self.max_grad_norm)
        if self.eval_every is not None:
            check_positive_int("eval_every", self.eval_every)
        check_int("seed", self.seed, minimum=0)
        if self.device is not None:
            check_device(self.device)
        if not isinstance(self.group_by_length, bool):
            raise CourseError(f"group_by_length must be True or False, got {describe(self.group_by_length)}")
        if self.bf16 is not None and not isinstance(self.bf16, bool):
            raise CourseError(f"bf16 must be True, False or None (automatic), got {describe(self.bf16)}")
        if not isinstance(self.progress, bool):
            raise CourseError(f"progress must be True or False, got {describe(self.progress)}")


@dataclass
class TrainResult:
    """What training produced: the history and the trainable weights at the best validation."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_step: int = 0
    best_val_accuracy: float = float("-inf")
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The JSON-friendly part (weights left out)."""
        return {k: v for k, v in asdict(self).items() if k != "best_state"}


@torch.no_grad()
def predict(
    model: torch.nn.Module, dataset: Dataset, tokenizer: Any, batch_size: int = 64,
    device: str | torch.device | None = None, bf16: bool | None = None, progress: bool = False,
) -> tuple[torch.Tensor, float]:
    """Logits for every row of `dataset` and the mean loss (nan when it has no labels)."""
    device = pick_device(str(device) if device else None)
    model.to(device).eval()
    loader = make_loader(dataset, tokenizer, batch_size, shuffle=False, seed=0, device=device)
    logits, total_loss, rows = [], 0.0, 0
    for batch in tqdm(loader, desc="evaluate", leave=False, disable=not progress):
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(device, bf16)):
            output = model(**batch)
        logits.append(output.logits.float().cpu())
        if output.loss is not None:
            total_loss += output.loss.item() * len(batch["input_ids"])
            rows += len(batch["input_ids"])
    return torch.cat(logits), (total_loss / rows if rows else float("nan"))


def evaluate_classifier(
    model: torch.nn.Module, dataset: Dataset, tokenizer: Any, batch_size: int = 64,
    device: str | torch.device | None = None, bf16: bool | None = None, progress: bool = False,
) -> dict[str, Any]:
    """Loss, accuracy and weighted P/R/F1 on a tokenized split, plus the predictions."""
    logits, loss = predict(model, dataset, tokenizer, batch_size, device, bf16, progress)
    predictions = logits.argmax(-1).tolist()
    metrics = classification_metrics(dataset["labels"], predictions)
    return {"loss": loss, **metrics, "predictions": predictions}


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the parameters that train (all a method changes)."""
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Write a `trainable_state` copy back into `model` (e.g. the best validation weights)."""
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            parameters[name].copy_(value)


CHECKPOINT_FILES = ("trainable.safetensors", "best.safetensors", "optimizer.pt", "state.json")


def save_checkpoint(
    directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
    result: TrainResult, epochs_done: int, step: int,
) -> None:
    """Everything needed to continue after `epochs_done` epochs: weights, optimizer, RNG, history.

    Weights are safetensors; the optimizer state and RNG state are plain tensors and numbers,
    saved with `torch.save` and read back with `weights_only=True` (no arbitrary pickle).
    Each file is written to a temporary name first and all four are then moved into place, so
    an interrupt while saving leaves the previous epoch's checkpoint, not a mix of two.
    """
    state = {"epochs_done": epochs_done, "step": step, **result.as_dict()}
    with ExitStack() as stack:
        # entered in reverse, so that the stack moves state.json into place last
        paths = {name: stack.enter_context(replacing(directory / name)) for name in reversed(CHECKPOINT_FILES)}
        save_file(trainable_state(model), paths["trainable.safetensors"])
        save_file(result.best_state, paths["best.safetensors"])
        torch.save({"optimizer": optimizer.state_dict(), "rng": torch.get_rng_state()}, paths["optimizer.pt"])
        paths["state.json"].write_text(json.dumps(state, indent=1))


def load_checkpoint(
    directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, result: TrainResult
) -> tuple[int, int]:
    """Restore a `save_checkpoint` into `model`, `optimizer` and `result`; returns (epochs_done, step).

    Every file is read and checked against `model` before anything is restored, so a damaged
    checkpoint or one saved for other trainable parameters (another method, another rank) is a
    `CourseError` naming the file, not a `KeyError` halfway through.
    """
    missing = [f for f in CHECKPOINT_FILES if not (directory / f).is_file()]
    if missing:
        raise CourseError(f"cannot resume from '{directory}': missing {missing}; start afresh instead")
    trainable = _read_checkpoint_file(directory / "trainable.safetensors", load_file)
    best = _read_checkpoint_file(directory / "best.safetensors", load_file)
    saved = _read_checkpoint_file(directory / "optimizer.pt", lambda p: torch.load(p, weights_only=True))
    state = _read_checkpoint_file(directory / "state.json", lambda p: json.loads(p.read_text()))
    expected = {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}
    for name, weights in (("trainable.safetensors", trainable), ("best.safetensors", best)):
        found = {n: tuple(t.shape) for n, t in weights.items()}
        if found != expected:
            differing = sorted(set(found.items()) ^ set(expected.items()))[:2]
            raise CourseError(
                f"cannot resume from '{directory}': {name} holds other trainable weights than this model has "
                f"({', '.join(f'{n} {list(s)}' for n, s in differing)} ...): it was saved with another method or "
                f"other options; resume with those, or start afresh")
    try:
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng"])
        history, best_step = state["history"], state["best_step"]
        best_val_accuracy, seconds = state["best_val_accuracy"], state["seconds"]
        epochs_done, step = state["epochs_done"], state["step"]
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CourseError(f"cannot resume from '{directory}': the optimizer or training state does not fit this "
                          f"run ({type(error).__name__}: {error}); start afresh") from error
    load_trainable_state(model, trainable)
    result.history, result.best_step = history, best_step
    result.best_val_accuracy, result.seconds = best_val_accuracy, seconds
    result.best_state = best
    return epochs_done, step


def check_checkpoint(directory: str | Path) -> None:
    """Check, without loading any tensor, that a checkpoint's files are whole; a `CourseError` if not.

    A truncated file is found from its own layout: a safetensors file must be as long as its
    header says, `optimizer.pt` (a zip archive) must end with its directory of members, and
    `state.json` must parse. So `--resume` fails in its first second, not after the model loads.
    """
    directory = Path(directory)
    missing = [f for f in CHECKPOINT_FILES if not (directory / f).is_file()]
    if missing:
        raise CourseError(f"cannot resume from '{directory}': missing {missing}; start afresh instead")
    for name in ("trainable.safetensors", "best.safetensors"):
        _read_checkpoint_file(directory / name, _check_safetensors_length)
    _read_checkpoint_file(directory / "optimizer.pt", lambda p: zipfile.ZipFile(p).close())
    _read_checkpoint_file(directory / "state.json", lambda p: json.loads(p.read_text()))


def _check_safetensors_length(path: Path) -> None:
    """Raise unless `path` is as long as its safetensors header says (8-byte length, JSON, data)."""
    with open(path, "rb") as handle:
        header_length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_length))
    end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    if path.stat().st_size < 8 + header_length + end:
        raise EOFError(f"{path.stat().st_size} bytes, the header describes {8 + header_length + end}")


def _read_checkpoint_file(path: Path, read: Callable[[Path], Any]) -> Any:
    """`read(path)`, with any failure (a truncated or damaged file fails in many ways) as one `CourseError`."""
    try:
        return read(path)
    except Exception as error:  # safetensors, torch.load and json each raise their own types
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CourseError(f"cannot resume from '{path.parent}': {path.name} is damaged or truncated "
                          f"({type(error).__name__}: {message}); start afresh instead") from error


def train(
    model: torch.nn.Module, tokenized: DatasetDict, tokenizer: Any, config: TrainConfig | None = None,
    checkpoint_dir: str | Path | None = None, resume: bool = False,
    on_epoch_end: Callable[[int, TrainResult], None] | None = None,
    evaluator: Callable[[torch.nn.Module], dict[str, Any]] | None = None,
    loss_fn: Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor] | None = None,
) -> TrainResult:
    """Train the trainable parameters of `model` on `tokenized["train"]` with AdamW.

    Validation runs every `eval_every` steps and at the end of every epoch; the result keeps
    the trainable weights of the best validation accuracy. The model is left at the *last*
    iteration's weights; `load_trainable_state(model, result.best_state)` moves it to the best.
    `evaluator(model)` replaces the validation of a classifier (`evaluate_classifier` on
    `tokenized["validation"]`) when accuracy is read differently, e.g. from label words; it
    returns at least `loss` and `accuracy`. `loss_fn(model, batch)` replaces `model(**batch).loss`
    (`lm_classification.answer_loss` computes the same loss from the answer positions alone).

    With `checkpoint_dir`, a checkpoint is written after every epoch, and `resume=True` continues
    from it. Each epoch's batch order depends only on the seed and the epoch number, and the RNG
    state is restored, so a resumed run ends with the same numbers as an uninterrupted one.
    """
    config = config or TrainConfig()
    set_seed(config.seed)
    device = pick_device(config.device)
    bf16 = use_bf16(device, config.bf16)
    model.to(device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise CourseError("the model has no trainable parameters: nothing to train")
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    loader = make_loader(tokenized["train"], tokenizer, config.batch_size, True, config.seed, device,
                         config.group_by_length)
    result = TrainResult()
    first_epoch, step = 0, 0
    if resume and checkpoint_dir is not None and (Path(checkpoint_dir) / "state.json").is_file():
        first_epoch, step = load_checkpoint(Path(checkpoint_dir), model, optimizer, result)
    start, running, seen = time.perf_counter() - result.seconds, 0.0, 0

    def validate(epoch: float) -> None:
        nonlocal running, seen
        if evaluator is not None:
            scores = evaluator(model)
        else:
            scores = evaluate_classifier(model, tokenized["validation"], tokenizer, config.batch_size * 2, device, bf16)
        result.history.append({
            "step": step, "epoch": round(epoch, 3), "train_loss": running / max(seen, 1),
            "val_loss": scores["loss"], "val_accuracy": scores["accuracy"],
        })
        running, seen = 0.0, 0
        if scores["accuracy"] > result.best_val_accuracy:
            result.best_val_accuracy, result.best_step = scores["accuracy"], step
            result.best_state = trainable_state(model)

    bar = tqdm(total=config.epochs * len(loader), initial=step, desc="train", disable=not config.progress)
    # --8<-- [start:loop]
    for epoch in range(first_epoch, config.epochs):
        model.train()
        loader.generator.manual_seed(config.seed + epoch)  # the order depends on the epoch only
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = model(**batch).loss if loss_fn is None else loss_fn(model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            running, seen = running + loss.item(), seen + 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if config.eval_every and step % config.eval_every == 0:
                validate(step / len(loader))
                model.train()
        if not (config.eval_every and step % config.eval_every == 0):
            validate(epoch + 1)
        # --8<-- [end:loop]
        result.seconds = time.perf_counter() - start
        if checkpoint_dir is not None:
            save_checkpoint(Path(checkpoint_dir), model, optimizer, result, epoch + 1, step)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, result)
    bar.close()
    result.seconds = time.perf_counter() - start
    return result
