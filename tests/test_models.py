"""The loader: tiny-gpt2, any local checkpoint directory (BERT too), clear errors otherwise."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast, GPT2Config, GPT2LMHeadModel

from peft_course.models import ModelLoadError, load_model, load_tokenizer


@pytest.fixture(scope="module")
def bert_directory(tmp_path_factory):
    """A 1-layer BERT with a WordPiece vocabulary, saved like any downloaded checkpoint."""
    directory = tmp_path_factory.mktemp("bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "film", "was", "good", "bad", "."]
    (directory / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizerFast(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    BertForMaskedLM(config).save_pretrained(directory)
    return directory


def test_tiny_gpt2_classifier_has_pad_token_and_labels():
    model, tokenizer = load_model("tiny-gpt2", num_labels=3, label_names=["a", "b", "c"])
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == model.config.pad_token_id
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"}
    batch = tokenizer(["the film was good", "bad"], padding=True, return_tensors="pt")
    assert model(**batch).logits.shape == (2, 3)  # batches > 1 need the pad token


def test_same_seed_gives_the_same_new_head():
    first, _ = load_model("tiny-gpt2", seed=3)
    second, _ = load_model("tiny-gpt2", seed=3)
    other, _ = load_model("tiny-gpt2", seed=4)
    assert torch.equal(first.score.weight, second.score.weight)
    assert not torch.equal(first.score.weight, other.score.weight)


def test_causal_lm_generates():
    model, tokenizer = load_model("tiny-gpt2", task="causal-lm")
    ids = tokenizer("the film was", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 3


def test_local_bert_directory_loads_for_classification(bert_directory):
    model, tokenizer = load_model(str(bert_directory), num_labels=2)
    assert model.config.model_type == "bert"
    assert tokenizer.pad_token == "[PAD]"  # BERT has its own pad token: left alone
    batch = tokenizer(["the film was good", "bad"], padding=True, return_tensors="pt")
    assert model(**batch).logits.shape == (2, 2)


def test_local_gpt2_directory_loads(tmp_path):
    config = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=len(load_tokenizer("tiny-gpt2")))
    GPT2LMHeadModel(config).save_pretrained(tmp_path)
    load_tokenizer("tiny-gpt2").save_pretrained(tmp_path)
    model, _ = load_model(str(tmp_path), num_labels=4)
    assert model.score.out_features == 4


def test_pickle_weights_are_refused(tmp_path):
    """A checkpoint with only a pickled `pytorch_model.bin` is not loaded (pickle runs code)."""
    config = GPT2Config(
        n_layer=1, n_embd=16, n_head=2, vocab_size=100, bos_token_id=0, eos_token_id=0
    )
    config.save_pretrained(tmp_path)
    torch.save(GPT2LMHeadModel(config).state_dict(), tmp_path / "pytorch_model.bin")
    load_tokenizer("tiny-gpt2").save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match=str(tmp_path)):
        load_model(str(tmp_path))


def test_unreachable_hub_names_the_alternatives(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as error:
        load_model("openai-community/gpt2")
    message = str(error.value)
    assert "hub" in message and "--model PATH" in message and "tiny-gpt2" in message


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"task": "translation"}, "unknown task"),
        ({"num_labels": 0}, "num_labels"),
        ({"num_labels": 2, "label_names": ["a"]}, "1 label names"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_model("tiny-gpt2", **kwargs)


def test_a_directory_that_is_not_a_checkpoint_says_what_it_lacks(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        ModelLoadError, match="no config.json, no tokenizer files .* no safetensors weights"
    ):
        load_model(str(tmp_path / "empty"))
    with pytest.raises(ModelLoadError, match="no tokenizer files"):
        load_tokenizer(str(tmp_path / "empty"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelLoadError, match="it is a file, not a checkpoint directory"):
        load_model(str(tmp_path / "file"))
    with pytest.raises(ModelLoadError, match="no such directory"):
        load_model(str(tmp_path / "missing" / "model"))


def test_max_length_is_checked_against_the_model_positions():
    from peft_course.errors import CourseError
    from peft_course.models import check_max_length, context_length

    model, _ = load_model("tiny-gpt2")
    assert context_length(model) == context_length("tiny-gpt2") == model.config.n_positions
    assert check_max_length(model.config.n_positions, model) == model.config.n_positions
    with pytest.raises(CourseError, match=f"it has {model.config.n_positions} positions"):
        check_max_length(model.config.n_positions + 1, "tiny-gpt2")
