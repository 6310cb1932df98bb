"""Counting parameters: how many a method trains, and of how many in all.

The counting chapter builds on `peft_course.models.count_parameters`: every table in the course
that says "trainable params" gets its number from it, read off the real module tree. The rest of the
module writes the same numbers as closed-form `sympy` formulas and checks one against the
other:

* BitFit (train the biases only) and bottleneck adapters on a plain feed-forward network,
  where the answer depends on conventions that a sentence like "about 1.31 %" hides;
* LoRA on GPT-2 small, counted by the formula `r * sum(d_in + d_out)` and by `peft`;
* every fine-tuning method of the registry (the PEFT family, `family_formula`) on GPT-2 small
  and on SmolLM2-135M, a Llama: the tests build each method's model on the meta device and
  require its count to be the formula's.

The docs page also tabulates the bits per parameter that a 4-bit NF4 (QLoRA) weight really
occupies; the formulas and the storage read off bitsandbytes are `peft_course.qlora`'s.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import sympy as sp
import torch
from torch import nn

from peft_course.configs import PromptEncoderOptions
from peft_course.errors import CourseError, check_module, check_string_list
from peft_course.lora import layer_features, matches
from peft_course.models import count_parameters
from peft_course.qlora import nf4_bits_per_parameter, quantize_nf4
from peft_course.registry import METHODS
from peft_course.settings import COUNTED_METHODS, COUNTED_MODELS, LORA
from peft_course.tables import markdown_table


class CountingError(CourseError):
    """A width list, rank, convention, model name or target that cannot be counted."""


# ---------------------------------------------------------------------------------------
# 1. A plain feed-forward network: its size, BitFit, and bottleneck adapters
# ---------------------------------------------------------------------------------------

# --8<-- [start:mlp_formulas]
MLP_WIDTHS = (1024, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1)
"""Input 1024, nine hidden layers 512 ... 2 (1,022 hidden units), one output: 10 layers."""

d = sp.IndexedBase("d")  # widths: d[0] is the input, d[L] the output
i, L = sp.symbols("i L", integer=True, positive=True)  # layer index, number of layers
r = sp.Symbol("r", integer=True, positive=True)  # adapter bottleneck / LoRA rank

MLP_PARAMETERS = sp.Sum(d[i - 1] * d[i] + d[i], (i, 1, L))  # weights + biases of every layer
MLP_BIASES = sp.Sum(d[i], (i, 1, L))  # what BitFit trains: one bias per unit

Placement = Literal["hidden", "hidden+output"]
AdapterBias = Literal["both", "down", "up", "none"]
Denominator = Literal["base", "base+adapters"]
PLACEMENTS: tuple[str, ...] = ("hidden", "hidden+output")
ADAPTER_BIASES: tuple[str, ...] = ("both", "down", "up", "none")
DENOMINATORS: tuple[str, ...] = ("base", "base+adapters")


def adapter_term(width: sp.Expr, bias: AdapterBias = "both") -> sp.Expr:
    """Parameters of one bottleneck adapter on a layer of `width` outputs.

    Down-projection `width x r`, up-projection `r x width`, and the biases the convention
    keeps: `r` on the way down, `width` on the way up.

    Args:
        width: the layer's output width: a number or a symbol such as `d[i]`.
        bias: which projections have a bias: `"both"`, `"down"`, `"up"` or `"none"`.

    Returns:
        The count as a formula in the rank `r`.

    Raises:
        CountingError: if `bias` is not one of `ADAPTER_BIASES`.
    """
    _check_choice("adapter bias", bias, ADAPTER_BIASES)
    biases = {"both": r + width, "down": r, "up": width, "none": 0}[bias]
    return 2 * r * width + biases


def adapter_formula(placement: Placement = "hidden", bias: AdapterBias = "both") -> sp.Expr:
    """Adapter parameters of the whole network: one adapter after each chosen layer.

    Args:
        placement: `hidden` puts one after each of the `L - 1` hidden layers, `hidden+output`
            after the output layer too.
        bias: which adapter projections have a bias, as in `adapter_term`.

    Returns:
        A formula in the widths `d[i]`, the number of layers `L` and the rank `r`.

    Raises:
        CountingError: if `placement` or `bias` is unknown.
    """
    _check_choice("placement", placement, PLACEMENTS)
    last = L - 1 if placement == "hidden" else L
    return sp.Sum(adapter_term(d[i], bias), (i, 1, last))


# --8<-- [end:mlp_formulas]


def _check_choice(what: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise CountingError(f"unknown {what} '{value}': choose one of {', '.join(allowed)}")


def _check_rank(rank: int) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise CountingError(f"the rank must be a positive integer, got {rank!r}")


def check_widths(widths: Sequence[int]) -> list[int]:
    """The widths as a list, or a `CountingError` saying what is wrong with them.

    Args:
        widths: the layer widths, input first, output last.

    Raises:
        CountingError: if there are fewer than two widths, or one is not a positive integer.
    """
    widths = list(widths)
    if len(widths) < 2:
        raise CountingError(f"a network needs an input and an output width, got {widths}")
    if any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise CountingError(f"every width must be a positive integer, got {widths}")
    return widths


def _to_int(value: sp.Expr, rank: int | None) -> int:
    """Substitute the rank (if given) and return the count; a symbol left over is an error."""
    if rank is not None:
        _check_rank(rank)
        value = value.subs(r, rank)
    if value.free_symbols:
        raise CountingError(f"the formula still depends on {sorted(map(str, value.free_symbols))}")
    return int(value)


def evaluate_mlp(expr: sp.Expr, widths: Sequence[int], rank: int | None = None) -> int:
    """The value of an MLP formula for concrete widths (and rank).

    Args:
        expr: a formula in `d[i]` and `L` (and `r`), such as `MLP_PARAMETERS`.
        widths: the layer widths, input first; `L` becomes `len(widths) - 1`.
        rank: the value of `r`; None for a formula without it.

    Raises:
        CountingError: if `rank` is not a positive integer, or a symbol is left over.
    """
    widths = check_widths(widths)
    value = expr.subs(L, len(widths) - 1).doit()
    value = value.subs({d[k]: w for k, w in enumerate(widths)})
    return _to_int(value, rank)


def build_mlp(widths: Sequence[int], seed: int = 0) -> nn.Sequential:
    """Linear layers `fc1 ... fcL` of the given widths with a ReLU between two of them.

    Args:
        widths: the layer widths, input first: `fcK` maps `widths[K - 1]` to `widths[K]`.
        seed: the `torch.manual_seed` the initial weights are drawn under.
    """
    widths = check_widths(widths)
    torch.manual_seed(seed)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for k, (d_in, d_out) in enumerate(zip(widths, widths[1:]), start=1):
        layers[f"fc{k}"] = nn.Linear(d_in, d_out)
        if k < len(widths) - 1:
            layers[f"act{k}"] = nn.ReLU()
    return nn.Sequential(layers)


def bitfit(model: nn.Module, train_head: bool = False) -> nn.Module:
    """Freeze everything except the biases (and, with `train_head`, a model's task head).

    A transformers classifier keeps its backbone under `model.base_model_prefix`; the head
    outside it is new, so it has to train whatever the method.

    Args:
        model: the model to freeze, in place.
        train_head: also train every parameter outside `model.base_model_prefix`.
    """
    check_module("model", model)
    prefix = getattr(model, "base_model_prefix", "") + "."
    for name, parameter in model.named_parameters():
        is_head = train_head and not name.startswith(prefix)
        parameter.requires_grad_(name.endswith("bias") or is_head)
    return model


# --8<-- [start:adapter_module]
class Adapter(nn.Module):
    """Bottleneck adapter `x + up(relu(down(x)))` on a layer with `width` outputs.

    The up-projection starts at zero, so the adapted network starts as the base network.

    Args:
        width: the output width of the layer it follows (the adapter's input and output).
        rank: the bottleneck width `r`.
        bias: which of the two projections have a bias: `"both"`, `"down"`, `"up"` or `"none"`.

    Raises:
        CountingError: if `rank` is not a positive integer or `bias` is unknown.
    """

    def __init__(self, width: int, rank: int, bias: AdapterBias = "both") -> None:
        super().__init__()
        _check_rank(rank)
        _check_choice("adapter bias", bias, ADAPTER_BIASES)
        self.down = nn.Linear(width, rank, bias=bias in ("both", "down"))
        self.up = nn.Linear(rank, width, bias=bias in ("both", "up"))
        nn.init.zeros_(self.up.weight)
        if self.up.bias is not None:
            nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x` plus the adapter's update.

        Args:
            x: the adapted layer's output, `(..., width)`.
        """
        return x + self.up(torch.relu(self.down(x)))


class WithAdapter(nn.Module):
    """A frozen layer followed by its adapter.

    Args:
        layer: the frozen layer.
        adapter: the `Adapter` applied to the layer's output.
    """

    def __init__(self, layer: nn.Module, adapter: Adapter) -> None:
        super().__init__()
        self.layer = layer
        self.adapter = adapter

    def forward(self, *args, **kwargs):
        """The layer's output, passed through the adapter.

        Args:
            *args (Any): the layer's positional arguments.
            **kwargs (Any): the layer's keyword arguments.
        """
        return self.adapter(self.layer(*args, **kwargs))


# --8<-- [end:adapter_module]


def match_modules(model: nn.Module, targets: Sequence[str]) -> list[str]:
    """Full names of the modules whose name is a target or ends with `.target` (as peft does).

    Args:
        model: the model to search.
        targets: module names or name endings, such as `"c_attn"`; an empty list matches none.

    Raises:
        CountingError: if `targets` is not empty and matches no module.
    """
    names = [name for name, _ in model.named_modules() if name and matches(name, targets)]
    if targets and not names:
        raise CountingError(
            f"no module of {type(model).__name__} matches the targets {list(targets)}"
        )
    return names


def add_adapters(
    model: nn.Module, targets: Sequence[str], rank: int, bias: AdapterBias = "both"
) -> nn.Module:
    """Freeze `model` and put an adapter after every module matching `targets` (in place).

    Args:
        model: the model to change.
        targets: module names or name endings, as in `match_modules`.
        rank: the adapters' bottleneck width `r`.
        bias: which adapter projections have a bias, as in `Adapter`.
    """
    model.requires_grad_(False)
    for name in match_modules(model, targets):
        layer = model.get_submodule(name)
        parent_name, _, child = name.rpartition(".")
        adapter = Adapter(layer_features(layer)[1], rank, bias).to(next(layer.parameters()).device)
        setattr(model.get_submodule(parent_name), child, WithAdapter(layer, adapter))
    return model


def mlp_adapter_targets(widths: Sequence[int], placement: Placement) -> list[str]:
    """Names of the layers of `build_mlp(widths)` that a placement puts an adapter after.

    Args:
        widths: the widths given to `build_mlp`.
        placement: `"hidden"` (every layer but the output) or `"hidden+output"` (every layer).

    Raises:
        CountingError: if `placement` is unknown.
    """
    _check_choice("placement", placement, PLACEMENTS)
    n_layers = len(check_widths(widths)) - 1
    last = n_layers - 1 if placement == "hidden" else n_layers
    return [f"fc{k}" for k in range(1, last + 1)]


@dataclass(frozen=True)
class ConventionRow:
    """What one adapter-counting convention gives on one network.

    Attributes:
        placement: where the adapters go: `"hidden"` or `"hidden+output"`.
        bias: which adapter projections have a bias (one of `ADAPTER_BIASES`).
        denominator: what the share is of: `"base"` or `"base+adapters"`.
        adapter_parameters: the adapters' parameters, from the formula.
        counted_parameters: the trainable parameters, from the module tree.
        base_parameters: the network's parameters without adapters.
        percent: `adapter_parameters` as a share of the denominator, in percent.
    """

    placement: str
    bias: str
    denominator: str
    adapter_parameters: int
    counted_parameters: int
    base_parameters: int
    percent: float


# --8<-- [start:convention_table]
def adapter_convention_table(
    widths: Sequence[int] = MLP_WIDTHS, rank: int = 4
) -> list[ConventionRow]:
    """Every convention for "rank-`rank` adapters after each layer" and the share it gives.

    Each count comes from the formula and, independently, from a real network with the
    adapters inserted; the two are stored side by side so a table can show they agree.

    Args:
        widths: the layer widths of the network, input first.
        rank: the adapters' bottleneck width `r`.
    """
    base = evaluate_mlp(MLP_PARAMETERS, widths)
    rows = []
    for placement in PLACEMENTS:
        for bias in ADAPTER_BIASES:
            formula = evaluate_mlp(adapter_formula(placement, bias), widths, rank)
            model = add_adapters(
                build_mlp(widths), mlp_adapter_targets(widths, placement), rank, bias
            )
            counted, _ = count_parameters(model)
            for denominator in DENOMINATORS:
                whole = base if denominator == "base" else base + formula
                rows.append(
                    ConventionRow(
                        placement, bias, denominator, formula, counted, base, 100 * formula / whole
                    )
                )
    return rows


def matching_conventions(
    rows: Sequence[ConventionRow],
    percent: float = 1.31,
    decimals: int = 2,
    rounding: Literal["round", "truncate"] = "round",
) -> list[ConventionRow]:
    """The rows whose share, rounded (or cut off) to `decimals` places,
    is the reported `percent`.

    Args:
        rows: the rows of `adapter_convention_table`.
        percent: the reported share, in percent.
        decimals: how many decimal places the share was reported with.
        rounding: `"round"` to the nearest, or `"truncate"` (cut off the further digits).

    Raises:
        CountingError: if `rounding` is neither.
    """
    _check_choice("rounding", rounding, ("round", "truncate"))
    scale = 10**decimals

    def shown(value: float) -> int:
        return round(value * scale) if rounding == "round" else math.floor(value * scale + 1e-9)

    return [row for row in rows if shown(row.percent) == round(percent * scale)]


# --8<-- [end:convention_table]


# ---------------------------------------------------------------------------------------
# 2. GPT-2 small (and a GPT-2-sized model with separate q, k, v): LoRA by formula and by peft
# ---------------------------------------------------------------------------------------

# --8<-- [start:gpt2_formulas]
V, n_ctx, d_model, n_layer, num_labels = sp.symbols(
    "V n_ctx d_model n_layer num_labels", integer=True, positive=True
)
BLOCK = 12 * d_model**2 + 13 * d_model  # attention 4d^2+4d, MLP 8d^2+5d, two LayerNorms 4d
GPT2_BASE = V * d_model + n_ctx * d_model + n_layer * BLOCK + 2 * d_model  # + final LayerNorm
GPT2_BIASES = n_layer * 11 * d_model + d_model  # biases of the 4 projections, 2 LNs; ln_f
HEAD = d_model * num_labels  # `score`: hidden size x labels, no bias
GPT2_PROJECTION_WEIGHTS = n_layer * 12 * d_model**2  # what 4-bit quantization turns into NF4

GPT2_LAYERS = {  # per block: (d_in, d_out) of each projection
    "attn.c_attn": (d_model, 3 * d_model),
    "attn.c_proj": (d_model, d_model),
    "mlp.c_fc": (d_model, 4 * d_model),
    "mlp.c_proj": (4 * d_model, d_model),
}

d_in, d_out = sp.IndexedBase("d_in"), sp.IndexedBase("d_out")
j, m = sp.symbols("j m", integer=True, positive=True)
LORA_FORMULA = r * sp.Sum(d_in[j] + d_out[j], (j, 1, m))  # A is r x d_in, B is d_out x r
# --8<-- [end:gpt2_formulas]

d_ff, d_kv = sp.symbols("d_ff d_kv", integer=True, positive=True)  # Llama's MLP, keys' width
LLAMA_BLOCK = 2 * d_model**2 + 2 * d_model * d_kv + 3 * d_model * d_ff + 2 * d_model  # + 2 norms
LLAMA_BASE = V * d_model + n_layer * LLAMA_BLOCK + d_model  # tied embeddings, final RMSNorm


def lora_count(rank: int, shapes: Sequence[tuple[int, int]]) -> int:
    """`LORA_FORMULA` evaluated for `(d_in, d_out)` of each targeted layer.

    Args:
        rank: the LoRA rank `r`.
        shapes: `(d_in, d_out)` of each targeted layer.

    Raises:
        CountingError: if `rank` is not a positive integer.
    """
    _check_rank(rank)
    value = LORA_FORMULA.subs(m, len(shapes)).doit().subs(r, rank)
    value = value.subs({d_in[k + 1]: a for k, (a, _) in enumerate(shapes)})
    return int(value.subs({d_out[k + 1]: b for k, (_, b) in enumerate(shapes)}))


@dataclass(frozen=True)
class Architecture:
    """A transformer's parameter count as formulas, and how to build it for real.

    Attributes:
        name: its key in `ARCHITECTURES`.
        base: the backbone's parameters, a formula in `V`, `n_ctx`, `d_model` and `n_layer`.
        biases: every bias of the backbone (LayerNorm biases included).
        layers: per-block projections: name -> (d_in, d_out).
        values: the value of each symbol for this model.
        default_lora_targets: what peft targets when target_modules is None.
        adapter_targets: where adapters go, Houlsby's way: after attention and after the MLP.
        family: `"gpt2"` (Conv1D projections), `"opt"` or `"llama"` (`nn.Linear`).
        norms: the parameters of every norm layer (what LN-tuning trains a copy of).
        kv_width: the width of one layer's keys (and values): `d_model`, or fewer with
            grouped-query attention (what prefix tuning learns per virtual token and layer).
        ia3_targets: what peft's (IA)³ scales by default.
        ia3_feedforward: those of them scaled at their input.
    """

    name: str
    base: sp.Expr
    biases: sp.Expr
    layers: dict[str, tuple[sp.Expr, sp.Expr]]
    values: dict[sp.Symbol, int]
    default_lora_targets: tuple[str, ...]
    adapter_targets: tuple[str, ...]
    family: str = "gpt2"
    norms: sp.Expr = n_layer * 4 * d_model + 2 * d_model
    kv_width: sp.Expr = d_model
    ia3_targets: tuple[str, ...] = ("c_attn", "mlp.c_proj")
    ia3_feedforward: tuple[str, ...] = ("mlp.c_proj",)


ARCHITECTURES = {
    "gpt2-small": Architecture(
        "gpt2-small",
        GPT2_BASE,
        GPT2_BIASES,
        GPT2_LAYERS,
        {V: 50257, n_ctx: 1024, d_model: 768, n_layer: 12},
        ("c_attn",),
        ("attn.c_proj", "mlp.c_proj"),
    ),
    # OPT-125m has GPT-2 small's widths but separate q, k, v projections (and 2 spare positions).
    "opt-125m": Architecture(
        "opt-125m",
        V * d_model + (n_ctx + 2) * d_model + n_layer * BLOCK + 2 * d_model,
        GPT2_BIASES,
        {
            "q_proj": (d_model, d_model),
            "k_proj": (d_model, d_model),
            "v_proj": (d_model, d_model),
            "out_proj": (d_model, d_model),
            "fc1": (d_model, 4 * d_model),
            "fc2": (4 * d_model, d_model),
        },
        {V: 50272, n_ctx: 2048, d_model: 768, n_layer: 12},
        ("q_proj", "v_proj"),
        ("out_proj", "fc2"),
        family="opt",
    ),
    # SmolLM2-135M: a Llama with grouped-query attention (9 query heads of 64, 3 key/value
    # heads: keys 192 wide), a SwiGLU MLP of 1536, RMSNorms (no bias anywhere), tied embeddings
    "smollm2-135m": Architecture(
        "smollm2-135m",
        LLAMA_BASE,
        sp.Integer(0),
        {
            "self_attn.q_proj": (d_model, d_model),
            "self_attn.k_proj": (d_model, d_kv),
            "self_attn.v_proj": (d_model, d_kv),
            "self_attn.o_proj": (d_model, d_model),
            "mlp.gate_proj": (d_model, d_ff),
            "mlp.up_proj": (d_model, d_ff),
            "mlp.down_proj": (d_ff, d_model),
        },
        {V: 49152, d_model: 576, n_layer: 30, d_ff: 1536, d_kv: 192},
        ("q_proj", "v_proj"),
        ("self_attn.o_proj", "mlp.down_proj"),
        family="llama",
        norms=n_layer * 2 * d_model + d_model,
        kv_width=d_kv,
        ia3_targets=("k_proj", "v_proj", "down_proj"),
        ia3_feedforward=("down_proj",),
    ),
}


def architecture(name: str) -> Architecture:
    """The `Architecture` registered under `name`.

    Args:
        name: a key of `ARCHITECTURES`: `"gpt2-small"`, `"opt-125m"` or `"smollm2-135m"`.

    Raises:
        CountingError: if `name` is not registered.
    """
    _check_choice("model", name, tuple(ARCHITECTURES))
    return ARCHITECTURES[name]


def evaluate_architecture(
    expr: sp.Expr, arch: Architecture, labels: int = 2, rank: int | None = None
) -> int:
    """The value of a transformer formula for `arch`, `labels` classes and `rank`.

    Args:
        expr: a formula in the symbols of `arch.values` (and `num_labels`, `r`).
        arch: the architecture whose values the symbols take.
        labels: the value of `num_labels`: the classes of the head.
        rank: the value of `r`; None for a formula without it.

    Raises:
        CountingError: if `rank` is not a positive integer, or a symbol is left over.
    """
    value = sp.sympify(expr).subs({**arch.values, num_labels: labels})
    return _to_int(value, rank)


def build_classifier(
    name: str = "gpt2-small", labels: int = 2, device: str = "meta", seed: int = 0
) -> nn.Module:
    """A randomly initialised classifier of architecture `name` (no hub needed), pad = eos.

    On the `meta` device no memory is allocated and nothing is initialised: shapes, and so
    counts, are exact and a build takes milliseconds. Use `cpu` for a model that runs.

    Args:
        name: the architecture: `"gpt2-small"`, `"opt-125m"` or `"smollm2-135m"`.
        labels: the number of classes of the `score` head, at least 1.
        device: the device to build it on: `"meta"` or `"cpu"`.
        seed: the `torch.manual_seed` set before the model is built.

    Raises:
        CountingError: if `name` is unknown or `labels` is below 1.
    """
    from transformers import (
        GPT2Config,
        GPT2ForSequenceClassification,
        LlamaConfig,
        LlamaForSequenceClassification,
        OPTConfig,
        OPTForSequenceClassification,
    )

    architecture(name)
    if labels < 1:
        raise CountingError(f"a classifier needs at least one label, got {labels}")
    build = {
        "gpt2-small": lambda: GPT2ForSequenceClassification(
            GPT2Config(num_labels=labels, pad_token_id=50256)
        ),
        "opt-125m": lambda: OPTForSequenceClassification(OPTConfig(num_labels=labels)),
        "smollm2-135m": lambda: LlamaForSequenceClassification(
            LlamaConfig(
                vocab_size=49152,
                hidden_size=576,
                intermediate_size=1536,
                num_hidden_layers=30,
                num_attention_heads=9,
                num_key_value_heads=3,
                tie_word_embeddings=True,
                num_labels=labels,
                pad_token_id=2,
            )
        ),
    }[name]
    torch.manual_seed(seed)
    with torch.device(device):
        return build()


def targeted_layers(arch: Architecture, targets: Sequence[str]) -> list[str]:
    """The per-block projections of `arch` that peft-style suffix targets select.

    Args:
        arch: the architecture whose `layers` are searched.
        targets: peft-style patterns: a layer name or a dot-separated ending of one.

    Raises:
        CountingError: if no layer matches.
    """
    chosen = [name for name in arch.layers if matches(name, targets)]
    if not chosen:
        raise CountingError(
            f"no layer of {arch.name} matches {list(targets)}; its layers are "
            f"{', '.join(arch.layers)}"
        )
    return chosen


# --8<-- [start:lora_formula]
def lora_formulas(
    arch: Architecture, targets: Sequence[str], bias: str = "none", saves_head: bool = False
) -> tuple[sp.Expr, sp.Expr]:
    """`(trainable, all)` parameters of a peft LoRA model, as formulas.

    LoRA adds `r * (d_in + d_out)` per targeted layer in each block. A saved head
    (`task_type=SEQ_CLS` or `modules_to_save=["score"]`) is trained as a *copy*: the frozen
    original stays in the model, so "all params" holds the head twice.

    Args:
        arch: the architecture to count.
        targets: peft-style patterns of the per-block projections to adapt.
        bias: `"none"`, or `"lora_only"`, which also trains the biases of the targeted layers.
        saves_head: whether the head is saved, so trained as a copy.

    Raises:
        CountingError: if `bias` is neither `"none"` nor `"lora_only"`.
    """
    if bias not in ("none", "lora_only"):
        raise CountingError(f"bias='{bias}' is not counted here: use 'none' or 'lora_only'")
    layers = [arch.layers[name] for name in targeted_layers(arch, targets)]
    lora = n_layer * r * sum(a + b for a, b in layers)
    lora_biases = n_layer * sum(b for _, b in layers) if bias == "lora_only" else 0
    copy = HEAD if saves_head else 0
    return lora + lora_biases + copy, arch.base + HEAD + lora + copy


# --8<-- [end:lora_formula]


@dataclass(frozen=True)
class LoraCase:
    """One LoRA configuration on one classifier, to count by formula and by peft.

    Attributes:
        name: what the case is called in the table.
        model: the classifier's architecture: `"gpt2-small"` or `"opt-125m"`.
        labels: the number of classes of its head.
        r: the LoRA rank.
        lora_alpha: peft's `lora_alpha`.
        targets: peft's `target_modules`; None: peft's default for the model.
        task_type: peft's `task_type`; `"SEQ_CLS"` trains a copy of the head.
        bias: peft's `bias`: `"none"` or `"lora_only"`.
        modules_to_save: peft's `modules_to_save`; `("score",)` trains a copy of the head.
    """

    name: str
    model: str = "gpt2-small"
    labels: int = 2
    r: int = 8
    lora_alpha: int = 8
    targets: tuple[str, ...] | None = None
    task_type: str | None = None
    bias: str = "none"
    modules_to_save: tuple[str, ...] = ()

    def lora_config(self):
        """The `peft.LoraConfig` this case describes."""
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.lora_alpha,
            bias=self.bias,
            task_type=self.task_type,
            target_modules=list(self.targets) if self.targets else None,
            modules_to_save=list(self.modules_to_save) or None,
        )

    def saves_head(self) -> bool:
        """Whether peft trains a copy of the head (`SEQ_CLS`, or `score` in `modules_to_save`)."""
        return self.task_type == "SEQ_CLS" or "score" in self.modules_to_save


LORA_CASES = (
    LoraCase("LoraConfig(): head left frozen"),
    LoraCase("r=8 on c_attn, SEQ_CLS", task_type="SEQ_CLS"),
    LoraCase(
        "r=4 on 4 projections, SEQ_CLS",
        r=4,
        task_type="SEQ_CLS",
        targets=("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"),
    ),
    LoraCase(
        "r=128, lora_only bias, 20 labels",
        labels=20,
        r=128,
        lora_alpha=128,
        bias="lora_only",
        modules_to_save=("score",),
    ),
    LoraCase(
        "r=8 on separate q, k, v (OPT-125m)",
        model="opt-125m",
        targets=("q_proj", "k_proj", "v_proj"),
    ),
)


@dataclass(frozen=True)
class LoraCount:
    """A LoRA case counted three ways.

    Attributes:
        case: the case counted.
        formula_trainable: the trainable parameters by `lora_formulas`.
        formula_total: all parameters by `lora_formulas`.
        peft_trainable: the trainable parameters by peft's `get_nb_trainable_parameters()`.
        peft_total: all parameters by peft's `get_nb_trainable_parameters()`.
        lora_parameters: only the lora_A / lora_B matrices, read off the module tree.
    """

    case: LoraCase
    formula_trainable: int
    formula_total: int
    peft_trainable: int
    peft_total: int
    lora_parameters: int

    @property
    def percent(self) -> float:
        """peft's trainable share, in percent."""
        return 100 * self.peft_trainable / self.peft_total


def apply_lora(model: nn.Module, config) -> nn.Module:
    """`peft.get_peft_model(model, config)`, without the warnings peft gives on GPT-2.

    Args:
        model: the model to wrap.
        config (peft.LoraConfig): the LoRA settings.
    """
    from peft import get_peft_model

    with warnings.catch_warnings():  # peft switches Conv1D targets to fan_in_fan_out, and says so
        warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        return get_peft_model(model, config)


def peft_model(case: LoraCase, device: str = "meta") -> nn.Module:
    """`get_peft_model` on a fresh classifier built for `case`.

    Args:
        case: the configuration to build.
        device: the device to build the classifier on; `"meta"` allocates nothing.
    """
    return apply_lora(build_classifier(case.model, case.labels, device), case.lora_config())


def count_lora_case(case: LoraCase) -> LoraCount:
    """Count `case` by formula and on a real (meta-device) peft model.

    Args:
        case: the configuration to count.
    """
    arch = architecture(case.model)
    targets = case.targets or arch.default_lora_targets
    trainable, total = lora_formulas(arch, targets, case.bias, case.saves_head())
    model = peft_model(case)
    peft_trainable, peft_total = model.get_nb_trainable_parameters()
    lora = sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)
    return LoraCount(
        case,
        evaluate_architecture(trainable, arch, case.labels, case.r),
        evaluate_architecture(total, arch, case.labels, case.r),
        peft_trainable,
        peft_total,
        lora,
    )


def lora_target_shapes(model: nn.Module, targets: Sequence[str]) -> list[tuple[int, int]]:
    """`(d_in, d_out)` of every module `targets` select, read from the module tree.

    Args:
        model: the model to read.
        targets: module names or name endings, as in `match_modules`.
    """
    return [layer_features(model.get_submodule(name)) for name in match_modules(model, targets)]


# ---------------------------------------------------------------------------------------
# 3. One entry point per method, with a breakdown per module type (the `count` command)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BreakdownRow:
    """Trainable parameters of one module type: a module path with block indices as `*`.

    Attributes:
        module: the module path, block indices as `*`.
        parameter: the parameter's own name (`weight`, `bias`, `lora_A`, ...).
        modules: how many modules of this type.
        each: parameters per module (None if they differ, as in an MLP).
        trainable: the trainable parameters of all of them together.
    """

    module: str
    parameter: str
    modules: int
    each: int | None
    trainable: int


def module_type(parameter_name: str) -> tuple[str, str]:
    """`(module type, parameter)` of a parameter name: peft's wrapper prefix and adapter
    name dropped, block indices replaced by `*`.

    Args:
        parameter_name: a full name, as `named_parameters()` gives it.
    """
    name = parameter_name.removeprefix("base_model.model.")
    *path, leaf = [part for part in name.split(".") if part != "default"]
    return ".".join("*" if part.isdigit() else part for part in path), leaf


def breakdown(model: nn.Module) -> list[BreakdownRow]:
    """The trainable parameters of `model`, summed per module type, in module order.

    Args:
        model: the model, after a method has chosen what trains.
    """
    groups: dict[tuple[str, str], list[int]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            groups.setdefault(module_type(name), []).append(parameter.numel())
    return [
        BreakdownRow(
            module, leaf, len(sizes), sizes[0] if len(set(sizes)) == 1 else None, sum(sizes)
        )
        for (module, leaf), sizes in groups.items()
    ]


Method = Literal["bitfit", "adapter", "lora"]


@dataclass(frozen=True)
class MethodCount:
    """A method applied to a model: its breakdown, its totals, and the formula's answer.

    Attributes:
        method: `"bitfit"`, `"adapter"` or `"lora"`.
        model: `"gpt2-small"` or `"mlp"`.
        rank: the adapter or LoRA rank asked for.
        targets: the modules the method was applied to (none for bitfit).
        rows: the trainable parameters per module type.
        trainable: the trainable parameters, counted on the module tree.
        total: all parameters after the method: adapters, LoRA matrices and saved copies included.
        base_total: all parameters before the method.
        formula: the trainable parameters as a formula, simplified.
        formula_value: the formula's value for this model, rank and number of labels.
    """

    method: str
    model: str
    rank: int
    targets: tuple[str, ...]
    rows: list[BreakdownRow]
    trainable: int
    total: int
    base_total: int
    formula: sp.Expr
    formula_value: int

    @property
    def percent(self) -> float:
        """The trainable share of `total`, in percent."""
        return 100 * self.trainable / self.total


def _mlp_layer(name: str, widths: Sequence[int]) -> int:
    """The index k of layer `fck` of `build_mlp(widths)`."""
    match = re.fullmatch(r"fc(\d+)", name)
    if not match or not 1 <= int(match.group(1)) <= len(widths) - 1:
        raise CountingError(f"'{name}' is not a layer of the MLP: use fc1 ... fc{len(widths) - 1}")
    return int(match.group(1))


def _apply_to_mlp(
    net: nn.Module, method: str, rank: int, targets: Sequence[str] | None, widths: Sequence[int]
) -> tuple[nn.Module, list[str], sp.Expr]:
    """`(model, targets, formula)` for `method` on `build_mlp(widths)`."""
    default = {
        "adapter": mlp_adapter_targets(widths, "hidden"),
        "lora": [f"fc{k}" for k in range(1, len(widths))],
    }.get(method, [])
    chosen = list(targets or default)
    layers = [_mlp_layer(name, widths) for name in chosen]
    if method == "bitfit":
        return bitfit(net), chosen, MLP_BIASES
    if method == "adapter":
        return add_adapters(net, chosen, rank), chosen, sum(adapter_term(d[k]) for k in layers)
    from peft import LoraConfig

    net = apply_lora(net, LoraConfig(r=rank, lora_alpha=rank, target_modules=chosen))
    return net, chosen, r * sum(d[k - 1] + d[k] for k in layers)


def _apply_to_transformer(
    net: nn.Module, method: str, rank: int, targets: Sequence[str] | None, arch: Architecture
) -> tuple[nn.Module, list[str], sp.Expr]:
    """`(model, targets, formula)` for `method` on a classifier; its head always trains."""
    if method == "bitfit":
        return bitfit(net, train_head=True), [], arch.biases + HEAD
    if method == "adapter":
        chosen = list(targets or arch.adapter_targets)
        widths_out = [arch.layers[name][1] for name in targeted_layers(arch, chosen)]
        net = add_adapters(net, chosen, rank)
        net.get_submodule("score").requires_grad_(True)
        return net, chosen, n_layer * sum(adapter_term(w) for w in widths_out) + HEAD
    chosen = list(targets or arch.default_lora_targets)
    formula = lora_formulas(arch, chosen, saves_head=True)[0]
    case = LoraCase(
        "count", arch.name, r=rank, lora_alpha=rank, targets=tuple(chosen), task_type="SEQ_CLS"
    )
    return apply_lora(net, case.lora_config()), chosen, formula


def count_method(
    method: Method,
    model: str = "gpt2-small",
    rank: int = 8,
    targets: Sequence[str] | None = None,
    labels: int = 2,
    widths: Sequence[int] = MLP_WIDTHS,
) -> MethodCount:
    """Apply `method` to `model`, count by module tree and by formula.

    `gpt2-small` is a classifier with `labels` classes built on the meta device; its new
    `score` head trains under every method. `mlp` is `build_mlp(widths)`; its layers are
    `fc1 ... fcL`. Targets default to: every bias (bitfit), after attention and after the
    MLP of each block, or after each hidden layer (adapter), `c_attn` or every layer (lora).

    Args:
        method: `"bitfit"`, `"adapter"` or `"lora"`.
        model: `"gpt2-small"` or `"mlp"`.
        rank: the adapters' bottleneck width or the LoRA rank (unused by bitfit).
        targets: the modules to apply the method to; None takes the defaults above.
        labels: the number of classes of the `gpt2-small` classifier.
        widths: the layer widths of the `mlp` model, input first.

    Raises:
        CountingError: if an option is unknown or invalid, or bitfit is given targets.
    """
    _check_choice("method", method, COUNTED_METHODS)
    _check_choice("model", model, COUNTED_MODELS)
    _check_rank(rank)
    if targets is not None:
        try:
            targets = check_string_list("targets", targets, allow_empty=True)
        except CourseError as error:
            raise CountingError(str(error)) from None
    if method == "bitfit" and targets:
        raise CountingError("bitfit trains every bias: it takes no targets")
    if model == "mlp":
        widths = check_widths(widths)
        net = build_mlp(widths)
        base_total = count_parameters(net)[1]
        net, chosen, formula = _apply_to_mlp(net, method, rank, targets, widths)
        value = evaluate_mlp(formula, widths, rank)
    else:
        arch = architecture(model)
        net = build_classifier(model, labels)
        base_total = count_parameters(net)[1]
        net, chosen, formula = _apply_to_transformer(net, method, rank, targets, arch)
        value = evaluate_architecture(formula, arch, labels, rank)
    trainable, total = count_parameters(net)
    return MethodCount(
        method,
        model,
        rank,
        tuple(chosen),
        breakdown(net),
        trainable,
        total,
        base_total,
        sp.simplify(formula),
        value,
    )


def format_method_count(result: MethodCount) -> str:
    """The breakdown as a plain-text table, then the totals and the formula's answer.

    Args:
        result: what `count_method` returned.
    """
    width = max([len("module")] + [len(row.module) for row in result.rows])
    lines = [
        f"{result.method} on {result.model}"
        + (
            f" (r={result.rank}, targets: {', '.join(result.targets)})"
            if result.method != "bitfit"
            else ""
        ),
        "",
        f"{'module':<{width}}  {'param':<6} {'modules':>7} {'each':>10} {'trainable':>12}",
    ]
    for row in result.rows:
        each = f"{row.each:,}" if row.each is not None else "-"
        lines.append(
            f"{row.module:<{width}}  {row.parameter:<6} "
            f"{row.modules:>7} {each:>10} {row.trainable:>12,}"
        )
    verdict = "matches" if result.formula_value == result.trainable else "DOES NOT MATCH"
    lines += ["", f"trainable {result.trainable:,} of {result.total:,} ({result.percent:.3f}%)"]
    if result.total != result.base_total:
        share = 100 * result.trainable / result.base_total
        lines.append(
            f"          {share:.3f}% of the {result.base_total:,} before the method was applied"
        )
    lines.append(
        f"formula: {result.formula} = {result.formula_value:,} ({verdict} the module count)"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# 4. The tables of the docs page
# ---------------------------------------------------------------------------------------


def markdown_rows(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """`tables.markdown_table` of rows given as lists under `header`;
    integers get thousands separators.

    Args:
        header: the column names.
        rows: one list of cell values per row, in the order of `header`.
    """

    def cell(value: object) -> str:
        return (
            f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
        )

    return markdown_table([dict(zip(header, map(cell, row))) for row in rows]).rstrip("\n")


def mlp_table(widths: Sequence[int] = MLP_WIDTHS) -> str:
    """The network's size and what BitFit trains, by formula and by module count.

    Args:
        widths: the layer widths of the network, input first.
    """
    model = build_mlp(widths)
    total = count_parameters(model)[1]
    biases = count_parameters(bitfit(model))[0]
    return markdown_rows(
        ["parameters", "formula", "counted on the module", "share"],
        [
            ["all parameters", evaluate_mlp(MLP_PARAMETERS, widths), total, "100%"],
            [
                "BitFit (biases)",
                evaluate_mlp(MLP_BIASES, widths),
                biases,
                f"{100 * biases / total:.3f}%",
            ],
        ],
    )


def convention_table_markdown(rows: Sequence[ConventionRow], percent: float = 1.31) -> str:
    """The convention table, marking the rows that show as `percent` when rounded or cut off.

    Args:
        rows: the rows of `adapter_convention_table`.
        percent: the reported share to look for, in percent.
    """
    rounded = set(matching_conventions(rows, percent))
    truncated = set(matching_conventions(rows, percent, rounding="truncate"))

    def verdict(row: ConventionRow) -> str:
        return "rounds to it" if row in rounded else "cut off to it" if row in truncated else ""

    return markdown_rows(
        ["adapter after", "adapter biases", "% of", "formula", "counted", "share", f"{percent}%?"],
        [
            [
                row.placement,
                row.bias,
                row.denominator,
                row.adapter_parameters,
                row.counted_parameters,
                f"{row.percent:.4f}%",
                verdict(row),
            ]
            for row in rows
        ],
    )


def lora_table(counts: Sequence[LoraCount]) -> str:
    """Each LoRA case: formula and peft, trainable and all parameters.

    Args:
        counts: the cases, as `count_lora_case` counted them.
    """
    return markdown_rows(
        [
            "configuration",
            "LoRA matrices",
            "trainable (formula)",
            "trainable (peft)",
            "all (formula)",
            "all (peft)",
            "share",
        ],
        [
            [
                count.case.name,
                count.lora_parameters,
                count.formula_trainable,
                count.peft_trainable,
                count.formula_total,
                count.peft_total,
                f"{count.percent:.2f}%",
            ]
            for count in counts
        ],
    )


def nf4_table(weight_shape: tuple[int, int] = (2304, 768), seed: int = 0) -> str:
    """Bits per weight of a c_attn-shaped weight: formula against what bitsandbytes stores.

    Args:
        weight_shape: the shape of the random weight that is quantized.
        seed: the seed its random values are drawn under.
    """
    weight = torch.randn(weight_shape, generator=torch.Generator().manual_seed(seed))
    projections = evaluate_architecture(GPT2_PROJECTION_WEIGHTS, ARCHITECTURES["gpt2-small"])
    rows = []
    for double_quant in (False, True):
        stored = quantize_nf4(weight, double_quant)
        bits = nf4_bits_per_parameter(double_quant)
        rows.append(
            [
                "yes" if double_quant else "no",
                f"{bits} = {float(bits):.4f}",
                f"{stored.bits_per_parameter:.4f}",
                f"{float(bits) / 8:.4f}",
                f"{stored.packed_shape}",
                stored.absmax_bytes + stored.nested_absmax_bytes,
                stored.table_bytes,
                f"{projections * float(bits) / 8 / 2**20:.1f} MiB",
            ]
        )
    return markdown_rows(
        [
            "double quant",
            "bits/weight (formula)",
            "bits/weight (bnb)",
            "bytes/weight",
            "packed shape",
            "scale bytes",
            "table bytes",
            "GPT-2 small projections",
        ],
        rows,
    )


def counting_tables() -> dict[str, str]:
    """Every table of the docs page, computed now (the tests compare them with the page)."""
    return {
        "mlp": mlp_table(),
        "conventions": convention_table_markdown(adapter_convention_table()),
        "lora": lora_table([count_lora_case(case) for case in LORA_CASES]),
        "nf4": nf4_table(),
        "count lora": format_method_count(count_method("lora")),
    }


def print_tables() -> None:
    """Print the docs page's tables:
    `python -c "from peft_course.counting import print_tables; print_tables()"`."""
    for name, table in counting_tables().items():
        print(f"<!-- {name} -->\n{table}\n")


# ---------------------------------------------------------------------------------------
# 5. The PEFT family, counted before it is trained
# ---------------------------------------------------------------------------------------

# --8<-- [start:family_formulas]
n_virtual, h_enc = sp.symbols("n_virtual h_enc", integer=True, positive=True)  # soft prompts
b_oft, b_boft, n_bf = sp.symbols("b_oft b_boft n_bf", integer=True, positive=True)  # rotations


def per_block(arch: Architecture, targets: Sequence[str], term) -> sp.Expr:
    """`n_layer` times the sum of `term(d_in, d_out)` over the targeted projections of a block.

    Args:
        arch: the architecture whose projections are targeted.
        targets: peft-style patterns, as in `targeted_layers`.
        term: the parameters one method adds to one layer of widths `(d_in, d_out)`.
    """
    return n_layer * sum(term(*arch.layers[name]) for name in targeted_layers(arch, targets))


def lokr_term(width_in: sp.Expr, width_out: sp.Expr, values: dict) -> sp.Expr:
    """LoKr's parameters on one layer: `W = W1 kron W2`, each width split in two factors.

    peft splits `d_out = u1 u2` and `d_in = v1 v2` near their square roots (its own
    `factorization`), trains `W1` (u1 x v1) in full and `W2` (u2 x v2) as a rank-r product
    when that is smaller, `r < max(u2, v2) / 2`: the factors are numbers, not symbols.

    Args:
        width_in: the layer's `d_in`, a formula.
        width_out: its `d_out`.
        values: the architecture's symbol values, to find the factors.
    """
    from peft.tuners.lokr.layer import factorization

    u1, u2 = factorization(int(width_out.subs(values)), -1)
    v1, v2 = factorization(int(width_in.subs(values)), -1)
    w2 = sp.Piecewise((r * (u2 + v2), r < sp.Rational(max(u2, v2), 2)), (u2 * v2, True))
    return u1 * v1 + w2


def family_formula(method: str, arch: Architecture) -> sp.Expr | None:
    """The trainable parameters of registry method `method` on `arch`, head included.

    Each method with its default options (`FAMILY_DEFAULTS`); None where the method refuses
    the architecture (LoHa, LoKr, OFT, BOFT and OLoRA on GPT-2's Conv1D; `gpt2-scratch`, the
    course's own GPT-2, on anything else).

    Args:
        method: a key of `peft_course.registry.METHODS`.
        arch: the architecture counted.

    Raises:
        CountingError: if `method` has no formula here.
    """
    gpt2 = arch.family == "gpt2"
    lora = lora_formulas(arch, arch.default_lora_targets, saves_head=True)[0]
    targets = arch.default_lora_targets
    ia3_scales = sum(
        arch.layers[name][0] if matches(name, arch.ia3_feedforward) else arch.layers[name][1]
        for name in targeted_layers(arch, arch.ia3_targets)
    )
    formulas = {
        "head": lambda: HEAD,
        "full": lambda: arch.base + HEAD,
        # LoRA's family: r (d_in + d_out) per layer; merging, 4-bit storage, the rank's scale,
        # a start from singular vectors or a QR, and B's learning rate change no count
        **dict.fromkeys(
            ("lora", "lora-scratch", "merged", "qlora", "rslora", "pissa", "lora-plus"),
            lambda: lora,
        ),
        "olora": lambda: None if gpt2 else lora,
        "gpt2-scratch": lambda: (n_layer * 3 * r * 2 * d_model + HEAD) if gpt2 else None,
        "bitfit": lambda: arch.biases + HEAD,
        "houlsby": lambda: (
            per_block(arch, arch.adapter_targets, lambda a, b: adapter_term(b)) + HEAD
        ),
        "pfeiffer": lambda: (
            per_block(arch, arch.adapter_targets[1:], lambda a, b: adapter_term(b)) + HEAD
        ),
        "ia3": lambda: n_layer * ia3_scales + HEAD,  # one scale per output, or per input
        "ln-tuning": lambda: arch.norms + HEAD,
        "prompt-tuning": lambda: n_virtual * d_model + HEAD,
        "prefix-tuning": lambda: n_virtual * n_layer * 2 * arch.kv_width + HEAD,  # keys, values
        "p-tuning": lambda: (
            n_virtual * d_model  # embeddings, then an MLP d -> h -> h -> d
            + (d_model * h_enc + h_enc)
            + (h_enc * h_enc + h_enc)
            + (h_enc * d_model + d_model)
            + HEAD
        ),
        "dora": lambda: lora + per_block(arch, targets, lambda a, b: b),  # a magnitude per output
        "vera": lambda: per_block(arch, targets, lambda a, b: r + b) + HEAD,  # d and b vectors
        # P diag(E) Q: A, B, the r singular values E, and `ranknum` (1, marked trainable)
        "adalora": lambda: per_block(arch, targets, lambda a, b: r * (a + b) + r + 1) + HEAD,
        "loha": lambda: (
            None if gpt2 else per_block(arch, targets, lambda a, b: 2 * r * (a + b)) + HEAD
        ),
        "lokr": lambda: (
            None
            if gpt2
            else per_block(arch, targets, lambda a, b: lokr_term(a, b, arch.values)) + HEAD
        ),
        # (d_in / b) blocks of a skew-symmetric b x b generator: b (b - 1) / 2 each
        "oft": lambda: (
            None if gpt2 else per_block(arch, targets, lambda a, b: a * (b_oft - 1) / 2) + HEAD
        ),
        # n_bf butterfly factors of (d_in / b) blocks b x b, and a scale per output
        "boft": lambda: (
            None if gpt2 else per_block(arch, targets, lambda a, b: n_bf * a * b_boft + b) + HEAD
        ),
    }
    if method not in formulas:
        raise CountingError(f"no formula counts method {method!r}: add it to family_formula")
    return formulas[method]()


# --8<-- [end:family_formulas]

FAMILY_ARCHITECTURES = ("gpt2-small", "smollm2-135m")


def family_defaults() -> dict[sp.Symbol, int]:
    """The value of each method setting in the formulas: the methods' default options.

    The rank (LoRA's, an adapter's width, VeRA's and AdaLoRA's starting rank) is the course's
    `LORA.r`; the soft prompts' length and P-tuning's MLP width are their options' defaults;
    OFT's block size and BOFT's block size and butterfly factors are peft's.
    """
    from peft import BOFTConfig, OFTConfig

    def peft_default(config: type, field: str) -> int:
        return config.__dataclass_fields__[field].default

    prompt = PromptEncoderOptions()
    return {
        r: LORA.r,
        n_virtual: prompt.virtual_tokens,
        h_enc: prompt.encoder_hidden,
        b_oft: peft_default(OFTConfig, "oft_block_size"),
        b_boft: peft_default(BOFTConfig, "boft_block_size"),
        n_bf: peft_default(BOFTConfig, "boft_n_butterfly_factor"),
    }


def family_count(method: str, arch: Architecture, labels: int = 2) -> int | None:
    """`family_formula(method, arch)` evaluated at the defaults; None where it is refused.

    Args:
        method: a key of `peft_course.registry.METHODS`.
        arch: the architecture counted.
        labels: the classes of the head.
    """
    formula = family_formula(method, arch)
    if formula is None:
        return None
    return evaluate_architecture(sp.sympify(formula).subs(family_defaults()), arch, labels)


def family_table(methods: Sequence[str] | None = None, labels: int = 2) -> str:
    """Each method: its formula, its count on GPT-2 small and SmolLM2-135M, and their shares.

    The share is of the model the method starts from (backbone and head); a method refused on
    an architecture shows "refused". The formula is GPT-2's, or SmolLM2's for a method that
    refuses GPT-2.

    Args:
        methods: the registry's method names to show; None: all of them, in its order.
        labels: the classes of the head.
    """
    methods = tuple(METHODS) if methods is None else methods
    archs = [architecture(name) for name in FAMILY_ARCHITECTURES]
    rows = []
    for method in methods:
        row: list[object] = [f"`{method}`"]
        formulas = [family_formula(method, arch) for arch in archs]
        shown = next(f for f in formulas if f is not None)
        row.append(f"`{sp.simplify(shown)}`")
        for arch in archs:
            count = family_count(method, arch, labels)
            whole = evaluate_architecture(arch.base + HEAD, arch, labels)
            row += ["refused", "-"] if count is None else [count, f"{100 * count / whole:.3f}%"]
        rows.append(row)
    return markdown_rows(
        ["method", "formula", "GPT-2 small", "share", "SmolLM2-135M", "share "], rows
    )


def architecture_of(config) -> Architecture:
    """The `Architecture` of a transformers GPT-2 or Llama config (tiny-gpt2, tiny-llama), so
    that the formulas can be checked on a model small enough to load for real.

    Args:
        config (transformers.PretrainedConfig): a `gpt2` or `llama` config.

    Raises:
        CountingError: for another model type.
    """
    if config.model_type == "gpt2":
        values = {
            V: config.vocab_size,
            n_ctx: config.n_positions,
            d_model: config.n_embd,
            n_layer: config.n_layer,
        }
        return dataclasses.replace(ARCHITECTURES["gpt2-small"], name="gpt2", values=values)
    if config.model_type == "llama":
        head_dim = getattr(config, "head_dim", None) or (
            config.hidden_size // config.num_attention_heads
        )
        values = {
            V: config.vocab_size,
            d_model: config.hidden_size,
            n_layer: config.num_hidden_layers,
            d_ff: config.intermediate_size,
            d_kv: config.num_key_value_heads * head_dim,
        }
        return dataclasses.replace(ARCHITECTURES["smollm2-135m"], name="llama", values=values)
    raise CountingError(f"no formulas for a {config.model_type!r} model: gpt2 and llama only")
