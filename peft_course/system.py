"""What this machine can do: library versions, the accelerator, and bitsandbytes 4-bit support.

`peft-course info` prints this; the QLoRA chapter asks `bnb_4bit_support()` before it
quantizes anything, so that a missing capability is reported in words, not as a traceback.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import logging
import platform
import warnings
from typing import Any

import torch

from peft_course.errors import CourseError, describe

LIBRARIES = (
    "torch",
    "transformers",
    "peft",
    "trl",
    "bitsandbytes",
    "datasets",
    "accelerate",
    "sympy",
)


KERNELS_LINE = "Failed to load CPU gemm_4bit_forward from kernels-community"


class _DropLine(logging.Filter):
    """Drops the log records that start with `start`."""

    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


def quiet_library_noise() -> None:
    """Silence what the libraries print that a learner can do nothing about: bitsandbytes'
    line about an optional CPU kernel package, logged at every import on an AVX512-BF16 CPU,
    and the FutureWarnings and DeprecationWarnings of transformers, peft and trl.

    The command line and the grader call it; a learner's own scripts keep every warning.
    """
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    if not any(isinstance(f, _DropLine) for f in logger.filters):
        logger.addFilter(_DropLine(KERNELS_LINE))
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def library_versions() -> dict[str, str]:
    """Installed version of each library the course uses ("missing" when absent)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def check_device(requested: str | torch.device) -> torch.device:
    """The device `requested` names, if this machine has it;
    else a `CourseError` saying what it has.

    `torch.device` accepts `cuda:99` on a machine with one GPU, and `cuda` on one with none; the
    mistake would surface later as an internal CUDA error. Here it is one line, up front.

    Args:
        requested: a device name such as `cpu`, `cuda`, `cuda:1` or `mps`, or a `torch.device`.

    Raises:
        CourseError: if `requested` is not a device name, names an unknown device or one this
            machine does not have, or a device type the course does not run on.
    """
    if not isinstance(requested, (str, torch.device)):
        raise CourseError(
            f"device must be a name such as 'cpu' or 'cuda:0', got {describe(requested)}"
        )
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise CourseError(
            f"unknown device {str(requested)!r}: use cpu, cuda or cuda:N (N counts from 0)"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = (
                "a CPU-only build of torch"
                if torch.version.cuda is None
                else "no CUDA GPU is visible"
            )
            raise CourseError(
                f"device {str(requested)!r} asked for, but CUDA is not available here ({build}); "
                f"use cpu"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise CourseError(
                f"device {str(requested)!r} does not exist: this machine has {count} CUDA "
                f"device(s), cuda:0 to cuda:{count - 1}"
            )
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise CourseError(
                f"device {str(requested)!r} asked for, but "
                "Apple's MPS is not available here; use cpu"
            )
    elif device.type != "cpu":
        raise CourseError(
            f"device {str(requested)!r} is not one the course runs on: use cpu, cuda or cuda:N"
        )
    return device


def pick_device(requested: str | torch.device | None = None) -> torch.device:
    """`requested` (checked: see `check_device`), else CUDA when present, else the CPU.

    Args:
        requested: the device asked for; None (or an empty name) picks one.
    """
    if requested:
        return check_device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def use_bf16(device: torch.device, requested: bool | None) -> bool:
    """bf16 autocast only on a CUDA device that supports it (never on the CPU by default).

    Args:
        device: the device that trains or evaluates.
        requested: True or False forces the choice; None decides by `device`.
    """
    if requested is not None:
        return requested
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def bnb_4bit_support(device: str | None = None) -> tuple[bool, str]:
    """Whether bitsandbytes can run a 4-bit NF4 layer here, and why not if it cannot.

    It quantizes a small layer and runs a forward pass on `device` (CUDA if present, else
    the CPU): an import that succeeds is not proof that the kernels run.

    Args:
        device: the device to try; None tries CUDA if present, else the CPU.

    Returns:
        Whether the layer ran, and a sentence saying so (or what failed and what to do).
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        import bitsandbytes as bnb
    except Exception as error:  # ImportError, or a broken native library
        return (
            False,
            f"bitsandbytes cannot be imported ({error}); "
            "install it with `pip install bitsandbytes`",
        )
    try:
        layer = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.bfloat16, quant_type="nf4").to(device)
        with torch.no_grad():
            layer(torch.randn(2, 64, device=device, dtype=torch.bfloat16))
    except Exception as error:
        return False, (
            f"bitsandbytes {bnb.__version__} cannot run 4-bit NF4 on '{device}' "
            f"({type(error).__name__}: {error}); use a CUDA "
            "GPU, or an x86-64 CPU with bitsandbytes>=0.46"
        )
    return True, f"bitsandbytes {bnb.__version__}: 4-bit NF4 runs on '{device}'"


def provenance(command: str) -> str:
    """One Markdown line saying what produced a results page:
    the command, the CPU's kernel set, torch.

    PyTorch picks its CPU kernels by instruction set (`default`, `avx2`, `avx512`, ...), and
    sums round differently in each, so a figure is only reproduced exactly on the same capability
    (`ATEN_CPU_CAPABILITY` forces one, to imitate another machine).

    Args:
        command: the command line that produced the page, shown in code.
    """
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    return (
        f"*Made by `{command}` on {datetime.date.today().isoformat()} on {device} (CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} "
        f"thread{'s' if torch.get_num_threads() != 1 else ''}), torch "
        f"{torch.__version__}, transformers {library_versions()['transformers']}.*"
    )


def system_info() -> dict[str, Any]:
    """Python, library versions, CUDA devices and 4-bit support, as one dictionary."""
    cuda = torch.cuda.is_available()
    works, why = bnb_4bit_support()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        **library_versions(),
        "cpu capability": torch.backends.cpu.get_cpu_capability(),
        "cuda": torch.cuda.get_device_name(0) if cuda else "not available",
        "bf16 on GPU": bool(cuda and torch.cuda.is_bf16_supported()),
        "4-bit (bitsandbytes)": why if works else f"no: {why}",
    }
