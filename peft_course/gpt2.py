"""GPT-2 written out in one file, with LoRA built into its attention, and decoding by hand.

The model is the one of "Language Models are Unsupervised Multitask Learners" (Radford et
al., 2019): token and position embeddings, `n_layer` pre-norm blocks of causal self-attention
and a GELU MLP, a final LayerNorm, and an LM head tied to the token embedding. Two additions
make it useful for the course: a padding mask (batches of reviews of different lengths), and
a `lora` field in the config that puts the course's own `LoRALayer` on the projections named
there. `from_pretrained` reads any transformers GPT-2 checkpoint (safetensors only), and the
tests hold its logits to transformers' `GPT2LMHeadModel` / `GPT2ForSequenceClassification`.

Shapes: `B` batch, `T` positions, `C` width (`n_embd`), `H` heads, `D = C / H`, `V` vocabulary.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub import snapshot_download
from safetensors.torch import load_file
from torch import nn

from peft_course.models import count_parameters
from peft_course.errors import CourseError, check_int, check_number, describe
from peft_course.lora import LoRALayer, check_hyperparameters, merge_and_unload
from peft_course.models import (
    ModelLoadError,
    load_model,
    load_tokenizer,
    looks_like_a_path,
    resolve_model_path,
)
from peft_course.settings import EMBEDDED_MODEL, LORA

PROJECTIONS = ("q", "k", "v", "out", "fc", "proj")  # attention's q, k, v and output; the MLP's two


class GPT2Error(CourseError):
    """A checkpoint, a configuration or a decoding setting this GPT-2 cannot use."""


@dataclass(frozen=True)
class LoRASpec:
    """Which projections get a rank-`r` LoRA update, and its scaling `alpha / r`.

    Attributes:
        r: the rank of the update.
        alpha: the numerator of the scaling `alpha / r`.
        targets: the projections to adapt, from `PROJECTIONS`.
        dropout: the dropout probability on the input of the LoRA path.

    Raises:
        LoRAError: if `r`, `alpha` or `dropout` is of the wrong type or out of range.
        GPT2Error: if `targets` is a string, empty, or names something not in `PROJECTIONS`.
    """

    r: int = LORA.r
    alpha: float = LORA.alpha
    targets: tuple[str, ...] = ("q", "k", "v")
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_hyperparameters(self.r, self.alpha, self.dropout)
        if (
            isinstance(self.targets, str)
            or not self.targets
            or any(t not in PROJECTIONS for t in self.targets)
        ):
            raise GPT2Error(
                f"LoRA targets must be a non-empty list from {list(PROJECTIONS)}, "
                f"got {describe(self.targets)}"
            )
        object.__setattr__(self, "targets", tuple(self.targets))


@dataclass(frozen=True)
class GPT2Config:
    """GPT-2 small by default; `num_labels` adds a classification head, `lora` LoRA layers.

    Attributes:
        vocab_size: the number of tokens in the vocabulary, `V`.
        n_positions: the context: the most positions a sequence may have.
        n_embd: the width `C`.
        n_layer: the number of blocks.
        n_head: the number of attention heads `H`; it must divide `n_embd`.
        layer_norm_epsilon: the epsilon of every LayerNorm.
        dropout: the dropout probability of the embeddings, attention and residual paths.
        num_labels: the classes of a classification head; None: the language model.
        label_names: a name per class; None: `LABEL_0`, `LABEL_1`, ...
        pad_token_id: the padding token, to find each row's last real token.
        lora: the LoRA layers to add; None: none.

    Raises:
        CourseError: if a size is not a positive integer.
        GPT2Error: if `n_embd` is not a multiple of `n_head`.
    """

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    layer_norm_epsilon: float = 1e-5
    dropout: float = 0.1
    num_labels: int | None = None
    label_names: tuple[str, ...] | None = None
    pad_token_id: int | None = None
    lora: LoRASpec | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            check_int(name, getattr(self, name))
        if self.n_embd % self.n_head:
            raise GPT2Error(f"n_embd {self.n_embd} must be a multiple of n_head {self.n_head}")
        if self.num_labels is not None:
            check_int("num_labels", self.num_labels)

    @property
    def id2label(self) -> dict[int, str]:
        """Label names by index, as transformers configs offer them
        (`LABEL_0`, ... when unnamed)."""
        names = self.label_names or [f"LABEL_{i}" for i in range(self.num_labels or 0)]
        return dict(enumerate(names))


@dataclass
class GPT2Output:
    """What `GPT2.forward` returns: the names transformers uses, so the course's loop runs it.

    Attributes:
        logits: `(B, T, V)` for the language model, `(B, num_labels)` for a classifier.
        loss: the loss, when `labels` were given; else None.
        past_key_values: each block's keys and values, with `use_cache`; else None.
    """

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    past_key_values: list[tuple[torch.Tensor, torch.Tensor]] | None = None


# --8<-- [start:mask]
def attention_mask(padding_mask: torch.Tensor | None, queries: int, keys: int) -> torch.Tensor:
    """`(B or 1, 1, queries, keys)` booleans: may this query position attend to that key?

    Causal: the queries are the last `queries` of the `keys` positions, and each sees itself
    and what came before. A query always sees itself, so no row is empty: softmax over nothing
    would be NaN, and that NaN would reach the real tokens through the next layer.

    Args:
        padding_mask: `(B, keys)`, 1 = real token, 0 = padding: also hides the padding keys.
            None: no padding.
        queries: the number of query positions (the newest).
        keys: the number of key positions, cached ones included.
    """
    causal = torch.ones(queries, keys, dtype=torch.bool).tril(diagonal=keys - queries)
    if padding_mask is None:
        return causal[None, None]
    own = torch.zeros(queries, keys, dtype=torch.bool)
    own[:, keys - queries :] = torch.eye(queries, dtype=torch.bool)
    allowed = (
        causal.to(padding_mask.device) & padding_mask.bool()[:, None, None, :]
    )  # (B, 1, Tq, Tk)
    return allowed | own.to(padding_mask.device)


# --8<-- [end:mask]


# --8<-- [start:attention]
class CausalSelfAttention(nn.Module):
    """Multi-head self-attention over the past, with separate q, k, v projections for LoRA.

    (transformers' GPT-2 computes q, k and v with one `c_attn` of width 3C; three projections
    of width C compute the same, and let LoRA target each one.)

    Args:
        config: the width `n_embd`, the number of heads `n_head` and the `dropout`.
    """

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        width = config.n_embd
        self.n_head = config.n_head
        self.q, self.k, self.v = (nn.Linear(width, width) for _ in range(3))
        self.out = nn.Linear(width, width)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Attend from the positions of `x` to themselves and the cached ones before them.

        Args:
            x: the input, `(B, T, C)`.
            padding_mask: `(B, T_past + T)`, 1 = real token, 0 = padding; None: no padding.
            past: the cached keys and values, `(B, H, T_past, D)` each; None: no cache.

        Returns:
            The output `(B, T, C)`, and the keys and values of every position, for the cache.
        """
        B, T, C = x.shape
        q, k, v = (
            p(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
            for p in (self.q, self.k, self.v)
        )
        if past is not None:  # the keys and values of the earlier positions, cached
            k, v = (
                torch.cat([past[0], k], dim=2),
                torch.cat([past[1], v], dim=2),
            )  # (B, H, T_past + T, D)
        mask = attention_mask(padding_mask, T, k.shape[2])
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side again
        return self.resid_dropout(self.out(y)), (k, v)


# --8<-- [end:attention]


class MLP(nn.Module):
    """Position-wise feed-forward: widen four times, GELU (tanh form, as GPT-2), narrow back.

    Args:
        config: the width `n_embd` and the `dropout`.
    """

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The feed-forward output, the shape of `x`.

        Args:
            x: the input, `(B, T, C)`.
        """
        return self.dropout(self.proj(F.gelu(self.fc(x), approximate="tanh")))


class Block(nn.Module):
    """Pre-norm residual block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.

    Args:
        config: the sizes, the LayerNorm epsilon and the dropout.
    """

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, Any]:
        """The block's output and its keys and values.

        Args:
            x: the input, `(B, T, C)`.
            padding_mask: `(B, T_past + T)`, 1 = real token, 0 = padding; None: no padding.
            past: this block's cached keys and values; None: no cache.

        Returns:
            The output `(B, T, C)`, and the keys and values of every position, for the cache.
        """
        attended, present = self.attn(self.ln_1(x), padding_mask, past)
        x = x + attended
        return x + self.mlp(self.ln_2(x)), present


class GPT2(nn.Module):
    """The language model, or with `config.num_labels` a classifier on the last real token.

    Args:
        config: the architecture; its `lora`, if any, is added by `add_lora`.
    """

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.config = replace(config, lora=None)  # add_lora sets it once the layers are in
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.score = (
            nn.Linear(config.n_embd, config.num_labels, bias=False) if config.num_labels else None
        )
        self.apply(self._init_weights)
        if config.lora is not None:
            add_lora(self, config.lora)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """GPT-2's initialisation: N(0, 0.02) weights, zero biases
        (LoRA's A and B keep their own)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        use_cache: bool = False,
    ) -> GPT2Output:
        """Logits, and the loss when `labels` are given, for a batch of token ids.

        Args:
            input_ids: the token ids, `(B, T)`.
            attention_mask: `(B, T_past + T)`, 1 = real token, 0 = padding; None: no padding.
            labels: the language model's targets, the token ids themselves (each position
                predicts the next; -100 is ignored), or a classifier's class per row; None: no
                loss.
            position_ids: the positions of the tokens; None: those after the cached ones.
            past_key_values: each block's cached keys and values, from a call with `use_cache`.
            use_cache: return each block's keys and values in `past_key_values`.

        Raises:
            GPT2Error: if the cached and new positions do not fit `config.n_positions`.
        """
        B, T = input_ids.shape
        start = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        if start + T > self.config.n_positions:
            raise GPT2Error(
                f"{start + T} positions do not fit GPT-2's context of {self.config.n_positions}"
            )
        if position_ids is None:
            position_ids = torch.arange(start, start + T, device=input_ids.device)[None]  # (1, T)
        x = self.drop(self.wte(input_ids) + self.wpe(position_ids))  # (B, T, C)
        presents = []
        for i, block in enumerate(self.h):
            x, present = block(
                x, attention_mask, None if past_key_values is None else past_key_values[i]
            )
            presents.append(present)
        x = self.ln_f(x)
        if self.score is None:
            logits = x @ self.wte.weight.T  # (B, T, V): the head is the token embedding, tied
            loss = (
                None
                if labels is None
                else F.cross_entropy(
                    logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
                )
            )
        else:
            logits = self.score(
                x[torch.arange(B, device=x.device), self.last_real_token(input_ids)]
            )  # (B, labels)
            loss = None if labels is None else F.cross_entropy(logits.float(), labels)
        return GPT2Output(logits, loss, presents if use_cache else None)

    def last_real_token(self, input_ids: torch.Tensor) -> torch.Tensor:
        """`(B,)` index of each row's rightmost token that is not the pad id
        (either padding side).

        Args:
            input_ids: the token ids, `(B, T)`.

        Raises:
            GPT2Error: if `config.pad_token_id` is None and the batch has more than one row.
        """
        if self.config.pad_token_id is None:
            if input_ids.shape[0] > 1:
                raise GPT2Error(
                    "a batch of more than one row needs config.pad_token_id to find each row's end"
                )
            return torch.full((1,), input_ids.shape[1] - 1, device=input_ids.device)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return (positions * (input_ids != self.config.pad_token_id)).argmax(-1)


# --8<-- [start:lora]
def add_lora(model: GPT2, spec: LoRASpec) -> GPT2:
    """Wrap the projections `spec` targets in LoRA layers, in place
    (B = 0: the output is unchanged).

    Args:
        model: the model to change.
        spec: the projections to adapt, and the rank, alpha and dropout.

    Raises:
        GPT2Error: if the model already has LoRA layers.
    """
    if model.config.lora is not None:
        raise GPT2Error("this model already has LoRA layers")
    for name, module in list(model.named_modules()):
        parent, _, child = name.rpartition(".")
        if (
            child in spec.targets
            and isinstance(module, nn.Linear)
            and parent.endswith((".attn", ".mlp"))
        ):
            setattr(
                model.get_submodule(parent),
                child,
                LoRALayer(module, spec.r, spec.alpha, spec.dropout),
            )
    model.config = replace(model.config, lora=spec)
    return model


def freeze_all_but_lora(model: GPT2, also: Iterable[str] = ()) -> GPT2:
    """Train only the LoRA matrices (and the parameters whose names start with one of `also`).

    Args:
        model: a model with LoRA layers, changed in place.
        also: name prefixes of other parameters to train, such as `"score."` for the head.

    Raises:
        GPT2Error: if the model has no LoRA layers.
    """
    also = tuple(also)
    if model.config.lora is None:
        raise GPT2Error(
            "the model has no LoRA layers to train: give its config a `lora` (LoRASpec)"
        )
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.endswith((".lora_A", ".lora_B")) or name.startswith(also)
    return model


def merge(model: GPT2) -> GPT2:
    """Fold every LoRA update into its weight and drop the LoRA layers: same logits, plain model.

    Args:
        model: a model with LoRA layers, changed in place.
    """
    merge_and_unload(model)
    model.config = replace(model.config, lora=None)
    return model


# --8<-- [end:lora]


# ----------------------------------------------------------------------------------------
# Loading a transformers checkpoint
# ----------------------------------------------------------------------------------------


def checkpoint_directory(name_or_path: str, seed: int = 0) -> Path:
    """A local directory holding `config.json` and safetensors weights for `name_or_path`.

    The embedded names (`tiny-gpt2`) map to their cached directory; a hub id such as
    `openai-community/gpt2` is fetched (config and safetensors only, never a pickle).

    Args:
        name_or_path: a local directory, an embedded name or a hub id.
        seed: the seed an embedded model is built under, the first time it is used.

    Raises:
        ModelLoadError: if a path is not a directory, or the hub cannot provide the id.
    """
    path = resolve_model_path(name_or_path, seed)
    if Path(path).expanduser().is_dir():
        return Path(path).expanduser()
    if looks_like_a_path(path):
        raise ModelLoadError(f"'{path}' is not a directory")
    try:
        return Path(
            snapshot_download(path, allow_patterns=["config.json", "*.safetensors", "*.json"])
        )
    except Exception as error:  # offline, unknown id, no permission: all one message
        raise ModelLoadError(
            f"could not fetch '{path}' from the hub ({type(error).__name__}); "
            f"pass a local GPT-2 checkpoint directory or tiny-gpt2"
        ) from error


def read_config(directory: Path, **overrides: Any) -> GPT2Config:
    """The `GPT2Config` of a transformers GPT-2 `config.json`; refuses any other architecture.

    Args:
        directory: the checkpoint directory.
        **overrides: `GPT2Config` fields that replace the checkpoint's, such as `num_labels`.

    Raises:
        ModelLoadError: if the directory has no `config.json`.
        GPT2Error: if the checkpoint is not a GPT-2.
    """
    file = directory / "config.json"
    if not file.is_file():
        raise ModelLoadError(f"'{directory}' has no config.json: not a transformers checkpoint")
    hf = json.loads(file.read_text())
    if hf.get("model_type") != "gpt2":
        raise GPT2Error(
            f"'{directory}' holds a {hf.get('model_type', 'unknown')} checkpoint "
            f"({', '.join(hf.get('architectures') or ['no architecture named'])}), not GPT-2"
        )
    fields = {
        "vocab_size": hf["vocab_size"],
        "n_positions": hf["n_positions"],
        "n_embd": hf["n_embd"],
        "n_layer": hf["n_layer"],
        "n_head": hf["n_head"],
        "layer_norm_epsilon": hf.get("layer_norm_epsilon", 1e-5),
        "dropout": hf.get("resid_pdrop", 0.1),
        "pad_token_id": hf.get("pad_token_id"),
    }
    return GPT2Config(**{**fields, **overrides})


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint's safetensors files,
    names without the `transformer.` prefix.

    Args:
        directory: the checkpoint directory.

    Raises:
        ModelLoadError: if the directory has no `.safetensors` file.
    """
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        found = ", ".join(p.name for p in directory.iterdir()) or "nothing"
        raise ModelLoadError(
            f"'{directory}' has no .safetensors weights (found {found}); pickled .bin "
            f"files are not loaded, since unpickling can run code"
        )
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(file))
    return {name.removeprefix("transformer."): tensor for name, tensor in state.items()}


# --8<-- [start:conv1d]
def copy_conv1d(linear: nn.Linear, weight: torch.Tensor, bias: torch.Tensor, name: str) -> None:
    """Copy a transformers `Conv1D` into an `nn.Linear`: the weight transposed.

    `Conv1D` computes `x @ W + b` with `W` stored `(in, out)`; `nn.Linear` computes
    `x @ W.T + b` with `W` stored `(out, in)`. The same numbers, laid out the other way round:
    copying without the transpose would fail on a non-square weight and silently compute
    garbage on a square one, so every shape is checked.

    Args:
        linear: the layer to fill.
        weight: the `Conv1D` weight, `(in, out)`.
        bias: the `Conv1D` bias, `(out,)`.
        name: the layer's name in the checkpoint, for the error message.

    Raises:
        GPT2Error: if the weight or the bias does not fit `linear`.
    """
    expected = (linear.in_features, linear.out_features)
    if tuple(weight.shape) != expected or tuple(bias.shape) != (linear.out_features,):
        raise GPT2Error(
            f"{name}: the checkpoint's weight is {tuple(weight.shape)} and bias "
            f"{tuple(bias.shape)}, this model needs {expected} and ({linear.out_features},)"
        )
    with torch.no_grad():
        linear.weight.copy_(weight.T)  # (in, out) -> (out, in)
        linear.bias.copy_(bias)


# --8<-- [end:conv1d]


def copy_tensor(target: torch.Tensor, source: torch.Tensor, name: str) -> None:
    """`target[...] = source` after checking that the shapes agree.

    Args:
        target: the parameter to fill.
        source: the checkpoint's tensor.
        name: the tensor's name, for the error message.

    Raises:
        GPT2Error: if the shapes differ.
    """
    if source.shape != target.shape:
        raise GPT2Error(
            f"{name}: the checkpoint has shape {tuple(source.shape)}, this model needs "
            f"{tuple(target.shape)}"
        )
    with torch.no_grad():
        target.copy_(source)


def base_linear(module: nn.Module) -> nn.Linear:
    """The `nn.Linear` itself, or the frozen base inside a `LoRALayer`.

    Args:
        module: an `nn.Linear` or a `LoRALayer`.
    """
    return module.base if isinstance(module, LoRALayer) else module


def load_weights(model: GPT2, state: dict[str, torch.Tensor]) -> GPT2:
    """Copy a transformers GPT-2 state dict into `model`, checking every shape on the way.

    `c_attn` holds q, k and v side by side, `(C, 3C)`: split along the output and copy each
    third into its own projection. `lm_head.weight` (when saved) is the token embedding again.

    Args:
        model: the model to fill.
        state: the checkpoint's tensors, names without the `transformer.` prefix.

    Raises:
        GPT2Error: if a tensor is missing, or `c_attn` has the wrong shape.
    """

    def get(name: str) -> torch.Tensor:
        if name not in state:
            raise GPT2Error(f"the checkpoint has no tensor {name!r}: not a GPT-2 state dict")
        return state[name]

    copy_tensor(model.wte.weight, get("wte.weight"), "wte.weight")
    copy_tensor(model.wpe.weight, get("wpe.weight"), "wpe.weight")
    width = model.config.n_embd
    for i, block in enumerate(model.h):
        prefix = f"h.{i}."
        for norm in ("ln_1", "ln_2"):
            copy_tensor(
                getattr(block, norm).weight,
                get(prefix + norm + ".weight"),
                prefix + norm + ".weight",
            )
            copy_tensor(
                getattr(block, norm).bias, get(prefix + norm + ".bias"), prefix + norm + ".bias"
            )
        weight, bias = get(prefix + "attn.c_attn.weight"), get(prefix + "attn.c_attn.bias")
        if tuple(weight.shape) != (width, 3 * width):
            raise GPT2Error(
                f"{prefix}attn.c_attn.weight is {tuple(weight.shape)}, this model needs "
                f"({width}, {3 * width})"
            )
        for k, part in enumerate("qkv"):  # columns [k C, (k + 1) C) of c_attn are q, k or v
            columns = slice(k * width, (k + 1) * width)
            copy_conv1d(
                base_linear(getattr(block.attn, part)),
                weight[:, columns],
                bias[columns],
                f"{prefix}attn.c_attn ({part})",
            )
        for ours, theirs in (
            (block.attn.out, "attn.c_proj"),
            (block.mlp.fc, "mlp.c_fc"),
            (block.mlp.proj, "mlp.c_proj"),
        ):
            copy_conv1d(
                base_linear(ours),
                get(prefix + theirs + ".weight"),
                get(prefix + theirs + ".bias"),
                prefix + theirs,
            )
    copy_tensor(model.ln_f.weight, get("ln_f.weight"), "ln_f.weight")
    copy_tensor(model.ln_f.bias, get("ln_f.bias"), "ln_f.bias")
    if model.score is not None and "score.weight" in state:
        copy_tensor(model.score.weight, state["score.weight"], "score.weight")
    return model


def from_pretrained(
    name_or_path: str = EMBEDDED_MODEL,
    num_labels: int | None = None,
    lora: LoRASpec | None = None,
    pad_token_id: int | None = None,
    dropout: float | None = None,
    seed: int = 0,
    label_names: Sequence[str] | None = None,
) -> GPT2:
    """This GPT-2 with the weights of a transformers GPT-2 checkpoint (local, embedded or hub).

    A classification head (`num_labels`) the checkpoint lacks and LoRA's `A` matrices are
    drawn under `seed`; `B` starts at zero, so the LoRA model computes what the base computes.

    Args:
        name_or_path: a local directory, an embedded name (`tiny-gpt2`) or a hub id.
        num_labels: the classes of a classification head; None: the language model.
        lora: the LoRA layers to add; None: none.
        pad_token_id: the padding token; None: the checkpoint's.
        dropout: the dropout probability everywhere; None: the checkpoint's.
        seed: the seed of the new weights (and of an embedded model built on first use).
        label_names: a name per class; None: `LABEL_0`, `LABEL_1`, ...

    Raises:
        CourseError: if `dropout` is outside [0, 1).
    """
    directory = checkpoint_directory(name_or_path, seed)
    overrides: dict[str, Any] = {
        "num_labels": num_labels,
        "label_names": tuple(label_names) if label_names is not None else None,
    }
    if pad_token_id is not None:
        overrides["pad_token_id"] = pad_token_id
    if dropout is not None:
        overrides["dropout"] = check_number("dropout", dropout, 0.0, 1.0, high_open=True)
    config = read_config(directory, **overrides)
    torch.manual_seed(seed)
    model = load_weights(GPT2(config), read_weights(directory))
    return add_lora(model, lora) if lora is not None else model


def load_classifier(
    name_or_path: str,
    task: str = "classification",
    num_labels: int = 2,
    label_names: Sequence[str] | None = None,
    seed: int = 0,
) -> tuple[GPT2, Any]:
    """`(model, tokenizer)` the way `peft_course.models.load_model` returns them, for `finetune`.

    Args:
        name_or_path: a local directory, an embedded name (`tiny-gpt2`) or a hub id.
        task: must be `"classification"`.
        num_labels: the number of classes of the head.
        label_names: a name per class; None: `LABEL_0`, `LABEL_1`, ...
        seed: the seed of the new head (and of an embedded model built on first use).

    Raises:
        GPT2Error: if `task` is not `"classification"`.
    """
    if task != "classification":
        raise GPT2Error(f"the from-scratch GPT-2 method fine-tunes classifiers, not {task!r}")
    tokenizer = load_tokenizer(name_or_path, seed)
    model = from_pretrained(
        name_or_path,
        num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id,
        seed=seed,
        label_names=label_names,
    )
    return model, tokenizer


def prepare_builtin_lora(
    model: GPT2,
    r: int = LORA.r,
    alpha: float = LORA.alpha,
    dropout: float = 0.0,
    targets: Sequence[str] | None = None,
) -> GPT2:
    """Built-in LoRA for classification: LoRA layers on `targets` (q, k, v), the head trains too.

    Args:
        model: a classifier, changed in place.
        r: the rank of the update.
        alpha: the numerator of the scaling `alpha / r`.
        dropout: the dropout probability on the input of the LoRA path.
        targets: the projections to adapt, from `PROJECTIONS`; None: q, k and v.
    """
    spec = LoRASpec(r, alpha, tuple(targets) if targets is not None else LoRASpec.targets, dropout)
    return freeze_all_but_lora(add_lora(model, spec), also=("score.",))


def max_logit_difference(
    model: GPT2,
    reference: nn.Module,
    input_ids: torch.Tensor,
    padding_mask: torch.Tensor | None = None,
) -> float:
    """Largest |logit difference| from a transformers model on the same weights, at real tokens.

    Args:
        model: this GPT-2; put in eval mode.
        reference: the transformers model; put in eval mode.
        input_ids: the token ids, `(B, T)`.
        padding_mask: `(B, T)`, 1 = real token, 0 = padding; None: every token is real.
    """
    model.eval()
    reference.eval()
    with torch.no_grad():
        ours = model(input_ids, attention_mask=padding_mask).logits
        theirs = reference(input_ids=input_ids, attention_mask=padding_mask).logits
    if ours.dim() == 3 and padding_mask is not None:
        real = padding_mask.bool()
        ours, theirs = ours[real], theirs[real]
    return (ours - theirs).abs().max().item()


def lora_counts(spec: LoRASpec, config: GPT2Config = GPT2Config()) -> tuple[int, int]:
    """`(trainable, frozen)` parameters of `config` (GPT-2 small) with `spec`'s LoRA,
    only LoRA training.

    Built on the meta device, so nothing is allocated.

    Args:
        spec: the LoRA to add.
        config: the architecture; its own `lora` is replaced by `spec`.
    """
    with torch.device("meta"):
        model = freeze_all_but_lora(GPT2(replace(config, lora=spec)))
    trainable, total = count_parameters(model)
    return trainable, total - trainable


def seed_project_lora() -> tuple[int, int]:
    """GPT-2 small with rank-8 LoRA on q, k and v: the seed project's 442,368 / 124,439,808."""
    return lora_counts(LoRASpec(r=8, alpha=16.0, targets=("q", "k", "v")))


def gpt2_parity_rows(name: str = EMBEDDED_MODEL, seed: int = 0) -> list[dict[str, str]]:
    """The from-scratch GPT-2 against transformers on the same weights:
    the largest |logit difference|.

    Language model and classifier, a batch without padding and one padded on both sides (the
    classifier pools each row's last real token; the LM is compared at the real tokens).

    Args:
        name: the GPT-2 model to compare on.
        seed: seeds the weights and the random token ids.
    """
    lm, tokenizer = load_model(name, task="causal-lm", seed=seed)
    ours = from_pretrained(name, seed=seed)
    ids = torch.randint(
        1, ours.config.vocab_size, (4, 24), generator=torch.Generator().manual_seed(seed)
    )
    padding = torch.ones_like(ids)
    padding[0, 16:], padding[1, :5] = 0, 0
    rows = [
        {
            "model": f"{name}, LM head",
            "batch": batch,
            "max abs logit difference": f"{max_logit_difference(ours, lm, ids, mask):.1e}",
        }
        for batch, mask in (("no padding", None), ("padded left and right", padding))
    ]
    with tempfile.TemporaryDirectory() as directory:
        classifier, _ = load_model(name, task="classification", num_labels=3, seed=seed)
        classifier.save_pretrained(directory)
        ours = from_pretrained(directory, num_labels=3, pad_token_id=tokenizer.pad_token_id)
    padded = ids.masked_fill(padding == 0, tokenizer.pad_token_id)
    rows.append(
        {
            "model": f"{name}, classifier (3 labels)",
            "batch": "padded left and right",
            "max abs logit difference": (
                f"{max_logit_difference(ours, classifier, padded, padding):.1e}"
            ),
        }
    )
    return rows


def gpt2_count_rows() -> list[dict[str, str]]:
    """Trainable and frozen parameters of GPT-2 small with LoRA built in, for a few placements."""
    rows = []
    for r, targets, note in (
        (8, ("q", "k", "v"), "the seed project's configuration"),
        (8, ("q", "v"), "the LoRA paper's GPT-2 choice"),
        (4, PROJECTIONS, "every projection"),
    ):
        trainable, frozen = lora_counts(LoRASpec(r=r, alpha=2.0 * r, targets=targets))
        rows.append(
            {
                "LoRA on": ", ".join(targets),
                "r": str(r),
                "trainable": f"{trainable:,}",
                "frozen": f"{frozen:,}",
                "note": note,
            }
        )
    return rows
