"""Grades exercises/real_model.py: a Llama's LoRA targets, tied embeddings and grouped-query
attention, read from the model (the embedded tiny-llama, small random Llamas and GPT-2s)."""

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from peft_course.models import load_model


@pytest.fixture
def real_model(load):
    return load("real_model")


@pytest.fixture(scope="module")
def tiny_llama():
    return load_model("tiny-llama", task="causal-lm")[0]


def llama(heads: int = 4, kv_heads: int = 2, layers: int = 2, tied: bool = False, head_dim=None):
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        vocab_size=60,
        tie_word_embeddings=tied,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        **({"head_dim": head_dim} if head_dim else {}),
    )
    return LlamaForCausalLM(config)


def gpt2(layers: int = 2) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        n_embd=16, n_layer=layers, n_head=2, vocab_size=60, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(config)


def wrapped_by_peft(model) -> list[str]:
    """The modules peft's default LoraConfig wraps, by their names in the original model."""
    adapted = get_peft_model(copy.deepcopy(model), LoraConfig(r=2))
    prefix = "base_model.model."
    return [
        name.removeprefix(prefix)
        for name, module in adapted.named_modules()
        if hasattr(module, "lora_A") and name.startswith(prefix)
    ]


@pytest.mark.parametrize(
    "build", [lambda: llama(layers=3), lambda: gpt2(layers=3), lambda: llama(heads=2, kv_heads=1)]
)
def test_lora_targets_are_what_peft_wraps(real_model, returns, build):
    model = build()
    got = real_model.lora_targets(model)
    returns(got, list, "lora_targets")
    expected = wrapped_by_peft(model)
    assert got == expected, (
        f"peft's default config wraps {expected}: the targets come from peft's table for the "
        f"model's architecture ({model.config.model_type!r}), by the last part of each module "
        f"name; got {got}"
    )


def test_lora_targets_on_the_embedded_tiny_llama(real_model, tiny_llama):
    got = real_model.lora_targets(tiny_llama)
    assert got == wrapped_by_peft(tiny_llama), (
        "on tiny-llama peft's default targets are each layer's q_proj and v_proj, not GPT-2's "
        f"c_attn; got {got}"
    )


def test_lora_targets_refuse_an_unknown_architecture(real_model):
    model = gpt2()
    model.config.model_type = "no-such-architecture"
    with pytest.raises(ValueError):
        real_model.lora_targets(model)


@pytest.mark.parametrize(
    "build,tied",
    [(gpt2, True), (lambda: llama(tied=True), True), (lambda: llama(tied=False), False)],
    ids=["gpt2", "llama-tied", "llama-untied"],
)
def test_ties_embeddings(real_model, returns, build, tied):
    got = real_model.ties_embeddings(build())
    returns(got, bool, "ties_embeddings")
    assert got is tied, (
        f"expected {tied}: tied means the LM head and the token embedding are one tensor, "
        "stored once"
    )


def test_ties_embeddings_on_the_embedded_tiny_llama(real_model, tiny_llama):
    assert real_model.ties_embeddings(tiny_llama) is True, (
        "tiny-llama ties its LM head to its token embedding, as SmolLM2 does"
    )


def test_equal_values_are_not_a_tie(real_model):
    model = llama(tied=False)
    with torch.no_grad():
        model.lm_head.weight.copy_(model.get_input_embeddings().weight)
    assert real_model.ties_embeddings(model) is False, (
        "a head holding a copy of the embedding's values is a second matrix, not a tie: ask "
        "whether it is the same tensor, not whether the values are equal"
    )


@pytest.mark.parametrize(
    "heads,kv_heads,head_dim", [(4, 2, None), (8, 2, None), (4, 4, None), (8, 1, None), (4, 2, 16)]
)
def test_query_heads_per_kv_head(real_model, returns, heads, kv_heads, head_dim):
    got = real_model.query_heads_per_kv_head(llama(heads, kv_heads, head_dim=head_dim))
    returns(got, int, "query_heads_per_kv_head")
    assert got == heads // kv_heads, (
        f"{heads} query heads share {kv_heads} key/value heads: {heads // kv_heads} query heads "
        f"per key/value head (queries over keys, not keys over queries); got {got}"
    )


def test_query_heads_per_kv_head_reads_the_weights(real_model):
    model = llama(heads=4, kv_heads=2)
    model.config.num_key_value_heads = 4  # a config that lies: the weights are what computes
    assert real_model.query_heads_per_kv_head(model) == 2, (
        "read the layer's weights (q_proj's and k_proj's output widths), not the config"
    )


def test_query_heads_per_kv_head_on_the_embedded_tiny_llama(real_model, tiny_llama):
    assert real_model.query_heads_per_kv_head(tiny_llama) == 2, (
        "tiny-llama has 4 query heads sharing 2 key/value heads"
    )
