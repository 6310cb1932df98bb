"""`tiny-llama`: tiny-gpt2's twin in SmolLM2's architecture, built in-process like it.

SmolLM2 (the real model the course can run) is a Llama: `nn.Linear` projections named
q/k/v/o in attention and gate/up/down in a SwiGLU MLP, RMSNorm, rotary positions and
grouped-query attention, where GPT-2 has Conv1D, LayerNorm and learned positions. Code that
only ever ran on GPT-2 can hide assumptions (`c_attn`, transposed weights, `n_positions`), so
every chapter is also tested on this model: the same tokenizer, corpus and pretraining steps
as tiny-gpt2, 2 layers of width 64, 4 query heads sharing 2 key/value heads, tied embeddings.
Like tiny-gpt2 it shows that the code runs and learns, not what a real model scores.
"""

from __future__ import annotations

from pathlib import Path

from transformers import LlamaConfig, LlamaForCausalLM

from peft_course.files import build_directory_once
from peft_course.tiny_gpt2 import BUILD_VERSION, build_tiny_model, cache_root

TINY_LLAMA = "tiny-llama"


def tiny_llama_config(vocab_size: int, eos_token_id: int) -> LlamaConfig:
    """Llama's architecture at tiny-gpt2's size: 2 layers of width 64,
    4 heads, 2 key/value heads.

    Args:
        vocab_size: the tokenizer's vocabulary size.
        eos_token_id: the end-of-text token, also used as the beginning and padding token.
    """
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
    )


def build_tiny_llama(directory: str | Path, seed: int = 0) -> Path:
    """Write the tokenizer and the briefly pretrained weights (safetensors) to `directory`.

    Args:
        directory: where the checkpoint is written.
        seed: seeds the tokenizer's corpus, the initial weights and the pretraining order.

    Returns:
        `directory`, as a `Path`.
    """
    return build_tiny_model(
        directory, lambda vocab, eos: LlamaForCausalLM(tiny_llama_config(vocab, eos)), seed
    )


def tiny_llama_path(seed: int = 0) -> Path:
    """The cached directory of `tiny-llama` for `seed`, built on first use (about 20 s).

    Args:
        seed: the build's seed; each seed is its own model and cache directory.
    """
    target = cache_root() / f"tiny-llama-v{BUILD_VERSION}-seed{seed}"
    return build_directory_once(target, lambda scratch: build_tiny_llama(scratch, seed))
