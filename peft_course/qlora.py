"""QLoRA: LoRA on top of a GPT-2 whose block weights are stored in 4-bit NF4.

QLoRA (Dettmers et al., 2023) keeps LoRA's recipe - a frozen base, small trained adapters -
and shrinks the frozen base: every linear weight of the transformer blocks is quantized to
4-bit NormalFloat (NF4) by bitsandbytes when the model is loaded, and dequantized on the fly,
block by block, for each matrix product. Gradients flow *through* the 4-bit weights into the
adapters; the 4-bit weights themselves never change.

Two steps, because quantization happens at load time:

* `load_qlora_model` loads the model with `nf4_config()` (NF4, double quantization, bf16
  compute, the classification head left unquantized). It takes the same arguments as
  `peft_course.models.load_model`, so it can stand in for it when a run is trained or reloaded.
* `prepare_qlora` runs peft's `prepare_model_for_kbit_training` (freeze, fp32 norms and
  embeddings, gradient checkpointing) and puts peft LoRA adapters on top, with a trained copy
  of the head (`task_type=SEQ_CLS`).

What a 4-bit weight occupies is counted here, once: the bits per weight as exact `sympy`
formulas (`nf4_bits_per_parameter`, which the counting chapter tabulates), the bytes of a whole
tensor (`nf4_bytes`), and what bitsandbytes really stores (`quant_storage`, `stored_quant_bytes`).
The rest of the module measures what that buys: model bytes for full, LoRA and QLoRA, the
theoretical weight bytes of GPT-2 small to XL, and accuracy next to LoRA on the same data.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sympy as sp
import torch
from torch import nn
from transformers import BitsAndBytesConfig, GPT2Config, GPT2ForSequenceClassification
from transformers.pytorch_utils import Conv1D

from peft_course.errors import CourseError
from peft_course.methods import check_lora_options, prepare_full, prepare_lora
from peft_course.models import DEFAULT_MODEL, ModelLoadError, Task, count_parameters, load_model
from peft_course.registry import METHODS
from peft_course.settings import LORA
from peft_course.system import bnb_4bit_support

# Modules that must stay in full precision: the classification heads (GPT-2's `score`,
# BERT's `classifier`) and the language-model head. Listing them replaces transformers' own
# guess (tied weights and "the last parameter"), which happens to spare `score` too.
HEAD_MODULES = ("score", "classifier", "lm_head")
QLORA_LEARNING_RATE = METHODS["qlora"].learning_rate
NF4_BLOCKSIZE = 64  # weights per absmax scale (bitsandbytes' default for 4-bit)
DOUBLE_QUANT_BLOCKSIZE = 256  # absmax scales per second-level fp32 scale


class QLoRAUnavailableError(ModelLoadError):
    """bitsandbytes cannot run 4-bit layers here (not installed, or an unsupported device)."""


# --8<-- [start:config]
def default_compute_dtype(device: str | None = None) -> torch.dtype:
    """bf16 on the CPU and on GPUs that have it; fp32 on older GPUs - never fp16.

    GPT-2's activations overflow fp16's range (max 65,504) and turn into inf/nan; bf16 has
    fp32's range. A GPU without bf16 (T4, V100) gets fp32: slower, but correct.

    Args:
        device: the device to compute on (`"cpu"`, `"cuda"`, ...); None: CUDA when present,
            else the CPU.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        return torch.float32
    return torch.bfloat16


def nf4_config(
    compute_dtype: torch.dtype = torch.bfloat16,
    double_quant: bool = True,
    skip_modules: tuple[str, ...] = HEAD_MODULES,
) -> BitsAndBytesConfig:
    """The QLoRA quantization config, every choice spelled out.

    The library defaults are fp4, no double quantization and fp32 compute; QLoRA is NF4
    (4-bit levels placed at the quantiles of a normal distribution, where pretrained weights
    lie), double quantization (the per-block scales are themselves quantized to 8 bits) and
    bf16 matrix products.

    Args:
        compute_dtype: the dtype of the matrix products: bf16 or fp32 (fp16 is refused).
        double_quant: whether the per-block scales are quantized too.
        skip_modules: names of the modules left unquantized (the heads).

    Raises:
        CourseError: if `compute_dtype` is `torch.float16`.
    """
    if compute_dtype == torch.float16:
        raise CourseError(
            "fp16 compute overflows GPT-2's activations: use torch.bfloat16 or torch.float32"
        )
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=list(skip_modules),  # despite the name, also read for 4-bit
    )


# --8<-- [end:config]


# --8<-- [start:load]
def require_4bit(device: str | None = None) -> None:
    """Raise `QLoRAUnavailableError`, saying what to install or which device to use, unless
    bitsandbytes runs a 4-bit NF4 layer on `device` (CUDA if present, else the CPU).

    Args:
        device: the device to try a 4-bit layer on; None: CUDA if present, else the CPU.

    Raises:
        QLoRAUnavailableError: if bitsandbytes cannot run 4-bit layers there.
    """
    works, why = bnb_4bit_support(device)
    if not works:
        raise QLoRAUnavailableError(
            f"QLoRA cannot run here: {why}. It needs bitsandbytes 4-bit layers: a CUDA GPU, or an "
            f"x86-64 CPU with `pip install -U 'bitsandbytes>=0.46'`; or train the same adapters "
            f"unquantized with --method lora."
        )


def load_qlora_model(
    name_or_path: str = DEFAULT_MODEL,
    task: Task = "classification",
    num_labels: int = 2,
    label_names: list[str] | None = None,
    seed: int = 0,
    compute_dtype: torch.dtype | None = None,
) -> tuple[nn.Module, Any]:
    """`load_model` with the block weights quantized to NF4 while they are read.

    Same arguments as `peft_course.models.load_model`, so it replaces it wherever a QLoRA
    model is built: for training, and again when a saved run is reloaded. bitsandbytes
    places the model on the first GPU when there is one, else on the CPU.

    Args:
        name_or_path: a hub id, a local directory or an embedded name such as `tiny-gpt2`.
        task: `"classification"` or `"causal-lm"`.
        num_labels: the number of classes of a classification head.
        label_names: a name for each class; None leaves them unnamed.
        seed: the seed a head that the checkpoint lacks is drawn under.
        compute_dtype: the dtype of the matrix products; None: `default_compute_dtype()`.

    Returns:
        `(model, tokenizer)`, as `load_model` returns them.

    Raises:
        QLoRAUnavailableError: if bitsandbytes cannot run 4-bit layers here.
    """
    require_4bit()
    config = nf4_config(compute_dtype or default_compute_dtype())
    model, tokenizer = load_model(
        name_or_path, task, num_labels, label_names, seed, quantization_config=config
    )
    keep_training_layout(model)
    return model, tokenizer


# --8<-- [end:load]


def keep_training_layout(model: nn.Module) -> None:
    """Stop bitsandbytes from repacking 4-bit weights into its CPU inference-only layout.

    On a CPU with AVX512-BF16, bitsandbytes 0.50 repacks a `Linear4bit` weight the first time
    the layer runs in eval mode without gradients, and does not undo it when training resumes:
    the next training step then fails with "a view of a leaf Variable that requires grad is
    being used in an in-place operation". Validating between epochs is exactly that pattern,
    so the repacking (a CPU inference speed-up only) is switched off.

    Args:
        model: a model from `load_qlora_model`, changed in place.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def quantized_modules(model: nn.Module) -> list[str]:
    """Names of the modules that hold 4-bit weights (`bitsandbytes.nn.Linear4bit`).

    Args:
        model: the model to search.
    """
    import bitsandbytes as bnb

    return [name for name, module in model.named_modules() if isinstance(module, bnb.nn.Linear4bit)]


# --8<-- [start:prepare]
def prepare_qlora(
    model: nn.Module,
    r: int = LORA.r,
    alpha: float = LORA.alpha,
    dropout: float = 0.0,
    targets: list[str] | None = None,
    gradient_checkpointing: bool = True,
) -> nn.Module:
    """Make a 4-bit model from `load_qlora_model` trainable with LoRA.

    `prepare_model_for_kbit_training` freezes everything, casts the parameters that are not
    4-bit (embeddings, layer norms, the head) to fp32 for stable updates, and - when asked -
    turns on gradient checkpointing: activations are recomputed in the backward pass instead
    of stored. Then the same peft LoRA as method `lora`: adapters on `targets` (peft's
    default `c_attn` for GPT-2) and a trained copy of the head.

    Args:
        model: a 4-bit model from `load_qlora_model`.
        r: the LoRA rank.
        alpha: the numerator of the update's scale `alpha / r`.
        dropout: the dropout probability on the input of the LoRA path.
        targets: names of the modules to adapt; None: peft's default.
        gradient_checkpointing: whether to recompute activations in the backward pass.

    Returns:
        peft's model wrapping `model`.

    Raises:
        CourseError: if a setting is of the wrong type or range, or `model` has no 4-bit layers.
    """
    from peft import prepare_model_for_kbit_training  # peft takes seconds to import: only when used

    check_lora_options(
        r=r,
        alpha=alpha,
        dropout=dropout,
        targets=targets,
        gradient_checkpointing=gradient_checkpointing,
    )
    if not quantized_modules(model):
        raise CourseError(
            "the model has no 4-bit layers: load it with peft_course.qlora.load_qlora_model"
        )
    # transformers renamed *gradient_checkpointing*; peft uses the old names
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
        if gradient_checkpointing:
            # a cache is useless in training and clashes with recomputation
            model.config.use_cache = False
        return prepare_lora(model, r=r, alpha=alpha, dropout=dropout, targets=targets)


# --8<-- [end:prepare]


# ---------------------------------------------------------------------------------------------
# NF4 storage: what a 4-bit weight occupies, by formula and as bitsandbytes stores it
# ---------------------------------------------------------------------------------------------

# --8<-- [start:nf4_formulas]
B, B2 = sp.symbols("B B_2", integer=True, positive=True)  # first- and second-level block sizes
NF4_BITS = 4 + sp.Integer(32) / B  # a 4-bit code per weight + one fp32 absmax per block
NF4_DOUBLE_QUANT_BITS = 4 + sp.Integer(8) / B + sp.Integer(32) / (B * B2)  # absmax in 8 bits


def nf4_bits_per_parameter(
    double_quant: bool, blocksize: int = NF4_BLOCKSIZE, blocksize2: int = DOUBLE_QUANT_BLOCKSIZE
) -> sp.Rational:
    """Bits one weight occupies in NF4: its code plus its share of the block scales (exact).

    Args:
        double_quant: whether the block scales are quantized to 8 bits too.
        blocksize: weights per first-level block `B` (one scale each).
        blocksize2: first-level scales per second-level block `B_2` (with `double_quant`).
    """
    formula = NF4_DOUBLE_QUANT_BITS if double_quant else NF4_BITS
    return formula.subs({B: blocksize, B2: blocksize2})


# --8<-- [end:nf4_formulas]


@dataclass(frozen=True)
class QuantStorage:
    """What bitsandbytes stores for one 4-bit weight, in bytes.

    Attributes:
        shape: the weight's logical shape.
        packed_shape: the shape of the packed tensor.
        packed_dtype: the dtype of the packed tensor, without `torch.` (e.g. `uint8`).
        parameters: the number of weights.
        packed_bytes: the packed codes: two 4-bit codes per byte.
        absmax_bytes: one scale per block (fp32, or uint8 with double quantization).
        nested_absmax_bytes: double quantization: one fp32 scale per block of scales.
        table_bytes: code tables and offset: a constant per tensor.
    """

    shape: tuple[int, ...]
    packed_shape: tuple[int, ...]
    packed_dtype: str
    parameters: int
    packed_bytes: int
    absmax_bytes: int
    nested_absmax_bytes: int
    table_bytes: int = field(default=0)

    @property
    def data_bytes(self) -> int:
        """The packed codes and their scales: what grows with the weight (what `nf4_bytes`
        and the bits formulas count)."""
        return self.packed_bytes + self.absmax_bytes + self.nested_absmax_bytes

    @property
    def bits_per_parameter(self) -> float:
        """Bits per weight without the per-tensor constants (what the formula predicts)."""
        return 8 * self.data_bytes / self.parameters

    @property
    def total_bytes(self) -> int:
        """Everything stored for this weight, per-tensor tables included."""
        return self.data_bytes + self.table_bytes


def _nbytes(tensor: torch.Tensor | None) -> int:
    return 0 if tensor is None else tensor.numel() * tensor.element_size()


def quant_storage(packed: torch.Tensor, state) -> QuantStorage:
    """Read the storage of a packed 4-bit tensor and its bitsandbytes `QuantState`.

    Args:
        packed: the packed tensor, as `quantize_4bit` returns it (or a `Linear4bit`'s weight).
        state (bitsandbytes.functional.QuantState): its quantization state.
    """
    nested = state.state2 if state.nested else None
    # the code tables, and with double quantization the offset (4 bytes)
    tables = _nbytes(state.code) + (_nbytes(nested.code) + 4 if nested is not None else 0)
    return QuantStorage(
        tuple(state.shape),
        tuple(packed.shape),
        str(packed.dtype).replace("torch.", ""),
        int(torch.Size(state.shape).numel()),
        _nbytes(packed),
        _nbytes(state.absmax),
        _nbytes(nested.absmax) if nested is not None else 0,
        tables,
    )


def quantize_nf4(
    weight: torch.Tensor, double_quant: bool, blocksize: int = NF4_BLOCKSIZE
) -> QuantStorage:
    """Quantize one weight to NF4 with bitsandbytes and report what it stores.

    Args:
        weight: the weight to quantize (a detached fp32 copy is quantized).
        double_quant: whether the block scales are quantized too (`compress_statistics`).
        blocksize: weights per absmax scale.
    """
    from bitsandbytes.functional import quantize_4bit

    packed, state = quantize_4bit(
        weight.detach().float(),
        blocksize=blocksize,
        quant_type="nf4",
        compress_statistics=double_quant,
    )
    return quant_storage(packed, state)


# --8<-- [start:bytes]
def nf4_bytes(weights: int, double_quant: bool = True, blocksize: int = NF4_BLOCKSIZE) -> int:
    """Bytes bitsandbytes stores for `weights` numbers in NF4, scales included.

    Two 4-bit codes share a byte; each block of 64 weights has one absmax scale: fp32 (4 bytes),
    or with double quantization 1 byte plus one fp32 scale per 256 blocks. Per weight that is
    4.5 bits without and about 4.127 bits with double quantization (the QLoRA paper's numbers).
    The 16-entry NF4 code book and the 256-entry 8-bit one (shared, a few kB) are left out.

    Args:
        weights: the number of weights.
        double_quant: whether the absmax scales are quantized to 8 bits too.
        blocksize: weights per absmax scale.
    """
    blocks = math.ceil(weights / blocksize)
    packed = math.ceil(weights / 2)
    if not double_quant:
        return packed + 4 * blocks
    return packed + blocks + 4 * math.ceil(blocks / DOUBLE_QUANT_BLOCKSIZE)


def stored_quant_bytes(model: nn.Module) -> int:
    """The same count read from the model: packed weights plus the absmax tensors of every
    4-bit layer (`get_memory_footprint` counts only the packed weights), as `quant_storage`
    reads them off each layer's `QuantState`.

    Args:
        model: a model with 4-bit layers.
    """
    import bitsandbytes as bnb

    return sum(
        quant_storage(module.weight, module.weight.quant_state).data_bytes
        for module in model.modules()
        if isinstance(module, bnb.nn.Linear4bit)
    )


# --8<-- [end:bytes]


def load_quantized_gpt2(
    double_quant: bool = True, n_layer: int = 12, labels: int = 2, seed: int = 0
) -> nn.Module:
    """GPT-2 small (random weights, `n_layer` blocks) saved and reloaded in 4-bit NF4.

    transformers turns each `Conv1D` projection into a bitsandbytes `Linear4bit`; the
    embeddings, LayerNorms, biases and `score` stay in higher precision.

    Args:
        double_quant: whether the block scales are quantized too (`bnb_4bit_use_double_quant`).
        n_layer: the number of transformer blocks.
        labels: the number of classes of the `score` head.
        seed: the `torch.manual_seed` the random weights are drawn under.
    """
    from transformers.utils import logging as hf_logging

    torch.manual_seed(seed)
    model = GPT2ForSequenceClassification(GPT2Config(n_layer=n_layer, num_labels=labels))
    config = nf4_config(torch.bfloat16, double_quant)
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with tempfile.TemporaryDirectory() as directory:
            model.save_pretrained(directory)  # safetensors
            return GPT2ForSequenceClassification.from_pretrained(
                directory, quantization_config=config, use_safetensors=True
            )
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


# ---------------------------------------------------------------------------------------------
# What it saves: weight bytes by arithmetic (GPT-2 small to XL) and measured (GPT-2 small)
# ---------------------------------------------------------------------------------------------

GPT2_SIZES = {  # name: (width, blocks, heads)
    "gpt2": (768, 12, 12),
    "gpt2-medium": (1024, 24, 16),
    "gpt2-large": (1280, 36, 20),
    "gpt2-xl": (1600, 48, 25),
}
MB = 1e6


def gpt2_config(name: str, num_labels: int = 2) -> GPT2Config:
    """The architecture of one GPT-2 size (vocabulary 50,257, 1,024 positions).

    Args:
        name: a key of `GPT2_SIZES`: `"gpt2"`, `"gpt2-medium"`, `"gpt2-large"` or `"gpt2-xl"`.
        num_labels: the number of classes of the classification head.

    Raises:
        CourseError: if `name` is not a GPT-2 size.
    """
    if name not in GPT2_SIZES:
        raise CourseError(f"unknown GPT-2 size '{name}': choose one of {list(GPT2_SIZES)}")
    width, blocks, heads = GPT2_SIZES[name]
    return GPT2Config(
        n_embd=width, n_layer=blocks, n_head=heads, num_labels=num_labels, pad_token_id=50256
    )


def weight_split(config: GPT2Config) -> dict[str, int]:
    """Parameter counts of a GPT-2 classifier, split into what QLoRA quantizes (the `Conv1D`
    weights of the blocks) and what it keeps (embeddings, biases, norms, head).

    The model is built on the meta device: shapes only, no memory, so GPT-2 XL costs nothing.

    Args:
        config: the architecture to count.

    Returns:
        `total`, `quantized` and `embeddings` parameters, and `nf4_bytes` of the quantized ones.
    """
    with torch.device("meta"):
        model = GPT2ForSequenceClassification(config)
    matrices = [m.weight.numel() for m in model.modules() if isinstance(m, Conv1D)]
    return {
        "total": sum(p.numel() for p in model.parameters()),
        "quantized": sum(matrices),
        "embeddings": sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding)),
        "nf4_bytes": sum(nf4_bytes(n) for n in matrices),  # each matrix is quantized on its own
    }


def theoretical_rows() -> list[dict[str, str]]:
    """Weight megabytes of each GPT-2 size: fp32, bf16, and QLoRA's NF4 blocks (scales
    included) with the rest in fp32 (as `prepare_model_for_kbit_training` leaves it) or bf16."""
    rows = []
    for name in GPT2_SIZES:
        split = weight_split(gpt2_config(name))
        rest = split["total"] - split["quantized"]
        fp32, bf16 = 4 * split["total"], 2 * split["total"]
        qlora32, qlora16 = split["nf4_bytes"] + 4 * rest, split["nf4_bytes"] + 2 * rest
        rows.append(
            {
                "model": name,
                "parameters": f"{split['total'] / 1e6:,.1f} M",
                "not quantized (of it, embeddings)": (
                    f"{rest / split['total']:.0%} ({split['embeddings'] / 1e6:.1f} M)"
                ),
                "fp32 MB": f"{fp32 / MB:,.0f}",
                "bf16 MB": f"{bf16 / MB:,.0f}",
                "QLoRA MB (rest fp32)": f"{qlora32 / MB:,.0f}",
                "QLoRA MB (rest bf16)": f"{qlora16 / MB:,.0f}",
                "fp32 / QLoRA": f"{fp32 / qlora32:.1f}x",
                "bf16 / QLoRA (bf16 rest)": f"{bf16 / qlora16:.1f}x",
            }
        )
    return rows


def save_random_gpt2(
    directory: str | Path, name: str = "gpt2", seed: int = 0, num_labels: int = 2
) -> Path:
    """Write a randomly initialised GPT-2 classifier of size `name` to `directory` (safetensors),
    so that it can be loaded - and quantized - like a downloaded checkpoint.

    Args:
        directory: where to save the checkpoint.
        name: a GPT-2 size, as in `gpt2_config`.
        seed: the `torch.manual_seed` the weights are drawn under.
        num_labels: the number of classes of the classification head.

    Returns:
        `directory`, as a `Path`.
    """
    torch.manual_seed(seed)
    model = GPT2ForSequenceClassification(gpt2_config(name, num_labels))
    model.save_pretrained(directory)
    return Path(directory)


def qlora_footprint_rows(name: str = "gpt2", seed: int = 0) -> list[dict[str, str]]:
    """`get_memory_footprint()` of GPT-2 `name` (random weights) as full, LoRA and QLoRA models.

    LoRA and QLoRA use r=8 on `c_attn` plus the head copy. The QLoRA row adds the
    quantization scales, which `get_memory_footprint` does not see, in its own column.

    Args:
        name: the GPT-2 configuration, built with random weights.
        seed: seeds the random weights.
    """
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        save_random_gpt2(directory, name, seed)
        for method in ("full", "LoRA", "QLoRA"):
            if method == "QLoRA":
                require_4bit("cpu")
                model = GPT2ForSequenceClassification.from_pretrained(
                    directory, quantization_config=nf4_config(torch.bfloat16), device_map="cpu"
                )
                model = prepare_qlora(model, r=8, alpha=16)
                scales = stored_quant_bytes(model) - sum(
                    p.numel() for p in model.parameters() if p.dtype == torch.uint8
                )
            else:
                model = GPT2ForSequenceClassification.from_pretrained(directory)
                model = (
                    prepare_full(model) if method == "full" else prepare_lora(model, r=8, alpha=16)
                )
                scales = 0
            trainable, total = count_parameters(model)
            footprint = model.get_memory_footprint()
            rows.append(
                {
                    "method": method,
                    "trainable": f"{trainable:,}",
                    "parameters": f"{total:,}",
                    "get_memory_footprint MB": f"{footprint / MB:,.1f}",
                    "+ NF4 scales MB": f"{scales / MB:,.1f}",
                    "vs full": f"{footprint / rows[0]['_bytes']:.0%}" if rows else "100%",
                    "_bytes": footprint,
                }
            )
            del model
    for row in rows:
        row.pop("_bytes")
    return rows
