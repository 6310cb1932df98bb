"""Ablations: vary one hyper-parameter, train one *cell* per value, and tabulate the cells.

A cell is one training run of prompt-based classification through the language-model head
(`peft_course.lm_classification`): LoRA or full fine-tuning with the LM loss on the label word,
scored on the test split by the verbalizer and by strict match of greedy generation, at the
last iteration and at the best-validation checkpoint.

The seed project published three such tables for GPT-2 small on Rotten Tomatoes (`SEED`);
`rank_sweep`, `alpha_sweep` and `prompt_sweep` rebuild their grids, and `parameter_sweep`
varies anything else a cell has (`r`, `alpha`, `dropout`, `learning_rate`, `targets`).

Every cell is saved under `cells/<name>-<hash>/seed<k>/`, the hash covering everything the
result depends on (model, data, settings, cell, seed). A rerun finds the finished cells and
skips them, so an interrupted sweep continues where it stopped, and two sweeps that share a
cell (the rank table's r=16, alpha=64 is the alpha table's alpha=64) train it once.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from peft_course import distributed
from peft_course.models import count_parameters
from peft_course.data import ClassificationData
from peft_course.errors import CourseError, check_positive_number, describe
from peft_course.configs import SweepSettings
from peft_course.files import atomic_write_text
from peft_course.lora import check_hyperparameters
from peft_course.lm_classification import (
    answer_loss,
    TEMPLATES,
    PromptFormat,
    encode,
    evaluate_verbalizer,
    get_template,
    label_words_for,
    prepare_lm_full,
    prepare_lm_lora,
    score,
)
from peft_course.models import load_model, model_identity
from peft_course.plots import plot_curves
from peft_course.options import spelled
from peft_course.settings import ABLATION, SWEEPS
from peft_course.tables import distinct_markdown_table, write_table
from peft_course.training import TrainConfig, load_trainable_state, seed_everything, train

LORA_LEARNING_RATE, FULL_LEARNING_RATE = ABLATION.lora_learning_rate, ABLATION.full_learning_rate
SEED_RANKS, SEED_ALPHAS = (16, 128, 196), (64.0, 256.0)  # the seed project's grids
FULL = "full fine-tuning"

# --8<-- [start:seed]
# The seed project's figures: GPT-2 small, Rotten Tomatoes, strict match of greedy generation.
# "last" is the last iteration, "best" the best-validation checkpoint; the untrained model: 0.105.
SEED_UNTRAINED = 0.105
SEED: dict[str, dict[str, dict[str, float]]] = {
    "rank": {
        "16": {"best": 0.8424},
        "128": {"best": 0.8696},
        "196": {"best": 0.8574},
        FULL: {"best": 0.8405},
    },
    "alpha": {"64": {"last": 0.8574}, "256": {"last": 0.8771}, FULL: {"last": 0.8564}},
    "prompt": {
        "default": {"last": 0.8808, "best": 0.8696},
        "simple-1": {"last": 0.4446, "best": 0.7270},
        "simple-2": {"last": 0.8780, "best": 0.8170},
        "similar": {"last": 0.8433, "best": 0.8149},
        "complex": {"last": 0.8836, "best": 0.8742},
    },
}
# --8<-- [end:seed]


def seed_project_rows() -> list[dict[str, str]]:
    """The seed project's figures (`SEED`) as table rows: sweep, cell, last and best."""
    rows = [{"sweep": "untrained", "cell": "-", "last": f"{SEED_UNTRAINED:.4f}", "best": "-"}]
    for sweep, cells in SEED.items():
        for cell, figures in cells.items():
            rows.append(
                {
                    "sweep": sweep,
                    "cell": cell,
                    **{
                        checkpoint: f"{figures[checkpoint]:.4f}" if checkpoint in figures else "-"
                        for checkpoint in ("last", "best")
                    },
                }
            )
    return rows


# --8<-- [start:CellConfig]
@dataclass(frozen=True)
class CellConfig:
    """What one cell trains.
    `dropout` is LoRA's dropout for `lora` and the model's own for `full`.

    Attributes:
        method: "lora" or "full".
        r: LoRA rank.
        alpha: LoRA scale numerator (stored as a float: alpha=64 and 64.0 are one cell).
        dropout: LoRA's dropout for `lora`, the model's own for `full`.
        targets: the modules LoRA wraps; None: peft's default (c_attn for GPT-2).
        learning_rate: the optimizer's learning rate.
        template: the name of the prompt template (a key of `TEMPLATES`).
    """

    method: str = "lora"
    r: int = ABLATION.r
    alpha: float = ABLATION.alpha_ratio * ABLATION.r
    dropout: float = ABLATION.dropout
    targets: tuple[str, ...] | None = None
    learning_rate: float = LORA_LEARNING_RATE
    template: str = "default"

    def __post_init__(self) -> None:
        """Check the settings and store alpha and the learning rate as floats."""
        if self.method not in ("lora", "full"):
            raise CourseError(f"unknown cell method '{self.method}': use 'lora' or 'full'")
        check_hyperparameters(self.r, self.alpha, self.dropout)
        check_positive_number("learning_rate", self.learning_rate)
        get_template(self.template)
        object.__setattr__(self, "alpha", float(self.alpha))  # alpha=64 and 64.0 are one cell
        object.__setattr__(self, "learning_rate", float(self.learning_rate))


# --8<-- [end:CellConfig]


# --8<-- [start:Cell]
@dataclass(frozen=True)
class Cell:
    """One row of a table: its label, what it trains, and the seed project's figures for it.

    Attributes:
        label: the row's label in the table.
        config: what the cell trains.
        seed_figures: the seed project's accuracy by checkpoint ("last", "best"), if published.
    """

    label: str
    config: CellConfig
    seed_figures: dict[str, float] = field(default_factory=dict)


# --8<-- [end:Cell]


# --8<-- [start:Sweep]
@dataclass(frozen=True)
class Sweep:
    """A table: its name, the header of its first column, and its cells in order.

    Attributes:
        name: the table's name (also its files' stem).
        column: the header of the first column.
        cells: the rows, in order.
    """

    name: str
    column: str
    cells: tuple[Cell, ...]


# --8<-- [end:Sweep]


# --8<-- [start:full_cell]
def full_cell(
    base: CellConfig, learning_rate: float = FULL_LEARNING_RATE, dropout: float = ABLATION.dropout
) -> CellConfig:
    """The full fine-tuning row: every weight trains, with the model's dropout at `dropout`.

    Args:
        base: the cell to copy the other settings from.
        learning_rate: the full fine-tuning learning rate.
        dropout: the model's own dropout.
    """
    return replace(base, method="full", learning_rate=learning_rate, dropout=dropout)


# --8<-- [end:full_cell]


# --8<-- [start:rank_sweep]
def rank_sweep(
    values: Sequence[int] = SEED_RANKS,
    alpha_ratio: float = 4.0,
    base: CellConfig = CellConfig(),
    full: CellConfig | None = None,
) -> Sweep:
    """The seed's rank table:
    r in `values` with alpha = `alpha_ratio` * r, then full fine-tuning.

    Args:
        values: the ranks, one cell each.
        alpha_ratio: alpha divided by r in every LoRA cell.
        base: the other settings of every cell.
        full: the full fine-tuning row; None uses `full_cell(base)`.
    """
    cells = [
        Cell(str(r), replace(base, r=r, alpha=alpha_ratio * r), SEED["rank"].get(str(r), {}))
        for r in values
    ]
    cells.append(Cell(FULL, full or full_cell(base), SEED["rank"][FULL]))
    return Sweep("rank", f"rank (alpha = {alpha_ratio:g}r)", tuple(cells))


# --8<-- [end:rank_sweep]


# --8<-- [start:alpha_sweep]
def alpha_sweep(
    values: Sequence[float] = SEED_ALPHAS,
    r: int = 16,
    base: CellConfig = CellConfig(),
    full: CellConfig | None = None,
) -> Sweep:
    """The seed's alpha table: alpha in `values` at rank `r`, then full fine-tuning.

    Args:
        values: the alphas, one cell each.
        r: the rank of every LoRA cell.
        base: the other settings of every cell.
        full: the full fine-tuning row; None uses `full_cell(base)`.
    """
    cells = [
        Cell(f"{a:g}", replace(base, r=r, alpha=float(a)), SEED["alpha"].get(f"{a:g}", {}))
        for a in values
    ]
    cells.append(Cell(FULL, full or full_cell(base), SEED["alpha"][FULL]))
    return Sweep("alpha", f"alpha (r = {r})", tuple(cells))


# --8<-- [end:alpha_sweep]


# --8<-- [start:prompt_sweep]
def prompt_sweep(
    values: Sequence[str] = tuple(TEMPLATES),
    r: int = 128,
    alpha: float = 512.0,
    base: CellConfig = CellConfig(),
) -> Sweep:
    """The seed's prompt table: one cell per named template, LoRA at r=128, alpha=512.

    The seed's default-template cell scores 0.8696 at its best validation, the rank table's
    r=128 figure: its prompt ablation ran at the rank table's r=128 (alpha = 4r).

    Args:
        values: the template names, one cell each.
        r: the rank of every cell.
        alpha: the alpha of every cell.
        base: the other settings of every cell.
    """
    cells = [
        Cell(name, replace(base, r=r, alpha=alpha, template=name), SEED["prompt"].get(name, {}))
        for name in values
    ]
    return Sweep("prompt", "template", tuple(cells))


SWEEPABLE = ("r", "alpha", "dropout", "learning_rate", "targets", "template")
# --8<-- [end:prompt_sweep]


# --8<-- [start:parameter_sweep]
def parameter_sweep(
    parameter: str,
    values: Sequence[Any],
    base: CellConfig = CellConfig(),
    full: CellConfig | None = None,
) -> Sweep:
    """Any other table: `parameter` (one of `SWEEPABLE`) takes each of `values`;
    the rest is `base`.

    Args:
        parameter: the `CellConfig` field to vary, one of `SWEEPABLE`.
        values: its values, one cell each (a `targets` value is a list of module names).
        base: the other settings of every cell.
        full: a full fine-tuning row appended at the end; None adds none.

    Raises:
        CourseError: if `parameter` is not sweepable or `values` is empty.
    """
    if parameter not in SWEEPABLE:
        raise CourseError(f"cannot sweep '{parameter}': choose one of {', '.join(SWEEPABLE)}")
    if not values:
        raise CourseError(f"no values to sweep '{parameter}' over")
    cells = [
        Cell(_label(v), replace(base, **{parameter: tuple(v) if parameter == "targets" else v}))
        for v in values
    ]
    if full is not None:
        cells.append(Cell(FULL, full))
    return Sweep(parameter, parameter, tuple(cells))


# --8<-- [end:parameter_sweep]


def typed_numbers(values: Sequence[Any], kind: type, option: str) -> list:
    """`values` read as `kind` (int or float), or an error naming the option.

    Args:
        values: the values as typed (strings) or as numbers.
        kind: `int` or `float`.
        option: the option or argument they were given to, for the message.

    Raises:
        CourseError: if a value is not a number of that kind.
    """
    try:
        return [kind(v) for v in values]
    except (TypeError, ValueError):
        kinds = {int: "whole numbers", float: "numbers"}
        raise CourseError(
            f"{option} must be {kinds.get(kind, kind.__name__)}, got {' '.join(map(str, values))}"
        ) from None


def check_distinct_values(option: str, given: Sequence[Any], values: list) -> list:
    """`values` (what `given` means) unless two of them are one: `64` and `64.0` are one alpha.

    Compared after conversion, so a repeated cell is refused rather than shown as two rows.

    Args:
        option: the option or argument the values were given to, for the message.
        given: the values as given.
        values: what they mean (converted), in the same order.

    Raises:
        CourseError: if two of `values` are equal.
    """
    for j, value in enumerate(values):
        if value in values[:j]:
            i = values.index(value)
            same = given[i] != given[j]
            both = f"{given[i]!r} and {given[j]!r}" if same else f"{given[i]!r}, twice"
            raise CourseError(
                f"{option} gives the same value twice ({both}): one cell would show as two rows"
            )
    return values


# --8<-- [start:named_sweep]
def named_sweep(
    name: str,
    values: Sequence[Any] | None = None,
    *,
    r: int | None = None,
    alpha: float | None = None,
    alpha_ratio: float = ABLATION.alpha_ratio,
    dropout: float = ABLATION.dropout,
    learning_rate: float = LORA_LEARNING_RATE,
    full_learning_rate: float = FULL_LEARNING_RATE,
    targets: Sequence[str] | None = None,
    template: str = "default",
    full: bool = True,
) -> Sweep:
    """The sweep `peft-course ablate NAME` runs: the seed project's grid, or `values` instead.

    `name` is one of `SWEEPS`. rank, alpha and prompt have the seed's grids; dropout,
    learning-rate and targets need `values` (targets: each value a comma-separated list of
    modules, `"c_attn,c_fc"`). Every other setting is the cells' where the sweep does not set it.

    Args:
        name: the table, one of `SWEEPS`.
        values: the grid, as typed or as numbers; None: the seed's grid.
        r: the rank where the sweep does not set it; None: 16 (128 for prompt).
        alpha: alpha where the sweep does not set it; None: `alpha_ratio * r`.
        alpha_ratio: the rank sweep's alpha is `alpha_ratio * r`.
        dropout: LoRA's dropout (the model's dropout in the full row).
        learning_rate: the LoRA cells' learning rate.
        full_learning_rate: the full fine-tuning row's.
        targets: the modules LoRA wraps; None: peft's default.
        template: the prompt template where the sweep does not set it.
        full: end with the full fine-tuning row (rank, alpha and the other sweeps).

    Raises:
        CourseError: if `name` is unknown, `values` is one string or repeats a value, or a
            sweep without a seed grid gets no `values`.
    """
    option = spelled("values")
    if name not in SWEEPS:
        raise CourseError(f"unknown sweep {name!r}: choose one of {', '.join(SWEEPS)}")
    if isinstance(values, str) or (values is not None and not isinstance(values, Sequence)):
        raise CourseError(f"{option} must be a list of values, got {describe(values)}")
    if values is not None and len(values) == 0:
        raise CourseError(f"{option} is empty: give at least one value (None: the seed's grid)")
    if r is None:
        r = ABLATION.prompt_r if name == "prompt" else ABLATION.r
    alpha = alpha_ratio * r if alpha is None else alpha
    targets = tuple(targets) if targets else None
    base = CellConfig(
        r=r,
        alpha=alpha,
        dropout=dropout,
        learning_rate=learning_rate,
        targets=targets,
        template=template,
    )
    last = full_cell(base, full_learning_rate, dropout)
    if name == "prompt":
        names = check_distinct_values(option, values, list(values)) if values else TEMPLATES
        return prompt_sweep(tuple(names), r, alpha, base)
    if name in ("rank", "alpha") and not values:
        values = SEED_RANKS if name == "rank" else SEED_ALPHAS
    if not values:
        raise CourseError(f"sweeping {name} needs {option}")
    if name == "targets":  # each value one list of modules; their order does not matter
        lists = [[m.strip() for m in str(v).split(",") if m.strip()] for v in values]
        check_distinct_values(option, values, [sorted(modules) for modules in lists])
        sweep = parameter_sweep("targets", lists, base, last)
    else:
        kind = int if name == "rank" else float
        grid = check_distinct_values(option, values, typed_numbers(values, kind, option))
        if name == "rank":
            sweep = rank_sweep(grid, alpha_ratio, base, last)
        elif name == "alpha":
            sweep = alpha_sweep(grid, r, base, last)
        else:
            sweep = parameter_sweep(name.replace("-", "_"), grid, base, last)
    return sweep if full else replace(sweep, cells=sweep.cells[:-1])


# --8<-- [end:named_sweep]


def _label(value: Any) -> str:
    """A swept value as a table label: `16`, `0.05`, `c_attn + c_fc`."""
    if isinstance(value, (list, tuple)):
        return " + ".join(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


QUICK = {
    "epochs": ABLATION.quick_epochs,
    "max_examples": ABLATION.quick_examples,
}  # --quick: about a CPU minute a sweep


def untrained_score(
    model: Any,
    test: Any,
    tokenizer: Any,
    words: Sequence[str],
    settings: SweepSettings,
    directory: str | Path | None,
) -> dict[str, float]:
    """`score` of the model before training, kept beside the cells: every cell of a sweep with the
    same model, prompt and test rows starts from the same weights, so it is computed once.

    Args:
        model: the untrained causal LM.
        test: the encoded test split.
        tokenizer: the model's tokenizer.
        words: the label words.
        settings: the sweep's shared settings.
        directory: the cell's directory (the cache lives two levels up, in `untrained/`);
            None computes the score without caching it.

    Returns:
        The `verbalizer` and `strict` accuracies.
    """
    if directory is None:
        return score(model, test, tokenizer, words, device=settings.device)
    key = hashlib.sha256(
        json.dumps([settings.model, list(words), list(test["input_ids"])]).encode()
    ).hexdigest()[:16]
    cached = Path(directory).parents[1] / "untrained" / f"{key}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    scores = score(model, test, tokenizer, words, device=settings.device)
    atomic_write_text(cached, json.dumps(scores))
    return scores


# --8<-- [start:run_cell]
def run_cell(
    data: ClassificationData,
    cell: Cell,
    settings: SweepSettings,
    seed: int,
    directory: str | Path | None = None,
) -> dict[str, Any]:
    """Train one cell under `seed` and score it on the test split; returns (and saves) its metrics.

    Only the training seed changes between seeds: the model (tiny-gpt2 is built from seed 0)
    and the data split stay fixed, so the spread across seeds is the training's alone.

    Args:
        data: the classification data.
        cell: what to train.
        settings: what every cell shares.
        seed: the training seed.
        directory: where the checkpoint and `metrics.json` go; None saves nothing.
    """
    config = cell.config
    model, tokenizer = load_model(settings.model, task="causal-lm", seed=0)
    prompt_format = PromptFormat(
        get_template(config.template),
        settings.label_words or label_words_for(data.label_names),
        settings.cue,
    )
    encoded = encode(data, tokenizer, prompt_format, settings.max_length)
    words, test = prompt_format.label_words, encoded["test"]
    untrained = untrained_score(model, test, tokenizer, words, settings, directory)
    seed_everything(seed)  # LoRA's A matrices are drawn here
    if config.method == "lora":
        model = prepare_lm_lora(
            model,
            config.r,
            config.alpha,
            config.dropout,
            list(config.targets) if config.targets else None,
        )
    else:
        model = prepare_lm_full(model, config.dropout)
    trainable, total = count_parameters(model)
    loop = TrainConfig(
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        learning_rate=config.learning_rate,
        seed=seed,
        device=settings.device,
        progress=settings.progress,
    )
    checkpoint = Path(directory) / "checkpoint" if directory is not None else None
    result = train(
        model,
        encoded,
        tokenizer,
        loop,
        checkpoint,
        resume=True,
        evaluator=lambda m: evaluate_verbalizer(
            m, encoded["validation"], tokenizer, words, settings.batch_size * 2, settings.device
        ),
        loss_fn=answer_loss,
    )
    last = score(model, test, tokenizer, words, device=settings.device)
    if (
        result.best_step == result.history[-1]["step"]
    ):  # the best validation was the last: same weights
        best = last
    else:
        load_trainable_state(model, result.best_state)
        best = score(model, test, tokenizer, words, device=settings.device)
    metrics = {
        "label": cell.label,
        "config": asdict(config),
        "seed": seed,
        "label_words": list(words),
        "trainable": trainable,
        "total": total,
        "untrained": untrained,
        "last": last,
        "best": best,
        "best_step": result.best_step,
        "seconds": result.seconds,
        "history": result.history,
    }
    if directory is not None:
        atomic_write_text(Path(directory, "metrics.json"), json.dumps(metrics, indent=1))
        shutil.rmtree(checkpoint, ignore_errors=True)  # finished: the optimizer state is not needed
    return metrics


# --8<-- [end:run_cell]


def cell_directory(
    output: str | Path, cell: Cell, settings: SweepSettings, data: ClassificationData, seed: int
) -> Path:
    """`output/cells/<method>-<template>[-r<r>-alpha<alpha>]-<hash>/seed<k>`; the hash covers every
    input of the result (model, data with its labels, settings, the cell with its instruction's
    text, the seed), so a changed setting never reuses an old cell. The code itself is not in
    the hash: after changing it, rerun with `fresh=True` (`--fresh`).

    Args:
        output: the sweep's output directory.
        cell: the cell.
        settings: the sweep's shared settings (`device` and `progress` are not hashed).
        data: the classification data.
        seed: the training seed.
    """
    fingerprint = {
        "config": asdict(cell.config),
        "instruction": get_template(cell.config.template),
        "seed": seed,
        "data": data.name,
        "label_names": data.label_names,
        "rows": {
            s: hashlib.sha256(
                json.dumps([list(rows["text"]), list(rows["label"])]).encode()
            ).hexdigest()
            for s, rows in data.splits.items()
        },
        "settings": {k: v for k, v in asdict(settings).items() if k not in ("device", "progress")},
    }
    identity = model_identity(settings.model)
    if identity is not None:  # a local model whose files change makes other cells
        fingerprint["model_files"] = identity["fingerprint"]
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:10]
    # named by its config, not its label: tables that share a cell share its directory
    config = cell.config
    name = f"{config.method}-{config.template}" + (
        f"-r{config.r}-alpha{config.alpha:g}" if config.method == "lora" else ""
    )
    slug = "".join(c if c.isalnum() or c == "." else "-" for c in name)
    return Path(output) / "cells" / f"{slug}-{digest}" / f"seed{seed}"


@dataclass
class SweepResult:
    """The metrics of every cell under every seed, and which of them this call trained.

    Attributes:
        sweep: the table that was run.
        metrics: cell label -> one metrics dict per seed.
        trained: the `cell (seed k)` runs this call trained.
        reused: the `cell (seed k)` runs found finished and read back.
    """

    sweep: Sweep
    metrics: dict[str, list[dict[str, Any]]]
    trained: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)


def run_sweep(
    sweep: Sweep,
    data: ClassificationData,
    settings: SweepSettings = SweepSettings(),
    seeds: Sequence[int] = (0,),
    output: str | Path = "runs/ablation",
    fresh: bool = False,
) -> SweepResult:
    """Run every (cell, seed) not already finished under `output`; `fresh=True` retrains them all.

    A cell that was interrupted continues from its last finished epoch (its checkpoint).

    Args:
        sweep: the table to run.
        data: the classification data.
        settings: what every cell shares.
        seeds: the training seeds, distinct; every cell runs once per seed.
        output: the directory the cells are saved under.
        fresh: retrain every cell, dropping saved results and checkpoints.

    Raises:
        CourseError: if `seeds` is empty or repeats a seed.
    """
    if not seeds or len(set(seeds)) < len(seeds):
        raise CourseError(f"give one or more distinct seeds, got {list(seeds)}")
    result = SweepResult(sweep, {cell.label: [] for cell in sweep.cells})
    jobs = [(cell, seed) for cell in sweep.cells for seed in seeds]
    for cell, seed in tqdm(
        jobs, desc=f"ablate {sweep.name}", disable=not (settings.progress and distributed.is_main())
    ):
        directory = cell_directory(output, cell, settings, data, seed)
        saved = directory / "metrics.json"
        if saved.is_file() and not fresh:
            result.metrics[cell.label].append(json.loads(saved.read_text()))
            result.reused.append(f"{cell.label} (seed {seed})")
            continue
        if fresh:  # also drop a half-trained cell's checkpoint, which run_cell would resume
            shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True, exist_ok=True)
        result.metrics[cell.label].append(run_cell(data, cell, settings, seed, directory))
        result.trained.append(f"{cell.label} (seed {seed})")
    return result


def drop_cells(
    sweeps: Sequence[Sweep],
    data: ClassificationData,
    settings: SweepSettings = SweepSettings(),
    seeds: Sequence[int] = (0,),
    output: str | Path = "runs/ablation",
) -> None:
    """Delete the saved cells of `sweeps` under `output`, so that running them retrains each once.

    Tables share cells (the rank table's r=16 is the alpha table's alpha=64): `fresh=True` on
    each `run_sweep` would retrain a shared cell once per table, this only once in all.

    Args:
        sweeps: the tables about to be rerun.
        data: their classification data.
        settings: what their cells share.
        seeds: the training seeds.
        output: the directory the cells are saved under.
    """
    for sweep in sweeps:
        for cell in sweep.cells:
            for seed in seeds:
                directory = cell_directory(output, cell, settings, data, seed)
                shutil.rmtree(directory, ignore_errors=True)


# --8<-- [start:mean_std]
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and *sample* standard deviation (n - 1 in the denominator; 0 for a single value).

    Args:
        values: one value per seed.

    Raises:
        CourseError: if `values` is empty.
    """
    if not values:
        raise CourseError("no values to average")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


# --8<-- [end:mean_std]


# --8<-- [start:format_mean_std]
def format_mean_std(values: Sequence[float]) -> str:
    """`0.8530` for one seed, `0.8530 ± 0.0120` for several.

    Args:
        values: one value per seed.
    """
    mean, std = mean_std(values)
    return f"{mean:.4f}" if len(values) == 1 else f"{mean:.4f} ± {std:.4f}"


ACCURACY_COLUMNS = {  # column -> (checkpoint, scoring)
    "verbalizer, last": ("last", "verbalizer"),
    "verbalizer, best": ("best", "verbalizer"),
    "strict, last": ("last", "strict"),
    "strict, best": ("best", "strict"),
}
# --8<-- [end:format_mean_std]


# --8<-- [start:table_rows]
def table_rows(result: SweepResult) -> list[dict[str, str]]:
    """The seed's layout: one row per cell (after the untrained model), last-iteration and
    best-validation test accuracy by both scorings, and the seed project's figure beside them.

    Args:
        result: the finished sweep.
    """
    first = next(iter(result.metrics.values()))
    untrained = {
        column: format_mean_std([m["untrained"][scoring] for m in first])
        for column, (_, scoring) in ACCURACY_COLUMNS.items()
    }
    rows = [
        {
            result.sweep.column: f"untrained ({first[0]['config']['template']} template)",
            "trainable params": "0",
            **untrained,
            "seed project, last": f"{SEED_UNTRAINED:.4f}",
            "seed project, best": f"{SEED_UNTRAINED:.4f}",
            "seconds": "0.0",
        }
    ]
    for cell in result.sweep.cells:
        runs = result.metrics[cell.label]
        row = {result.sweep.column: cell.label, "trainable params": f"{runs[0]['trainable']:,}"}
        for column, (checkpoint, scoring) in ACCURACY_COLUMNS.items():
            row[column] = format_mean_std([m[checkpoint][scoring] for m in runs])
        for checkpoint in ("last", "best"):
            figure = cell.seed_figures.get(checkpoint)
            row[f"seed project, {checkpoint}"] = f"{figure:.4f}" if figure is not None else "-"
        row["seconds"] = f"{statistics.fmean(m['seconds'] for m in runs):.1f}"
        rows.append(row)
    return rows


# --8<-- [end:table_rows]


def sweep_summary(
    result: SweepResult, model: str, data_name: str, epochs: int, seeds: Sequence[int]
) -> str:
    """What `peft-course ablate` prints: a caption and the sweep's table (`table_rows`).

    Args:
        result: the finished sweep.
        model: the model's name, for the caption.
        data_name: the data's name, for the caption.
        epochs: the epochs a cell trained.
        seeds: the training seeds.
    """
    shown = (
        f"seeds {' '.join(map(str, seeds))} (mean ± sample std)"
        if len(seeds) > 1
        else f"seed {seeds[0]}"
    )
    caption = (
        f"\n{result.sweep.name} sweep: {model} on {data_name}, {epochs} epochs, {shown}; "
        "test accuracy (verbalizer and strict match; last iteration and best validation). The "
        "seed project's figures are GPT-2 small on Rotten Tomatoes, strict match.\n"
    )
    return caption + "\n" + distinct_markdown_table(table_rows(result))


def write_sweep(
    result: SweepResult, output: str | Path, title: str = "", note: str = ""
) -> list[Path]:
    """`<name>.md` and `<name>.csv` (the table) and `<name>-val-loss.png` (every cell's curves).

    Args:
        result: the finished sweep.
        output: the directory written into.
        title: the plot's title; empty uses "validation loss, <name> sweep".
        note: follows the Markdown table (what produced it, `peft_course.system.provenance`).

    Returns:
        The Markdown, CSV and plot paths.
    """
    markdown = write_table(table_rows(result), output, result.sweep.name, note, distinct=True)
    curves = {
        f"{label} (seed {m['seed']})" if len(runs) > 1 else label: [
            (h["epoch"], h["val_loss"]) for h in m["history"]
        ]
        for label, runs in result.metrics.items()
        for m in runs
    }
    k = len(next(iter(result.metrics.values()))[0]["label_words"])
    plot = plot_curves(
        curves,
        Path(output) / f"{result.sweep.name}-val-loss.png",
        title or f"validation loss, {result.sweep.name} sweep",
        "validation loss (label word)",
        reference=(math.log(k), f"ln {k}: even odds on the {k} label words"),
    )
    return [markdown, markdown.with_suffix(".csv"), plot]


def seed_sweeps(base: CellConfig = CellConfig()) -> list[Sweep]:
    """The seed project's three tables: rank, alpha, prompt template.

    Args:
        base: the settings every cell of the three tables starts from.
    """
    return [rank_sweep(base=base), alpha_sweep(base=base), prompt_sweep(base=base)]
