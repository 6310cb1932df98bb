"""Grades exercises/prompting.py: the few-shot builder, the answer extractor, the verbalizer."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest
import torch

from peft_course import prompting as reference
from peft_course.models import load_model
from peft_course.synthetic import make_sentence
from peft_course.word_problems import Problem, generate_problems
from peft_course.tolerances import GRADED_LOGPROB_ATOL


@pytest.fixture
def prompting(load):
    return load("prompting")


# --- few_shot_prompt ------------------------------------------------------------------


def test_few_shot_prompt_layout(prompting):
    examples = [Problem("What is 2 + 3?", Fraction(5)), Problem("Half of 9?", Fraction(9, 2))]
    expected = (
        "Answer each question with a number.\n\n"
        "Q: What is 2 + 3?\nA: The answer is 5.\n\n"
        "Q: Half of 9?\nA: The answer is 4.5.\n\n"
        "Q: What is 1 + 1?\nA:"
    )
    got = prompting.few_shot_prompt("What is 1 + 1?", examples, 2)
    assert got == expected, f"expected\n{expected!r}\ngot\n{got!r}"


@pytest.mark.parametrize("seed", range(4))
def test_few_shot_prompt_matches_the_course_harness(prompting, seed):
    rng = random.Random(seed)
    examples = generate_problems(6, seed=seed)
    question = generate_problems(1, seed=100 + seed)[0].question
    k = rng.randint(1, 6)
    expected = reference.few_shot_prompt(question, examples, k)
    got = prompting.few_shot_prompt(question, examples, k)
    assert got == expected, f"k={k}: expected\n{expected!r}\ngot\n{got!r}"


@pytest.mark.parametrize("k", [-1, 0, 3, 4])
def test_few_shot_prompt_rejects_a_bad_k(prompting, k):
    with pytest.raises(ValueError):
        prompting.few_shot_prompt("Q?", [Problem("What is 1?", Fraction(1))] * 2, k)


def test_few_shot_prompt_error_names_the_problem(prompting):
    with pytest.raises(ValueError) as error:
        prompting.few_shot_prompt("Q?", [Problem("What is 1?", Fraction(1))], 3)
    assert "3" in str(error.value), (
        f"the ValueError should name the k that is wrong (3), got {str(error.value)!r}"
    )


@pytest.mark.parametrize("k", [1, 2])
def test_few_shot_prompt_takes_k_from_1_to_all_examples(prompting, k):
    examples = [Problem("What is 1?", Fraction(1)), Problem("What is 2?", Fraction(2))]
    expected = reference.few_shot_prompt("Q?", examples, k)
    got = prompting.few_shot_prompt("Q?", examples, k)
    assert got == expected, f"k={k} of 2 examples is allowed: expected\n{expected!r}\ngot\n{got!r}"


def test_few_shot_prompt_shows_four_examples_by_default(prompting):
    examples = [Problem(f"What is {n}?", Fraction(n)) for n in range(1, 7)]
    expected = reference.few_shot_prompt("Q?", examples, 4)
    got = prompting.few_shot_prompt("Q?", examples)
    assert got == expected, f"without k, the first 4 examples: expected\n{expected!r}\ngot\n{got!r}"


# --- extract_answer -------------------------------------------------------------------

PHRASINGS = [
    ("The answer is 4.", Fraction(4)),
    ("Answer: 7", Fraction(7)),
    ("The final answer is $4.50.", Fraction(9, 2)),
    ("He needs 4 kg of flour.", Fraction(4)),
    ("about 3/4 of the tank", Fraction(3, 4)),
    ("The house costs 1,234,567 dollars", Fraction(1234567)),
    ("In total 1,234.5 litres", Fraction(2469, 2)),
    ("The temperature fell to -5 degrees", Fraction(-5)),
    ("The balance is \u22125", Fraction(-5)),
    ("She owes -$3.25", Fraction(-13, 4)),
    ("It takes .5 hours", Fraction(1, 2)),
    ("15p + 10(p + 0.2) = 102, so 25p = 100 and p = 4", Fraction(4)),
    ("The answer is 4, not 5.", Fraction(4)),
    ("I think 6. The answer is 8. Sorry, I mean 9", Fraction(8)),
    ("He wrote the answer is 3, but the answer is 5", Fraction(5)),
    ("Natalia sold 48 + 24 = 72 clips.\n#### 72", Fraction(72)),
    ("so the result is \\boxed{12}", Fraction(12)),
    ("It was 4.5.", Fraction(9, 2)),
    ("Works 9-5 each day", Fraction(9)),
    ("version2 of step3", None),
    ("", None),
    ("I don't know.", None),
    ("The answer is four.", None),
    ("Let's think step by step.", None),
    ("THE ANSWER IS 3, then 5 more", Fraction(3)),
    ("Answer = 12 apples and 3 pears", Fraction(12)),
    ("answer : 7 or 8", Fraction(7)),
    ("The Answer: 2. Check: 2 + 2 = 4", Fraction(2)),
    ("#### 72 (that is 70 + 2)", Fraction(72)),
    ("\\boxed{12} or maybe 13", Fraction(12)),
    ("3 apples and 4 pears. The answer is", None),
    ("The answer is unclear, but 5 or 6", Fraction(5)),
    ("Costs $-4 now", Fraction(-4)),
    ("It is 12,34 or 5", Fraction(5)),
    ("1,000 and 2,500,000", Fraction(2500000)),
    ("-0.25 and 3/0", Fraction(-1, 4)),
    ("a/4 and b.5", None),
    ("1/2/3", Fraction(1, 2)),
    ("2 and 6/1", Fraction(6)),
    ("1, or 3/0, or 7", Fraction(7)),
    ("It is 1,2345", Fraction(1)),  # groups of exactly three: ",2345" starts no number
    ("Costs 12,3456 or so", Fraction(12)),
    ("Pay 1,234,5678 now", Fraction(1234)),
    ("-.5 degrees", Fraction(-1, 2)),
    ("$.75 each", Fraction(3, 4)),
    ("5/0", None),
    ("It cost 5./2 dollars", Fraction(5)),  # a digit must follow the point: "./2" is no number
    ("Take 3./4 of it", Fraction(3)),
    ("So the answer  is 6, not 7", Fraction(6)),  # spaces before the "is" are allowed
]


@pytest.mark.parametrize("text,expected", PHRASINGS)
def test_extract_answer(prompting, text, expected):
    got = prompting.extract_answer(text)
    assert got == expected and (got is None) == (expected is None), (
        f"extract_answer({text!r}): expected {expected!r}, got {got!r}"
    )
    if expected is not None:
        assert isinstance(got, Fraction), (
            f"extract_answer({text!r}) must return a Fraction, got {got!r}"
        )


def random_number(rng: random.Random) -> tuple[str, Fraction]:
    """A number written as the docstring allows, with its value; or a near miss (comma groups
    that are not of three digits, a point with no digit after it), whose value is the digits
    before the comma or point."""
    if rng.random() < 0.15:
        head, tail = rng.randint(1, 999), rng.randint(1000, 99999)
        return rng.choice([f"{head},{tail}", f"{head}./{tail}"]), Fraction(head)
    integer = rng.choice([rng.randint(0, 999), rng.randint(1000, 10**7)])
    text = f"{integer:,}" if integer >= 1000 and rng.random() < 0.5 else str(integer)
    value = Fraction(integer)
    if rng.random() < 0.4:
        decimals = "".join(rng.choices("0123456789", k=rng.randint(1, 3)))
        text, value = f"{text}.{decimals}", value + Fraction(int(decimals), 10 ** len(decimals))
        if integer == 0 and rng.random() < 0.5:
            text = text[1:]  # ".5": a number may start with its decimal point
    elif rng.random() < 0.3:
        denominator = rng.randint(1, 12)
        text, value = f"{text}/{denominator}", value / denominator
    sign = rng.choice(["", "", "-", "-$", "$-", "$", "\u2212"])
    return sign + text, (-value if sign.strip("$") else value)


def test_extract_answer_on_random_numbers_and_sentences(prompting):
    """Numbers of every documented form, after the last of several markers or last in a
    sentence without one, among other numbers."""
    rng = random.Random(0)
    for _ in range(200):
        number, value = random_number(rng)
        before, after = random_number(rng)[0], random_number(rng)[0]
        marker = rng.choice(["The answer is", "answer:", "ANSWER =", "####", "\\boxed{", None])
        if marker is None:
            text = f"We had {before} of them, then {number} more."
        else:
            text = f"First the answer is {before}. Then {marker} {number} (not {after})."
        got = prompting.extract_answer(text)
        assert got == value and isinstance(got, Fraction), (
            f"extract_answer({text!r}): expected {value!r}, got {got!r}. The number: an optional "
            "minus and/or dollar sign, digits plain or in comma groups of exactly three, an "
            "optional decimal part, an optional /denominator; the first one after the last "
            "marker, else the last one"
        )


def test_extract_answer_returns_exact_fractions(prompting):
    got = prompting.extract_answer("It costs 0.1 dollars")
    assert isinstance(got, Fraction) and got == Fraction(1, 10), (
        f"expected Fraction(1, 10) exactly (not a float), got {got!r}"
    )


# --- verbalizer_scores ----------------------------------------------------------------

WORDS = [" positive", " negative", " good", " bad", " one", " five", " great", " one star"]


@pytest.fixture(scope="module")
def tiny_lm():
    return load_model("tiny-gpt2", task="causal-lm")


@pytest.mark.parametrize("seed", range(3))
def test_verbalizer_scores_match_the_models_probabilities(prompting, tiny_lm, seed):
    """Compared with the course's batched implementation; float32 rounding allows 1e-4
    (`peft_course.tolerances.GRADED_LOGPROB_ATOL`)."""
    model, tokenizer = tiny_lm
    rng = random.Random(seed)
    prompts = [
        f"Review: {make_sentence(rng, rng.randint(0, 1))}\nSentiment:"
        for _ in range(rng.randint(2, 4))
    ]
    words = rng.sample(WORDS[:-1], rng.randint(2, 3))
    expected = reference.verbalizer_scores(model, tokenizer, prompts, words)
    model.train()  # dropout on: the function must switch it off itself
    try:
        got = prompting.verbalizer_scores(model, tokenizer, prompts, words)
    except ValueError as error:
        pytest.fail(
            f"label words {words} have different first tokens, each tokenized as given (with "
            f"its leading space), yet verbalizer_scores raised: {error}",
            pytrace=False,
        )
    finally:
        model.eval()
    assert not got.requires_grad, "scoring needs no gradients: run the model under torch.no_grad()"
    assert tuple(got.shape) == (len(prompts), len(words)), (
        f"expected shape {(len(prompts), len(words))}, got {tuple(got.shape)}"
    )
    assert torch.allclose(got.float(), expected, atol=GRADED_LOGPROB_ATOL), (
        f"label words {words}: expected log-probabilities\n{expected}\ngot\n{got}"
    )


def test_verbalizer_uses_the_first_token_of_a_long_word(prompting, tiny_lm):
    model, tokenizer = tiny_lm
    got = prompting.verbalizer_scores(model, tokenizer, ["the film was"], [" one star", " five"])
    expected = reference.verbalizer_scores(model, tokenizer, ["the film was"], [" one", " five"])
    assert torch.allclose(got.float(), expected, atol=GRADED_LOGPROB_ATOL), (
        f"' one star' should score as its first token ' one': expected {expected}, got {got}"
    )


def test_verbalizer_rejects_words_with_the_same_first_token(prompting, tiny_lm):
    model, tokenizer = tiny_lm
    with pytest.raises(ValueError) as error:
        prompting.verbalizer_scores(model, tokenizer, ["the film was"], [" one star", " one"])
    assert "one star" in str(error.value), (
        f"the ValueError should name the label words that collide, got {str(error.value)!r}"
    )


class WithBOS:
    """GPT-2's tokenizer made to start every text with a special token, as Llama's does."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.bos = tokenizer.eos_token_id

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return {"input_ids": [self.bos] * add_special_tokens + ids}


def test_verbalizer_with_a_tokenizer_that_adds_a_start_token(prompting, tiny_lm):
    """The prompt keeps its start token; the label words must not get one (or every word's
    first token would be the same start token)."""
    model, tokenizer = tiny_lm
    with_bos = WithBOS(tokenizer)
    prompts, words = ["the film was", "a fine cast, and"], [" good", " bad"]
    firsts = [tokenizer(word, add_special_tokens=False)["input_ids"][0] for word in words]
    with torch.no_grad():
        expected = torch.stack(
            [
                torch.log_softmax(
                    model(input_ids=torch.tensor([with_bos(p)["input_ids"]])).logits[0, -1], -1
                )[firsts]
                for p in prompts
            ]
        )
    got = prompting.verbalizer_scores(model, with_bos, prompts, words)
    assert torch.allclose(got.float(), expected, atol=GRADED_LOGPROB_ATOL), (
        f"with a tokenizer that adds a start token: expected\n{expected}\ngot\n{got}. Tokenize the "
        "label words with add_special_tokens=False"
    )
