"""(IA)³ from scratch: a learned vector that rescales a frozen layer, proven equal to peft's.

(IA)³ ("Infused Adapter by Inhibiting and Amplifying Inner Activations") learns no matrix at
all: each adapted layer gets one vector `l` that multiplies its activations element-wise,

    h = l * (W0 x + b)          one scale per output (keys, values, GPT-2's fused c_attn)
    h = W0 (l * x) + b          one scale per input (the MLP's down projection, "feed-forward")

`l` starts at 1, so the wrapped model starts out as the base model. Scaling the output scales
the bias too; scaling the input does not touch it. Both fold into the weight: the output scale
multiplies the weight's rows (and the bias), the input scale its columns. GPT-2's `Conv1D`
stores its weight `(in, out)`, so there the two sides swap; that is the one place the layout
matters, as in the LoRA chapter (`peft_course.lora`).

The tests copy `l` into peft's `IA3Config` model of the same base and check that logits, merged
weights and gradients agree (`compare_with_peft`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from peft import IA3Config, get_peft_model
from torch import nn
from transformers.pytorch_utils import Conv1D

from peft_course.errors import check_string_list
from peft_course.lora import (
    LoRAError,
    UnsupportedLayerError,
    find_modules,
    layer_features,
    matches,
    random_llama,
    stores_transposed,
    trainable_parameters,
)
from peft_course.models import count_parameters, load_model
from peft_course.settings import EMBEDDED_MODEL


class IA3Error(LoRAError):
    """A bad (IA)³ target: a feed-forward pattern that is not a target, a layer wrapped twice."""


# --8<-- [start:layer]
class IA3Layer(nn.Module):
    """A frozen `Linear`/`Conv1D` rescaled by a learned vector `l`: `l * base(x)`, or
    `base(l * x)` for a feed-forward layer.

    Args:
        base: the `nn.Linear` or `Conv1D` to adapt; it is frozen.
        feedforward: scale the layer's input (one scale per input feature) instead of its
            output (one per output feature, the bias included).

    Raises:
        UnsupportedLayerError: if `base` is neither an `nn.Linear` nor a `Conv1D`.
    """

    def __init__(self, base: nn.Module, feedforward: bool = False) -> None:
        super().__init__()
        in_features, out_features = layer_features(base)
        self.base = base.requires_grad_(False)
        self.feedforward = feedforward
        width = in_features if feedforward else out_features
        weight = base.weight
        self.ia3_l = nn.Parameter(torch.ones(width, dtype=weight.dtype, device=weight.device))
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The rescaled layer's output (the scale already inside `base` once merged).

        Args:
            x: the layer's input, `(..., in_features)`.
        """
        if self.merged:
            return self.base(x)
        if self.feedforward:
            return self.base(x * self.ia3_l)
        return self.base(x) * self.ia3_l

    # --8<-- [end:layer]

    # --8<-- [start:merge]
    def weight_scale(self) -> torch.Tensor:
        """`l` shaped to multiply `base.weight`: along the outputs, or along the inputs for a
        feed-forward layer; `Linear` stores `(out, in)`, `Conv1D` `(in, out)`."""
        along_outputs = not self.feedforward
        along_rows = along_outputs != isinstance(self.base, Conv1D)
        return self.ia3_l[:, None] if along_rows else self.ia3_l[None, :]

    @torch.no_grad()
    def merge(self) -> None:
        """Fold `l` into the weight (and, when it scales the output, into the bias).

        Raises:
            IA3Error: if the layer is already merged.
        """
        if self.merged:
            raise IA3Error("this (IA)³ layer is already merged")
        self.base.weight *= self.weight_scale()
        if not self.feedforward and self.base.bias is not None:
            self.base.bias *= self.ia3_l
        self.merged = True

    # --8<-- [end:merge]

    def extra_repr(self) -> str:
        """The settings `print(model)` shows for the layer."""
        return f"feedforward={self.feedforward}, merged={self.merged}"


def ia3_layers(model: nn.Module) -> dict[str, IA3Layer]:
    """Every `IA3Layer` in `model`, by module name.

    Args:
        model: the model to search.
    """
    return {n: m for n, m in model.named_modules() if isinstance(m, IA3Layer)}


# --8<-- [start:inject]
def inject_ia3(
    model: nn.Module,
    targets: Sequence[str],
    feedforward: Sequence[str] = (),
    trainable: Sequence[str] = (),
) -> list[str]:
    """Wrap every module `targets` match in an `IA3Layer`, in place; only the scales and the
    `trainable` parameters (the head) train. Every check runs before the model changes.

    Args:
        model: the model to change.
        targets: module-name patterns (peft's rule, `peft_course.lora.matches`).
        feedforward: patterns of the targets scaled at their input.
        trainable: patterns of modules or parameters that train in full.

    Returns:
        The names of the wrapped modules.

    Raises:
        IA3Error: if a feed-forward pattern matches no target, or a target is already wrapped.
        UnsupportedLayerError: if a target is neither an `nn.Linear` nor a `Conv1D`.
    """
    targets = check_string_list("targets", targets)
    feedforward = check_string_list("feedforward", feedforward, allow_empty=True)
    names = find_modules(model, targets)
    for pattern in feedforward:
        if not any(matches(name, [pattern]) for name in names):
            raise IA3Error(f"feed-forward pattern '{pattern}' matches none of the targets")
    trainable_parameters(model, trainable)  # fails early on a pattern that matches nothing
    for name in names:
        module = model.get_submodule(name)
        if isinstance(module, IA3Layer):
            raise IA3Error(f"'{name}' already has an (IA)³ layer")
        if not isinstance(module, (nn.Linear, Conv1D)):
            raise UnsupportedLayerError(
                f"target '{name}' is a {type(module).__name__}; (IA)³ wraps nn.Linear or Conv1D"
            )
    model.requires_grad_(False)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        layer = IA3Layer(getattr(parent, child), feedforward=matches(name, feedforward))
        setattr(parent, child, layer)
    parameters = dict(model.named_parameters())
    for name in trainable_parameters(model, trainable):
        parameters[name].requires_grad_(True)
    return names


# --8<-- [end:inject]


def merge_and_unload_ia3(model: nn.Module) -> nn.Module:
    """Merge each (IA)³ layer and put its base layer back: a plain model, the same module tree.

    Args:
        model: the model with (IA)³ layers, changed in place.

    Raises:
        IA3Error: if `model` has no (IA)³ layers.
    """
    layers = ia3_layers(model)
    if not layers:
        raise IA3Error(f"{type(model).__name__} has no (IA)³ layers (call inject_ia3 first)")
    for name, layer in layers.items():
        if not layer.merged:
            layer.merge()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer.base)
    return model


def randomize_scales(model: nn.Module, seed: int = 0, std: float = 0.2) -> None:
    """Move every `l` away from 1 (`1 + std * N(0, 1)`): at 1 a comparison proves nothing.

    Args:
        model: a model with (IA)³ layers, changed in place.
        seed: the seed of the random values.
        std: their spread around 1.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in ia3_layers(model).values():
            noise = torch.randn(layer.ia3_l.shape, generator=generator)
            layer.ia3_l.copy_(1 + std * noise)


def peft_ia3_config(
    model: nn.Module, targets: Sequence[str], feedforward: Sequence[str], task_type: str | None
) -> Any:
    """peft's `IA3Config` for the same targets (`fan_in_fan_out` for GPT-2's `Conv1D`).

    Args:
        model: the model it will wrap.
        targets: module-name patterns.
        feedforward: the targets scaled at their input.
        task_type: `"SEQ_CLS"` trains a copy of the head; None leaves it out.
    """
    return IA3Config(
        target_modules=list(targets),
        feedforward_modules=list(feedforward),
        fan_in_fan_out=stores_transposed(model),
        task_type=task_type,
    )


# --8<-- [start:compare]
def compare_with_peft(
    base: nn.Module,
    targets: Sequence[str],
    feedforward: Sequence[str],
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    seed: int = 0,
) -> dict[str, float]:
    """Our (IA)³ and peft's on copies of `base`, with the same scales; the largest differences.

    Args:
        base: a transformers classifier whose head is `score`; only copies are changed.
        targets: module-name patterns to scale.
        feedforward: the targets scaled at their input.
        input_ids: a batch of token ids, `(batch, length)`.
        labels: each row's class, for the loss.
        seed: the seed of `randomize_scales`.

    Returns:
        The largest absolute differences of the logits, the scales' gradients, the merged
        weights and biases, and the merged models' logits; both trainable-parameter counts.
    """
    ours, theirs = copy.deepcopy(base).eval(), copy.deepcopy(base).eval()
    names = inject_ia3(ours, targets, feedforward, trainable=["score"])
    randomize_scales(ours, seed)
    theirs = get_peft_model(theirs, peft_ia3_config(base, targets, feedforward, "SEQ_CLS")).eval()
    inner = theirs.get_base_model()
    layers = ia3_layers(ours)
    with torch.no_grad():
        for name, layer in layers.items():
            scale = inner.get_submodule(name).ia3_l["default"]
            scale.copy_(layer.ia3_l.view_as(scale))
    counts = {"trainable (ours)": count_parameters(ours)[0]}
    counts["trainable (peft)"] = count_parameters(theirs)[0]
    out_ours = ours(input_ids=input_ids, labels=labels)
    out_theirs = theirs(input_ids=input_ids, labels=labels)
    out_ours.loss.backward()
    out_theirs.loss.backward()
    grad = max(
        _max_diff(layers[n].ia3_l.grad, inner.get_submodule(n).ia3_l["default"].grad.flatten())
        for n in names
    )
    with torch.no_grad():
        merged_ours, merged_theirs = merge_and_unload_ia3(ours), theirs.merge_and_unload()
        weights = max(
            _max_diff(merged_ours.get_submodule(n).weight, merged_theirs.get_submodule(n).weight)
            for n in names
        )
        with_bias = [n for n in names if merged_ours.get_submodule(n).bias is not None]
        biases = max(
            (
                _max_diff(merged_ours.get_submodule(n).bias, merged_theirs.get_submodule(n).bias)
                for n in with_bias
            ),
            default=0.0,
        )
        merged_logits = _max_diff(
            merged_ours(input_ids=input_ids).logits, merged_theirs(input_ids=input_ids).logits
        )
    return {
        "logits": _max_diff(out_ours.logits, out_theirs.logits),
        "grad l": grad,
        "merged weights": weights,
        "merged biases": biases,
        "merged logits": merged_logits,
        **counts,
    }


# --8<-- [end:compare]


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def equivalence_rows(seed: int = 0) -> list[dict[str, str]]:
    """Our (IA)³ against peft's on tiny-gpt2 (Conv1D) and a random Llama (nn.Linear): a table.

    "effect" is how far the scales move the logits from the base model's, so that a difference
    of 0 means something.

    Args:
        seed: the seed of the inputs and the random scales.
    """
    cases = [
        (EMBEDDED_MODEL, load_model(EMBEDDED_MODEL, "classification", num_labels=2, seed=seed)[0]),
        ("random LlamaConfig", random_llama(seed)),
    ]
    defaults = {EMBEDDED_MODEL: (["c_attn", "mlp.c_proj"], ["mlp.c_proj"])}
    defaults["random LlamaConfig"] = (["k_proj", "v_proj", "down_proj"], ["down_proj"])
    rows = []
    for name, base in cases:
        base.eval()
        targets, feedforward = defaults[name]
        generator = torch.Generator().manual_seed(seed)
        input_ids = torch.randint(1, base.config.vocab_size, (4, 12), generator=generator)
        labels = torch.randint(0, base.config.num_labels, (4,), generator=generator)
        result = compare_with_peft(base, targets, feedforward, input_ids, labels, seed)
        scaled = copy.deepcopy(base)
        inject_ia3(scaled, targets, feedforward)
        randomize_scales(scaled, seed)
        with torch.no_grad():
            effect = _max_diff(scaled(input_ids=input_ids).logits, base(input_ids=input_ids).logits)
        rows.append(
            {
                "model": name,
                "targets (feed-forward)": f"{'+'.join(targets)} ({'+'.join(feedforward)})",
                "trainable (ours / peft)": (
                    f"{result['trainable (ours)']:,} / {result['trainable (peft)']:,}"
                ),
                "effect": f"{effect:.1e}",
                **{
                    key: f"{result[key]:.1e}"
                    for key in ("logits", "grad l", "merged weights", "merged biases")
                },
            }
        )
    return rows
