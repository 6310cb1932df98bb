"""The main job: fine-tune with each method and print one results table.

On the embedded default (tiny-gpt2 + synthetic-sentiment, CPU) the whole table takes well
under a minute. Every row starts from the same weights and the same seed, so the rows differ
only in the method, and the same command prints the same table.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from peft_course.data import ClassificationData
from peft_course.finetune import METHOD_LABELS, FinetuneResult, finetune
from peft_course.training import TrainConfig

COLUMNS = ("method", "trainable params", "accuracy", "weighted F1", "seconds")


@dataclass(frozen=True)
class DemoSetting:
    """How one demo row trains: epochs and learning rate tuned for its method."""

    method: str
    epochs: int
    learning_rate: float


DEMO_SETTINGS = [
    DemoSetting("head", epochs=8, learning_rate=2e-2),
    DemoSetting("full", epochs=3, learning_rate=1e-3),
]


def _row(label: str, trainable: int, scores: dict[str, float], seconds: float) -> dict[str, str]:
    return {
        "method": label,
        "trainable params": f"{trainable:,}",
        "accuracy": f"{scores['accuracy']:.4f}",
        "weighted F1": f"{scores['f1']:.4f}",
        "seconds": f"{seconds:.1f}",
    }


def demo_rows(
    data: ClassificationData, model_name: str = "tiny-gpt2", seed: int = 0,
    max_length: int = 256, settings: list[DemoSetting] | None = None, progress: bool = True,
) -> list[dict[str, str]]:
    """The untrained baseline, then one row per method (test scores, best-validation weights)."""
    rows: list[dict[str, str]] = []
    for setting in settings or DEMO_SETTINGS:
        config = TrainConfig(
            epochs=setting.epochs, learning_rate=setting.learning_rate, seed=seed, progress=progress
        )
        result: FinetuneResult = finetune(data, setting.method, model_name, config, max_length)
        if not rows:
            rows.append(_row("untrained", 0, result.untrained, 0.0))
        rows.append(_row(METHOD_LABELS.get(setting.method, setting.method), result.trainable,
                         result.best, result.training.seconds))
    return rows


def markdown_table(rows: list[dict[str, str]], columns: tuple[str, ...] = COLUMNS) -> str:
    """A GitHub-flavoured Markdown table, numbers right-aligned."""
    align = ["---"] + ["---:"] * (len(columns) - 1)
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row[c] for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_table(rows: list[dict[str, str]], directory: str | Path, stem: str = "results") -> Path:
    """Save the table as `<stem>.md` and `<stem>.csv` in `directory`; returns the Markdown path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    markdown = directory / f"{stem}.md"
    markdown.write_text(markdown_table(rows))
    with open(directory / f"{stem}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return markdown
