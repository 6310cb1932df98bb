"""One training loop for every method: a plain PyTorch loop a learner can read top to bottom.

Head-only, LoRA, full fine-tuning and QLoRA differ only in *which* parameters have
`requires_grad=True`; this loop trains whatever is trainable. It pads each batch to its own
longest row (dynamic padding), evaluates on the validation split after every epoch (or every
`eval_every` steps), keeps the trainable weights of the best validation accuracy, and records
a history of losses and accuracies.

The options that make it faster change no result: `max_tokens_per_batch` runs a batch in
pieces of similar length (less padding, the same gradient), frozen matrices are held in bf16
where bf16 autocast would cast them on every step anyway, and under `torchrun` each process
trains on its share of every batch (`peft_course.distributed`).
"""

from __future__ import annotations

import json
import random
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers.pytorch_utils import Conv1D

from peft_course import distributed
from peft_course.errors import (
    CourseError,
)
from peft_course.configs import TrainConfig
from peft_course.cost import reset_peak_memory, run_cost
from peft_course.files import replacing
from peft_course.metrics import classification_metrics
from peft_course.models import make_loader
from peft_course.system import pick_device, use_bf16


@dataclass
class TrainResult:
    """What training produced: the history and the trainable weights at the best validation.

    Attributes:
        history: one entry per validation: `step`, `epoch`, `train_loss` (the mean since the
            previous validation), `val_loss`, `val_accuracy` and `learning_rate` (the first
            parameter group's).
        best_step: the optimizer step of the best validation accuracy.
        best_val_accuracy: the best validation accuracy so far (-inf before the first).
        best_state: a CPU copy of the trainable weights at `best_step`.
        seconds: wall-clock time of training, validation included (and the earlier time of a
            resumed run).
        throughput: one entry per validation of this process's run (a resumed run's earlier
            ones are not kept): `step` and `tokens_per_second`, the real tokens trained on since
            the previous validation over the time they took. Kept out of `history`, which is
            the same on every rerun, and out of checkpoints.
        cost: this process's run's `cost.RunCost` as a dictionary (real and padded tokens/s,
            peak memory, optimizer state, FLOPs a token, utilisation of the measured peak);
            kept out of `history` for the same reason.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_step: int = 0
    best_val_accuracy: float = float("-inf")
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    seconds: float = 0.0
    throughput: list[dict[str, float]] = field(default_factory=list)
    cost: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The JSON-friendly part (weights and the timings of this process left out)."""
        mine = ("best_state", "throughput", "cost")
        return {k: v for k, v in asdict(self).items() if k not in mine}


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    dataset: Dataset,
    tokenizer: Any,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    bf16: bool | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, float]:
    """Logits for every row of `dataset` and the mean loss (nan when it has no labels).

    The rows run sorted by length, so a batch holds rows of similar length and pads little
    (each row's logits are what they are in any batch); they come back in the dataset's order.

    Args:
        model: the model to run; it is moved to `device` and put in eval mode.
        dataset: a tokenized split (`input_ids`, `attention_mask`, and `labels` if scored).
        tokenizer: pads each batch to its longest row.
        batch_size: rows a forward pass.
        device: where to run; None picks CUDA when present, else the CPU.
        bf16: True or False forces bf16 autocast; None uses it on a CUDA device that has it.
        progress: show a progress bar.

    Returns:
        The logits of every row (float32, on the CPU), and the mean loss over the rows.
    """
    device = pick_device(str(device) if device else None)
    model.to(device).eval()
    lengths = [len(ids) for ids in dataset["input_ids"]]
    order = sorted(range(len(dataset)), key=lengths.__getitem__)
    loader = make_loader(
        dataset.select(order), tokenizer, batch_size, shuffle=False, seed=0, device=device
    )
    logits, total_loss, rows = [], 0.0, 0
    for batch in tqdm(loader, desc="evaluate", leave=False, disable=not progress):
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(device, bf16)):
            output = model(**batch)
        logits.append(output.logits.float().cpu())
        if output.loss is not None:
            total_loss += output.loss.item() * len(batch["input_ids"])
            rows += len(batch["input_ids"])
    in_order = torch.tensor(order).argsort()  # where each row of the dataset went
    return torch.cat(logits)[in_order], (total_loss / rows if rows else float("nan"))


def evaluate_classifier(
    model: torch.nn.Module,
    dataset: Dataset,
    tokenizer: Any,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    bf16: bool | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Loss, accuracy and weighted P/R/F1 on a tokenized split, plus the predictions.

    Args:
        model: the classifier to evaluate.
        dataset: a tokenized split with a `labels` column.
        tokenizer: pads each batch to its longest row.
        batch_size: rows a forward pass.
        device: where to run; None picks CUDA when present, else the CPU.
        bf16: True or False forces bf16 autocast; None uses it on a CUDA device that has it.
        progress: show a progress bar.

    Returns:
        `loss`, the scores of `classification_metrics`, and `predictions` (the class id
            predicted for each row).
    """
    logits, loss = predict(model, dataset, tokenizer, batch_size, device, bf16, progress)
    predictions = logits.argmax(-1).tolist()
    metrics = classification_metrics(dataset["labels"], predictions)
    return {"loss": loss, **metrics, "predictions": predictions}


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the parameters that train (all a method changes).

    Args:
        model: the model whose parameters with `requires_grad=True` are copied.

    Returns:
        The copies, keyed by parameter name.
    """
    return {
        n: distributed.full_tensor(p.detach()).to("cpu", copy=True)
        for n, p in model.named_parameters()
        if p.requires_grad
    }


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Write a `trainable_state` copy back into `model` (e.g. the best validation weights).

    Args:
        model: the model to update in place.
        state: parameter names and the values to copy into them.
    """
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            distributed.assign(parameters[name], value)


CHECKPOINT_FILES = ("trainable.safetensors", "best.safetensors", "optimizer.pt", "state.json")


def save_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    result: TrainResult,
    epochs_done: int,
    step: int,
) -> None:
    """Everything needed to continue after `epochs_done` epochs: weights, optimizer, RNG, history.

    Weights are safetensors; the optimizer state and RNG state are plain tensors and numbers,
    saved with `torch.save` and read back with `weights_only=True` (no arbitrary pickle).
    Each file is written to a temporary name first and all four are then moved into place, so
    an interrupt while saving leaves the previous epoch's checkpoint, not a mix of two. Under
    `torchrun` every process calls it (a sharded model's tensors are gathered first); only rank
    0 writes.

    Args:
        directory: where the files of `CHECKPOINT_FILES` are written; created if missing.
        model: the model whose trainable weights are saved.
        optimizer: the optimizer whose state is saved.
        result: the history and the best weights so far.
        epochs_done: the epochs finished.
        step: the optimizer steps taken.
    """
    state = {"epochs_done": epochs_done, "step": step, **result.as_dict()}
    weights, optimizer_state = trainable_state(model), distributed.optimizer_state(model, optimizer)
    if not distributed.is_main():
        return
    with ExitStack() as stack:
        # entered in reverse, so that the stack moves state.json into place last
        paths = {
            name: stack.enter_context(replacing(directory / name))
            for name in reversed(CHECKPOINT_FILES)
        }
        save_file(weights, paths["trainable.safetensors"])
        save_file(result.best_state, paths["best.safetensors"])
        torch.save(
            {"optimizer": optimizer_state, "rng": torch.get_rng_state()},
            paths["optimizer.pt"],
        )
        paths["state.json"].write_text(json.dumps(state, indent=1))


def load_checkpoint(
    directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, result: TrainResult
) -> tuple[int, int]:
    """Restore a `save_checkpoint` into `model`, `optimizer` and `result`;
    returns (epochs_done, step).

    Every file is read and checked against `model` before anything is restored, so a damaged
    checkpoint or one saved for other trainable parameters (another method, another rank) is a
    `CourseError` naming the file, not a `KeyError` halfway through.

    Args:
        directory: the checkpoint directory.
        model: receives the saved trainable weights.
        optimizer: receives the saved optimizer state.
        result: receives the history, the best step, accuracy and weights, and the time so far.

    Returns:
        The epochs finished and the optimizer steps taken when the checkpoint was saved.

    Raises:
        CourseError: if a file is missing, damaged or truncated, holds other trainable weights
            than `model` has, or the optimizer or training state does not fit this run.
    """
    missing = [f for f in CHECKPOINT_FILES if not (directory / f).is_file()]
    if missing:
        raise CourseError(
            f"cannot resume from '{directory}': missing {missing}; start afresh instead"
        )
    trainable = _read_checkpoint_file(directory / "trainable.safetensors", load_file)
    best = _read_checkpoint_file(directory / "best.safetensors", load_file)
    saved = _read_checkpoint_file(
        directory / "optimizer.pt", lambda p: torch.load(p, weights_only=True)
    )
    state = _read_checkpoint_file(directory / "state.json", lambda p: json.loads(p.read_text()))
    expected = {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}
    for name, weights in (("trainable.safetensors", trainable), ("best.safetensors", best)):
        found = {n: tuple(t.shape) for n, t in weights.items()}
        if found != expected:
            differing = sorted(set(found.items()) ^ set(expected.items()))[:2]
            raise CourseError(
                f"cannot resume from '{directory}': {name} holds other trainable weights than this "
                f"model has ({', '.join(f'{n} {list(s)}' for n, s in differing)} ...): it was "
                "saved with another method or other options; resume with those, or start afresh"
            )
    try:
        distributed.load_optimizer_state(model, optimizer, saved["optimizer"])
        torch.set_rng_state(saved["rng"])
        history, best_step = state["history"], state["best_step"]
        best_val_accuracy, seconds = state["best_val_accuracy"], state["seconds"]
        epochs_done, step = state["epochs_done"], state["step"]
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CourseError(
            f"cannot resume from '{directory}': the optimizer or training state does not fit this "
            f"run ({type(error).__name__}: {error}); start afresh"
        ) from error
    load_trainable_state(model, trainable)
    result.history, result.best_step = history, best_step
    result.best_val_accuracy, result.seconds = best_val_accuracy, seconds
    result.best_state = best
    return epochs_done, step


def check_checkpoint(directory: str | Path) -> None:
    """Check, without loading any tensor, that a checkpoint's files are whole;
    a `CourseError` if not.

    A truncated file is found from its own layout: a safetensors file must be as long as its
    header says, `optimizer.pt` (a zip archive) must end with its directory of members, and
    `state.json` must parse. So `--resume` fails in its first second, not after the model loads.

    Args:
        directory: the checkpoint directory.

    Raises:
        CourseError: if a file is missing, damaged or truncated.
    """
    directory = Path(directory)
    missing = [f for f in CHECKPOINT_FILES if not (directory / f).is_file()]
    if missing:
        raise CourseError(
            f"cannot resume from '{directory}': missing {missing}; start afresh instead"
        )
    for name in ("trainable.safetensors", "best.safetensors"):
        _read_checkpoint_file(directory / name, _check_safetensors_length)
    _read_checkpoint_file(directory / "optimizer.pt", lambda p: zipfile.ZipFile(p).close())
    _read_checkpoint_file(directory / "state.json", lambda p: json.loads(p.read_text()))


def _check_safetensors_length(path: Path) -> None:
    """Raise unless `path` is as long as its safetensors header says (8-byte length, JSON, data)."""
    with open(path, "rb") as handle:
        header_length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_length))
    end = max(
        (entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"),
        default=0,
    )
    if path.stat().st_size < 8 + header_length + end:
        raise EOFError(
            f"{path.stat().st_size} bytes, the header describes {8 + header_length + end}"
        )


def _read_checkpoint_file(path: Path, read: Callable[[Path], Any]) -> Any:
    """`read(path)`, with any failure
    (a truncated or damaged file fails in many ways) as one `CourseError`."""
    try:
        return read(path)
    except Exception as error:  # safetensors, torch.load and json each raise their own types
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CourseError(
            f"cannot resume from '{path.parent}': {path.name} is damaged or truncated "
            f"({type(error).__name__}: {message}); start afresh instead"
        ) from error


def batch_pieces(
    batch: dict[str, torch.Tensor], max_tokens: int | None
) -> list[dict[str, torch.Tensor]]:
    """`batch` cut into pieces of rows of similar length, each at most `max_tokens` padded tokens.

    Rows are sorted by length and a piece takes rows while (rows x its longest row) fits the
    budget (a row longer than the budget is a piece of its own); each piece drops the padding
    columns none of its rows needs. With right padding, which training uses, a row's tokens keep
    their positions, so each row's loss is what it was in the whole batch.

    A batch within the budget is one piece, the batch itself, rows in their order: the default
    budget changes nothing for short texts.

    Args:
        batch: a padded batch with an `attention_mask`.
        max_tokens: the budget of padded tokens a piece; `None`: one piece.
    """
    if max_tokens is None or batch["attention_mask"].numel() <= max_tokens:
        return [batch]
    lengths = batch["attention_mask"].sum(1)
    order = torch.argsort(lengths, stable=True).tolist()
    pieces, current = [], []
    for row in order:
        if current and (len(current) + 1) * int(lengths[row]) > max_tokens:
            pieces.append(current)
            current = []
        current.append(row)
    pieces.append(current)
    return [_rows(batch, rows) for rows in pieces]


def _rows(batch: dict[str, torch.Tensor], rows: list[int]) -> dict[str, torch.Tensor]:
    """The given rows of `batch`, without the trailing columns that are padding in all of them."""
    index = torch.tensor(rows)
    used = batch["attention_mask"][index].any(0).nonzero()
    width = int(used.max()) + 1 if len(used) else 1
    return {k: v[index][:, :width] if v.dim() > 1 else v[index] for k, v in batch.items()}


def loss_weight(piece: dict[str, torch.Tensor], per_row: bool) -> int:
    """How much of a batch's mean loss a piece carries: its rows, or its predicted tokens.

    A causal LM's loss is the mean over tokens whose (shifted) label is not -100, so a piece
    counts those; a classifier's (or a custom `loss_fn`'s, taken to be a mean over rows)
    counts rows.

    Args:
        piece: one piece of a batch, with `input_ids` and `labels`.
        per_row: count rows whatever the labels (for a custom `loss_fn`).
    """
    if per_row or piece["labels"].dim() == 1:
        return len(piece["input_ids"])
    return int((piece["labels"][:, 1:] != -100).sum())


@contextmanager
def frozen_matrices_in_bf16(model: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Hold the frozen weights of linear layers in bf16 while training under bf16 autocast.

    Autocast casts those weights to bf16 in every forward pass; holding them in bf16 gives the
    same numbers with half their memory and none of the casting. Trainable weights stay float32,
    and so does a weight shared with another module (GPT-2's LM head is its token embedding,
    which autocast does not cast). The float32 originals are put back at the end.

    Args:
        model: the model whose frozen float32 `Linear` and `Conv1D` weights are held in bf16.
        enabled: False leaves the model as it is (training without bf16 autocast).
    """
    if not enabled:
        yield
        return
    owners: dict[int, int] = {}
    for module in model.modules():
        for parameter in module.parameters(recurse=False):
            owners[id(parameter)] = owners.get(id(parameter), 0) + 1
    held = {}
    for module in model.modules():
        if (
            isinstance(module, (torch.nn.Linear, Conv1D)) and module.weight.dtype == torch.float32
        ):  # not 4-bit
            for parameter in module.parameters(recurse=False):
                if not parameter.requires_grad and owners[id(parameter)] == 1:
                    held[parameter] = parameter.data.to("cpu", copy=True)
                    parameter.data = parameter.data.to(torch.bfloat16)
    try:
        yield
    finally:
        for parameter, original in held.items():
            parameter.data = original.to(parameter.device)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (every device's), as `transformers.set_seed`.

    Written here rather than imported: `transformers.set_seed` lives in its trainer utilities,
    whose import pulls in peft and bitsandbytes, seconds before any command that trains no adapter.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA's generators too


def train(
    model: torch.nn.Module,
    tokenized: DatasetDict,
    tokenizer: Any,
    config: TrainConfig | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    on_epoch_end: Callable[[int, TrainResult], None] | None = None,
    evaluator: Callable[[torch.nn.Module], dict[str, Any]] | None = None,
    loss_fn: Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor] | None = None,
    on_validate: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train the trainable parameters of `model` on `tokenized["train"]` with AdamW.

    Validation runs every `eval_every` steps and at the end of every epoch; the result keeps
    the trainable weights of the best validation accuracy. The model is left at the *last*
    iteration's weights; `load_trainable_state(model, result.best_state)` moves it to the best.

    With `checkpoint_dir`, a checkpoint is written after every epoch, and `resume=True` continues
    from it. Each epoch's batch order depends only on the seed and the epoch number, and the RNG
    state is restored, so a resumed run ends with the same numbers as an uninterrupted one.

    Launched by `torchrun` (or `accelerate launch`), each process takes its share of every
    batch (`batch_size` rows per process), the gradients are summed across processes, and only
    rank 0 writes the checkpoint; every process validates on the whole validation split.

    A model with a `make_optimizer(config, total_steps)` attribute (set by its method's
    `prepare`, e.g. LoRA+ and AdaLoRA in `peft_course.peft_family`) gets the optimizer it
    returns instead of the plain AdamW.

    Args:
        model: the model to train; only its parameters with `requires_grad=True` change.
        tokenized: tokenized splits: `train`, and `validation` unless `evaluator` is given.
        tokenizer: pads each batch to its longest row.
        config: the loop's hyper-parameters; None uses `TrainConfig()`'s defaults.
        checkpoint_dir: where a checkpoint is written after every epoch; None writes none.
        resume: continue from the checkpoint in `checkpoint_dir` if there is one.
        on_epoch_end: called with the epochs finished and the result so far after every epoch.
        evaluator: `evaluator(model)` replaces the validation of a classifier
            (`evaluate_classifier` on `tokenized["validation"]`) when accuracy is read
            differently, e.g. from label words; it returns at least `loss` and `accuracy`.
        loss_fn: `loss_fn(model, batch)` replaces `model(**batch).loss`
            (`lm_classification.answer_loss` computes the same loss from the answer positions
            alone).
        on_validate: called with each new history entry and its `tokens_per_second`, as soon
            as the validation ends (a TensorBoard writer: `event_logs.LiveEvents`).

    Returns:
        The history, the best validation accuracy, its step and trainable weights, and the time.

    Raises:
        CourseError: if the model has no trainable parameters.
    """
    config = config or TrainConfig()
    seed_everything(config.seed)
    device = distributed.setup(pick_device(config.device))
    bf16 = use_bf16(device, config.bf16)
    model.to(device)
    reset_peak_memory(device)
    sharded = config.fsdp and distributed.shard(model)  # before the optimizer sees the parameters
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise CourseError("the model has no trainable parameters: nothing to train")
    loader = make_loader(
        tokenized["train"],
        tokenizer,
        config.batch_size,
        True,
        config.seed,
        device,
        config.group_by_length,
        distributed.rank(),
        distributed.world_size(),
    )
    # a method may bring its own optimizer (LoRA+'s two learning rates, AdaLoRA's rank budget)
    make_optimizer = getattr(model, "make_optimizer", None)
    if make_optimizer is not None:
        optimizer = make_optimizer(config, config.epochs * len(loader))
    else:
        optimizer = torch.optim.AdamW(
            parameters,
            lr=config.learning_rate,
            weight_decay=config.weight_decay,
            fused=device.type == "cuda",
        )
    forward = torch.compile(model, dynamic=True) if config.compile else model
    result = TrainResult()
    first_epoch, step = 0, 0
    if resume and checkpoint_dir is not None and (Path(checkpoint_dir) / "state.json").is_file():
        first_epoch, step = load_checkpoint(Path(checkpoint_dir), model, optimizer, result)
    start, seen = time.perf_counter() - result.seconds, 0
    running = torch.zeros((), dtype=torch.float64, device=device)  # read only when validating
    tokens, since = 0.0, time.perf_counter()  # real tokens trained on since the last validation
    padded = 0  # tokens computed on since the last validation, padding included
    spent = {"real": 0.0, "padded": 0, "seconds": 0.0}  # the run's, validation left out

    def validate(epoch: float) -> None:
        nonlocal running, seen, tokens, since, padded
        tokens_per_second = float(tokens) / max(time.perf_counter() - since, 1e-9)
        spent["real"] += float(tokens)
        spent["padded"] += padded
        spent["seconds"] += time.perf_counter() - since
        if evaluator is not None:
            scores = evaluator(model)
        else:
            scores = evaluate_classifier(
                model, tokenized["validation"], tokenizer, config.batch_size * 2, device, bf16
            )
        result.history.append(
            {
                "step": step,
                "epoch": round(epoch, 3),
                "train_loss": running.item() / max(seen, 1),
                "val_loss": scores["loss"],
                "val_accuracy": scores["accuracy"],
                "learning_rate": optimizer.param_groups[0]["lr"],
            }
        )
        result.throughput.append({"step": step, "tokens_per_second": tokens_per_second})
        if on_validate is not None:
            on_validate({**result.history[-1], **result.throughput[-1]})
        running, seen = torch.zeros_like(running), 0
        tokens, since, padded = 0.0, time.perf_counter(), 0
        if scores["accuracy"] > result.best_val_accuracy:
            result.best_val_accuracy, result.best_step = scores["accuracy"], step
            result.best_state = trainable_state(model)

    # --8<-- [start:step]
    def step_loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Forward and backward over the batch's pieces; each loss weighted by its share of the
        whole (global) batch, so the gradients add up to the batch's mean gradient."""
        nonlocal padded
        pieces = batch_pieces(batch, config.max_tokens_per_batch)
        weights = [loss_weight(piece, loss_fn is not None) for piece in pieces]
        whole = distributed.total(sum(weights), device)
        total_loss = torch.zeros((), device=device)
        for piece, weight in zip(pieces, weights):
            piece = {k: v.to(device) for k, v in piece.items()}
            padded += piece["input_ids"].numel()  # what the products compute on, padding too
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = forward(**piece).loss if loss_fn is None else loss_fn(model, piece)
            share = loss * (weight / whole)  # 1.0 for one piece on one process: the plain loop
            # FSDP averages the gradients over the processes; the share is of their sum
            (share * distributed.world_size() if sharded else share).backward()
            total_loss = total_loss + share.detach()
        return distributed.sum_gradients(parameters, total_loss, sharded)

    # --8<-- [end:step]

    main = distributed.is_main()
    bar = tqdm(
        total=config.epochs * len(loader),
        initial=step,
        desc="train",
        disable=not (config.progress and main),
    )
    with frozen_matrices_in_bf16(model, bf16 and not sharded):
        # --8<-- [start:loop]
        for epoch in range(first_epoch, config.epochs):
            model.train()
            loader.generator.manual_seed(config.seed + epoch)  # the order depends on the epoch only
            for batch in loader:
                loss = step_loss(batch)
                mask = batch.get("attention_mask")  # the real tokens, read when validating
                tokens = tokens + (batch["input_ids"].numel() if mask is None else mask.sum())
                torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                running, seen = running + loss, seen + 1
                bar.update(1)
                if step % config.log_every == 0:  # reading the loss waits for the GPU
                    bar.set_postfix(loss=f"{loss.item():.4f}")
                if config.eval_every and step % config.eval_every == 0:
                    validate(step / len(loader))
                    model.train()
            if not (config.eval_every and step % config.eval_every == 0):
                validate(epoch + 1)
            # --8<-- [end:loop]
            result.seconds = time.perf_counter() - start
            if checkpoint_dir is not None:  # every rank gathers, rank 0 writes
                save_checkpoint(Path(checkpoint_dir), model, optimizer, result, epoch + 1, step)
                distributed.barrier()
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, result)
    bar.close()
    result.seconds = time.perf_counter() - start
    dtype = torch.bfloat16 if bf16 else torch.float32
    result.cost = run_cost(model, optimizer, *spent.values(), device, dtype).as_dict()
    return result
