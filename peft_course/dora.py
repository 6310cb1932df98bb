"""DoRA from scratch: LoRA's update for the direction, a learned magnitude per output.

DoRA ("Weight-Decomposed Low-Rank Adaptation") writes each adapted weight as a magnitude times a
direction. Per output `o` (a row of `W`, stored `(out, in)`), with LoRA's update inside:

    W' = m * (W0 + s B A) / ||W0 + s B A||,      the norm of each row: one number per output

`B` starts at zero and `m` at `||W0||`, so the wrapped layer starts out as the base layer. The
norm is treated as a constant for the gradient (the paper's section 4.3, and peft): it is
recomputed from the current `A` and `B` at every forward pass but detached, so the gradient of
`A` and `B` flows only through `W0 + s B A` in the numerator. The layer's output is

    h = b + (m / ||W0 + s B A||) * (W0 x + s B A x)

and merging writes `W'` into the weight (the bias is not scaled). The layer extends the LoRA
chapter's `LoRALayer` (`peft_course.lora`); GPT-2's `Conv1D` stores `(in, out)`, so the norm is
over the other dimension of the stored tensor. The tests copy `A`, `B` and `m` into peft's
`LoraConfig(use_dora=True)` model and check that logits, merged weights and gradients agree.
"""

from __future__ import annotations

import copy

import torch
from peft import get_peft_model
from torch import nn
from torch.nn import functional as F
from transformers.pytorch_utils import Conv1D

from peft_course.errors import check_string_list
from peft_course.lora import (
    LoRAConfig,
    LoRAError,
    LoRALayer,
    UnsupportedLayerError,
    copy_adapter_to_peft,
    find_modules,
    lora_layers,
    merge_and_unload,
    peft_gradients,
    peft_lora_config,
    random_llama,
    randomize_b,
    stores_transposed,
    trainable_parameters,
)
from peft_course.models import count_parameters, load_model
from peft_course.settings import EMBEDDED_MODEL, LORA


# --8<-- [start:layer]
class DoRALayer(LoRALayer):
    """A frozen `Linear`/`Conv1D` whose weight is `m * V / ||V||`, `V = W0 + s B A`, per output.

    Args:
        base: the `nn.Linear` or `Conv1D` to adapt; it is frozen.
        r: the rank of the direction's update.
        alpha: the numerator of the scale `s`.
        dropout: the dropout probability on the input of the update.
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
        super().__init__(base, r, alpha, dropout, use_rslora)
        with torch.no_grad():
            self.magnitude = nn.Parameter(self.weight_norm())  # ||W0||: B = 0 at the start

    def frozen_weight(self) -> torch.Tensor:
        """`W0` as `(out, in)`, whichever way the base layer stores it."""
        weight = self.base.weight
        return weight.T if isinstance(self.base, Conv1D) else weight

    def weight_norm(self) -> torch.Tensor:
        """`||W0 + s B A||` of each output's row, `(out,)`: the norm of the direction."""
        direction = self.frozen_weight() + self.scaling * (self.lora_B @ self.lora_A)
        return torch.linalg.norm(direction, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`b + (m / ||V||) (W0 x + s B A x)` (the merged weight's output once merged).

        Args:
            x: the layer's input, `(..., in_features)`.
        """
        result = self.base(x)
        if self.merged:
            return result
        scale = self.magnitude / self.weight_norm().detach()  # the norm: a constant
        x = self.dropout(x)
        frozen = F.linear(x, self.frozen_weight())  # W0 x, without the bias
        update = x @ self.lora_A.T @ self.lora_B.T * self.scaling
        return result + (scale - 1) * frozen + scale * update

    # --8<-- [end:layer]

    # --8<-- [start:merge]
    def merged_weight(self) -> torch.Tensor:
        """`m * V / ||V||`, laid out like `base.weight`."""
        direction = self.frozen_weight() + self.scaling * (self.lora_B @ self.lora_A)
        weight = (self.magnitude / self.weight_norm())[:, None] * direction
        return weight.T if isinstance(self.base, Conv1D) else weight

    @torch.no_grad()
    def merge(self) -> None:
        """Write `m * V / ||V||` into the base weight (the original is kept to unmerge).

        Raises:
            LoRAError: if the layer is already merged.
        """
        if self.merged:
            raise LoRAError("this DoRA layer is already merged")
        self.original_weight = self.base.weight.detach().clone()
        self.base.weight.copy_(self.merged_weight())
        self.merged = True

    # --8<-- [end:merge]

    @torch.no_grad()
    def unmerge(self) -> None:
        """Put the original weight back.

        Raises:
            LoRAError: if the layer is not merged.
        """
        if not self.merged:
            raise LoRAError("this DoRA layer is not merged")
        self.base.weight.copy_(self.original_weight)
        del self.original_weight
        self.merged = False


def inject_dora(model: nn.Module, config: LoRAConfig) -> list[str]:
    """Wrap every module `config.targets` match in a `DoRALayer`, in place, as `inject_lora`
    does with LoRA: only `A`, `B`, the magnitudes and `config.trainable` train.

    Args:
        model: the model to change.
        config: the targets, rank, alpha, dropout and what else trains (LoRA's settings).

    Returns:
        The names of the wrapped modules.

    Raises:
        LoRAError: if a target already has a LoRA or DoRA layer.
        UnsupportedLayerError: if a target is neither an `nn.Linear` nor a `Conv1D`.
    """
    names = find_modules(model, check_string_list("targets", config.targets))
    trainable_parameters(model, config.trainable)  # fails early on a pattern that matches nothing
    for name in names:
        module = model.get_submodule(name)
        if isinstance(module, LoRALayer):
            raise LoRAError(f"'{name}' already has a LoRA layer")
        if not isinstance(module, (nn.Linear, Conv1D)):
            raise UnsupportedLayerError(
                f"target '{name}' is a {type(module).__name__}; DoRA wraps nn.Linear or Conv1D"
            )
    model.requires_grad_(False)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        layer = DoRALayer(
            getattr(parent, child), config.r, config.alpha, config.dropout, config.use_rslora
        )
        setattr(parent, child, layer)
    parameters = dict(model.named_parameters())
    for name in trainable_parameters(model, config.trainable):
        parameters[name].requires_grad_(True)
    model.lora_config = config  # what copy_adapter_to_peft and save_adapter read
    return names


def randomize_magnitudes(model: nn.Module, seed: int = 0, std: float = 0.2) -> None:
    """Scale every `m` by `1 + std * N(0, 1)`: at `||V||` the scale is 1 and proves less.

    Args:
        model: a model with DoRA layers, changed in place.
        seed: the seed of the random values.
        std: their spread around 1.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            noise = torch.randn(layer.magnitude.shape, generator=generator)
            layer.magnitude.mul_(1 + std * noise)


# --8<-- [start:compare]
def compare_with_peft(
    base: nn.Module,
    config: LoRAConfig,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    seed: int = 0,
) -> dict[str, float]:
    """Our DoRA and peft's (`use_dora=True`) on copies of `base`, sharing `A`, `B` and `m`.

    Args:
        base: a transformers classifier whose head is `score`; only copies are changed.
        config: our settings, with `trainable=["score"]`.
        input_ids: a batch of token ids, `(batch, length)`.
        labels: each row's class, for the loss.
        seed: the seed of the random `B` and magnitudes.

    Returns:
        The largest absolute differences of the logits, the gradients of `A`, `B` and `m`, the
        merged weights and the merged models' logits; both trainable-parameter counts.
    """
    ours, theirs = copy.deepcopy(base).eval(), copy.deepcopy(base).eval()
    names = inject_dora(ours, config)
    randomize_b(ours, seed)
    randomize_magnitudes(ours, seed)
    peft_config = peft_lora_config(config, "SEQ_CLS", stores_transposed(base))
    peft_config.use_dora = True
    theirs = get_peft_model(theirs, peft_config).eval()
    copy_adapter_to_peft(ours, theirs)
    inner, layers = theirs.get_base_model(), lora_layers(ours)
    with torch.no_grad():
        for name in names:
            magnitude = inner.get_submodule(name).lora_magnitude_vector["default"].weight
            magnitude.copy_(layers[name].magnitude)
    counts = {"trainable (ours)": count_parameters(ours)[0]}
    counts["trainable (peft)"] = count_parameters(theirs)[0]
    out_ours = ours(input_ids=input_ids, labels=labels)
    out_theirs = theirs(input_ids=input_ids, labels=labels)
    out_ours.loss.backward()
    out_theirs.loss.backward()
    grads = peft_gradients(theirs)
    grad_m = max(
        _max_diff(
            layers[n].magnitude.grad,
            inner.get_submodule(n).lora_magnitude_vector["default"].weight.grad,
        )
        for n in names
    )
    with torch.no_grad():
        merged_ours, merged_theirs = merge_and_unload(ours), theirs.merge_and_unload()
        weights = max(
            _max_diff(merged_ours.get_submodule(n).weight, merged_theirs.get_submodule(n).weight)
            for n in names
        )
        merged_logits = _max_diff(
            merged_ours(input_ids=input_ids).logits, merged_theirs(input_ids=input_ids).logits
        )
    return {
        "logits": _max_diff(out_ours.logits, out_theirs.logits),
        "grad A": max(_max_diff(layers[n].lora_A.grad, grads[n + ".lora_A"]) for n in names),
        "grad B": max(_max_diff(layers[n].lora_B.grad, grads[n + ".lora_B"]) for n in names),
        "grad m": grad_m,
        "merged weights": weights,
        "merged logits": merged_logits,
        **counts,
    }


# --8<-- [end:compare]


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def equivalence_rows(seed: int = 0) -> list[dict[str, str]]:
    """Our DoRA against peft's on tiny-gpt2 (Conv1D) and a random Llama (nn.Linear): a table.

    Args:
        seed: the seed of the inputs, the random `B` and the magnitudes.
    """
    cases = [
        (
            EMBEDDED_MODEL,
            load_model(EMBEDDED_MODEL, "classification", num_labels=2, seed=seed)[0],
            ["c_attn", "mlp.c_proj"],
        ),
        ("random LlamaConfig", random_llama(seed), ["q_proj", "v_proj", "down_proj"]),
    ]
    rows = []
    for name, base, targets in cases:
        base.eval()
        config = LoRAConfig(4, 8, targets=targets, trainable=["score"])
        generator = torch.Generator().manual_seed(seed)
        input_ids = torch.randint(1, base.config.vocab_size, (4, 12), generator=generator)
        labels = torch.randint(0, base.config.num_labels, (4,), generator=generator)
        result = compare_with_peft(base, config, input_ids, labels, seed)
        rows.append(
            {
                "model": name,
                "config": f"r=4, alpha=8, {'+'.join(targets)} + score",
                "trainable (ours / peft)": (
                    f"{result['trainable (ours)']:,} / {result['trainable (peft)']:,}"
                ),
                **{
                    key: f"{result[key]:.1e}"
                    for key in ("logits", "grad A", "grad B", "grad m", "merged weights")
                },
            }
        )
    return rows
