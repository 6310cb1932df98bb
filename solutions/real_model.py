"""A real model: read a Llama's layout from the model itself, as the code must on SmolLM2.

Three small pieces of the real-model chapter, written by you. Each takes a transformers model
(GPT-2 or Llama) and looks at its modules and tensors; none trains anything.
"""

from __future__ import annotations

from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from torch import nn


def lora_targets(model: nn.Module) -> list[str]:
    """The full names of the modules peft's default LoRA config wraps in `model`, in the order
    `model.named_modules()` gives them.

    peft keeps a table of default target names per architecture (`config.model_type`): `c_attn`
    for GPT-2, `q_proj` and `v_proj` for Llama. A module is a target when the last part of its
    name is one of them. An architecture the table does not know is a ValueError.
    """
    defaults = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model.config.model_type)
    if defaults is None:
        raise ValueError(f"peft has no default LoRA targets for {model.config.model_type!r}")
    return [name for name, _ in model.named_modules() if name.rpartition(".")[2] in defaults]


def ties_embeddings(model: nn.Module) -> bool:
    """True when the LM head's weight is the token embedding's tensor itself (one matrix,
    stored once), False when the head has a matrix of its own, even one holding equal values.
    """
    head = model.get_output_embeddings()
    return head is not None and head.weight is model.get_input_embeddings().weight


def query_heads_per_kv_head(model: nn.Module) -> int:
    """How many query heads share each key/value head in a Llama's first attention layer
    (grouped-query attention), read from its weights: `q_proj` and `k_proj` have one block of
    `head_dim` outputs per head. 1 when every query head has its own keys and values.
    """
    attention = model.get_decoder().layers[0].self_attn
    return attention.q_proj.weight.shape[0] // attention.k_proj.weight.shape[0]
