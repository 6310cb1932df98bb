"""The main job: fine-tune with each method and print one results table, then the ablations.

On the embedded default (tiny-gpt2 + synthetic-sentiment, CPU) the whole table takes well
under a minute. Every row starts from the same weights and the same seed, so the rows differ
only in the method, and the same command prints the same table.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peft_course.ablation import (
    QUICK,
    SweepSettings,
    SweepResult,
    run_sweep,
    seed_sweeps,
    table_rows,
    write_sweep,
)
from peft_course.data import ClassificationData, load_classification_data
from peft_course.errors import CourseError
from peft_course.finetune import FinetuneResult, finetune
from peft_course.registry import METHODS, get_method
from peft_course.instruct import InstructResult, generated_instructions, instruct_tune
from peft_course.models import load_model
from peft_course.prompting import balanced_examples, sentiment_by_prompting
from peft_course.settings import EMBEDDED_MODEL, INSTRUCT, LORA, TRAINING
from peft_course.smollm2 import INSTALL, SMOLLM2, is_installed
from peft_course.system import provenance
from peft_course.tables import distinct_markdown_table, markdown_table, result_row, write_table
from peft_course.training import TrainConfig


@dataclass(frozen=True)
class DemoSetting:
    """How one demo row trains: its method, epochs, learning rate and method options.

    Attributes:
        method: the fine-tuning method (a key of `registry.METHODS`).
        epochs: training epochs.
        learning_rate: the optimizer's learning rate.
        options: the method's keyword options (e.g. `r`, `alpha`).
    """

    method: str
    epochs: int
    learning_rate: float
    options: dict[str, Any] = field(default_factory=dict)


LORA_OPTIONS = {"r": LORA.r, "alpha": LORA.alpha}
DEMO_SETTINGS = [  # one row per method, in the table's order
    DemoSetting(
        name,
        method.demo_epochs,
        method.learning_rate,
        {} if method.options is None else LORA_OPTIONS,
    )
    for name, method in METHODS.items()
    if method.in_demo  # the PEFT family's methods are trained by their own chapter
]


def demo_rows(
    data: ClassificationData,
    model_name: str = EMBEDDED_MODEL,
    seed: int = TRAINING.seed,
    max_length: int = TRAINING.max_length,
    settings: list[DemoSetting] | None = None,
    progress: bool = True,
) -> list[dict[str, str]]:
    """The untrained baseline, then one row per method (test scores, best-validation weights).

    Args:
        data: the classification data.
        model_name: the model every row starts from.
        seed: the seed of every row.
        max_length: tokens a text keeps.
        settings: the rows to train; None uses `DEMO_SETTINGS` (one row per method).
        progress: show progress bars.
    """
    rows: list[dict[str, str]] = []
    for setting in settings or DEMO_SETTINGS:
        config = TrainConfig(
            epochs=setting.epochs, learning_rate=setting.learning_rate, seed=seed, progress=progress
        )
        result = finetune(data, setting.method, model_name, config, max_length, **setting.options)
        if not rows:
            rows.append(result_row("untrained", 0, result.untrained, 0.0))
        label = get_method(setting.method).label or setting.method
        rows.append(result_row(label, result.trainable, result.best, result.training.seconds))
    return rows


def ablation_results(
    data: ClassificationData,
    model_name: str = EMBEDDED_MODEL,
    output: str | Path = "runs/demo/ablation",
    progress: bool = True,
) -> list[SweepResult]:
    """The seed project's rank, alpha and prompt tables at `--quick` size, trained afresh.

    The cells live in a temporary directory, so the tables always come from this code and no
    cell of `peft-course ablate` is reused or touched; within the call the three sweeps share
    their common cells.

    Args:
        data: should already be the quick subsample (`QUICK["max_examples"]` rows a split).
        model_name: the causal LM every cell starts from.
        output: each table is written to `output`.
        progress: show progress bars.

    Returns:
        One result per sweep: rank, alpha, prompt.
    """
    settings = SweepSettings(model=model_name, epochs=QUICK["epochs"], progress=progress)
    results = []
    with tempfile.TemporaryDirectory(prefix="demo-cells-") as cells:
        for sweep in seed_sweeps():
            result = run_sweep(sweep, data, settings, (0,), cells)
            write_sweep(
                result,
                output,
                f"{sweep.name} sweep: {model_name} on {data.name} (quick)",
                provenance("peft-course demo"),
            )
            results.append(result)
    return results


def real_model_rows(
    n: int = 100, shots: tuple[int, ...] = (0, 4), seed: int = 0
) -> list[dict[str, str]]:
    """Zero- and k-shot verbalizer accuracy of `smollm2-135m` on `n` generated test reviews.

    Inference only (about half a minute on 2 CPU cores once the model is converted): the demo's
    glimpse of a real pretrained model, which tells the reviews apart with no training at all.

    Args:
        n: test reviews scored (the first `n` of the test split).
        shots: the numbers of solved examples before each prompt, one row each (0: zero-shot).
        seed: seeds the data and the choice of solved examples.
    """
    data = load_classification_data("synthetic-sentiment", seed=seed)
    train, test = data.splits["train"], data.splits["test"].select(range(n))
    model, tokenizer = load_model(SMOLLM2, task="causal-lm")
    rows = []
    for k in shots:
        examples = balanced_examples(train["text"], train["label"], k, seed) if k else []
        start = time.perf_counter()
        result = sentiment_by_prompting(
            model, tokenizer, test["text"], test["label"], examples=examples
        )
        rows.append(
            {
                "model": SMOLLM2,
                "prompt": f"{k}-shot",
                "verbalizer accuracy": f"{result['accuracy']:.3f}",
                "strict accuracy": f"{result['strict']:.3f}",
                "seconds": f"{time.perf_counter() - start:.1f}",
            }
        )
    return rows


TUNING_SETS = (
    ("synthetic-entailment", 3, 1e-3),
    ("synthetic-emotion", 4, 3e-3),
)  # name, epochs, learning rate


@dataclass
class TuningResults:
    """Full fine-tuning beyond binary sentiment: the instruction run and each classifier run.

    Attributes:
        instructions: the full instruction-tuning run on the generated tasks.
        classifiers: data set name -> (its data, its full fine-tuning run).
    """

    instructions: InstructResult
    classifiers: dict[str, tuple[ClassificationData, FinetuneResult]]


def tuning_results(
    seed: int = 0, progress: bool = True, instructions: InstructResult | None = None
) -> TuningResults:
    """Instruction tuning, entailment pairs and six classes on tiny-gpt2, each fully fine-tuned.

    About 90 s in all on 2 CPU cores.

    Args:
        seed: the seed of every run and data set.
        progress: show progress bars.
        instructions: reuses a full instruction-tuning run made with the same settings (the
            reports make one for their own table); None trains one.
    """
    if instructions is None:
        config = TrainConfig(
            epochs=INSTRUCT.epochs,
            learning_rate=INSTRUCT.learning_rates["full"],
            seed=seed,
            progress=progress,
        )
        instructions = instruct_tune(generated_instructions(seed=seed), "full", config=config)
    classifiers = {}
    for name, epochs, rate in TUNING_SETS:
        data = load_classification_data(name, seed=seed)
        config = TrainConfig(epochs=epochs, learning_rate=rate, seed=seed, progress=progress)
        classifiers[name] = data, finetune(data, "full", config=config)
    return TuningResults(instructions, classifiers)


def tuning_rows(results: TuningResults) -> list[dict[str, str]]:
    """Each task's untrained score, then full fine-tuning's: exact match of greedy answers
    on the generated instructions (loss on the response only), accuracy on the generated
    pairs and classes.

    Args:
        results: what `tuning_results` returns.
    """
    tuned = results.instructions
    rows = [
        {
            "task": "instructions (5 generated tasks)",
            "score": "exact match",
            "untrained": f"{tuned.untrained['accuracy']:.3f}",
            "full fine-tuning": f"{tuned.best['accuracy']:.3f}",
            "seconds": f"{tuned.training.seconds:.1f}",
        }
    ]
    for name, (data, result) in results.classifiers.items():
        rows.append(
            {
                "task": f"{name} ({data.num_labels} labels)",
                "score": "accuracy",
                "untrained": f"{result.untrained['accuracy']:.3f}",
                "full fine-tuning": f"{result.best['accuracy']:.3f}",
                "seconds": f"{result.training.seconds:.1f}",
            }
        )
    return rows


def show_ablation(
    quick: ClassificationData | None, model: str, output: Path, size: int, progress: bool = True
) -> None:
    """Print and save the demo's rank, alpha and prompt tables (`ablation_results`).

    Args:
        quick: the quick subsample; None for a model other than the embedded one, whose learning
            rates the quick settings do not know (the tables are then skipped, saying why).
        model: the model's name, for the captions.
        output: the tables' directory.
        size: the rows a split of `quick`, for the captions.
        progress: show progress bars.
    """
    if quick is None:
        print(
            "\nThe ablation tables run on the embedded model only; for another model use "
            "`peft-course ablate` with that model's learning rates (see docs/ablation.md)."
        )
        return
    try:
        results = ablation_results(quick, model, output, progress=progress)
    except CourseError as error:  # pairs, or label words the tokenizer can't tell apart
        print(f"\nThe ablation tables were skipped for {quick.name}: {error}")
        return
    for result in results:
        print(
            f"\nAblation, {result.sweep.name}: {model} on {quick.name} ({size} rows a split, "
            f"{QUICK['epochs']} epochs), classified through the LM head; beside it the seed "
            "project's figures (GPT-2 small, Rotten Tomatoes, strict match)\n"
        )
        print(distinct_markdown_table(table_rows(result)))
    print(f"saved: {output} (rank, alpha and prompt tables, .md/.csv/-val-loss.png)")


def show_tuning(output: Path, model: str, seed: int, progress: bool = True) -> None:
    """Print and save instruction tuning, entailment and six classes: untrained vs full."""
    rows = tuning_rows(tuning_results(seed, progress=progress))
    path = write_table(rows, output, "tuning", note=provenance("peft-course demo"))
    print(f"\nBeyond binary sentiment: {model}, untrained and fully fine-tuned (test splits)\n")
    print(markdown_table(rows))
    print(f"saved: {path}")


def show_real_model(output: Path) -> None:
    """Print and save the demo's last table: SmolLM2 classifying reviews, untrained."""
    if not is_installed():
        print(f"\nThe real-model table needs {SMOLLM2}: {INSTALL}")
        return
    rows = real_model_rows()
    path = write_table(rows, output, "real-model", note=provenance("peft-course demo"))
    print(
        f"\nA real pretrained LM, no training: {SMOLLM2} prompted on 100 generated test "
        "reviews (`Review: <text>\\nSentiment:`, 0 or 4 solved examples before it)\n"
    )
    print(markdown_table(rows))
    print(f"saved: {path}")
