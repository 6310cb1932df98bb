"""What this machine can do: library versions, the accelerator, and bitsandbytes 4-bit support.

`peft-course info` prints this; the QLoRA chapter asks `bnb_4bit_support()` before it
quantizes anything, so that a missing capability is reported in words, not as a traceback.
"""

from __future__ import annotations

import importlib.metadata
import platform
from typing import Any

import torch

LIBRARIES = ("torch", "transformers", "peft", "trl", "bitsandbytes", "datasets", "accelerate", "sympy")


def library_versions() -> dict[str, str]:
    """Installed version of each library the course uses ("missing" when absent)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def bnb_4bit_support(device: str | None = None) -> tuple[bool, str]:
    """Whether bitsandbytes can run a 4-bit NF4 layer here, and why not if it cannot.

    It quantizes a small layer and runs a forward pass on `device` (CUDA if present, else
    the CPU): an import that succeeds is not proof that the kernels run.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        import bitsandbytes as bnb
    except Exception as error:  # ImportError, or a broken native library
        return False, f"bitsandbytes cannot be imported ({error}); install it with `pip install bitsandbytes`"
    try:
        layer = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.bfloat16, quant_type="nf4").to(device)
        with torch.no_grad():
            layer(torch.randn(2, 64, device=device, dtype=torch.bfloat16))
    except Exception as error:
        return False, (
            f"bitsandbytes {bnb.__version__} cannot run 4-bit NF4 on '{device}' "
            f"({type(error).__name__}: {error}); use a CUDA GPU, or an x86-64 CPU with bitsandbytes>=0.46"
        )
    return True, f"bitsandbytes {bnb.__version__}: 4-bit NF4 runs on '{device}'"


def provenance(command: str) -> str:
    """One Markdown line saying what produced a results page: the command, the CPU's kernel set, torch.

    PyTorch picks its CPU kernels by instruction set (`default`, `avx2`, `avx512`, ...), and
    sums round differently in each, so a figure is only reproduced exactly on the same capability
    (`ATEN_CPU_CAPABILITY` forces one, to imitate another machine).
    """
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    return (f"*Made by `{command}` on {device} (CPU capability {torch.backends.cpu.get_cpu_capability()}, "
            f"{torch.get_num_threads()} thread{'s' if torch.get_num_threads() != 1 else ''}), torch {torch.__version__}, "
            f"transformers {library_versions()['transformers']}.*")


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
