"""A run directory: everything one fine-tuning run produced, enough to reload and predict.

```
run/
  run.json             how to rebuild the model: base model, method and its options, labels
  weights.safetensors  the trained parameters only (head, adapters; every weight for `full`)
  metrics.json         untrained, best-validation and last-iteration test scores
  history.json         loss and validation accuracy per evaluation; history.png plots it
  confusion.png        for more than two labels
  results.md           the run's row of a results table
  checkpoint/          the latest epoch, for --resume
```

Only the trained parameters are saved: a LoRA run of GPT-2 small is a few megabytes, and the
base model is loaded again from where it came from.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from peft_course.data import ClassificationData
from peft_course.tables import markdown_table, result_row
from peft_course.finetune import FinetuneResult, get_method
from peft_course.metrics import confusion
from peft_course.plots import plot_confusion, plot_history
from peft_course.training import load_trainable_state

RUN_FILE, WEIGHTS_FILE, METRICS_FILE = "run.json", "weights.safetensors", "metrics.json"


class RunError(ValueError):
    """A run directory that can't be written (finished run) or read (missing files)."""


@dataclass
class RunSpec:
    """What rebuilds a run's model: the base model, the method with its options, the labels."""

    model: str
    method: str
    label_names: list[str]
    dataset: str = ""
    method_options: dict[str, Any] = field(default_factory=dict)
    max_length: int = 256
    seed: int = 0
    train_config: dict[str, Any] = field(default_factory=dict)


def check_run_directory(directory: str | Path, overwrite: bool = False, resume: bool = False) -> Path:
    """Refuse to write over a finished run unless `overwrite` (or `resume`, which continues it)."""
    directory = Path(directory)
    if (directory / METRICS_FILE).is_file() and not (overwrite or resume):
        raise RunError(f"'{directory}' already holds a finished run; pass --overwrite to replace it")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def save_run(directory: str | Path, result: FinetuneResult, spec: RunSpec, data: ClassificationData) -> Path:
    """Write the run's spec, trained weights, metrics, history, plots and results row."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / RUN_FILE).write_text(json.dumps(asdict(spec), indent=2))
    save_file(result.training.best_state, directory / WEIGHTS_FILE)
    metrics = {
        "method": spec.method, "model": spec.model, "dataset": spec.dataset,
        "trainable_params": result.trainable, "total_params": result.total,
        "untrained": result.untrained, "best_validation": result.best, "last_iteration": result.last,
        "best_step": result.training.best_step, "seconds": result.training.seconds,
    }
    (directory / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    (directory / "history.json").write_text(json.dumps(result.training.history, indent=1))
    plot_history(result.training.history, directory / "history.png", f"{spec.method} on {spec.dataset}")
    if data.num_labels > 2:
        matrix = confusion(data.splits["test"]["label"], result.predictions, data.num_labels)
        plot_confusion(matrix, data.label_names, directory / "confusion.png", f"{spec.method} on {spec.dataset}")
    label = get_method(spec.method).label or spec.method
    rows = [result_row("untrained", 0, result.untrained, 0.0),
            result_row(label, result.trainable, result.best, result.training.seconds)]
    (directory / "results.md").write_text(markdown_table(rows))
    return directory


def load_run(directory: str | Path) -> tuple[nn.Module, Any, RunSpec]:
    """Rebuild a saved run's model (best-validation weights) and tokenizer, ready to predict."""
    directory = Path(directory)
    missing = [f for f in (RUN_FILE, WEIGHTS_FILE) if not (directory / f).is_file()]
    if missing:
        raise RunError(f"'{directory}' is not a finished run: missing {missing}")
    spec = RunSpec(**json.loads((directory / RUN_FILE).read_text()))
    method = get_method(spec.method)
    model, tokenizer = method.load(spec.model, "classification", len(spec.label_names), spec.label_names,
                                   seed=spec.seed)
    model = method.prepare(model, **spec.method_options)
    weights = load_file(directory / WEIGHTS_FILE)
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(weights) != expected:
        raise RunError(f"'{directory}' weights do not fit {spec.method} on {spec.model}: "
                       f"{sorted(set(weights) ^ expected)[:4]} ...")
    load_trainable_state(model, weights)
    if method.finish is not None:
        model = method.finish(model)
    return model.eval(), tokenizer, spec


@torch.no_grad()
def predict_texts(model: nn.Module, tokenizer: Any, texts: list[str], max_length: int = 256) -> list[dict[str, Any]]:
    """The predicted label and the probability of every label, for each text."""
    if not texts:
        raise ValueError("no text to classify")
    device = next(model.parameters()).device
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device)
    probabilities = model(**batch).logits.float().softmax(-1).cpu()
    names = [model.config.id2label[i] for i in range(probabilities.shape[1])]
    return [
        {"text": text, "label": names[int(row.argmax())], "probabilities": dict(zip(names, row.tolist()))}
        for text, row in zip(texts, probabilities)
    ]
