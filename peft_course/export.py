"""A run as the ecosystem loads it: a transformers checkpoint or a peft adapter, with a model card.

`peft-course export RUN OUT --merged` folds the run's adapters into the weights and writes a
plain transformers checkpoint (`config.json` with the labels, `model.safetensors`, the
tokenizer), which `transformers.pipeline("text-classification", model=OUT)` loads with no
course code; a QLoRA run's 4-bit weights are dequantized first, so the checkpoint holds what
the 4-bit model computed with. Without `--merged`, a LoRA-like run is written as a peft
adapter directory on its base model (`PeftModel.from_pretrained`); a run that trains no
adapter (head, full, BitFit) is a whole checkpoint either way. Beside it, `README.md` is a
model card in the Hub's format: the base model, the method and its options, the data, the
run's scores and the command that trains it again; its license is left for the user.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from peft_course import lora
from peft_course.configs import TrainConfig
from peft_course.errors import CourseError
from peft_course.files import atomic_write_text
from peft_course.methods import merge_and_unload_peft
from peft_course.options import flag_of
from peft_course.qlora import quantized_modules
from peft_course.models import load_model
from peft_course.registry import get_method
from peft_course.runs import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    METRICS_FILE,
    WEIGHTS_FILE,
    RunSpec,
    base_model,
    load_run,
    rebuild_model,
    save_peft_adapter,
)
from peft_course.settings import EMBEDDED_MODEL, TRAINING

CHECKPOINT_FILES = ("config.json", "model.safetensors", "generation_config.json")
CARD = "README.md"


class ExportError(CourseError):
    """A run that cannot be written in the format asked for."""


def dequantized_base(model: nn.Module, spec: RunSpec) -> nn.Module:
    """The run's base model in full precision with the weights its 4-bit copy computes with.

    Each `Linear4bit` is dequantized (`bitsandbytes.functional.dequantize_4bit`) into the
    same module of a freshly loaded full-precision base: so the merged checkpoint carries the
    NF4 rounding the adapters were trained against, not the original weights. GPT-2's
    `Conv1D` stores its weight `(in, out)`, the transpose of the `Linear4bit`'s.

    Args:
        model: a QLoRA run's model (peft over a 4-bit base).
        spec: the run's spec.
    """
    import bitsandbytes as bnb
    from transformers.pytorch_utils import Conv1D

    plain, _ = load_model(
        base_model(spec), "classification", len(spec.label_names), spec.label_names, spec.seed
    )
    inner = model.get_base_model()
    with torch.no_grad():
        for name, module in inner.named_modules():
            if not isinstance(module, bnb.nn.Linear4bit):
                continue
            target = plain.get_submodule(name.removesuffix(".base_layer"))
            weight = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
            weight = weight.float().cpu()
            target.weight.copy_(weight.T if isinstance(target, Conv1D) else weight)
            if module.bias is not None:
                target.bias.copy_(module.bias.float().cpu())
    return plain


def merged_model(run: Path, model: nn.Module, spec: RunSpec) -> nn.Module:
    """The run's classifier with every adapter folded into its weights: a plain transformers model.

    Args:
        run: the run directory.
        model: the run's model as `load_run` gives it.
        spec: the run's spec.

    Raises:
        ExportError: if the method's trained parameters have no place in the base architecture
            (soft prompts, the course's bottleneck adapters or its own GPT-2).
    """
    from peft import PeftModel

    if isinstance(model, PeftModel):
        if quantized_modules(model):  # QLoRA: fold into the weights the 4-bit layers hold
            plain = dequantized_base(model, spec)
            with warnings.catch_warnings():  # peft sets fan_in_fan_out for GPT-2's Conv1D itself
                warnings.filterwarnings("ignore", message="fan_in_fan_out is set to False")
                model = PeftModel.from_pretrained(plain, str(run))
        try:
            model = merge_and_unload_peft(model)
        except (AttributeError, NotImplementedError, TypeError, ValueError) as error:
            raise ExportError(
                f"{spec.method}'s trained parameters cannot be folded into the weights "
                f"({str(error).splitlines()[0]}): export it without --merged, as a peft adapter"
            ) from None
    elif lora.lora_layers(model):
        model = lora.merge_and_unload(model)
    return model


def check_plain(model: nn.Module, spec: RunSpec, how: str) -> None:
    """Refuse a model that transformers would not load back as it is.

    Its parameters must be exactly those its config's architecture has: the course's
    bottleneck adapters add modules transformers does not know, and would be dropped when
    loading (with a warning), leaving another model.

    Raises:
        ExportError: naming the method and the first unknown parameter.
    """
    from transformers import AutoModelForSequenceClassification, PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        raise ExportError(
            f"{spec.method} trains {type(model).__name__}, the course's own model, not a "
            "transformers one: it cannot be exported (predict it with `peft-course predict`)"
        )
    with torch.device("meta"):
        fresh = AutoModelForSequenceClassification.from_config(model.config)
    extra = sorted(set(model.state_dict()) - set(fresh.state_dict()))
    if extra:
        raise ExportError(
            f"{spec.method} adds parameters transformers' {type(fresh).__name__} does not have "
            f"({extra[0]}, ...): it cannot be exported {how}; predict it with `peft-course "
            "predict`"
        )


def run_command(spec: RunSpec) -> str:
    """The `peft-course finetune` command that trains the run again, from its recorded settings.

    Settings at their defaults are left out. The data options beyond the dataset's name
    (`--max-examples`, a training file's columns) are not recorded in a run, so not here either.
    """
    method = get_method(spec.method)
    parts = ["peft-course finetune", f"--method {spec.method}"]
    if spec.model != EMBEDDED_MODEL:
        parts.append(f"--model {spec.model}")
    if spec.dataset:
        parts.append(f"--dataset {spec.dataset}")
    if spec.max_length != TRAINING.max_length:
        parts.append(f"--max-length {spec.max_length}")
    configs = [TrainConfig(learning_rate=method.learning_rate)]
    configs += [method.options()] if method.options is not None else []
    defaults = {k: v for c in configs for k, v in asdict(c).items()}
    flags = {f.name: flag_of(f) for c in configs for f in fields(c)}
    settings = {**spec.method_options, **spec.train_config}
    for key, value in settings.items():
        if value is None or key not in flags or defaults[key] == value:
            continue
        flag = flags[key]
        if isinstance(value, bool):
            parts.append(flag if value else f"--no-{flag[2:]}")
        elif isinstance(value, (list, tuple)):
            parts.append(f"{flag} {' '.join(map(str, value))}")
        else:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


def model_card(spec: RunSpec, metrics: dict[str, Any], library: str) -> str:
    """The model card (`README.md`): the Hub's YAML header, then what the run is and scored.

    Args:
        spec: the run's spec.
        metrics: its `metrics.json`.
        library: `transformers` for a whole checkpoint, `peft` for an adapter.
    """
    label = get_method(spec.method).label or spec.method
    header = {
        "base_model": spec.model,
        "library_name": library,
        "pipeline_tag": "text-classification",
        "tags": ["peft-course", spec.method, "text-classification"],
        "datasets": [spec.dataset] if spec.dataset else [],
        "license": None,
    }
    yaml = "\n".join(
        f"{k}: {json.dumps(v)}" if v is not None else f"{k}:  # fill in: the license you give it"
        for k, v in header.items()
    )
    options = ", ".join(f"`{k}={v}`" for k, v in spec.method_options.items()) or "none"
    scores = [
        (name, metrics.get(key) or {})
        for name, key in (
            ("untrained", "untrained"),
            ("best validation", "best_validation"),
            ("last iteration", "last_iteration"),
        )
    ]
    rows = "\n".join(
        f"| {name} | {s.get('accuracy', float('nan')):.4f} | {s.get('f1', float('nan')):.4f} |"
        for name, s in scores
    )
    trained = metrics.get("trainable_params", 0)
    loading = (
        'pipeline("text-classification", model="OUT")'
        if library == "transformers"
        else 'AutoPeftModelForSequenceClassification.from_pretrained("OUT")'
    )
    return f"""---
{yaml}
---

# {label} on {spec.dataset or "its data"}

A text classifier fine-tuned from `{spec.model}` with {label} (`--method {spec.method}`).

- **Base model:** `{spec.model}`
- **Method:** {label}; options: {options}
- **Labels:** {", ".join(f"`{n}`" for n in spec.label_names)}
- **Data:** {spec.dataset or "not recorded"}, texts cut to {spec.max_length} tokens
- **Trainable parameters:** {trained:,} of {metrics.get("total_params", 0):,}
- **Seed:** {spec.seed}

## Scores on the test split

| weights | accuracy | weighted F1 |
|---|---:|---:|
{rows}

## Load it

`{loading}`, with OUT this directory.

## Train it again

```
{metrics.get("command") or run_command(spec)}
```
"""


def _move_in(scratch: Path, output: Path, stale: tuple[str, ...]) -> None:
    """Move every file `scratch` holds into `output` and remove `stale` files left there."""
    for name in stale:
        (output / name).unlink(missing_ok=True)
    for path in sorted(scratch.iterdir(), key=lambda p: p.name == ADAPTER_CONFIG):
        os.replace(path, output / path.name)


def export_run(run: str | Path, output: str | Path, merged: bool = False) -> Path:
    """Write the run in `run` to `output` as transformers and peft load it, with its model card.

    Every file is written into a temporary directory inside `output` first and then moved in,
    the model card last: an interrupted export leaves no half-written file. Files of the other
    kind an earlier export left there (an adapter beside a merged checkpoint) are removed.

    Args:
        run: a finished run directory (`peft-course finetune`); one written before the peft
            files existed is converted too.
        output: the directory to write; created if missing.
        merged: fold the adapters into the weights (a plain transformers checkpoint).

    Returns:
        `output`, as a `Path`.

    Raises:
        ExportError: if the run's method has no such format (see `merged_model`).
        RunError: if `run` is not a finished run.
    """
    from peft import PeftModel

    run, output = Path(run), Path(output)
    model, tokenizer, spec = load_run(run)
    metrics = json.loads((run / METRICS_FILE).read_text(encoding="utf-8"))
    output.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=output, prefix=".export-"))
    try:
        finished = get_method(spec.method).finish is not None  # e.g. merged: rebuilt unmerged
        adapter = not merged and (
            isinstance(model, PeftModel) or bool(lora.lora_layers(model)) or finished
        )
        if adapter:  # False where it has none in peft's format (the course's own GPT-2)
            unmerged = rebuild_model(spec, load_file(run / WEIGHTS_FILE), run)[0]
            adapter = save_peft_adapter(scratch, unmerged, spec)
        if adapter:
            stale, library = CHECKPOINT_FILES, "peft"
        else:
            plain = merged_model(run, model, spec) if merged else model
            check_plain(plain, spec, "as a transformers checkpoint")
            plain.save_pretrained(scratch, safe_serialization=True)
            stale, library = (ADAPTER_CONFIG, ADAPTER_WEIGHTS), "transformers"
        tokenizer.save_pretrained(scratch)
        _move_in(scratch, output, stale)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    atomic_write_text(output / CARD, model_card(spec, metrics, library))
    return output
