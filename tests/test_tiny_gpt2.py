"""The embedded model: deterministic for a seed, GPT-2's architecture, cached once."""

from __future__ import annotations

import hashlib
from pathlib import Path

from transformers import GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

from peft_course.models import load_model
from peft_course.tiny_gpt2 import build_tiny_gpt2, pretrain, tiny_gpt2_path, train_tokenizer
from peft_course.synthetic import pretraining_corpus


def digests(directory: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(directory.iterdir())}


def test_same_seed_builds_identical_files_and_another_seed_differs(tmp_path):
    # a short pretraining keeps this fast; determinism does not depend on the step count
    first = digests(build_tiny_gpt2(tmp_path / "a", seed=0, pretrain_steps=3))
    second = digests(build_tiny_gpt2(tmp_path / "b", seed=0, pretrain_steps=3))
    other = digests(build_tiny_gpt2(tmp_path / "c", seed=1, pretrain_steps=3))
    assert first == second
    assert first["model.safetensors"] != other["model.safetensors"]
    assert "pytorch_model.bin" not in first  # weights are safetensors only


def test_architecture_is_gpt2_shrunk():
    model, tokenizer = load_model("tiny-gpt2", task="causal-lm")
    assert isinstance(model, GPT2LMHeadModel)
    assert (model.config.n_layer, model.config.n_embd) == (2, 64)
    assert isinstance(model.transformer.h[0].attn.c_attn, Conv1D)
    assert model.transformer.h[0].attn.c_attn.weight.shape == (64, 3 * 64)  # (in, out): transposed
    assert model.lm_head.weight is model.transformer.wte.weight  # tied embeddings
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"
    assert model.config.pad_token_id == tokenizer.eos_token_id


def test_byte_level_tokenizer_encodes_any_text():
    tokenizer = train_tokenizer(seed=0)
    text = "naïve café — 12 € , 'quoted' <|endoftext|>"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert ids[-1] == tokenizer.eos_token_id  # the special token is one token


def test_cached_directory_is_reused():
    path = tiny_gpt2_path(seed=0)
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert tiny_gpt2_path(seed=0) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp


def test_pretraining_lowers_the_language_model_loss():
    tokenizer = train_tokenizer(seed=0)
    from peft_course.tiny_gpt2 import tiny_gpt2_config
    import torch

    torch.manual_seed(0)
    model = GPT2LMHeadModel(tiny_gpt2_config(len(tokenizer), tokenizer.eos_token_id))
    losses = pretrain(model, tokenizer, pretraining_corpus(0)[:500], steps=40, seed=0)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
