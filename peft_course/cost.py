"""What a training step costs: tokens a second, memory, FLOPs a token, and the share of the peak.

A run's time goes into matrix products. A weight matrix of N entries costs 2N FLOPs per token in
the forward pass (a multiply and an add per entry), 2N again in the backward pass to carry the
gradient down to the layer below, and 2N more for its own gradient, which only a trainable weight
needs. Full fine-tuning pays all three on every weight, the familiar 6N; LoRA pays the first two
on every frozen weight and the third only on its small A and B, so it saves about a third of the
compute at most, while it saves nearly all of the gradients and the optimizer's state.

The peak a run is compared with is measured, not looked up: a few large matrix products on this
machine, in the dtype training computes in, timed once and cached beside the built models.
Achieved FLOP/s over that peak is the run's utilisation (MFU, counting the real tokens only, so
that padding shows up as lost utilisation).
"""

from __future__ import annotations

import json
import platform
import resource
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from peft_course.files import atomic_write_text
from peft_course.tiny_gpt2 import cache_root

PEAK_FILE = "matmul-peak.json"
PEAK_SIZE = {"cpu": 1024, "cuda": 4096}  # square matrices: large enough to reach the peak


def matmul_parameters(model: nn.Module) -> tuple[int, int]:
    """`(total, trainable)` weights that multiply every token: those of `Linear` and `Conv1D`.

    Embedding tables are left out (a lookup costs no FLOPs), and so are biases and norms (one
    FLOP per output, not two per weight). A weight tied to an embedding and used as a `Linear`
    (a language model's head) is counted, once.

    Args:
        model: the model as it trains (its LoRA layers are `Linear`s too).
    """
    seen: set[int] = set()
    total = trainable = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if not isinstance(module, (nn.Linear, Conv1D)) or weight is None or id(weight) in seen:
            continue
        seen.add(id(weight))
        total += weight.numel()
        trainable += weight.numel() if weight.requires_grad else 0
    return total, trainable


def flops_per_token(total: int, trainable: int) -> int:
    """Training FLOPs per token: `2 N_total` forward, `2 N_total` backward through the
    activations, `2 N_trainable` for the weight gradients.

    The forward count `2N` per token is Kaplan et al., "Scaling Laws for Neural Language Models"
    (2020), section 2.1; its backward pass, twice the forward, is the two products a layer's
    backward does: the gradient of its input (needed below any trainable layer, so on every
    weight when adapters sit in every block) and the gradient of its weight (only where the
    weight trains). Full fine-tuning gives the usual `6N`; LoRA `4 N_total + 2 N_lora`.
    The attention's own products (scores and weighted sum, growing with the sequence) are not
    counted, and a run that trains only the top layers does less backward work than this.

    Args:
        total: the weights that multiply every token (`matmul_parameters`).
        trainable: those of them that train.
    """
    return 2 * total + 2 * total + 2 * trainable


def peak_key(device: torch.device, dtype: torch.dtype) -> str:
    """What a measured peak depends on: the device (the CPU's kernel set and threads), the dtype."""
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        capability, threads = torch.backends.cpu.get_cpu_capability(), torch.get_num_threads()
        where = f"{platform.processor() or platform.machine()} {capability}, "
        where += f"{threads} thread{'s' if threads != 1 else ''}"
    return f"{where}, {str(dtype).removeprefix('torch.')}"


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, repeats: int = 10) -> float:
    """FLOP/s of the best of `repeats` rounds of square matrix products on `device` (seconds).

    Args:
        device: where to multiply.
        dtype: what to multiply in (float32, or bfloat16 for a run under bf16 autocast).
        repeats: rounds of four products each; the fastest is kept.
    """
    n = PEAK_SIZE.get(device.type, 1024)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(device, dtype)
    b = torch.randn(n, n, generator=generator).to(device, dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first round warms up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 4 * 2 * n**3 / best


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32) -> float:
    """This machine's matrix-product FLOP/s on `device` in `dtype`, measured once and cached.

    The figure is kept in `matmul-peak.json` in the course cache (`$PEFT_COURSE_CACHE`), one per
    device, kernel set, thread count and dtype. The fastest of a few rounds is kept, which rides
    out a short burst of other work but not a machine loaded throughout: delete the file to
    measure again on a quiet one.

    Args:
        device: the device that trains.
        dtype: the dtype its products run in.
    """
    path = cache_root() / PEAK_FILE
    key = peak_key(device, dtype)
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if not isinstance(cached, dict) or not isinstance(cached.get(key), (int, float)):
        cached = cached if isinstance(cached, dict) else {}
        cached[key] = measure_matmul_peak(device, dtype)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(cached, indent=1, sort_keys=True) + "\n")
    return float(cached[key])


def cached_peaks() -> dict[str, float]:
    """The peaks measured on this machine so far (`peft-course info` shows them)."""
    try:
        cached = json.loads((cache_root() / PEAK_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return cached if isinstance(cached, dict) else {}


def peak_memory(device: torch.device) -> tuple[int, str]:
    """`(bytes, what)`: the most memory held so far, and what was measured.

    On CUDA it is `torch.cuda.max_memory_allocated` (reset by `reset_peak_memory`), the tensors
    alone; on the CPU the process's peak resident set (`getrusage`), everything the process
    ever held, the Python libraries included, so runs compare only within one process kind.

    Args:
        device: the device that trained.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "CUDA max_memory_allocated"
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib * 1024, "peak RSS of the process"


def reset_peak_memory(device: torch.device) -> None:
    """Start a run's CUDA peak from now (the CPU's resident-set peak cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the optimizer's state tensors (AdamW: two moments per trainable weight)."""
    return sum(
        value.numel() * value.element_size()
        for state in optimizer.state.values()
        for value in state.values()
        if isinstance(value, torch.Tensor)
    )


@dataclass(frozen=True)
class RunCost:
    """What a training run cost, beside its history.

    Attributes:
        real_tokens_per_second: non-padding tokens trained on per second of training steps
            (validation time left out).
        padded_tokens_per_second: tokens the model computed on, padding included.
        padding_share: the share of computed tokens that were padding.
        peak_memory_bytes: see `memory_measure`.
        memory_measure: what `peak_memory_bytes` measured (`peak_memory`).
        optimizer_state_bytes: the optimizer's state at the end.
        matmul_parameters: weights that multiply every token (`matmul_parameters`).
        trainable_matmul_parameters: those of them that train.
        flops_per_token: `flops_per_token` of the two.
        achieved_flops_per_second: `flops_per_token` x real tokens per second.
        peak_flops_per_second: this machine's measured matrix-product peak (`matmul_peak`).
        utilisation: achieved over peak (MFU), between 0 and 1.
    """

    real_tokens_per_second: float
    padded_tokens_per_second: float
    padding_share: float
    peak_memory_bytes: int
    memory_measure: str
    optimizer_state_bytes: int
    matmul_parameters: int
    trainable_matmul_parameters: int
    flops_per_token: int
    achieved_flops_per_second: float
    peak_flops_per_second: float
    utilisation: float

    def as_dict(self) -> dict[str, float | int | str]:
        """The record as `cost.json` keeps it."""
        return asdict(self)

    def summary(self) -> str:
        """One line for a command's output."""
        return (
            f"cost: {self.real_tokens_per_second:,.0f} real tok/s "
            f"({self.padded_tokens_per_second:,.0f} padded), "
            f"{self.flops_per_token / 1e6:,.2f} MFLOP/token, "
            f"{self.achieved_flops_per_second / 1e9:,.2f} GFLOP/s of a measured "
            f"{self.peak_flops_per_second / 1e9:,.1f} (MFU {self.utilisation:.1%}), "
            f"peak memory {self.peak_memory_bytes / 2**20:,.0f} MiB, "
            f"optimizer state {self.optimizer_state_bytes / 2**20:,.2f} MiB"
        )


def run_cost(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    real_tokens: float,
    padded_tokens: float,
    seconds: float,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> RunCost:
    """The cost record of a finished run.

    Args:
        model: the model as it trained.
        optimizer: its optimizer.
        real_tokens: non-padding tokens trained on.
        padded_tokens: tokens computed on, padding included.
        seconds: the time of the training steps (validation left out).
        device: the device that trained.
        dtype: the dtype its products ran in (bfloat16 under bf16 autocast).
    """
    seconds = max(seconds, 1e-9)
    total, trainable = matmul_parameters(model)
    per_token = flops_per_token(total, trainable)
    achieved = per_token * real_tokens / seconds
    peak = matmul_peak(device, dtype)
    memory, measure = peak_memory(device)
    return RunCost(
        real_tokens_per_second=real_tokens / seconds,
        padded_tokens_per_second=padded_tokens / seconds,
        padding_share=1 - real_tokens / padded_tokens if padded_tokens else 0.0,
        peak_memory_bytes=memory,
        memory_measure=measure,
        optimizer_state_bytes=optimizer_state_bytes(optimizer),
        matmul_parameters=total,
        trainable_matmul_parameters=trainable,
        flops_per_token=per_token,
        achieved_flops_per_second=achieved,
        peak_flops_per_second=peak,
        utilisation=achieved / peak,
    )
