"""Each reference solution that mirrors a package function has its name, its signature and gives
its answers.

The exercises grade a learner's file; this checks the other side: that `solutions/` and the
package the docs teach from have not drifted apart. Each pair has the same signature (the few
that differ are listed in DIFFERENT, and docs/exercises.md says why), is called the same way on
the same inputs, boundaries included, and must agree exactly (integers, strings, sympy
expressions) or to ROUNDING_ATOL (1e-6) on float tensors (the solutions use other, equally exact,
torch operations).
"""

from __future__ import annotations

import importlib.util
import inspect
import random
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import sympy as sp
import torch

from peft_course import (
    ablation,
    counting,
    decoding,
    derivations,
    dpo,
    gpt2,
    instruct,
    lm_classification,
    lora,
    prompting,
    qlora,
)
from peft_course.word_problems import generate_problems
from peft_course.tolerances import FLOAT64_SAME_FORMULA, GRADED_LOGPROB_ATOL, ROUNDING_ATOL

SOLUTIONS = Path(__file__).resolve().parents[1] / "solutions"


def solution(module: str):
    """`solutions/<module>.py`, imported by path under a name of its own."""
    spec = importlib.util.spec_from_file_location(
        f"_reference_{module}", SOLUTIONS / f"{module}.py"
    )
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = loaded
    spec.loader.exec_module(loaded)
    return loaded


# (solution module, function) -> the package function it mirrors
MIRRORS = {
    ("lora", "matches"): lora.matches,
    ("counting", "lora_count"): counting.lora_count,
    ("counting", "nf4_bits_per_parameter"): qlora.nf4_bits_per_parameter,
    ("qlora", "nf4_bytes"): qlora.nf4_bytes,
    ("qlora", "nf4_config"): qlora.nf4_config,
    ("qlora", "quantized_modules"): qlora.quantized_modules,
    ("dpo", "sequence_logprobs"): dpo.sequence_logprobs,
    ("dpo", "dpo_loss"): dpo.dpo_loss,
    ("dpo", "reward_from_policy"): derivations.reward_from_policy,
    ("ablation", "mean_std"): ablation.mean_std,
    ("ablation", "is_strict_match"): lm_classification.is_strict_match,
    ("prompting", "few_shot_prompt"): prompting.few_shot_prompt,
    ("prompting", "extract_answer"): prompting.extract_answer,
    ("gpt2", "attention_mask"): gpt2.attention_mask,
    ("gpt2", "top_p_filter"): decoding.top_p_filter,
    ("instruct", "exact_match"): instruct.exact_match,
    ("lora", "inject_lora"): lora.inject_lora,
    ("gpt2", "copy_conv1d"): gpt2.copy_conv1d,
    ("prompting", "verbalizer_scores"): prompting.verbalizer_scores,
}
# The exercises whose signature is not the package function's: the exercise takes the package's
# first parameters (the package's others have defaults), and docs/exercises.md says why.
DIFFERENT = {
    ("counting", "nf4_bits_per_parameter"),  # a float, and bitsandbytes' fixed second block size
    ("prompting", "verbalizer_scores"),  # the first-token score only, one prompt at a time
}
EXERCISES_PAGE = Path(__file__).resolve().parents[1] / "docs" / "exercises.md"


@pytest.mark.parametrize("module,name", sorted(MIRRORS))
def test_the_solution_has_the_package_signature(module, name):
    ours = inspect.signature(getattr(solution(module), name))
    theirs = inspect.signature(MIRRORS[module, name])
    if (module, name) not in DIFFERENT:
        assert ours == theirs, f"solutions/{module}.py: {name}{ours}, the package: {name}{theirs}"
        return
    first = list(theirs.parameters.values())[: len(ours.parameters)]
    assert list(ours.parameters.values()) == first, (
        f"{name}{ours} should take the first parameters of the package's {name}{theirs}"
    )
    rest = list(theirs.parameters.values())[len(ours.parameters) :]
    assert all(p.default is not inspect.Parameter.empty for p in rest), (
        f"the package's {name}{theirs} needs more than the exercise's {name}{ours} passes"
    )
    page = EXERCISES_PAGE.read_text()
    section = page[page.index("## Your function and the package's") :].split("\n## ")[0]
    assert f"`{module}.{name}(" in section, (
        f"docs/exercises.md, 'Your function and the package's', should say why {module}.{name} "
        "differs from the package's"
    )


@pytest.mark.parametrize("module,name", sorted(MIRRORS))
def test_the_solution_is_named_like_the_package_function(module, name):
    reference = getattr(solution(module), name, None)
    assert reference is not None, (
        f"solutions/{module}.py has no {name} "
        f"(the package calls it {MIRRORS[module, name].__name__})"
    )
    assert name == MIRRORS[module, name].__name__


def test_matches():
    reference = solution("lora").matches
    names = [
        "transformer.h.0.attn.c_attn",
        "transformer.h.10.attn.c_proj",
        "transformer.h.1.mlp.c_proj",
        "score",
        "c_attn",
        "transformer.h.0.attn.c_attnx",
    ]
    for targets in (
        ["c_attn"],
        ["attn.c_proj"],
        ["c_proj"],
        ["proj"],
        ["score"],
        [],
        ["h.1.mlp.c_proj", "score"],
    ):
        for name in names:
            assert reference(name, targets) == lora.matches(name, targets), (name, targets)


def test_lora_count_and_nf4_numbers():
    counts, storage = solution("counting"), solution("qlora")
    rng = random.Random(0)
    for _ in range(20):
        shapes = [(rng.randint(1, 2048), rng.randint(1, 2048)) for _ in range(rng.randint(1, 6))]
        rank = rng.randint(1, 256)
        assert counts.lora_count(rank, shapes) == counting.lora_count(rank, shapes)
    for double_quant in (True, False):
        for blocksize in (32, 64, 128):
            # the package answers with an exact sympy Rational, the solution with a float: equal as
            # numbers
            assert counts.nf4_bits_per_parameter(double_quant, blocksize) == float(
                qlora.nf4_bits_per_parameter(double_quant, blocksize)
            )
        for n in (1, 2, 63, 64, 65, 255, 256, 257, 64 * 256, 64 * 256 + 1, 123_457):
            assert storage.nf4_bytes(n, double_quant) == qlora.nf4_bytes(n, double_quant), (
                n,
                double_quant,
            )


def test_nf4_config_and_quantized_modules():
    from peft_course.models import load_model

    reference = solution("qlora")
    for dtype, double_quant, skip in (
        (torch.bfloat16, True, ("score", "classifier", "lm_head")),
        (torch.float32, False, ("score", "c_fc")),
    ):
        ours, theirs = (
            reference.nf4_config(dtype, double_quant, skip),
            qlora.nf4_config(dtype, double_quant, skip),
        )
        assert ours.to_dict() == theirs.to_dict()
    model, _ = load_model(
        "tiny-gpt2", "classification", num_labels=2, quantization_config=qlora.nf4_config()
    )
    assert reference.quantized_modules(model) == qlora.quantized_modules(model) != []


def test_sequence_logprobs_and_dpo_loss():
    reference = solution("dpo")
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=generator)
    input_ids = torch.randint(0, 11, (3, 7), generator=generator)
    mask = torch.tensor([[0, 0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 1]])
    torch.testing.assert_close(
        reference.sequence_logprobs(logits, input_ids, mask),
        dpo.sequence_logprobs(logits, input_ids, mask),
        atol=ROUNDING_ATOL,
        rtol=0,
    )
    logps = [torch.randn(5, generator=generator) * 30 for _ in range(4)]
    for beta in (0.01, 0.1, 1.0):
        ours = reference.dpo_loss(*logps, beta)
        theirs = dpo.dpo_loss(*logps, beta)
        assert type(ours) is type(theirs) is dpo.DPOLoss
        for field in ("loss", "chosen_rewards", "rejected_rewards"):
            torch.testing.assert_close(
                getattr(ours, field), getattr(theirs, field), atol=ROUNDING_ATOL, rtol=0
            )
            assert getattr(ours, field).requires_grad == getattr(theirs, field).requires_grad


def test_reward_from_policy():
    pi_star, pi_ref, beta, z = sp.symbols("pi_star pi_ref beta Z", positive=True)
    ours = solution("dpo").reward_from_policy(pi_star, pi_ref, beta, z)
    assert sp.simplify(ours - derivations.reward_from_policy(pi_star, pi_ref, beta, z)) == 0


def test_mean_std_and_strict_match():
    reference = solution("ablation")
    for values in ([0.8, 0.9, 1.0], [0.7], [0.5, 0.5], [0.1, 0.25, 0.75, 0.9]):
        assert reference.mean_std(values) == pytest.approx(
            ablation.mean_std(values), abs=FLOAT64_SAME_FORMULA
        )
    for completion in (
        " positive",
        " Positive.",
        "positive",
        " positive review",
        " negative",
        "",
        " pos",
    ):
        for word in (" positive", " negative"):
            assert reference.is_strict_match(completion, word) == lm_classification.is_strict_match(
                completion, word
            )


def test_few_shot_prompt_and_extract_answer():
    reference = solution("prompting")
    problems = generate_problems(6, seed=0)
    for k in (1, 2, 4):
        assert reference.few_shot_prompt(
            problems[0].question, problems[1:], k
        ) == prompting.few_shot_prompt(problems[0].question, problems[1:], k)
    texts = [
        "The answer is 42.",
        "so 3 + 4 = 7\n#### 7",
        "It costs $1,250.50 in all.",
        "no number here",
        "The Answer is -3/4",
        "first 5 then 6",
        "#### 12 and later 13",
        "",
    ]
    for text in texts:
        assert reference.extract_answer(text) == prompting.extract_answer(text), text
    assert prompting.extract_answer("#### 7") == Fraction(7)


def test_attention_mask_and_top_p_filter():
    reference = solution("gpt2")
    padding = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    for mask, queries in ((None, 5), (padding, 5), (padding, 1), (padding, 3)):
        assert torch.equal(
            reference.attention_mask(mask, queries, 5), gpt2.attention_mask(mask, queries, 5)
        )
    logits = (torch.randn(3, 40, generator=torch.Generator().manual_seed(0)) * 2).round(decimals=1)
    for p in (1e-6, 0.3, 0.9, 1.0):
        assert torch.equal(reference.top_p_filter(logits, p), decoding.top_p_filter(logits, p)), p


def test_instruction_encoding_pairs_and_exact_match():
    from peft_course.data import join_pair
    from peft_course.models import load_tokenizer

    reference, tokenizer = solution("instruct"), load_tokenizer("tiny-gpt2")
    for example in instruct.generated_instructions(10, 5, 5)["test"]:
        for max_length in (40, 64, 256):
            assert reference.encode_example(
                tokenizer, example.instruction, example.context, example.response, max_length
            ) == instruct.encode(example, tokenizer, max_length)
    for first, second, n in (
        ([1, 2, 3], [4], 3),
        ([1], [2, 3, 4], 3),
        ([], [5], 2),
        ([1, 2], [3, 4], 10),
    ):
        assert reference.pair_ids(first, second, 0, n)[0] == join_pair(first, second, 0, n)
    for a, b in (("Positive.", "positive"), ("1 2", "1  2 "), ("5..", "5"), ("", "")):
        assert reference.exact_match(a, b) == instruct.exact_match(a, b)


def test_inject_lora():
    """Both called with the same `LoRAConfig`: the same wrapped names, layers and trainable
    parameters, for targets alone and with modules or parameters that train in full."""
    reference = solution("lora")
    for config in (
        lora.LoRAConfig(r=2, alpha=4.0, targets=["c_attn"]),
        lora.LoRAConfig(r=4, alpha=8.0, dropout=0.1, targets=["c_attn", "mlp.c_proj"]),
        lora.LoRAConfig(r=2, alpha=2.0, targets=["c_fc"], trainable=["score"], use_rslora=True),
        lora.LoRAConfig(r=2, alpha=2.0, targets=["attn.c_proj"], trainable=["ln_f.weight", "h.0"]),
    ):
        ours, theirs = lora.random_gpt2(seed=0), lora.random_gpt2(seed=0)
        assert reference.inject_lora(ours, config) == lora.inject_lora(theirs, config)
        for a, b in zip(lora.lora_layers(ours).values(), lora.lora_layers(theirs).values()):
            assert (a.r, a.alpha, a.scaling, a.dropout.p) == (b.r, b.alpha, b.scaling, b.dropout.p)
        trainable = [
            sorted(n for n, p in model.named_parameters() if p.requires_grad)
            for model in (ours, theirs)
        ]
        assert trainable[0] == trainable[1], config
    for bad in (["nothing"], ["c_attn", "q_proj"]):
        with pytest.raises(ValueError):
            reference.inject_lora(lora.random_gpt2(seed=0), lora.LoRAConfig(targets=bad))
        with pytest.raises(ValueError):
            lora.inject_lora(lora.random_gpt2(seed=0), lora.LoRAConfig(targets=bad))


def test_copy_conv1d():
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    reference = solution("gpt2")
    conv = Conv1D(6, 4)
    ours, theirs = nn.Linear(4, 6), nn.Linear(4, 6)
    reference.copy_conv1d(ours, conv.weight, conv.bias, "h.0.mlp.c_fc")
    gpt2.copy_conv1d(theirs, conv.weight, conv.bias, "h.0.mlp.c_fc")
    assert torch.equal(ours.weight, theirs.weight) and torch.equal(ours.bias, theirs.bias)
    for copy in (reference.copy_conv1d, gpt2.copy_conv1d):
        with pytest.raises(ValueError, match="h.1.attn.c_proj"):
            copy(nn.Linear(6, 4), conv.weight, conv.bias, "h.1.attn.c_proj")


def test_verbalizer_scores():
    from peft_course.models import load_model

    model, tokenizer = load_model("tiny-gpt2", "causal-lm")
    prompts = ["The film was dull. Sentiment:", "A joy from start to end. Sentiment:"]
    words = [" negative", " positive"]
    torch.testing.assert_close(
        solution("prompting").verbalizer_scores(model, tokenizer, prompts, words),
        prompting.verbalizer_scores(model, tokenizer, prompts, words),
        atol=GRADED_LOGPROB_ATOL,  # one prompt at a time against the package's padded batches
        rtol=0,
    )
