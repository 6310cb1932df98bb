"""Grades exercises/ablation.py: answer-only labels, the verbalizer, strict match, mean ± std."""

import random
import statistics

import pytest
import torch


@pytest.fixture
def ablation(load):
    return load("ablation")


@pytest.mark.parametrize(
    "prompt, answer",
    [
        ([5, 6, 7], [9]),
        ([1], [2, 3]),
        (list(range(40)), [41]),
        ((4, 8), (15, 16, 23)),
        (range(3), [7]),
    ],
)
def test_answer_labels(ablation, returns, prompt, answer):
    input_ids, labels = ablation.answer_labels(prompt, answer)
    returns(input_ids, list, "answer_labels' input_ids")
    returns(labels, list, "answer_labels' labels")
    prompt, answer = list(prompt), list(answer)
    assert input_ids == prompt + answer, (
        f"input_ids should be the prompt then the answer: {prompt + answer}"
    )
    expected = [-100] * len(prompt) + answer
    assert labels == expected, (
        f"expected labels {expected}: -100 on the prompt, the answer's ids after it"
    )


def test_verbalizer_predictions(ablation, returns):
    logits = torch.tensor([[0.0, 5.0, 1.0, 2.0], [0.0, 1.0, 3.0, 9.0], [7.0, 0.5, 0.4, 0.0]])
    got = ablation.verbalizer_predictions(logits, [2, 3])
    returns(got, list, "verbalizer_predictions")
    for value in got:
        returns(value, int, "each of verbalizer_predictions' entries")
    assert list(got) == [1, 1, 0], (
        "label tokens 2 and 3: row 0 scores (1.0, 2.0) -> label 1, row 1 (3.0, 9.0) -> 1, "
        "row 2 (0.4, 0.0) -> 0; "
        f"got {list(got)}. Tokens outside the label words (like token 0 or 1) must not win"
    )
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):
        logits = torch.randn(6, 50, generator=generator)
        ids = random.Random(int(logits[0, 0] * 1000)).sample(range(50), 3)
        expected = [max(range(3), key=lambda k: row[ids[k]].item()) for row in logits]
        assert list(ablation.verbalizer_predictions(logits, ids)) == expected


@pytest.mark.parametrize(
    "completion, word, expected",
    [
        (" positive", " positive", True),
        ("positive\n", " positive", True),
        (" positive.", " positive", False),
        (" Positive", " positive", False),
        (" positive review", " positive", False),
        ("", " negative", False),
    ],
)
def test_is_strict_match(ablation, completion, word, expected):
    assert ablation.is_strict_match(completion, word) is expected, (
        f"{completion!r} vs label word {word!r}: expected {expected} "
        "(only surrounding whitespace is ignored)"
    )


def test_mean_and_std(ablation, returns):
    mean, std = ablation.mean_std([0.8, 0.9, 1.0])
    returns(mean, float, "mean_std's mean")
    returns(std, float, "mean_std's std")
    assert mean == pytest.approx(0.9) and std == pytest.approx(0.1), (
        f"[0.8, 0.9, 1.0]: expected (0.9, 0.1) with the sample std (n - 1); got ({mean}, {std}). "
        f"Dividing by n gives 0.0816"
    )
    assert ablation.mean_std([0.7]) == (pytest.approx(0.7), 0.0), "one value: its own mean, std 0"
    assert ablation.mean_std([2.0, 2.0]) == (2.0, 0.0), "two equal values: std 0"
    assert ablation.mean_std((1.0, 3.0)) == (2.0, pytest.approx(2**0.5)), (
        "a tuple of values works like a list"
    )
    rng = random.Random(0)
    for _ in range(10):
        values = [rng.random() for _ in range(rng.randint(2, 6))]
        assert ablation.mean_std(values) == pytest.approx(
            (statistics.fmean(values), statistics.stdev(values))
        )
    with pytest.raises(ValueError) as error:
        ablation.mean_std([])
    assert error.value.args and error.value.args[0], (
        "the ValueError should carry a message saying what is wrong (no values)"
    )
