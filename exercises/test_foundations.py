"""Grades exercises/foundations.py: the next-token loss, padding a batch, the last real token."""

import random

import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

from peft_course.models import load_tokenizer


@pytest.fixture
def foundations(load):
    return load("foundations")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny-gpt2")


def tiny_config(seed: int, **extra) -> GPT2Config:
    torch.manual_seed(seed)
    return GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=40, n_positions=16, **extra)


def right_padded(seed: int, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of random rows of random lengths, padded on the right with `pad_id`."""
    rng = random.Random(seed)
    lengths = [rng.randint(2, 9) for _ in range(4)] + [9]
    ids = torch.full((5, 9), pad_id)
    mask = torch.zeros(5, 9, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.tensor([rng.randrange(1, 40) for _ in range(n)])
        mask[i, :n] = 1
    return ids, mask


@pytest.mark.parametrize("seed", range(3))
def test_next_token_loss_is_transformers_loss(foundations, returns, seed):
    model = GPT2LMHeadModel(tiny_config(seed)).eval()
    ids, mask = right_padded(seed)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
        expected = model(
            input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)
        )
    got = foundations.next_token_loss(logits, ids, mask)
    returns(got, torch.Tensor, "next_token_loss")
    assert got.dim() == 0, (
        f"next_token_loss must return one number (a 0-d tensor), got shape {tuple(got.shape)}"
    )
    own_position = ids.masked_fill(mask == 0, -100).reshape(-1)
    for unshifted in (
        torch.nn.functional.cross_entropy(logits.reshape(-1, 40), ids.reshape(-1)),
        torch.nn.functional.cross_entropy(logits.reshape(-1, 40), own_position),
    ):
        assert not torch.isclose(got, unshifted, atol=1e-6), (
            "the logits at position t predict the token at t + 1: shift them, do not score a "
            "token with its own position's logits"
        )
    assert torch.isclose(got, expected.loss, atol=1e-6), (
        f"got {got.item():.6f}, transformers' loss is {expected.loss.item():.6f}: padding targets "
        "must not count, and the mean is over the targets that do"
    )


def test_next_token_loss_leaves_out_padding(foundations):
    torch.manual_seed(0)
    ids = torch.tensor([[5, 6, 7, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0, 0, 0]])
    logits = torch.randn(1, 6, 40)
    only_real = torch.nn.functional.cross_entropy(logits[0, :2], ids[0, 1:3])
    got = foundations.next_token_loss(logits, ids, mask)
    assert torch.isclose(got, only_real, atol=1e-6), (
        "a padding target does not count: only the two real next tokens (6 after 5, 7 after 6) "
        f"are predicted here, so the loss is {only_real.item():.4f}, got {got.item():.4f}"
    )


def test_next_token_loss_gives_a_gradient(foundations):
    logits = torch.randn(2, 5, 40, requires_grad=True)
    ids, mask = torch.randint(0, 40, (2, 5)), torch.ones(2, 5, dtype=torch.long)
    foundations.next_token_loss(logits, ids, mask).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0, (
        "the loss must stay on the autograd graph of the logits (no .item(), no detach)"
    )


@pytest.mark.parametrize("seed", range(3))
def test_pad_batch_is_the_tokenizers_padding(foundations, returns, tokenizer, seed):
    rng = random.Random(seed)
    words = ["a superb film .", "dull", "the acting was not good , but I loved the ending ."]
    texts = rng.sample(words, len(words))
    rows = [tokenizer(t)["input_ids"] for t in texts]
    expected = tokenizer.pad({"input_ids": rows}, padding=True, return_tensors="pt")
    got = foundations.pad_batch(rows, tokenizer.pad_token_id)
    returns(got, dict, "pad_batch")
    for key in ("input_ids", "attention_mask"):
        assert got[key].dtype == torch.long, f"{key} must be int64, got {got[key].dtype}"
        assert torch.equal(got[key], expected[key]), (
            f"{key} differs from the tokenizer's padding: pad on the right, to this batch's "
            f"longest row\n got      {got[key].tolist()}\n expected {expected[key].tolist()}"
        )


def test_pad_batch_pads_to_the_longest_row_only(foundations):
    got = foundations.pad_batch([[3, 4], [5]], pad_id=0)
    assert tuple(got["input_ids"].shape) == (2, 2), (
        "pad to the longest row of this batch (2 here), not to a fixed length: padding is wasted "
        f"work; got shape {tuple(got['input_ids'].shape)}"
    )


def test_pad_batch_keeps_a_real_token_equal_to_the_pad_id(foundations):
    got = foundations.pad_batch([[7, 9, 9], [9]], pad_id=9)
    assert got["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]], (
        "the mask says which positions were padded, not which ids equal pad_id: GPT-2 pads with "
        "its end-of-text id, which a row may hold itself"
    )


@pytest.mark.parametrize("rows", [[], [[1, 2], []]])
def test_pad_batch_refuses_an_empty_batch_or_row(foundations, rows):
    with pytest.raises(ValueError):
        foundations.pad_batch(rows, pad_id=0)


@pytest.mark.parametrize("seed", range(3))
def test_last_token_positions_are_where_the_classifier_reads(foundations, returns, seed):
    model = GPT2ForSequenceClassification(tiny_config(seed, num_labels=3, pad_token_id=0)).eval()
    ids, mask = right_padded(seed)
    with torch.no_grad():
        output = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        got = foundations.last_token_positions(mask)
        returns(got, torch.Tensor, "last_token_positions")
        assert got.dtype == torch.long, f"positions are int64 (an index), got {got.dtype}"
        read = model.score(output.hidden_states[-1])[torch.arange(len(ids)), got]
    assert torch.allclose(read, output.logits, atol=1e-6), (
        "GPT2ForSequenceClassification reads each row's last real token: the position of the "
        f"last 1 in its mask; got {got.tolist()} for the masks {mask.tolist()}"
    )


def test_last_token_positions_on_left_padding(foundations):
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]])
    got = foundations.last_token_positions(mask)
    assert got.tolist() == [3, 3, 3], (
        "on a left-padded row the last real token is the last position: the position of the "
        f"last 1, not the number of 1s minus one; got {got.tolist()}"
    )


def test_last_token_positions_refuses_an_empty_row(foundations):
    with pytest.raises(ValueError):
        foundations.last_token_positions(torch.tensor([[1, 1], [0, 0]]))
