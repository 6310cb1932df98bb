"""GPT-2 from scratch (`peft_course.gpt2`) against transformers on the same weights.

Tolerances: float32 logits computed by a different but equivalent sequence of operations
(three q/k/v products instead of one fused c_attn, our boolean mask instead of transformers')
differ by rounding; the checks allow `LOGITS_ATOL` (`peft_course.tolerances` gives what was
measured).
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import save_file
from transformers import GPT2Config as HFConfig
from transformers import GPT2LMHeadModel
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

from peft_course import decoding, gpt2
from peft_course.data import load_classification_data
from peft_course.errors import CourseError
from peft_course.finetune import finetune
from peft_course.lora import LoRALayer
from peft_course.models import load_model, resolve_model_path
from peft_course.training import TrainConfig
from peft_course.tolerances import LOGITS_ATOL


@pytest.fixture(scope="module")
def tiny():
    """(our model, transformers' model, tokenizer), both from the embedded tiny-gpt2 checkpoint."""
    reference, tokenizer = load_model("tiny-gpt2", task="causal-lm")
    return gpt2.from_pretrained("tiny-gpt2").eval(), reference.eval(), tokenizer


def random_ids(vocab: int, shape: tuple[int, int], seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


def padding(rows: int, length: int) -> torch.Tensor:
    """Row 0 padded on the right, row 1 on the left, the rest not at all."""
    mask = torch.ones(rows, length, dtype=torch.long)
    mask[0, length // 2 :] = 0
    mask[1, :3] = 0
    return mask


def test_the_seed_projects_lora_count():
    """GPT-2 small with rank-8 LoRA on q, k, v: 12 layers x 3 x (8 x 768 + 768 x 8) trainable; the
    frozen 124,439,808 are GPT-2 small itself (token embedding counted once, tied to the head)."""
    assert gpt2.seed_project_lora() == (442_368, 124_439_808)
    assert 12 * 3 * (8 * 768 + 768 * 8) == 442_368


def test_lm_logits_equal_transformers_on_tiny_gpt2(tiny):
    model, reference, _ = tiny
    ids = random_ids(model.config.vocab_size, (4, 12))
    assert gpt2.max_logit_difference(model, reference, ids) < LOGITS_ATOL
    assert gpt2.max_logit_difference(model, reference, ids, padding(4, 12)) < LOGITS_ATOL


def test_lm_logits_equal_transformers_on_gpt2_small():
    torch.manual_seed(0)
    reference = GPT2LMHeadModel(HFConfig()).eval()  # GPT-2 small, random weights
    state = {k.removeprefix("transformer."): v for k, v in reference.state_dict().items()}
    model = gpt2.load_weights(gpt2.GPT2(gpt2.GPT2Config()), state).eval()
    ids = random_ids(50257, (2, 16))
    assert gpt2.max_logit_difference(model, reference, ids) < LOGITS_ATOL
    assert gpt2.max_logit_difference(model, reference, ids, padding(2, 16)) < LOGITS_ATOL


def test_padding_does_not_change_the_real_tokens(tiny):
    """A right-padded row gives the logits of the same row unpadded, at its real positions."""
    model, _, _ = tiny
    ids = random_ids(model.config.vocab_size, (1, 10))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 10), torch.zeros(1, 4)], dim=1).long()
    with torch.no_grad():
        alone = model(ids).logits
        inside = model(padded, attention_mask=mask).logits[:, :10]
    assert (alone - inside).abs().max() < LOGITS_ATOL


def test_classifier_equals_transformers(tmp_path):
    reference, tokenizer = load_model("tiny-gpt2", task="classification", num_labels=3, seed=1)
    reference.save_pretrained(tmp_path)
    model = gpt2.from_pretrained(
        str(tmp_path), num_labels=3, pad_token_id=tokenizer.pad_token_id
    ).eval()
    pad = tokenizer.pad_token_id
    ids = (
        random_ids(model.config.vocab_size, (3, 9), seed=2)
        .clamp(min=1)
        .masked_fill_(
            torch.tensor([[False] * 6 + [True] * 3, [True] * 2 + [False] * 7, [False] * 9]), pad
        )
    )
    mask = (ids != pad).long()
    with torch.no_grad():
        ours = model(ids, attention_mask=mask).logits
        theirs = reference(input_ids=ids, attention_mask=mask).logits
    assert ours.shape == (3, 3)
    assert (ours - theirs).abs().max() < LOGITS_ATOL


def test_zero_B_gives_the_base_logits_and_merging_keeps_the_trained_ones(tiny):
    base, _, _ = tiny
    spec = gpt2.LoRASpec(r=4, alpha=8.0, targets=("q", "v", "fc"))
    model = gpt2.from_pretrained("tiny-gpt2", lora=spec).eval()
    ids = random_ids(model.config.vocab_size, (2, 8))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, base(ids).logits), "B = 0: LoRA must change nothing"
        for layer in model.modules():
            if isinstance(layer, LoRALayer):
                layer.lora_B.normal_(std=0.05, generator=torch.Generator().manual_seed(0))
        trained = model(ids).logits
    assert (trained - base(ids).logits).abs().max() > 1e-3, "a non-zero B must change the logits"
    merged = gpt2.merge(model)
    assert (
        not any(isinstance(m, LoRALayer) for m in merged.modules()) and merged.config.lora is None
    )
    with torch.no_grad():
        assert (merged(ids).logits - trained).abs().max() < LOGITS_ATOL


def test_lora_goes_where_the_config_says(tiny):
    model = gpt2.GPT2(
        gpt2.GPT2Config(
            vocab_size=50,
            n_positions=16,
            n_embd=8,
            n_layer=3,
            n_head=2,
            lora=gpt2.LoRASpec(r=2, targets=("k", "out", "proj")),
        )
    )
    wrapped = sorted(name for name, m in model.named_modules() if isinstance(m, LoRALayer))
    assert wrapped == sorted(
        f"h.{i}.{part}" for i in range(3) for part in ("attn.k", "attn.out", "mlp.proj")
    )
    gpt2.freeze_all_but_lora(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{w}.lora_{m}" for w in wrapped for m in "AB"}


def test_freeze_refuses_a_model_without_lora(tiny):
    with pytest.raises(CourseError, match="no LoRA"):
        gpt2.freeze_all_but_lora(gpt2.from_pretrained("tiny-gpt2"))


# --- decoding ---------------------------------------------------------------------------


def test_greedy_equals_transformers_generate(tiny):
    model, reference, tokenizer = tiny
    for text in ("The film was", "A dull"):
        prompt = torch.tensor([tokenizer(text)["input_ids"]])
        ours = decoding.generate(model, prompt, 20, eos_token_id=tokenizer.eos_token_id)
        theirs = reference.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=20,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
        )
        assert ours.tolist() == theirs.tolist(), f"{text!r}: {ours.tolist()} != {theirs.tolist()}"


@pytest.mark.parametrize("strategy", decoding.STRATEGIES)
def test_cached_and_uncached_decoding_agree_and_repeat(tiny, strategy):
    model, _, tokenizer = tiny
    prompt = torch.tensor([tokenizer("The cast was")["input_ids"]] * 2)

    def run(use_cache: bool) -> list[list[int]]:
        generator = torch.Generator().manual_seed(3)
        return decoding.generate(
            model, prompt, 12, strategy, temperature=1.3, generator=generator, use_cache=use_cache
        ).tolist()

    assert run(True) == run(False), "the KV cache must not change the chosen tokens"
    assert run(True) == run(True), "a fixed generator must give the same sample"


def test_sampling_depends_on_the_generator(tiny):
    model, _, tokenizer = tiny
    prompt = torch.tensor([tokenizer("The cast was")["input_ids"]])
    draws = {
        tuple(
            decoding.generate(
                model,
                prompt,
                12,
                "temperature",
                temperature=2.0,
                generator=torch.Generator().manual_seed(s),
            )[0].tolist()
        )
        for s in range(4)
    }
    assert len(draws) > 1, "four seeds at temperature 2 gave one and the same text: is it sampling?"


def random_logits(seed: int) -> torch.Tensor:
    """Random logits with ties: values rounded to one decimal, so many tokens share a logit."""
    return (torch.randn(4, 30, generator=torch.Generator().manual_seed(seed)) * 2).round(decimals=1)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k", [1, 2, 5, 29, 30, 40])
def test_top_k_equals_transformers(seed, k):
    logits = random_logits(seed)
    expected = TopKLogitsWarper(k)(None, logits.clone())
    assert torch.equal(decoding.top_k_filter(logits, k), expected)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("p", [1e-6, 0.1, 0.5, 0.9, 0.999, 1.0])
def test_top_p_equals_transformers(seed, p):
    logits = random_logits(seed)
    expected = TopPLogitsWarper(p)(None, logits.clone())
    assert torch.equal(decoding.top_p_filter(logits, p), expected)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"strategy": "top-p", "top_p": 0.0}, "top_p"),
        ({"strategy": "top-p", "top_p": 1.5}, "top_p"),
        ({"strategy": "top-k", "top_k": 0}, "top_k"),
        ({"strategy": "temperature", "temperature": 0.0}, "temperature"),
        ({"strategy": "temperature", "temperature": -1.0}, "temperature"),
        ({"strategy": "beam"}, "beam"),
    ],
)
def test_bad_decoding_settings_are_refused(tiny, options, message):
    model, _, _ = tiny
    with pytest.raises(CourseError, match=message):
        decoding.generate(model, torch.tensor([[1, 2, 3]]), 5, **options)


def test_a_prompt_longer_than_the_context_is_refused(tiny):
    model, _, _ = tiny
    n = model.config.n_positions
    with pytest.raises(CourseError, match=f"context of {n}"):
        decoding.generate(model, torch.ones(1, n - 2, dtype=torch.long), 5)
    with pytest.raises(CourseError, match=f"context of {n}"):
        model(torch.ones(1, n + 1, dtype=torch.long))


# --- checkpoints ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model_type, architecture", [("bert", "BertModel"), ("llama", "LlamaForCausalLM")]
)
def test_a_checkpoint_that_is_not_gpt2_is_refused(tmp_path, model_type, architecture):
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": model_type, "architectures": [architecture]})
    )
    with pytest.raises(CourseError, match=f"{model_type} checkpoint .*not GPT-2"):
        gpt2.from_pretrained(str(tmp_path))


def test_a_shape_mismatch_names_the_tensor(tmp_path):
    source = resolve_model_path("tiny-gpt2")
    (tmp_path / "config.json").write_text(open(f"{source}/config.json").read())
    state = gpt2.read_weights(gpt2.checkpoint_directory("tiny-gpt2"))
    # stored the Linear way
    state["h.1.mlp.c_fc.weight"] = state["h.1.mlp.c_fc.weight"].T.contiguous()
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CourseError, match=r"h\.1\.mlp\.c_fc"):
        gpt2.from_pretrained(str(tmp_path))


def test_a_checkpoint_without_safetensors_is_refused(tmp_path):
    source = resolve_model_path("tiny-gpt2")
    (tmp_path / "config.json").write_text(open(f"{source}/config.json").read())
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CourseError, match="no .safetensors"):
        gpt2.from_pretrained(str(tmp_path))


# --- training ---------------------------------------------------------------------------------


def test_builtin_lora_fine_tunes_a_classifier():
    """Through the course's loop on generated reviews: accuracy well above the untrained model's."""
    data = load_classification_data("synthetic-sentiment", max_examples=400)
    result = finetune(
        data,
        "gpt2-scratch",
        config=TrainConfig(epochs=3, learning_rate=5e-3, progress=False),
        r=8,
        alpha=16.0,
    )
    config = result.model.config
    # layers x (q, k, v) x (A + B)
    lora_params = config.n_layer * 3 * (8 * config.n_embd + config.n_embd * 8)
    head = config.n_embd * 2
    assert result.trainable == lora_params + head
    assert result.best["accuracy"] > result.untrained["accuracy"] + 0.15


def test_cli_prints_the_counts_and_every_strategy(capsys):
    from peft_course.cli import main

    assert main(["gpt2", "--no-check", "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "442,368" in out and "124,439,808" in out
    assert all(f"| {strategy} |" in out for strategy in decoding.STRATEGIES)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--strategy", "top-p", "--top-p", "1.5"], "top.p"),
        (["--strategy", "top-k", "--top-k", "0"], "top.k"),
        (["--strategy", "beam"], "beam"),
    ],
)
def test_cli_bad_decoding_is_one_line(capsys, argv, message):
    from peft_course.cli import main

    assert main(["gpt2", "--no-check", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if "error" in line]) == 1 and re.search(message, err[-1])
