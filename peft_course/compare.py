"""The PEFT family trained side by side at matched budgets: one table, one plot.

Every method of `settings.COMPARED_METHODS` is trained at each budget it can reach (about 0.1%,
1% and 10% of the model's parameters), its size chosen for the budget (`match_budget`: LoRA's
rank, an adapter's bottleneck, the number of virtual tokens), its learning rate picked by a
small search on the validation split (`search_rate`), then trained under several seeds and
scored on the test split. Beside the accuracy the table gives what each cell trains, its real
training tokens per second, its peak memory and how much it forgot (`forgetting`).

A cell is one (method, budget, learning rate, seed) run of `peft_course.finetune.finetune`, the
same function `peft-course finetune` runs. As the ablation's cells do, each is saved under
`cells/<name>-<hash>/` (the hash covers everything its result depends on) and reused when
the comparison runs again, so an interrupted comparison continues where it stopped; a cell
interrupted mid-way resumes from its last finished epoch.

`python -m peft_course.pages compare` makes the docs' results (the full embedded comparison and the
figure of the four families) under `docs/images/peft-family/`.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import datasets
import torch
from datasets import DatasetDict
from torch import nn
from tqdm.auto import tqdm

from peft_course.ablation import format_mean_std, mean_std
from peft_course.data import ClassificationData, tokenize
from peft_course.errors import CourseError
from peft_course.files import atomic_write_text
from peft_course.finetune import finetune
from peft_course.models import count_parameters, model_config, model_identity
from peft_course.plots import plt
from peft_course.registry import get_method
from peft_course.settings import COMPARE, COMPARED_METHODS, EMBEDDED_MODEL, TRAINING
from peft_course.synthetic import pretraining_corpus
from peft_course.tables import markdown_table, write_table
from peft_course.training import TrainConfig, evaluate_classifier

# --8<-- [start:families]
FAMILIES = {  # method -> its family (what it changes); the plot's colours and markers
    "head": "selective",
    "bitfit": "selective",
    "ln-tuning": "selective",
    "ia3": "additive",
    "houlsby": "additive",
    "pfeiffer": "additive",
    "prompt-tuning": "soft prompts",
    "prefix-tuning": "soft prompts",
    "p-tuning": "soft prompts",
    "lora": "reparametrised",
    "rslora": "reparametrised",
    "dora": "reparametrised",
    "pissa": "reparametrised",
    "vera": "reparametrised",
    "adalora": "reparametrised",
    "lora-plus": "reparametrised",
    "full": "every weight",
}
# --8<-- [end:families]

# --8<-- [start:knobs]
# method -> (its size option, the values tried for a model of hidden width d: 64 on tiny-gpt2)
KNOBS: dict[str, tuple[str, Callable[[int], range]]] = {
    **dict.fromkeys(
        ("lora", "rslora", "dora", "pissa", "adalora", "lora-plus"),
        ("r", lambda d: range(1, d + 1)),  # a rank at most the width (c_attn: 64 -> 192)
    ),
    "houlsby": ("r", lambda d: range(1, 2 * d + 1)),
    "pfeiffer": ("r", lambda d: range(1, 2 * d + 1)),
    "vera": ("r", lambda d: range(16, 16 * d + 1, 16)),
    # at most 64 virtual tokens: a prompt longer than the reviews themselves (about 20 tokens)
    "prompt-tuning": ("virtual_tokens", lambda d: range(1, 65)),
    "prefix-tuning": ("virtual_tokens", lambda d: range(1, 65)),
    "p-tuning": ("encoder_hidden", lambda d: range(1, 2 * d + 1)),  # 8 virtual tokens
}
# --8<-- [end:knobs]


def knob_options(method: str, value: int | None) -> dict[str, Any]:
    """The method options that give `method` the size `value` of its knob (none: {}).

    AdaLoRA prunes to half its starting rank (`target_r`), which the count does not see: a
    pruned direction is zeroed, not removed.

    Args:
        method: a key of `FAMILIES`.
        value: the value of its knob (`KNOBS`); None for a method without one.
    """
    if value is None:
        return {}
    options: dict[str, Any] = {KNOBS[method][0]: value}
    if method in ("lora", "rslora", "dora", "pissa", "adalora", "lora-plus"):
        options["alpha"] = 2.0 * value  # alpha = 2r: the scale alpha/r stays the demo's 2
    if method == "adalora":
        options["target_r"] = max(1, value // 2)
    return options


def size_label(method: str, value: int | None) -> str:
    """`r=3`, `virtual_tokens=8`, or `-` for a method without a size knob."""
    return "-" if value is None else f"{KNOBS[method][0]}={value}"


# ---------------------------------------------------------------------------------------------
# Budgets
# ---------------------------------------------------------------------------------------------


# methods whose trainable parameters are another's at every size: counted as that one (PiSSA's
# start is an SVD of every weight, rsLoRA and LoRA+ change the scale and the optimizer only)
COUNT_AS = {"rslora": "lora", "pissa": "lora", "lora-plus": "lora"}


class Counter:
    """Trainable parameters of a method at a size, counted on the prepared model.

    The counts are kept in `path` (a JSON file), so a rerun counts nothing again.

    Args:
        model_name: the model every cell starts from.
        data: the classification data (its labels size the head).
        path: where the counts are kept; None: in memory only.
    """

    def __init__(self, model_name: str, data: ClassificationData, path: Path | None = None) -> None:
        self.model_name, self.data, self.path = model_name, data, path
        self.cache: dict[str, int] = {}
        if path is not None and path.is_file():
            self.cache = json.loads(path.read_text())
        if "total" not in self.cache:
            model, _ = self.load("head")
            self.cache["total"] = count_parameters(model)[1]
        self.total = self.cache["total"]
        config = model_config(model_name)
        self.width = getattr(config, "n_embd", None) or config.hidden_size  # GPT-2, Llama

    def load(self, method: str) -> tuple[nn.Module, Any]:
        """The untrained classifier `method` starts from (seed 0)."""
        load = get_method(method).function("load")
        return load(self.model_name, "classification", self.data.num_labels, self.data.label_names)

    def __call__(self, method: str, value: int | None) -> int:
        """Trainable parameters of `method` with its knob at `value`."""
        method = COUNT_AS.get(method, method)
        key = f"{method} {value}"
        if key not in self.cache:
            model, _ = self.load(method)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                options = knob_options(method, value)
                prepared = get_method(method).function("prepare")(model, **options)
            self.cache[key] = count_parameters(prepared)[0]
            if self.path is not None:
                atomic_write_text(self.path, json.dumps(self.cache, indent=1))
        return self.cache[key]


# --8<-- [start:match_budget]
@dataclass(frozen=True)
class Budget:
    """Where a method stands at one budget.

    Attributes:
        share: the target, a share of the model's parameters.
        value: the knob's value chosen (None: the method has no knob).
        trainable: the method's trainable parameters at that value.
        reached: whether it stands at this budget (see `match_budget`).
    """

    share: float
    value: int | None
    trainable: int
    reached: bool


def match_budget(
    method: str,
    shares: Sequence[float],
    total: int,
    count: Callable[[str, int | None], int],
    *,
    width: int,
    tolerance: float = COMPARE.tolerance,
) -> list[Budget]:
    """For each budget, the knob value whose count is nearest it (on a log scale).

    The counts grow with the knob, so a bisection finds the nearest in a few counts. A budget is
    reached if that count is within `tolerance` times the target either way. A method without a
    knob (BitFit, LN-tuning, (IA)³, the head) has one size: it stands at the budget nearest it,
    and only there; one more than half a decade from every budget (full fine-tuning) stands at
    its own share, a budget added after the others.

    Args:
        method: a key of `FAMILIES`.
        shares: the budgets, as shares of `total`.
        total: the model's parameters.
        count: `count(method, value)`: the trainable parameters at a knob's value.
        width: the model's hidden width, which bounds the knobs (`KNOBS`; `Counter.width`).
        tolerance: how far off a reached budget may be, as a factor.
    """
    if method not in KNOBS:
        trainable = count(method, None)
        distance = [abs(math.log(trainable / (share * total))) for share in shares]
        nearest = distance.index(min(distance))
        if distance[nearest] > math.log(10) / 2:  # half a decade off: a reference of its own
            return [Budget(s, None, trainable, False) for s in shares] + [
                Budget(trainable / total, None, trainable, True)
            ]
        return [Budget(s, None, trainable, i == nearest) for i, s in enumerate(shares)]
    values = KNOBS[method][1](width)
    budgets = []
    for share in shares:
        target = share * total
        low, high = 0, len(values) - 1
        while low < high:  # the first value whose count reaches the target
            middle = (low + high) // 2
            low, high = (
                (middle + 1, high) if count(method, values[middle]) < target else (low, middle)
            )
        candidates = {values[i] for i in (low - 1, low) if 0 <= i < len(values)}
        value = min(candidates, key=lambda v: abs(math.log(count(method, v) / target)))
        trainable = count(method, value)
        reached = abs(math.log(trainable / target)) <= math.log(tolerance)
        budgets.append(Budget(share, value, trainable, reached))
    return budgets


# --8<-- [end:match_budget]


# ---------------------------------------------------------------------------------------------
# What a cell measures beyond accuracy
# ---------------------------------------------------------------------------------------------


def reset_peak_memory() -> None:
    """Start a new peak of the process's resident memory (Linux: `/proc/self/clear_refs`)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # another system: the peak since the process started
        pass


def peak_memory_mib() -> float:
    """The process's peak resident memory since `reset_peak_memory`, in MiB (`VmHWM`)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def general_texts(n: int = COMPARE.general_texts, seed: int = COMPARE.general_seed) -> list[str]:
    """`n` pretraining-style documents no compared model was trained on (another seed's)."""
    return pretraining_corpus(seed)[:n]


# --8<-- [start:lm_loss]
@torch.no_grad()
def lm_loss(model: nn.Module, tokenizer: Any, texts: Sequence[str], batch_size: int = 32) -> float:
    """Next-token loss of a classifier's backbone on `texts`, through the tied LM head.

    The model runs as it classifies (its adapters, soft prompts or changed weights active);
    the hidden states that reach its classification head (after the final LayerNorm) are
    multiplied by the token embedding, which GPT-2's LM head is tied to, and scored against the
    next token. Virtual tokens before the text are dropped; padding is not scored.

    Args:
        model: a (prepared, trained) classifier with a `score` head.
        tokenizer: its tokenizer.
        texts: the documents.
        batch_size: documents a forward pass.

    Returns:
        The mean loss per predicted token, in nats.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = inner.score
    embedding = model.get_input_embeddings().weight
    seen: dict[str, torch.Tensor] = {}
    hook = head.register_forward_pre_hook(lambda module, args: seen.update(hidden=args[0]))
    device = embedding.device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                list(texts[start : start + batch_size]),
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=TRAINING.max_length,
            ).to(device)
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            length = batch["input_ids"].shape[1]
            hidden = seen["hidden"][:, -length:]  # the text's positions, after any virtual tokens
            logits = hidden[:, :-1].float() @ embedding.float().T
            labels = batch["input_ids"][:, 1:].masked_fill(
                batch["attention_mask"][:, 1:] == 0, -100
            )
            loss = nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum"
            )
            total, count = total + loss.item(), count + int((labels != -100).sum())
    finally:
        hook.remove()
        model.train(was_training)
    return total / count


# --8<-- [end:lm_loss]


def validation_seconds(
    model: nn.Module, tokenizer: Any, data: ClassificationData, max_length: int, config: Any
) -> float:
    """The time of one validation pass as the loop makes it (what its seconds include per epoch).

    Args:
        model: the trained classifier.
        tokenizer: its tokenizer.
        data: the classification data.
        max_length: tokens a text keeps.
        config: the loop's `TrainConfig` (its batch size: the loop validates with twice as many).
    """
    validation = tokenize(data, tokenizer, max_length)["validation"]
    start = time.perf_counter()
    evaluate_classifier(model, validation, tokenizer, config.batch_size * 2, config.device)
    return time.perf_counter() - start


def real_tokens(data: ClassificationData, tokenizer: Any, max_length: int) -> int:
    """The non-padding tokens of the training split, as the loop sees them (cut to `max_length`)."""
    texts = list(data.splits["train"]["text"])
    encoded = tokenizer(texts, truncation=True, max_length=max_length)
    return sum(len(ids) for ids in encoded["input_ids"])


# ---------------------------------------------------------------------------------------------
# Cells
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One method at one budget: what it trains.

    Attributes:
        method: a key of `FAMILIES`.
        share: the budget it stands at.
        value: its knob's value (None: no knob).
        trainable: its trainable parameters.
        epochs: training epochs.
    """

    method: str
    share: float
    value: int | None
    trainable: int
    epochs: int

    @property
    def options(self) -> dict[str, Any]:
        """The method's options at this size."""
        return knob_options(self.method, self.value)

    @property
    def name(self) -> str:
        """`lora-r3`, `bitfit`: the cell's directory name before its hash."""
        return self.method + ("" if self.value is None else f"-{self.value}")


def counts_path(output: Path, model_name: str, data: ClassificationData) -> Path:
    """Where the counts of a model with the data's labels are kept (its files' identity hashed)."""
    identity = model_identity(model_name)
    key = json.dumps([model_name, data.label_names, identity and identity["fingerprint"]])
    return output / "cells" / f"counts-{hashlib.sha256(key.encode()).hexdigest()[:10]}.json"


def data_fingerprint(data: ClassificationData) -> str:
    """A hash of the data's rows and labels: a cell trained on other rows is another cell."""
    rows = {s: [list(rows["text"]), list(rows["label"])] for s, rows in sorted(data.splits.items())}
    return hashlib.sha256(json.dumps([data.label_names, rows]).encode()).hexdigest()[:16]


def cell_path(
    output: Path,
    cell: Cell,
    rate: float,
    seed: int,
    data: ClassificationData,
    model_name: str,
    max_length: int,
    loop: dict[str, Any] | None = None,
) -> Path:
    """`output/cells/<name>-<hash>/seed<k>`: the hash covers every input of the result
    (`loop`: the `TrainConfig` fields a caller set beyond the cell's own).

    A search run on the whole training split under the first seed is the seed run itself
    (`--quick` searches on all its rows): one directory, trained once.
    """
    fingerprint = {
        "cell": asdict(cell),
        "rate": rate,
        "seed": seed,
        "data": data_fingerprint(data),
        "model": model_name,
        "max_length": max_length,
    }
    if loop:
        fingerprint["loop"] = loop
    identity = model_identity(model_name)
    if identity is not None:  # a local model whose files change makes other cells
        fingerprint["model_files"] = identity["fingerprint"]
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:10]
    return output / "cells" / f"{cell.name}-{digest}" / f"seed{seed}"


def run_cell(
    data: ClassificationData,
    cell: Cell,
    rate: float,
    seed: int,
    model_name: str,
    max_length: int,
    directory: Path | None,
    progress: bool = False,
    general: Sequence[str] = (),
    before: Callable[[int, Any], float] | None = None,
    loop: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train `cell` at learning rate `rate` under `seed`; its scores (saved when `directory`).

    The seed seeds everything `finetune` draws: the embedded model itself (tiny-gpt2 seed k
    is its own pretraining), the head, the adapters' start and the batch order.

    Args:
        data: the classification data.
        cell: what trains.
        rate: the learning rate.
        seed: the training seed.
        model_name: the model the cell starts from.
        max_length: tokens a text keeps.
        directory: where `metrics.json` goes (and the checkpoint while it trains); None: nowhere.
        progress: show the training bar.
        general: held-out documents for the forgetting figure; empty: not measured.
        before: `before(seed, tokenizer)`: the untrained model's LM loss on `general` (kept by
            the caller: every cell of a seed starts from the same backbone); None: computed.
        loop: other `TrainConfig` fields (batch size, pieces, device); None: the defaults.
    """
    config = TrainConfig(
        **(loop or {}), epochs=cell.epochs, learning_rate=rate, seed=seed, progress=progress
    )
    checkpoint = directory / "checkpoint" if directory is not None else None
    memory_before = peak_memory_mib()
    reset_peak_memory()
    result = finetune(
        data, cell.method, model_name, config, max_length, checkpoint, True, **cell.options
    )
    peak = peak_memory_mib()
    tokens = real_tokens(data, result.tokenizer, max_length) * cell.epochs
    validating = validation_seconds(result.model, result.tokenizer, data, max_length, config)
    stepping = result.training.seconds - validating * len(result.training.history)
    metrics: dict[str, Any] = {
        "cell": asdict(cell),
        "rate": rate,
        "seed": seed,
        "trainable": result.trainable,
        "total": result.total,
        "untrained": result.untrained["accuracy"],
        "accuracy": result.best["accuracy"],
        "f1": result.best["f1"],
        "best_val_accuracy": result.training.best_val_accuracy,
        "seconds": result.training.seconds,
        "tokens_per_second": tokens / stepping,
        "validation_seconds": validating,
        "peak_memory_mib": peak,
        "memory_before_mib": memory_before,
    }
    if general:
        if before is None:
            untrained, tokenizer = get_method("head").function("load")(
                model_name, "classification", data.num_labels, data.label_names, seed=seed
            )
            metrics["lm_loss_before"] = lm_loss(untrained, tokenizer, general)
        else:
            metrics["lm_loss_before"] = before(seed, result.tokenizer)
        metrics["lm_loss"] = lm_loss(result.model, result.tokenizer, general)
        metrics["forgetting"] = metrics["lm_loss"] - metrics["lm_loss_before"]
    if directory is not None:
        atomic_write_text(directory / "metrics.json", json.dumps(metrics, indent=1))
        shutil.rmtree(checkpoint, ignore_errors=True)  # finished: the optimizer state is not needed
    return metrics


# ---------------------------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------------------------


@dataclass
class CompareResult:
    """Every cell's learning-rate search and seeds, and which runs this call trained.

    Attributes:
        budgets: method -> where it stands at each budget.
        total: the model's parameters.
        rates: (method, share) -> the learning rate the search chose.
        search: (method, share) -> one metrics dict per learning rate tried.
        runs: (method, share) -> one metrics dict per seed.
        trained: the runs this call trained; reused: the runs found finished.
        seconds: the wall time of this call.
    """

    budgets: dict[str, list[Budget]]
    total: int
    rates: dict[tuple[str, float], float] = field(default_factory=dict)
    search: dict[tuple[str, float], list[dict[str, Any]]] = field(default_factory=dict)
    runs: dict[tuple[str, float], list[dict[str, Any]]] = field(default_factory=dict)
    trained: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    seconds: float = 0.0


@contextmanager
def quiet() -> Iterator[None]:
    """No tokenizing bar per run and no library deprecation notices: the comparison's own bar."""
    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        if shown:
            datasets.enable_progress_bars()


def subsample(data: ClassificationData, train_rows: int) -> ClassificationData:
    """`data` with the first `train_rows` training rows (a generated split is already shuffled)."""
    train = data.splits["train"]
    splits = dict(data.splits)
    splits["train"] = train.select(range(min(train_rows, len(train))))
    return replace(data, splits=DatasetDict(splits))


# --8<-- [start:search_rate]
def best_rate(search: Sequence[dict[str, Any]]) -> float:
    """The learning rate of the highest best-validation accuracy (a tie: the smaller rate)."""
    return min(search, key=lambda m: (-m["best_val_accuracy"], m["rate"]))["rate"]


# --8<-- [end:search_rate]


def compare(
    data: ClassificationData,
    methods: Sequence[str] = COMPARED_METHODS,
    shares: Sequence[float] = COMPARE.budgets,
    seeds: Sequence[int] = COMPARE.seeds,
    output: str | Path = "runs/compare",
    model_name: str = EMBEDDED_MODEL,
    max_length: int = TRAINING.max_length,
    max_epochs: int | None = None,
    search_examples: int = COMPARE.search_examples,
    rate_factors: Sequence[float] = COMPARE.rate_factors,
    general: Sequence[str] | None = None,
    fresh: bool = False,
    progress: bool = True,
    loop: dict[str, Any] | None = None,
) -> CompareResult:
    """Every method at every budget it reaches: a learning-rate search, then `seeds` runs.

    The search trains each (method, budget) once per rate (the registry's rate times each of
    `rate_factors`) under the first seed on the first `search_examples` training rows, and keeps
    the rate of the best validation accuracy; then every seed trains on the whole training
    split at that rate and is scored on the test split. Finished runs under `output` are reused.

    Args:
        data: the classification data.
        methods: keys of `FAMILIES`.
        shares: the budgets, as shares of the model's parameters.
        seeds: the training seeds, distinct.
        output: where the cells are saved.
        model_name: the model every cell starts from.
        max_length: tokens a text keeps.
        max_epochs: the most epochs a method trains (None: each method's `demo_epochs`).
        search_examples: training rows of the search.
        rate_factors: the search's multiples of each method's registry rate.
        general: held-out documents for the forgetting figure; None: `general_texts()`.
        fresh: retrain every run instead of reusing finished ones.
        progress: show progress bars.
        loop: other `TrainConfig` fields every run shares (e.g. `batch_size`,
            `max_tokens_per_batch`, `device`); None: the defaults.

    Raises:
        CourseError: if a method is not compared, or `seeds` is empty or repeats a seed.
    """
    unknown = [m for m in methods if m not in FAMILIES]
    if unknown:
        raise CourseError(
            f"cannot compare {', '.join(unknown)}: choose from {', '.join(COMPARED_METHODS)}"
        )
    if not seeds or len(set(seeds)) < len(seeds):
        raise CourseError(f"give one or more distinct seeds, got {list(seeds)}")
    if not shares or any(not 0 < s <= 1 for s in shares):
        raise CourseError(f"budgets are shares of the model in (0, 1], got {list(shares)}")
    started = time.perf_counter()
    general = general_texts() if general is None else general
    output = Path(output)
    counter = Counter(model_name, data, counts_path(output, model_name, data))
    result = CompareResult({}, counter.total)
    for method in tqdm(methods, desc="budgets", disable=not progress, leave=False):
        result.budgets[method] = match_budget(
            method, shares, counter.total, counter, width=counter.width
        )
    search_data = subsample(data, search_examples)
    jobs = [
        Cell(m, b.share, b.value, b.trainable, epochs_of(m, max_epochs))
        for m in methods
        for b in result.budgets[m]
        if b.reached
    ]
    bar = tqdm(
        total=len(jobs) * (len(rate_factors) + len(seeds)), desc="compare", disable=not progress
    )

    done: set[Path] = set()  # this call's runs: `fresh` retrains each once

    def before(seed: int, tokenizer: Any) -> float:
        """The untrained model's LM loss on `general` under `seed`, kept beside the cells."""
        key = json.dumps([model_name, seed, list(general), model_identity(model_name)])
        path = (
            output / "cells" / "untrained" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
        )
        if path.is_file() and (not fresh or path in done):
            return json.loads(path.read_text())
        model, _ = get_method("head").function("load")(
            model_name, "classification", data.num_labels, data.label_names, seed=seed
        )
        done.add(path)
        return json.loads(
            atomic_write_text(path, json.dumps(lm_loss(model, tokenizer, general))).read_text()
        )

    def run(cell: Cell, rate: float, seed: int, rows: ClassificationData) -> dict:
        directory = cell_path(output, cell, rate, seed, rows, model_name, max_length, loop)
        saved = directory / "metrics.json"
        label = f"{cell.name} rate {rate:g} seed {seed}"
        bar.update(1)
        if saved.is_file() and (not fresh or directory in done):
            if directory not in done:  # a search run that is also a seed run counts once
                result.reused.append(label)
                done.add(directory)
            return json.loads(saved.read_text())
        if fresh:
            shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True, exist_ok=True)
        done.add(directory)
        result.trained.append(label)
        return run_cell(
            rows, cell, rate, seed, model_name, max_length, directory, False, general, before, loop
        )

    with quiet():
        for cell in jobs:
            key = (cell.method, cell.share)
            base = get_method(cell.method).learning_rate
            rates = sorted({float(f"{base * f:.3g}") for f in rate_factors})
            result.search[key] = [run(cell, r, seeds[0], search_data) for r in rates]
            result.rates[key] = best_rate(result.search[key])
            result.runs[key] = [run(cell, result.rates[key], s, data) for s in seeds]
    bar.close()
    result.seconds = time.perf_counter() - started
    return result


def epochs_of(method: str, max_epochs: int | None) -> int:
    """The method's demo epochs, at most `max_epochs`."""
    epochs = get_method(method).demo_epochs
    return epochs if max_epochs is None else min(epochs, max_epochs)


# ---------------------------------------------------------------------------------------------
# Tables and the plot
# ---------------------------------------------------------------------------------------------


def percent(share: float) -> str:
    """0.001 -> `0.1%`; a method's own share to 3 significant figures (8.564e-06 -> `0.000856%`)."""
    return f"{share * 100:.3g}%"


def table_rows(result: CompareResult) -> list[dict[str, str]]:
    """The comparison: the untrained model, then one row per method and budget.

    Accuracy and forgetting are mean ± sample std over the seeds; tokens/s and peak memory
    their means.

    Args:
        result: the finished comparison.
    """
    first = next(iter(result.runs.values()))
    untrained = [m["untrained"] for m in first]
    rows = [
        {
            "method": "untrained",
            "family": "-",
            "budget": "-",
            "size": "-",
            "trainable params": "0",
            "share": "0%",
            "learning rate": "-",
            "test accuracy": format_mean_std(untrained),
            "forgetting (nats)": "0",
            "tokens/s": "-",
            "peak RSS (MiB)": "-",
        }
    ]
    for (method, share), runs in result.runs.items():
        cell = runs[0]["cell"]
        rows.append(
            {
                "method": get_method(method).label,
                "family": FAMILIES[method],
                "budget": percent(share),
                "size": size_label(method, cell["value"]),
                "trainable params": f"{runs[0]['trainable']:,}",
                "share": f"{runs[0]['trainable'] / result.total:.2%}",
                "learning rate": f"{result.rates[(method, share)]:g}",
                "test accuracy": format_mean_std([m["accuracy"] for m in runs]),
                "forgetting (nats)": format_mean_std([m["forgetting"] for m in runs]),
                "tokens/s": f"{statistics.fmean(m['tokens_per_second'] for m in runs):,.0f}",
                "peak RSS (MiB)": f"{statistics.fmean(m['peak_memory_mib'] for m in runs):,.0f}",
            }
        )
    return rows


def budget_rows(result: CompareResult) -> list[dict[str, str]]:
    """Per method and budget: the size chosen and its count, or why the budget is not reached.

    Args:
        result: the finished comparison.
    """
    rows = []
    shares = sorted({b.share for budgets in result.budgets.values() for b in budgets})
    for method, budgets in result.budgets.items():
        row = {"method": get_method(method).label, "size knob": KNOBS.get(method, ("none",))[0]}
        row.update({percent(share): "-" for share in shares})
        for budget in budgets:
            target = budget.share * result.total
            found = f"{size_label(method, budget.value)}: {budget.trainable:,}"
            if budget.value is None:
                found = f"{budget.trainable:,}"
            if budget.reached:
                row[percent(budget.share)] = found
            elif budget.value is None:
                row[percent(budget.share)] = "-"
            else:
                side = "above" if budget.trainable > target else "below"
                row[percent(budget.share)] = f"no (nearest {found}, {side})"
        rows.append(row)
    return rows


def search_rows(result: CompareResult) -> list[dict[str, str]]:
    """The learning-rate search: each rate tried and its best validation accuracy.

    Args:
        result: the finished comparison.
    """
    return [
        {
            "method": get_method(method).label,
            "budget": percent(share),
            "learning rate": f"{m['rate']:g}",
            "best validation accuracy": f"{m['best_val_accuracy']:.4f}",
            "chosen": "yes" if m["rate"] == result.rates[(method, share)] else "",
        }
        for (method, share), search in result.search.items()
        for m in search
    ]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: none has as few parameters and more accuracy.

    Args:
        points: (trainable parameters, accuracy) per point.

    Returns:
        The front's indices, by growing parameters.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


FAMILY_STYLE = {  # family -> (colour, marker)
    "selective": ("tab:green", "s"),
    "additive": ("tab:orange", "^"),
    "soft prompts": ("tab:purple", "D"),
    "reparametrised": ("tab:blue", "o"),
    "every weight": ("tab:red", "*"),
}


def label_points(
    axes: Any,
    points: Sequence[tuple[float, float]],
    labels: Sequence[str],
    groups: Sequence[float],
    gap: float = 0.012,
) -> None:
    """Name each point in a column right of its group (a budget), names at least `gap` apart.

    Args:
        axes (matplotlib.axes.Axes): the plot.
        points: (x, y) per point.
        labels: the name of each point.
        groups: each point's group; names of one group are moved apart, a thin line to the point.
        gap: the least vertical distance between two names of a group, in y units.
    """
    for group in set(groups):
        members = sorted(
            (i for i, g in enumerate(groups) if g == group), key=lambda i: points[i][1]
        )
        column = 1.25 * max(points[i][0] for i in members)  # the names in one column
        placed: list[float] = []
        for i in members:
            x, y = points[i]
            at = max(y, placed[-1] + gap) if placed else y
            placed.append(at)
            axes.annotate(
                labels[i],
                (x, y),
                xytext=(column, at),
                fontsize=7,
                va="center",
                arrowprops={"arrowstyle": "-", "color": "lightgrey", "linewidth": 0.6},
            )


def plot_pareto(result: CompareResult, path: str | Path, title: str = "") -> Path:
    """Test accuracy against trainable parameters (log x), one point per method and budget.

    Error bars are the seeds' std; the dashed line is the untrained model; the grey line joins
    the Pareto front (`pareto_front`).

    Args:
        result: the finished comparison.
        path: the image written.
        title: the figure's title.
    """
    figure, axes = plt.subplots(figsize=(10, 6))
    points, labels, shares = [], [], []
    for (method, share), runs in result.runs.items():
        mean, std = mean_std([m["accuracy"] for m in runs])
        colour, marker = FAMILY_STYLE[FAMILIES[method]]
        x = runs[0]["trainable"]
        axes.errorbar(x, mean, yerr=std, color=colour, marker=marker, capsize=2, linestyle="none")
        points.append((x, mean))
        labels.append(method)
        shares.append(share)
    label_points(axes, points, labels, shares)
    front = pareto_front(points)
    axes.plot(
        [points[i][0] for i in front],
        [points[i][1] for i in front],
        color="grey",
        linewidth=1,
        zorder=0,
        label="Pareto front",
        drawstyle="steps-post",
    )
    untrained = statistics.fmean(m["untrained"] for m in next(iter(result.runs.values())))
    axes.axhline(untrained, color="grey", linestyle="--", label="untrained")
    for family, (colour, marker) in FAMILY_STYLE.items():
        axes.plot([], [], color=colour, marker=marker, linestyle="none", label=family)
    for share in {s for _, s in result.runs}:
        axes.axvline(share * result.total, color="lightgrey", linewidth=0.8, zorder=0)
    axes.set_xscale("log")
    axes.set(xlabel="trainable parameters (log scale)", ylabel="test accuracy", title=title)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def write_compare(result: CompareResult, output: str | Path, note: str = "") -> list[Path]:
    """`compare.md`/`.csv` (the table), `budgets.md`, `search.md` and `pareto.png` in `output`.

    Args:
        result: the finished comparison.
        output: the directory written into.
        note: follows each table (what produced it).
    """
    output = Path(output)
    table = write_table(table_rows(result), output, "compare", note)
    budgets = write_table(budget_rows(result), output, "budgets", note)
    search = write_table(search_rows(result), output, "search", note)
    plot = plot_pareto(result, output / "pareto.png", "the PEFT family at matched budgets")
    return [table, table.with_suffix(".csv"), budgets, search, plot]


def spread_rows(result: CompareResult) -> list[dict[str, str]]:
    """Per budget: the best method, the runner-up and the worst, their gaps and the seeds' stds.

    A gap smaller than about twice the seed std of the two methods is not an order three seeds
    can show.

    Args:
        result: the finished comparison.
    """
    rows = []
    for share in sorted({s for _, s in result.runs}):
        scores = {
            m: mean_std([r["accuracy"] for r in runs])
            for (m, s), runs in result.runs.items()
            if s == share
        }
        if len(scores) < 2:
            continue
        ranked = sorted(scores, key=lambda m: -scores[m][0])
        best, second, worst = ranked[0], ranked[1], ranked[-1]

        def shown(method: str) -> str:
            mean, std = scores[method]
            return f"{get_method(method).label} {mean:.4f} ± {std:.4f}"

        rows.append(
            {
                "budget": percent(share),
                "methods": str(len(scores)),
                "best": shown(best),
                "second": shown(second),
                "best - second": f"{scores[best][0] - scores[second][0]:.4f}",
                "worst": shown(worst),
                "best - worst": f"{scores[best][0] - scores[worst][0]:.4f}",
                "median seed std": f"{statistics.median(v[1] for v in scores.values()):.4f}",
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# The figure of the four families
# ---------------------------------------------------------------------------------------------


def _box(axes: Any, x: float, y: float, w: float, h: float, text: str, trained: bool) -> None:
    """A labelled rectangle: orange if it trains, grey if frozen."""
    from matplotlib.patches import FancyBboxPatch

    colour = "tab:orange" if trained else "lightgrey"
    axes.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.01", color=colour))
    axes.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=9)


def _arrow(axes: Any, start: tuple[float, float], end: tuple[float, float]) -> None:
    axes.annotate("", end, start, arrowprops={"arrowstyle": "->", "color": "black"})


def plot_family(path: str | Path) -> Path:
    """One figure, four panels: what each family of methods trains (orange) around a frozen
    layer (grey).

    Args:
        path: the image written.
    """
    figure, panels = plt.subplots(1, 4, figsize=(14, 3.6))
    selective, additive, reparametrised, prompts = panels
    # selective: a weight matrix and its bias; only the bias (and LayerNorms) train
    _box(selective, 0.1, 0.25, 0.55, 0.55, "W\n(frozen)", False)
    _box(selective, 0.72, 0.25, 0.12, 0.55, "b", True)
    selective.text(0.5, 0.08, "h = W x + b: BitFit, LN-tuning", ha="center", fontsize=8)
    selective.set_title("selective: train weights it has")
    # additive: a bottleneck after the frozen layer, added to its output
    _box(additive, 0.05, 0.4, 0.3, 0.25, "W x", False)
    _box(additive, 0.5, 0.62, 0.4, 0.18, "down (d→r)", True)
    _box(additive, 0.5, 0.28, 0.4, 0.18, "up (r→d)", True)
    _arrow(additive, (0.35, 0.55), (0.5, 0.7))
    _arrow(additive, (0.7, 0.62), (0.7, 0.46))
    additive.text(
        0.5, 0.08, "h + up(relu(down(h))): adapters; (IA)³ scales h", ha="center", fontsize=8
    )
    additive.set_title("additive: new modules")
    # reparametrised: the weight plus a low-rank product
    _box(reparametrised, 0.05, 0.3, 0.35, 0.45, "W₀\n(frozen)", False)
    reparametrised.text(0.45, 0.52, "+", fontsize=16, ha="center", va="center")
    _box(reparametrised, 0.52, 0.3, 0.08, 0.45, "B", True)
    _box(reparametrised, 0.65, 0.6, 0.3, 0.12, "A", True)
    reparametrised.text(
        0.5, 0.08, "W₀ + (α/r) B A: LoRA, DoRA, PiSSA, VeRA, ...", ha="center", fontsize=8
    )
    reparametrised.set_title("reparametrised: a low-rank update")
    # soft prompts: learned vectors before the text's tokens
    for i in range(3):
        _box(prompts, 0.03 + 0.13 * i, 0.55, 0.1, 0.2, f"p{i + 1}", True)
    for i, word in enumerate(("the", "film", "was")):
        _box(prompts, 0.45 + 0.18 * i, 0.55, 0.15, 0.2, word, False)
    _box(prompts, 0.05, 0.2, 0.9, 0.18, "frozen transformer", False)
    _arrow(prompts, (0.5, 0.55), (0.5, 0.38))
    prompts.text(0.5, 0.05, "virtual tokens (prefix: keys and values)", ha="center", fontsize=8)
    prompts.set_title("soft prompts: learned inputs")
    for axes in panels:
        axes.set(xlim=(0, 1), ylim=(0, 1))
        axes.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def summary(result: CompareResult, data_name: str, model: str, seeds: Sequence[int]) -> str:
    """What `peft-course compare` prints: a caption, the table, and the spread beside the gaps.

    Args:
        result: the finished comparison.
        data_name: the data's name, for the caption.
        model: the model's name, for the caption.
        seeds: the training seeds.
    """
    caption = (
        f"\nThe PEFT family on {data_name} with {model}: test accuracy (best validation; "
        f"mean ± std over seeds {' '.join(map(str, seeds))}), trainable parameters, training "
        "tokens/s, peak RSS and the LM loss's rise on held-out text\n"
    )
    parts = [caption, markdown_table(table_rows(result))]
    spread = spread_rows(result) if len(seeds) > 1 else []
    if spread:  # two methods or more at a budget
        parts.append(markdown_table(spread))
    return "\n".join(parts)
