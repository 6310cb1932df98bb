"""A run directory: everything one fine-tuning run produced, enough to reload and predict.

```
run/
  run.json             how to rebuild the model: base model, method and its options, labels
  weights.safetensors  the trained parameters only (head, adapters; every weight for `full`)
  adapter_config.json, adapter_model.safetensors
                       the same adapter in peft's format, for every LoRA-like method (LoRA from
                       scratch too): `PeftModel.from_pretrained(base, run)` loads it
  events.out.tfevents.*  the history for TensorBoard (`tensorboard --logdir runs`)
  metrics.json         untrained, best-validation and last-iteration test scores
  history.json         loss and validation accuracy per evaluation; history.png plots it
  cost.json            what training cost: real and padded tokens/s, peak memory, optimizer
                       state, FLOPs a token and the share of this machine's peak (`cost`)
  confusion.png        for more than two labels
  results.md           the run's row of a results table
  checkpoint/          the latest epoch, for --resume, and the run.json it was started with
```

Only the trained parameters are saved: a LoRA run of GPT-2 small is a few megabytes, and the
base model is loaded again from where it came from. `load_run` reads `weights.safetensors`
alone, so a run written before the peft files existed still loads.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from peft_course import lora
from peft_course.data import ClassificationData
from peft_course.errors import CourseError, check_string_list, describe
from peft_course.files import (
    atomic_write_text,
    check_output_directory,
    check_output_kind,
    claim_output_directory,
    replacing,
)
from peft_course.event_logs import write_events
from peft_course.finetune import FinetuneResult
from peft_course.models import model_identity, resolve_model_path
from peft_course.registry import get_method
from peft_course.models import check_max_length
from peft_course.tables import markdown_table, result_row
from peft_course.metrics import confusion
from peft_course.plots import plot_confusion, plot_history
from peft_course.training import load_trainable_state
from peft_course.settings import TRAINING

RUN_FILE, WEIGHTS_FILE, METRICS_FILE = "run.json", "weights.safetensors", "metrics.json"
COST_FILE = "cost.json"
ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"  # peft's
PEFT_PREFIX = "base_model.model."  # what peft puts before the base model's own names


class RunError(CourseError):
    """A run directory that can't be written (finished run) or read (missing or damaged files)."""


@dataclass
class RunSpec:
    """What rebuilds a run's model: the base model, the method with its options, the labels.

    Attributes:
        model: the base model's name or path, loaded again when the run is reloaded.
        method: the fine-tuning method (a key of `registry.METHODS`).
        label_names: the labels, in the order of the head's outputs.
        dataset: the name of the data the run trained on.
        method_options: the keyword options the method's `prepare` was given.
        max_length: tokens a text kept.
        seed: the seed the model was loaded and trained with.
        train_config: the training loop's settings (a `TrainConfig` as a dict).
        model_identity: for a local base model, its absolute path and a fingerprint of its
            files (`models.model_identity`): a reload finds it from any working directory and
            refuses it if it changed. None for the built-in models, hub ids and older runs.
    """

    model: str
    method: str
    label_names: list[str]
    dataset: str = ""
    method_options: dict[str, Any] = field(default_factory=dict)
    max_length: int = TRAINING.max_length
    seed: int = TRAINING.seed
    train_config: dict[str, Any] = field(default_factory=dict)
    model_identity: dict[str, str] | None = None


CHECKPOINT = "checkpoint"  # the subdirectory `--resume` continues from
# Settings a resumed run may change: where it runs, and whether it shows progress bars.
RESUMABLE_CHANGES = ("device", "progress")


def check_run_directory(
    directory: str | Path, overwrite: bool = False, resume: bool = False
) -> Path:
    """Check that a run may be written to `directory`, without writing anything yet.

    Refused: a path that is a file or cannot be written; a finished run unless `overwrite` (or
    `resume`, which continues it); an interrupted run's checkpoint unless `resume` continues it
    or `overwrite` starts afresh, since starting over would discard the epochs it holds.

    Args:
        directory: the run directory.
        overwrite: replace a finished or interrupted run.
        resume: continue an interrupted run from its checkpoint.

    Returns:
        The directory as a `Path`.

    Raises:
        RunError: if both `overwrite` and `resume` are set, or the directory holds a run that
            neither of them allows replacing or continuing.
    """
    directory = check_output_directory(directory)
    if not ((directory / RUN_FILE).is_file() or (directory / CHECKPOINT / RUN_FILE).is_file()):
        check_output_kind(directory, "finetune")  # a run of an earlier release has no marker
    if overwrite and resume:
        raise RunError("--overwrite starts afresh and --resume continues: pass one of them")
    if (directory / METRICS_FILE).is_file() and not (overwrite or resume):
        raise RunError(
            f"'{directory}' already holds a finished run; pass --overwrite to replace it"
        )
    if (
        resume
        and (directory / METRICS_FILE).is_file()
        and not (directory / CHECKPOINT / "state.json").is_file()
    ):
        raise RunError(
            f"'{directory}' holds a finished run but no checkpoint to resume from; pass "
            "--overwrite to train it again"
        )
    if (directory / CHECKPOINT / "state.json").is_file() and not (overwrite or resume):
        raise RunError(
            f"'{directory}' holds an interrupted run; pass --resume to continue it or --overwrite "
            f"to start afresh"
        )
    return directory


def _plain(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples become lists), so saved and new specs compare."""
    return json.loads(json.dumps(value))


def check_resume(directory: str | Path, spec: RunSpec) -> None:
    """Refuse to resume a checkpoint that was started with another model, method, options or data.

    The checkpoint's `run.json` (written by `start_run`) is compared with `spec`; the first
    difference is named, with both values. Without that file there is nothing to compare
    (no checkpoint yet, or one from an older version), and `load_checkpoint` still checks
    that the saved weights fit the model.

    Args:
        directory: the run directory holding `checkpoint/`.
        spec: the run about to resume; of its `train_config`, only `RESUMABLE_CHANGES` may differ.

    Raises:
        RunError: if `spec` differs from the checkpoint's `run.json`.
    """
    saved_file = Path(directory) / CHECKPOINT / RUN_FILE
    if not saved_file.is_file() or not (Path(directory) / CHECKPOINT / "state.json").is_file():
        return
    saved = _read_json(saved_file)
    new = _plain(asdict(spec))
    for key, value in new.items():
        old = saved.get(key)
        if key == "train_config":
            changed = [
                k for k in value if k not in RESUMABLE_CHANGES and (old or {}).get(k) != value[k]
            ]
            if changed:
                name = changed[0]
                raise RunError(
                    f"cannot resume '{directory}': its checkpoint was started with {name} "
                    f"{(old or {}).get(name)!r}, not {value[name]!r}; resume with the same "
                    "options, or start afresh with --overwrite"
                )
        elif old != value:
            raise RunError(
                f"cannot resume '{directory}': its checkpoint was started with {key} {old!r}, not "
                f"{value!r}; resume with the same options, or start afresh with --overwrite"
            )


def start_run(directory: str | Path, spec: RunSpec) -> Path:
    """Record `spec` beside the checkpoint,
    so that `--resume` can check it continues the same run.

    Args:
        directory: the run directory.
        spec: the run being started.

    Returns:
        The `checkpoint/run.json` written.
    """
    claim_output_directory(directory, "finetune")
    return atomic_write_text(
        Path(directory) / CHECKPOINT / RUN_FILE, json.dumps(asdict(spec), indent=2)
    )


def peft_base_path(spec: RunSpec) -> str:
    """The base model as `adapter_config.json` names it: a directory peft and transformers load.

    The embedded models are named by their cache directory, a local model by its absolute
    path, a hub id as it is.
    """
    path = resolve_model_path(base_model(spec), spec.seed)
    return str(Path(path).resolve()) if Path(path).is_dir() else path


def scratch_adapter(model: nn.Module) -> tuple[Any, dict[str, torch.Tensor]] | None:
    """LoRA from scratch under peft's names: `(LoraConfig, tensors)`; None for another model.

    Our layer keeps `A` as `(r, in)` and `B` as `(out, r)`: the shapes of peft's
    `lora_A.weight` and `lora_B.weight`, so only the names change (`...c_attn.lora_A` becomes
    `base_model.model....c_attn.lora_A.weight`). The head, trained in full, is what peft's
    `modules_to_save` holds under its own name. A parameter trained in full inside a LoRA
    layer (`c_attn`'s bias) has no place in peft's format: None then too.

    Args:
        model: a classifier `lora.prepare_lora_scratch` prepared (or any model).
    """
    layers = lora.lora_layers(model)
    config = getattr(model, "lora_config", None)  # set by `lora.inject_lora` with the layers
    if not layers or not isinstance(config, lora.LoRAConfig):  # the course's GPT-2 has its own
        return None
    first = next(iter(layers.values()))
    tensors = {}
    for name, layer in layers.items():
        tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = layer.lora_A.detach().cpu().contiguous()
        tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = layer.lora_B.detach().cpu().contiguous()
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    others = [n for n in trained if not n.endswith((".lora_A", ".lora_B"))]
    if any(n.startswith(tuple(f"{layer}." for layer in layers)) for n in others):
        return None
    parameters = dict(model.named_parameters())
    for name in others:
        tensors[PEFT_PREFIX + name] = parameters[name].detach().cpu().contiguous()
    peft_config = lora.peft_lora_config(
        config, task_type="SEQ_CLS", fan_in_fan_out=lora.stores_transposed(model)
    )
    peft_config.target_modules = sorted(layers)  # the wrapped modules, by their whole names
    peft_config.modules_to_save = sorted({n.rpartition(".")[0] for n in others}) or None
    peft_config.lora_alpha, peft_config.r = first.alpha, first.r
    return peft_config, tensors


def save_peft_adapter(directory: str | Path, model: nn.Module, spec: RunSpec) -> bool:
    """Write the run's adapter in peft's format beside `weights.safetensors`, if it has one.

    A peft model is saved through its own `save_pretrained` (the head through
    `modules_to_save`); LoRA from scratch through `scratch_adapter`. Either way the base model
    recorded is `peft_base_path`, so `AutoPeftModelForSequenceClassification.from_pretrained`
    finds it. The two files are written in a temporary directory and moved in, each whole.

    Args:
        directory: the run directory.
        model: the trained model at its best-validation weights, before any merge.
        spec: the run's spec.

    Returns:
        Whether the adapter was written (False for methods without one: head, full, BitFit,
        the course's bottleneck adapters and its GPT-2).
    """
    from peft import PeftModel

    directory = Path(directory)
    scratch = Path(tempfile.mkdtemp(dir=directory, prefix=".adapter-"))
    try:
        if isinstance(model, PeftModel):
            config = model.peft_config["default"]
            recorded = config.base_model_name_or_path
            config.base_model_name_or_path = peft_base_path(spec)
            try:
                model.save_pretrained(scratch)
            finally:
                config.base_model_name_or_path = recorded
        else:
            converted = scratch_adapter(model)
            if converted is None:
                return False
            config, tensors = converted
            config.base_model_name_or_path = peft_base_path(spec)
            config.save_pretrained(scratch)
            save_file(tensors, scratch / ADAPTER_WEIGHTS, metadata={"format": "pt"})
        for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG):  # the config, which peft looks for, last
            os.replace(scratch / name, directory / name)
        return True
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def remove_peft_adapter(directory: str | Path) -> None:
    """Remove an earlier run's peft files, so that a rerun without an adapter leaves none."""
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        (Path(directory) / name).unlink(missing_ok=True)


def history_events(result: Any) -> list[dict[str, float]]:
    """The training history with each step's tokens/s beside it: what TensorBoard shows.

    Args:
        result: a `training.TrainResult`.
    """
    speeds = {entry["step"]: entry for entry in result.throughput}
    return [{**entry, **speeds.get(entry["step"], {})} for entry in result.history]


def save_run(
    directory: str | Path,
    result: FinetuneResult,
    spec: RunSpec,
    data: ClassificationData,
    log_dir: str | Path | None = None,
    command: str | None = None,
) -> Path:
    """Write the run's spec, trained weights (also as a peft adapter), metrics, history,
    TensorBoard events, plots and results row.

    Each file is written to a temporary name and moved into place, and `metrics.json`, which
    marks a run as finished, comes last: an interruption never leaves a half-written file or a
    run that looks finished but is not.

    Args:
        directory: the run directory.
        result: the finished fine-tuning run.
        spec: what rebuilds the run's model.
        data: the data it trained on (its test labels feed the confusion plot).
        log_dir: where the TensorBoard event files go; None: the run directory.
        command: the command line that made the run, kept in `metrics.json` (the model card
            of `peft-course export` shows it); None: not known (a run made from Python).

    Returns:
        The run directory.
    """
    directory = Path(directory)
    with replacing(directory / WEIGHTS_FILE) as temporary:
        save_file(result.training.best_state, temporary)
    atomic_write_text(directory / RUN_FILE, json.dumps(asdict(spec), indent=2))
    unmerged = result.model
    if get_method(spec.method).finish is not None:  # merged: the adapter is rebuilt unmerged
        unmerged = rebuild_model(spec, result.training.best_state)[0]
    if not save_peft_adapter(directory, unmerged, spec):
        remove_peft_adapter(directory)
    atomic_write_text(directory / "history.json", json.dumps(result.training.history, indent=1))
    atomic_write_text(directory / COST_FILE, json.dumps(result.training.cost, indent=1))
    write_events(history_events(result.training), directory if log_dir is None else log_dir)
    with replacing(directory / "history.png") as temporary:
        plot_history(result.training.history, temporary, f"{spec.method} on {spec.dataset}")
    matrix = confusion(data.splits["test"]["label"], result.predictions, data.num_labels)
    with replacing(directory / "confusion.png") as temporary:
        plot_confusion(matrix, data.label_names, temporary, f"{spec.method} on {spec.dataset}")
    label = get_method(spec.method).label or spec.method
    rows = [
        result_row("untrained", 0, result.untrained, 0.0),
        result_row(label, result.trainable, result.best, result.training.seconds),
    ]
    atomic_write_text(directory / "results.md", markdown_table(rows))
    metrics = {
        "method": spec.method,
        "model": spec.model,
        "dataset": spec.dataset,
        "trainable_params": result.trainable,
        "total_params": result.total,
        "untrained": result.untrained,
        "best_validation": result.best,
        "last_iteration": result.last,
        "best_step": result.training.best_step,
        "seconds": result.training.seconds,
        **({"command": command} if command else {}),
    }
    atomic_write_text(directory / METRICS_FILE, json.dumps(metrics, indent=2))
    return directory


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or a `RunError` saying the file is damaged."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunError(
            f"'{path}' is damaged (not valid JSON: {error}); rerun the run that wrote it"
        ) from None
    if not isinstance(value, dict):
        raise RunError(f"'{path}' is damaged: it holds {describe(value)}, not a JSON object")
    return value


def read_spec(directory: str | Path) -> RunSpec:
    """The `RunSpec` saved in a run directory's `run.json`, checked.

    Args:
        directory: the run directory.

    Raises:
        RunError: if `run.json` does not describe a run or names no labels.
    """
    path = Path(directory) / RUN_FILE
    saved = _read_json(path)
    try:
        spec = RunSpec(**saved)
    except TypeError as error:
        raise RunError(
            f"'{path}' does not describe a run ({error}); it was not written by "
            f"`peft-course finetune`"
        ) from None
    if not isinstance(spec.label_names, list) or not spec.label_names:
        raise RunError(f"'{path}' is damaged: it names no labels")
    return spec


def base_model(spec: RunSpec) -> str:
    """The base model to reload: as recorded, or at its recorded absolute path, if unchanged.

    Raises:
        RunError: if the recorded local model is gone or its files changed since training.
    """
    if spec.model_identity is None:
        return spec.model
    recorded = spec.model_identity["path"]
    if not Path(recorded).is_dir():
        raise RunError(
            f"the run's base model '{recorded}' is gone: restore it there to use this run"
        )
    if model_identity(recorded) != spec.model_identity:
        raise RunError(
            f"the run's base model '{recorded}' changed since the run was trained (its config or "
            "weights differ): its trained weights would be applied to another model; restore the "
            "base model or train the run again"
        )
    return recorded


def load_run(directory: str | Path) -> tuple[nn.Module, Any, RunSpec]:
    """Rebuild a saved run's model (best-validation weights) and tokenizer, ready to predict.

    Args:
        directory: a finished run directory.

    Returns:
        `(model, tokenizer, spec)`: the model in eval mode, its tokenizer and the run's spec.

    Raises:
        RunError: if the directory is missing, a file, not a finished run, or its weights are
            damaged or do not fit the model.
    """
    directory = Path(directory)
    if not directory.exists():
        raise RunError(f"cannot load the run '{directory}': no such directory")
    if not directory.is_dir():
        raise RunError(f"cannot load the run '{directory}': it is a file, not a run directory")
    missing = [f for f in (RUN_FILE, WEIGHTS_FILE) if not (directory / f).is_file()]
    if missing:
        interrupted = ""
        if (directory / CHECKPOINT).is_dir():
            interrupted = " (an interrupted run: finish it with finetune --resume)"
        raise RunError(
            f"'{directory}' is not a finished run: missing {', '.join(missing)}{interrupted}"
        )
    spec = read_spec(directory)
    try:
        weights = load_file(directory / WEIGHTS_FILE)
    except Exception as error:  # safetensors raises its own error type for a truncated file
        raise RunError(
            f"'{directory / WEIGHTS_FILE}' is damaged or truncated ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); rerun the fine-tuning"
        ) from None
    model, tokenizer = rebuild_model(spec, weights, directory)
    method = get_method(spec.method)
    if method.finish is not None:
        model = method.function("finish")(model)
    return model.eval(), tokenizer, spec


def rebuild_model(
    spec: RunSpec, weights: dict[str, torch.Tensor], directory: str | Path = "the run"
) -> tuple[nn.Module, Any]:
    """The run's model before any `finish` step: loaded, prepared, and its trained weights in.

    Args:
        spec: the run's spec.
        weights: its trained parameters (`weights.safetensors`, or the best state in memory).
        directory: the run directory, named in the error.

    Raises:
        RunError: if the weights do not fit the prepared model.
    """
    method = get_method(spec.method)
    model, tokenizer = method.function("load")(
        base_model(spec), "classification", len(spec.label_names), spec.label_names, seed=spec.seed
    )
    model = method.function("prepare")(model, **spec.method_options)
    expected = {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}
    found = {n: tuple(t.shape) for n, t in weights.items()}
    if found != expected:
        raise RunError(
            f"'{directory}' weights do not fit {spec.method} on {spec.model}: "
            f"{sorted(set(found) ^ set(expected))[:4] or 'other shapes'} ..."
        )
    load_trainable_state(model, weights)
    return model, tokenizer


def check_texts_to_classify(texts: Any) -> list[str]:
    """`texts` as a list, if it is a non-empty list of non-blank strings (one string is refused).

    Args:
        texts: the texts to classify.

    Raises:
        CourseError: if there are no texts, or one is empty or blank.
    """
    texts = check_string_list("texts", texts, allow_empty=True)
    if not texts:
        raise CourseError("no text to classify")
    for position, text in enumerate(texts, start=1):
        if not text.strip():
            raise CourseError(
                f"text {position} of {len(texts)} is {'empty' if not text else 'blank'} "
                f"({text!r}): give the text to classify"
            )
    return texts


@torch.no_grad()
def predict_texts(
    model: nn.Module, tokenizer: Any, texts: list[str], max_length: int = TRAINING.max_length
) -> list[dict[str, Any]]:
    """The predicted label and the probability of every label, for each text.

    Args:
        model: a classifier (e.g. from `load_run`).
        tokenizer: its tokenizer.
        texts: the texts to classify; non-empty and none blank.
        max_length: tokens a text keeps (longer texts are truncated); at most the model's context.

    Returns:
        One dict per text: `text`, the predicted `label`, and `probabilities` (label to
        probability).
    """
    texts = check_texts_to_classify(texts)
    max_length = check_max_length(max_length, model)
    device = next(model.parameters()).device
    batch = tokenizer(
        texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    ).to(device)
    probabilities = model(**batch).logits.float().softmax(-1).cpu()
    names = [model.config.id2label[i] for i in range(probabilities.shape[1])]
    return [
        {
            "text": text,
            "label": names[int(row.argmax())],
            "probabilities": dict(zip(names, row.tolist())),
        }
        for text, row in zip(texts, probabilities)
    ]
