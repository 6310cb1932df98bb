"""LoRA from scratch: a low-rank update beside a frozen layer, proven equal to peft's.

A LoRA layer keeps a pretrained weight `W0` frozen and learns a rank-`r` update beside it:

    h = W0 x + (alpha / r) * B A x,    A: (r, in_features),  B: (out_features, r)

`A` starts random (Kaiming uniform, as `nn.Linear` does) and `B` at zero, so the wrapped model
computes exactly what the base model did at step 0. The same layer wraps `torch.nn.Linear`
(weight stored as `(out, in)`) and GPT-2's `Conv1D` (weight stored as `(in, out)`: peft calls
this `fan_in_fan_out`); only the merge has to care, because the update is added to the stored
weight.

The module then does what peft's LoRA does for a model: inject layers by module-name patterns,
freeze everything else (except modules you name, such as the classification head), merge the
update into the weights for inference, and save or load the adapter alone. The test suite
copies `A` and `B` into a peft model with the same `LoraConfig` and checks that logits and
gradients agree.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    GPT2Config,
    GPT2ForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
)
from transformers.pytorch_utils import Conv1D

from peft_course.errors import (
    CourseError,
    check_module,
    check_number,
    check_positive_int,
    check_positive_number,
    check_string_list,
    describe,
)
from peft_course.models import count_parameters, load_model
from peft_course.settings import EMBEDDED_MODEL, LORA

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
GPT2_TARGETS = ("c_attn", "attn.c_proj", "c_fc", "mlp.c_proj")
LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRAError(CourseError):
    """Bad LoRA settings or a bad target: rank, alpha, a pattern that matches nothing, ..."""


class UnsupportedLayerError(LoRAError, TypeError):
    """The module to wrap is neither `nn.Linear` nor GPT-2's `Conv1D`."""


# --8<-- [start:config]
@dataclass
class LoRAConfig:
    """What to adapt and how: rank `r`, `alpha`, dropout, target patterns, extra trainable modules.

    `targets` are module-name patterns with peft's meaning: a pattern matches a module whose
    full name equals it or ends with `"." + pattern`, so `"c_attn"` matches every
    `transformer.h.N.attn.c_attn` and `"attn.c_proj"` matches the attention output projection
    but not the MLP's `mlp.c_proj`. `trainable` patterns (the head, `["score"]`) match modules
    or parameters the same way; what they match trains in full.

    Attributes:
        r: the rank of the update.
        alpha: the numerator of the update's scale `alpha / r` (see `scaling`).
        dropout: the dropout probability on the input of the LoRA path.
        targets: patterns of the modules to wrap; by default `["c_attn"]`, peft's default for GPT-2.
        trainable: patterns of the modules or parameters that train in full.
        use_rslora: scale by `alpha / sqrt(r)` instead (rank-stabilised LoRA).

    Raises:
        LoRAError: if a number is out of range, `use_rslora` is not a bool, `targets` is empty
            or a list is a string.
    """

    r: int = LORA.r
    alpha: float = LORA.alpha
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["c_attn"])
    trainable: list[str] = field(default_factory=list)
    use_rslora: bool = False

    def __post_init__(self) -> None:
        check_hyperparameters(self.r, self.alpha, self.dropout)
        if isinstance(self.targets, str) or isinstance(self.trainable, str):
            raise LoRAError(
                "targets and trainable are lists of module-name patterns, not one string: "
                f"got targets={self.targets!r}, trainable={self.trainable!r}"
            )
        if not self.targets:
            raise LoRAError("targets is empty: name at least one module to adapt, e.g. ['c_attn']")
        self.targets = check_string_list("targets", self.targets)
        self.trainable = check_string_list("trainable", self.trainable, allow_empty=True)
        if not isinstance(self.use_rslora, bool):
            raise LoRAError(f"use_rslora must be True or False, got {describe(self.use_rslora)}")

    @property
    def scaling(self) -> float:
        """The update's scale: `alpha / r`, or `alpha / sqrt(r)` with `use_rslora`."""
        return lora_scaling(self.r, self.alpha, self.use_rslora)


# --8<-- [end:config]


def check_hyperparameters(r: int, alpha: float, dropout: float = 0.0) -> None:
    """Raise `LoRAError` unless `r` is a positive integer, `alpha > 0` and `0 <= dropout < 1`.

    The one check of LoRA's numbers: peft's settings (`methods.check_lora_options`), the
    ablation cells and DPO's LoRA all call it.

    Args:
        r: the LoRA rank.
        alpha: the numerator of the update's scale.
        dropout: the dropout probability on the LoRA path.

    Raises:
        LoRAError: if one of the three is of the wrong type or out of range.
    """
    try:
        check_positive_int("the LoRA rank r", r)
        check_positive_number("alpha", alpha)
        check_number("dropout (a probability)", dropout, 0, 1, high_open=True)
    except CourseError as error:
        raise LoRAError(str(error)) from None


def lora_scaling(r: int, alpha: float, use_rslora: bool = False) -> float:
    """`alpha / r`, or `alpha / sqrt(r)` for rank-stabilised LoRA (rsLoRA).

    With `alpha / r`, raising the rank at a fixed alpha shrinks the scale, and large ranks learn
    more slowly; rsLoRA divides by `sqrt(r)` instead, which keeps learning stable as r grows.

    Args:
        r: the LoRA rank.
        alpha: the numerator of the scale.
        use_rslora: divide by `sqrt(r)` instead of `r`.
    """
    return alpha / math.sqrt(r) if use_rslora else alpha / r


def layer_features(base: nn.Module) -> tuple[int, int]:
    """`(in_features, out_features)` of a `Linear` or a GPT-2 `Conv1D`,
    checking the weight's layout.

    The one place the course reads a projection's widths (the counting chapter uses it too).

    Args:
        base: the layer to read.

    Raises:
        UnsupportedLayerError: if `base` is neither an `nn.Linear` nor a `Conv1D`.
    """
    if isinstance(base, nn.Linear):
        assert base.weight.shape == (base.out_features, base.in_features)  # Linear stores (out, in)
        return base.in_features, base.out_features
    if isinstance(base, Conv1D):
        assert base.weight.shape == (base.nx, base.nf)  # Conv1D stores (in, out): transposed
        return base.nx, base.nf
    raise UnsupportedLayerError(
        f"expected an nn.Linear or transformers' Conv1D, got a {type(base).__name__}"
    )


# --8<-- [start:layer]
class LoRALayer(nn.Module):
    """A frozen `Linear`/`Conv1D` plus a trainable low-rank update: `base(x) + s * x A^T B^T`.

    `s` is `alpha / r` (or `alpha / sqrt(r)` with `use_rslora`). Dropout acts on the input of
    the LoRA path only, as in the LoRA paper and peft; the base path sees `x` unchanged.

    Args:
        base: the `nn.Linear` or `Conv1D` to adapt; it is frozen.
        r: the rank of the update.
        alpha: the numerator of the scale `s`.
        dropout: the dropout probability on the input of the LoRA path.
        use_rslora: scale by `alpha / sqrt(r)` instead of `alpha / r`.

    Raises:
        LoRAError: if `r`, `alpha` or `dropout` is of the wrong type or out of range.
        UnsupportedLayerError: if `base` is neither an `nn.Linear` nor a `Conv1D`.
    """

    def __init__(
        self,
        base: nn.Module,
        r: int = LORA.r,
        alpha: float = LORA.alpha,
        dropout: float = 0.0,
        use_rslora: bool = False,
    ) -> None:
        super().__init__()
        check_hyperparameters(r, alpha, dropout)
        in_features, out_features = layer_features(base)
        self.base = base.requires_grad_(False)  # W0 (and its bias) stay as pretrained
        self.r, self.alpha, self.scaling = r, alpha, lora_scaling(r, alpha, use_rslora)
        self.dropout = nn.Dropout(dropout)
        weight = base.weight
        self.lora_A = nn.Parameter(
            torch.empty(r, in_features, dtype=weight.dtype, device=weight.device)
        )
        self.lora_B = nn.Parameter(
            torch.zeros(out_features, r, dtype=weight.dtype, device=weight.device)
        )
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # what nn.Linear(in, r) would draw
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`base(x)` plus the scaled update (already inside `base` once merged).

        Args:
            x: the layer's input, `(..., in_features)`.
        """
        result = self.base(x)
        if self.merged:  # the update already sits inside base.weight
            return result
        update = (
            self.dropout(x) @ self.lora_A.T @ self.lora_B.T
        )  # (..., in) -> (..., r) -> (..., out)
        return result + update * self.scaling

    # --8<-- [end:layer]

    # --8<-- [start:merge]
    def delta_weight(self) -> torch.Tensor:
        """`s * B A`, laid out like `base.weight`:
        `(out, in)` for Linear, `(in, out)` for Conv1D."""
        delta = (self.lora_B @ self.lora_A) * self.scaling  # (out, in)
        if isinstance(self.base, Conv1D):
            delta = delta.T
        assert delta.shape == self.base.weight.shape
        return delta

    @torch.no_grad()
    def merge(self) -> None:
        """Add the update into the base weight: afterwards the layer costs what the base costs.

        Raises:
            LoRAError: if the layer is already merged.
        """
        if self.merged:
            raise LoRAError("this LoRA layer is already merged")
        self.base.weight += self.delta_weight().to(self.base.weight.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the update again, e.g. to go on training `A` and `B`.

        Raises:
            LoRAError: if the layer is not merged.
        """
        if not self.merged:
            raise LoRAError("this LoRA layer is not merged")
        self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
        self.merged = False

    # --8<-- [end:merge]

    def extra_repr(self) -> str:
        """The settings `print(model)` shows for the layer."""
        return f"r={self.r}, alpha={self.alpha}, scaling={self.scaling:g}, merged={self.merged}"


# --8<-- [start:matches]
def matches(name: str, patterns: Iterable[str]) -> bool:
    """peft's rule: `name` equals a pattern or ends with `"." + pattern`.

    Args:
        name: a full module or parameter name.
        patterns: the patterns to try.
    """
    return any(name == p or name.endswith("." + p) for p in patterns)


# --8<-- [end:matches]


# --8<-- [start:find_modules]
def find_modules(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Names of the modules matched by `patterns`; an error names any pattern that matches none.

    Args:
        model: the model to search.
        patterns: module-name patterns, as in `matches`.

    Raises:
        LoRAError: if a pattern matches no module.
    """
    check_module("model", model)
    names = [n for n, _ in model.named_modules() if n and matches(n, patterns)]
    for pattern in patterns:
        if not any(matches(n, [pattern]) for n in names):
            endings = sorted({n.rsplit(".", 1)[-1] for n, _ in model.named_modules() if n})
            raise LoRAError(
                f"target pattern '{pattern}' matches no module of {type(model).__name__} "
                f"(its module names end in: {', '.join(endings)})"
            )
    return names


# --8<-- [end:find_modules]


# --8<-- [start:trainable_parameters]
def trainable_parameters(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Names of the parameters `patterns` make trainable: all of a matched module's, or a matched
    parameter itself (so both `"score"` and `"score.weight"` train GPT-2's head).

    Args:
        model: the model to search.
        patterns: module or parameter name patterns, as in `matches`.

    Raises:
        LoRAError: if a pattern matches no module or parameter.
    """
    check_module("model", model)
    modules = [n for n, _ in model.named_modules() if n]
    parameters = [n for n, _ in model.named_parameters()]
    for pattern in patterns:
        if not any(matches(n, [pattern]) for n in modules + parameters):
            raise LoRAError(
                f"trainable pattern '{pattern}' matches no "
                f"module or parameter of {type(model).__name__}"
            )
    prefixes = tuple(n + "." for n in modules if matches(n, patterns))
    return [n for n in parameters if n.startswith(prefixes) or matches(n, patterns)]


# --8<-- [end:trainable_parameters]


# --8<-- [start:inject_lora]
def inject_lora(model: nn.Module, config: LoRAConfig) -> list[str]:
    """Wrap every module matched by `config.targets` in a `LoRALayer`, in place.

    Freezes every parameter except `A` and `B` of the new layers and those matched by
    `config.trainable`. Every check runs before the model is touched, so a bad config leaves
    it as it was.

    Args:
        model: the model to change.
        config: which modules to wrap, with which rank, alpha and dropout, and what else trains.

    Returns:
        The names of the wrapped modules.

    Raises:
        LoRAError: if a target already has a LoRA layer.
        UnsupportedLayerError: if a target is neither an `nn.Linear` nor a `Conv1D`.
    """
    names = find_modules(model, config.targets)
    trainable_parameters(model, config.trainable)  # fails early on a pattern that matches nothing
    for name in names:
        module = model.get_submodule(name)
        if isinstance(module, LoRALayer):
            raise LoRAError(f"'{name}' already has a LoRA layer")
        if not isinstance(module, (nn.Linear, Conv1D)):
            raise UnsupportedLayerError(
                f"target '{name}' is a {type(module).__name__}; LoRA wraps nn.Linear or Conv1D only"
            )
    model.requires_grad_(False)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(
            parent,
            child,
            LoRALayer(
                getattr(parent, child), config.r, config.alpha, config.dropout, config.use_rslora
            ),
        )
    parameters = dict(model.named_parameters())
    for name in trainable_parameters(model, config.trainable):
        parameters[name].requires_grad_(True)
    model.lora_config = config  # remembered for save_adapter
    return names


# --8<-- [end:inject_lora]


def default_targets(model: nn.Module) -> list[str]:
    """peft's default LoRA targets for the model's architecture: `c_attn` for GPT-2,
    `q_proj` and `v_proj` for Llama (SmolLM2), so that both LoRAs adapt the same modules
    unless told otherwise.

    Args:
        model: a transformers model; its `config.model_type` names the architecture.

    Raises:
        LoRAError: if peft has no default targets for the architecture.
    """
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    targets = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
    if not targets:
        raise LoRAError(
            "no default LoRA targets for the architecture "
            f"{model_type!r}: name the modules to adapt"
        )
    return list(targets)


# --8<-- [start:prepare]
def prepare_lora_scratch(
    model: nn.Module,
    r: int = LORA.r,
    alpha: float = LORA.alpha,
    targets: Sequence[str] | None = None,
    trainable: Sequence[str] = ("score",),
    dropout: float = 0.0,
    use_rslora: bool = False,
) -> nn.Module:
    """Inject LoRA into `model` and train only the adapters and the `trainable` modules.

    The same shape as `prepare_head_only`: it takes the model and returns the model to train.

    Args:
        model: the model to change.
        r: the rank of the update.
        alpha: the numerator of the update's scale.
        targets: module-name patterns of the layers to wrap; `targets=None` takes peft's
            default for the architecture (`default_targets`).
        trainable: patterns of the modules that train in full (the head).
        dropout: the dropout probability on the input of the LoRA path.
        use_rslora: scale by `alpha / sqrt(r)` instead of `alpha / r`.

    Raises:
        CourseError: if `targets` or `trainable` is not a list of strings.
    """
    targets = default_targets(model) if targets is None else targets
    targets, trainable = (
        check_string_list("targets", targets),
        check_string_list("trainable", trainable, True),
    )
    inject_lora(model, LoRAConfig(r, alpha, dropout, list(targets), list(trainable), use_rslora))
    return model


# --8<-- [end:prepare]


def lora_layers(model: nn.Module) -> dict[str, LoRALayer]:
    """Every `LoRALayer` in `model`, by module name.

    Args:
        model: the model to search.
    """
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALayer)}


def _require_lora(model: nn.Module) -> dict[str, LoRALayer]:
    layers = lora_layers(model)
    if not layers:
        raise LoRAError(f"{type(model).__name__} has no LoRA layers (call inject_lora first)")
    return layers


def merge_lora(model: nn.Module) -> nn.Module:
    """Merge every LoRA layer of `model` (they stay LoRA layers and can be unmerged).

    Args:
        model: the model to change.

    Raises:
        LoRAError: if `model` has no LoRA layers.
    """
    for layer in _require_lora(model).values():
        layer.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Undo `merge_lora`.

    Args:
        model: the model to change.

    Raises:
        LoRAError: if `model` has no LoRA layers.
    """
    for layer in _require_lora(model).values():
        layer.unmerge()
    return model


# --8<-- [start:merge_and_unload]
def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge each LoRA layer and put its base layer back: a plain model that needs no LoRA code.

    The result has the original model's module tree and `state_dict` keys, so it saves and
    loads like any transformers model and runs exactly as fast as the base model.

    Args:
        model: the model with LoRA layers, changed in place.

    Raises:
        LoRAError: if `model` has no LoRA layers.
    """
    for name, layer in _require_lora(model).items():
        if not layer.merged:
            layer.merge()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer.base)
    if hasattr(model, "lora_config"):
        del model.lora_config
    return model


# --8<-- [end:merge_and_unload]


# --8<-- [start:save]
def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter alone: every `A` and `B`, plus the `trainable` parameters (the head).

    Args:
        model: a model that `inject_lora` has prepared.

    Raises:
        LoRAError: if `model` has no LoRA config.
    """
    keep = set(trainable_parameters(model, _config_of(model).trainable))
    return {
        name: parameter.detach().cpu().contiguous()
        for name, parameter in model.named_parameters()
        if name.endswith((".lora_A", ".lora_B")) or name in keep
    }


def save_adapter(model: nn.Module, directory: str | Path) -> Path:
    """Write `adapter.safetensors` (only the adapter's tensors) and `adapter_config.json`.

    Args:
        model: a model that `inject_lora` has prepared, its layers not merged.
        directory: where to write the two files; created if missing.

    Returns:
        The directory, as a `Path`.

    Raises:
        LoRAError: if `model` has no LoRA layers, or one of them is merged.
    """
    if any(layer.merged for layer in _require_lora(model).values()):
        raise LoRAError("unmerge the LoRA layers before saving the adapter")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(adapter_state_dict(model), directory / ADAPTER_WEIGHTS)
    (directory / ADAPTER_CONFIG).write_text(json.dumps(asdict(_config_of(model)), indent=2) + "\n")
    return directory


def load_adapter(model: nn.Module, directory: str | Path) -> nn.Module:
    """Inject LoRA into a fresh base `model` as the saved config says,
    then load the saved tensors.

    Args:
        model: the base model, changed in place.
        directory: a directory `save_adapter` wrote.

    Raises:
        LoRAError: if `directory` holds no adapter, or its tensors' names or shapes do not fit.
    """
    directory = Path(directory)
    if not (directory / ADAPTER_CONFIG).is_file() or not (directory / ADAPTER_WEIGHTS).is_file():
        raise LoRAError(f"'{directory}' holds no adapter ({ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})")
    config = LoRAConfig(**json.loads((directory / ADAPTER_CONFIG).read_text()))
    inject_lora(model, config)
    saved = load_file(directory / ADAPTER_WEIGHTS)
    expected = adapter_state_dict(model)
    if saved.keys() != expected.keys():
        raise LoRAError(
            f"the adapter in '{directory}' does not fit this model: missing "
            f"{sorted(expected.keys() - saved.keys())[:5]}, "
            f"unexpected {sorted(saved.keys() - expected.keys())[:5]}"
        )
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in saved.items():
            if tensor.shape != parameters[name].shape:
                raise LoRAError(
                    f"'{name}' has shape {tuple(tensor.shape)} in the adapter, "
                    f"{tuple(parameters[name].shape)} in the model"
                )
            parameters[name].copy_(tensor)
    return model


# --8<-- [end:save]


def _config_of(model: nn.Module) -> LoRAConfig:
    config = getattr(model, "lora_config", None)
    if not isinstance(config, LoRAConfig):
        raise LoRAError(f"{type(model).__name__} has no LoRA config (call inject_lora first)")
    return config


# ---------------------------------------------------------------------------------------------
# The same adapter in peft: the reference the tests compare against.
# ---------------------------------------------------------------------------------------------


def stores_transposed(model: nn.Module) -> bool:
    """True for GPT-2-style models, whose projections are `Conv1D` (weight stored `(in, out)`).

    peft calls this layout `fan_in_fan_out`; Llama's `nn.Linear` projections store `(out, in)`.

    Args:
        model: the model to look at.
    """
    return any(isinstance(module, Conv1D) for module in model.modules())


def peft_lora_config(
    config: LoRAConfig, task_type: str | None = "SEQ_CLS", fan_in_fan_out: bool = True
) -> Any:
    """peft's `LoraConfig` for our `LoRAConfig`.

    Args:
        config: our settings.
        task_type: `task_type="SEQ_CLS"` makes peft train a *copy* of the head
            (`modules_to_save`), so then `trainable` must be the head (`["score"]`) for the two
            to train the same parameters; with None, `trainable` becomes `modules_to_save`.
        fan_in_fan_out: `fan_in_fan_out=True` is what peft needs for GPT-2's Conv1D (it would
            force it with a warning); pass `stores_transposed(model)` for a model of another
            architecture.
    """
    from peft import LoraConfig

    return LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.targets),
        use_rslora=config.use_rslora,
        bias="none",
        fan_in_fan_out=fan_in_fan_out,
        task_type=task_type,
        modules_to_save=None if task_type else (list(config.trainable) or None),
    )


@torch.no_grad()
def copy_adapter_to_peft(model: nn.Module, peft_model: nn.Module) -> None:
    """Copy every `A`, `B` and trainable parameter of our `model`
    into the same places of `peft_model`.

    peft keeps `A` and `B` as `nn.Linear(in, r)` and `nn.Linear(r, out)` under the adapter name
    `default`, so their weights have exactly our shapes. A head in `modules_to_save` is a
    wrapper whose trained copy is `modules_to_save["default"]`.

    Args:
        model: our model, prepared by `inject_lora`.
        peft_model: peft's model of the same base with the same targets.

    Raises:
        LoRAError: if `model` has no LoRA layers or no LoRA config.
    """
    inner = peft_model.get_base_model()
    for name, layer in _require_lora(model).items():
        target = inner.get_submodule(name)
        target.lora_A["default"].weight.copy_(layer.lora_A)
        target.lora_B["default"].weight.copy_(layer.lora_B)
    parameters = dict(model.named_parameters())
    for name in trainable_parameters(model, _config_of(model).trainable):
        module_name, _, attribute = name.rpartition(".")
        target = inner.get_submodule(module_name)
        if hasattr(target, "modules_to_save"):  # peft's wrapper: the trained copy is inside
            target = target.modules_to_save["default"]
        getattr(target, attribute).copy_(parameters[name])


def peft_gradients(peft_model: nn.Module) -> dict[str, torch.Tensor]:
    """peft's `A`/`B` gradients under our parameter names (`...c_attn.lora_A`).

    Args:
        peft_model: a peft model after a backward pass.
    """
    grads = {}
    for name, parameter in peft_model.get_base_model().named_parameters():
        if parameter.grad is not None and (
            ".lora_A.default." in name or ".lora_B.default." in name
        ):
            ours = name.replace(".default.weight", "")
            grads[ours] = parameter.grad
    return grads


def random_gpt2(
    seed: int = 0,
    n_embd: int = 32,
    n_layer: int = 2,
    n_head: int = 4,
    vocab_size: int = 101,
    num_labels: int = 3,
) -> nn.Module:
    """A small randomly initialised `GPT2ForSequenceClassification` (no tokenizer needed).

    Args:
        seed: the `torch.manual_seed` the weights are drawn under.
        n_embd: the width.
        n_layer: the number of blocks.
        n_head: the number of attention heads.
        vocab_size: the size of the vocabulary.
        num_labels: the number of classes of the head.

    Returns:
        The model, in eval mode.
    """
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=64,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        num_labels=num_labels,
        pad_token_id=0,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(seed)
    return GPT2ForSequenceClassification(config).eval()


def random_llama(
    seed: int = 0,
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    vocab_size: int = 101,
    num_labels: int = 3,
) -> nn.Module:
    """A small randomly initialised `LlamaForSequenceClassification`: SmolLM2's architecture.

    Its projections are `nn.Linear` (q/k/v/o in attention, gate/up/down in the MLP), with
    grouped-query attention (2 key/value heads for 4 query heads) as in SmolLM2.

    Args:
        seed: the `torch.manual_seed` the weights are drawn under.
        hidden_size: the width (the MLP is twice as wide).
        num_hidden_layers: the number of blocks.
        num_attention_heads: the number of query heads.
        num_key_value_heads: the number of key/value heads.
        vocab_size: the size of the vocabulary.
        num_labels: the number of classes of the head.

    Returns:
        The model, in eval mode.
    """
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=64,
        num_labels=num_labels,
        pad_token_id=0,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(seed)
    return LlamaForSequenceClassification(config).eval()


def randomize_b(model: nn.Module, seed: int = 0, std: float = 0.02) -> None:
    """Give every `B` random values:
    with `B = 0` LoRA changes nothing and a comparison proves nothing.

    Args:
        model: a model with LoRA layers, changed in place.
        seed: the seed of the random values.
        std: their standard deviation (they are normal with mean 0).

    Raises:
        LoRAError: if `model` has no LoRA layers.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in _require_lora(model).values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=generator) * std)


# --8<-- [start:compare]
def compare_with_peft(
    base: nn.Module,
    config: LoRAConfig,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    seed: int = 0,
) -> dict[str, float]:
    """Build our LoRA and peft's on copies of `base`, share `A`, `B` and the head, and compare.

    Both models run in eval mode, so dropout (anywhere) cannot make them differ.

    Args:
        base: the model to adapt; only copies of it are changed.
        config: our LoRA settings (`peft_lora_config` translates them for peft).
        input_ids: a batch of token ids, `(batch, length)`.
        labels: each row's class, for the loss.
        seed: the seed of `randomize_b`, which gives `B` random values.

    Returns:
        The largest absolute differences of the logits (unmerged and merged) and of the
            gradients of `A` and `B` after one backward pass, and both trainable-parameter counts.
    """
    from peft import get_peft_model  # here, not at the top: peft takes seconds to import

    ours, theirs = copy.deepcopy(base).eval(), copy.deepcopy(base).eval()
    inject_lora(ours, config)
    randomize_b(ours, seed)  # B = 0 would make every comparison trivially pass
    task_type = "SEQ_CLS" if config.trainable == ["score"] else None
    theirs = get_peft_model(
        theirs, peft_lora_config(config, task_type, stores_transposed(base))
    ).eval()
    copy_adapter_to_peft(ours, theirs)
    counts = {
        "trainable (ours)": count_parameters(ours)[0],
        "trainable (peft)": count_parameters(theirs)[0],
    }

    out_ours = ours(input_ids=input_ids, labels=labels)
    out_theirs = theirs(input_ids=input_ids, labels=labels)
    out_ours.loss.backward()
    out_theirs.loss.backward()
    layers, grads = lora_layers(ours), peft_gradients(theirs)
    with torch.no_grad():
        merged_ours = merge_and_unload(ours)(input_ids=input_ids).logits
        merged_theirs = theirs.merge_and_unload()(input_ids=input_ids).logits
    return {
        "logits": _max_diff(out_ours.logits, out_theirs.logits),
        "merged logits": _max_diff(merged_ours, merged_theirs),
        "grad A": max(_max_diff(layers[n].lora_A.grad, grads[n + ".lora_A"]) for n in layers),
        "grad B": max(_max_diff(layers[n].lora_B.grad, grads[n + ".lora_B"]) for n in layers),
        **counts,
    }


# --8<-- [end:compare]


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# ---------------------------------------------------------------------------------------------
# Results: the equivalence table and the training table of the docs page.
# ---------------------------------------------------------------------------------------------


def equivalence_rows(seed: int = 0) -> list[dict[str, str]]:
    """Our LoRA against peft's on tiny-gpt2 and on a random GPT-2, several configurations.

    "LoRA effect" is how far the adapted logits move from the base model's: it shows that the
    `A` and `B` being compared do change the output, so a difference of 0 means something.

    Args:
        seed: the seed of the models, the random inputs and the random `B`.
    """
    tiny, _ = load_model(EMBEDDED_MODEL, "classification", num_labels=2, seed=seed)
    cases = [
        (
            EMBEDDED_MODEL,
            tiny,
            LoRAConfig(LORA.r, LORA.alpha, targets=["c_attn"], trainable=["score"]),
        ),
        (EMBEDDED_MODEL, tiny, LoRAConfig(4, 8, targets=list(GPT2_TARGETS), trainable=["score"])),
        (
            "random GPT2Config",
            random_gpt2(seed),
            LoRAConfig(16, 8, targets=["c_attn", "mlp.c_proj"], use_rslora=True),
        ),
        (
            "random LlamaConfig",
            random_llama(seed),
            LoRAConfig(8, 16, targets=list(LLAMA_TARGETS), trainable=["score"]),
        ),
    ]
    rows = []
    generator = torch.Generator().manual_seed(seed)
    for name, base, config in cases:
        vocab, labels = base.config.vocab_size, base.config.num_labels
        input_ids = torch.randint(1, vocab, (4, 16), generator=generator)
        target = torch.randint(0, labels, (4,), generator=generator)
        result = compare_with_peft(base, config, input_ids, target, seed)
        with torch.no_grad():
            adapted = copy.deepcopy(base)
            inject_lora(adapted, config)
            randomize_b(adapted, seed)
            effect = _max_diff(
                adapted(input_ids=input_ids).logits, base(input_ids=input_ids).logits
            )
        rows.append(
            {
                "model": name,
                "config": (
                    f"r={config.r}, "
                    f"alpha={config.alpha:g}{', rsLoRA' if config.use_rslora else ''}, "
                    f"{'+'.join(config.targets)}{' + score' if config.trainable else ''}"
                ),
                "trainable (ours / peft)": (
                    f"{result['trainable (ours)']:,} / {result['trainable (peft)']:,}"
                ),
                "LoRA effect": f"{effect:.1e}",
                "logits": f"{result['logits']:.1e}",
                "merged logits": f"{result['merged logits']:.1e}",
                "grad A": f"{result['grad A']:.1e}",
                "grad B": f"{result['grad B']:.1e}",
            }
        )
    return rows
