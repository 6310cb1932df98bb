"""Grades exercises/instruct.py: response-only labels, the sentence pair, the exact-match scorer.

The labels are compared with a hand computation from the tokenizer itself (the encoded ids
must be the ids of the whole text tokenized at once) and with the course's own
`peft_course.instruct.encode`; the pair with `peft_course.data` on the same tokenizer.
Everything is integers or booleans: the match must be exact.
"""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peft_course import instruct as reference
from peft_course.data import join_pair
from peft_course.models import load_tokenizer


@pytest.fixture
def instruct(load):
    return load("instruct")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny-gpt2")


EXAMPLES = [  # (instruction, context, response)
    ("Add these two numbers.", "3 and 4", "7"),
    ("Name a colour.", "", "red"),
    ("Sort these numbers.", "   ", "1 2 3"),  # a blank context is no context
    ("  Reverse the words.  ", " cat dog ", " dog cat "),  # surrounding spaces are stripped
]


def whole_text(instruction: str, context: str, response: str) -> tuple[str, str]:
    """(prompt, prompt + response) as one string each, written out by hand."""
    prompt = f"### Instruction: {instruction.strip()}"
    if context.strip():
        prompt += f"\n\n### Context: {context.strip()}"
    prompt += "\n\n### Response:"
    return prompt, prompt + " " + response.strip()


@pytest.mark.parametrize("instruction, context, response", EXAMPLES)
def test_labels_are_the_response_only(instruct, tokenizer, returns, instruction, context, response):
    got = instruct.encode_example(tokenizer, instruction, context, response, 256)
    prompt, text = whole_text(instruction, context, response)
    eos = tokenizer.eos_token_id
    expected_ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [eos]
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    expected_labels = [-100] * n_prompt + expected_ids[n_prompt:]
    returns(got["input_ids"], list, "encode_example's input_ids")
    returns(got["labels"], list, "encode_example's labels")
    assert got["input_ids"] == expected_ids, (
        f"{text!r}: the ids must be the whole text tokenized at once, "
        f"then the end-of-text id {eos}:\n"
        f"expected {expected_ids}\ngot      {got['input_ids']}"
    )
    assert got["labels"] == expected_labels, (
        f"{text!r}: -100 on the {n_prompt} prompt tokens, "
        "then the response's ids and the end-of-text:\n"
        f"expected {expected_labels}\ngot      {got['labels']}"
    )


def test_no_context_header_without_a_context(instruct, tokenizer):
    got = instruct.encode_example(tokenizer, "Name a colour.", "  ", "red", 256)
    assert "Context" not in tokenizer.decode(got["input_ids"]), (
        "a blank context leaves out the context header"
    )


@pytest.mark.parametrize("seed", range(3))
def test_equals_the_course_encoder(instruct, tokenizer, seed):
    for example in reference.generated_instructions(10, 5, 5, seed=seed)["train"]:
        expected = reference.encode(example, tokenizer, 64)
        got = instruct.encode_example(
            tokenizer, example.instruction, example.context, example.response, 64
        )
        assert got == expected, f"{example}: expected {expected}, got {got}"


@pytest.mark.parametrize("max_length", [24, 30, 40, 60])
def test_a_long_context_is_cut_first_and_the_response_never(instruct, tokenizer, max_length):
    response = "the third one"
    got = instruct.encode_example(
        tokenizer, "Which one?", " ".join(["word"] * 60), response, max_length
    )
    answer = tokenizer(" " + response, add_special_tokens=False)["input_ids"] + [
        tokenizer.eos_token_id
    ]
    header = tokenizer("\n\n### Response:", add_special_tokens=False)["input_ids"]
    instruction = tokenizer("### Instruction: Which one?", add_special_tokens=False)["input_ids"]
    assert len(got["input_ids"]) == max_length, (
        f"cut to max_length {max_length} exactly, got {len(got['input_ids'])} tokens"
    )
    assert got["input_ids"][-len(answer) :] == answer, (
        "the response and its end-of-text must stay whole"
    )
    assert got["input_ids"][-len(answer) - len(header) : -len(answer)] == header, (
        "the response header must stay whole"
    )
    room = max_length - len(header) - len(answer)  # what the instruction and the context share
    kept = instruction[:room]
    assert got["input_ids"][: len(kept)] == kept, (
        f"the context is cut before the instruction: the first {len(kept)} ids "
        "must be the instruction's"
        + (
            ""
            if len(kept) == len(instruction)
            else " (cut too: it alone is longer than the room left)"
        )
    )
    assert [t for t in got["labels"] if t != -100] == answer, (
        "the labels are still the whole response"
    )


def test_a_long_instruction_without_context_is_cut(instruct, tokenizer):
    got = instruct.encode_example(tokenizer, " ".join(["please"] * 80), "", "yes", 20)
    expected = reference.encode(
        reference.Example(" ".join(["please"] * 80), "", "yes"), tokenizer, 20
    )
    assert got == expected and len(got["input_ids"]) == 20, (
        f"with no context to cut, the instruction's end is cut: expected {expected}, got {got}"
    )


def test_a_response_that_cannot_fit_is_refused(instruct, tokenizer):
    with pytest.raises(ValueError) as error:
        instruct.encode_example(tokenizer, "Say it.", "", " ".join(["long"] * 40), 16)
    assert error.value.args and error.value.args[0], (
        "the ValueError should say that the response does not fit"
    )


def test_the_boundary_of_what_fits(instruct, tokenizer):
    """Header + response + end-of-text + one instruction token fit; one token less does not."""
    answer = len(tokenizer(" yes", add_special_tokens=False)["input_ids"]) + 1
    header = len(tokenizer("\n\n### Response:", add_special_tokens=False)["input_ids"])
    got = instruct.encode_example(tokenizer, "Say it.", "", "yes", header + answer + 1)
    assert len(got["input_ids"]) == header + answer + 1, (
        f"max_length {header + answer + 1} leaves room for one instruction token: "
        "expected that many ids"
    )
    with pytest.raises(ValueError):
        instruct.encode_example(tokenizer, "Say it.", "", "yes", header + answer)


@pytest.mark.parametrize("context_room", [1, 4, 9, 15])
def test_a_context_is_cut_from_its_end(instruct, tokenizer, context_room):
    """Words that differ, so that where the cut falls shows: the context piece (its header
    first) keeps its start and loses its end."""
    context = " ".join(f"w{k}" for k in range(40))

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    first, middle = ids("### Instruction: Sum."), ids("\n\n### Context: " + context)
    header, answer = ids("\n\n### Response:"), ids(" 7") + [tokenizer.eos_token_id]
    max_length = len(first) + context_room + len(header) + len(answer)
    kept = middle[:context_room]
    expected = first + kept + header + answer
    got = instruct.encode_example(tokenizer, "Sum.", context, "7", max_length)["input_ids"]
    assert got == expected, (
        f"max_length {max_length}: {len(kept)} of the context piece's {len(middle)} tokens fit; "
        "cut tokens from the *end* of the context piece (its header and first words stay):\n"
        f"expected {expected}\ngot      {got}"
    )


WORDS = ["add", "the", "numbers", "red", "blue", "Sort", "these", "3", "and", "4", "cat", "dog"]


def random_text(rng: random.Random, most: int) -> str:
    words = rng.choices(WORDS, k=rng.randint(0, most))
    return rng.choice(["", " ", "  "]) + " ".join(words) + rng.choice(["", " ", "\n"])


def test_random_examples_equal_the_course_encoder(instruct, tokenizer):
    """Random instructions, contexts (blank ones too) and responses, at random lengths from
    too short for the response to ample: the same ids and labels as `peft_course.instruct.encode`,
    or the same refusal."""
    rng = random.Random(0)
    for _ in range(60):
        instruction = random_text(rng, 12).strip() or "Say it."
        context, response = random_text(rng, 20), random_text(rng, 6).strip() or "yes"
        max_length = rng.randint(6, 60)
        example = reference.Example(instruction, context, response)
        try:
            expected = reference.encode(example, tokenizer, max_length)
        except ValueError:
            expected = None
        try:
            got = instruct.encode_example(tokenizer, instruction, context, response, max_length)
        except ValueError:
            got = None
        case = f"instruction {instruction!r}, context {context!r}, response {response!r}"
        assert expected is not None or got is None, (
            f"{case}, max_length {max_length}: the response, its end-of-text and the response "
            "header leave no room for an instruction token; raise ValueError"
        )
        assert got is not None or expected is None, (
            f"{case}, max_length {max_length}: fits (after cutting the context, then the "
            "instruction), yet a ValueError was raised"
        )
        assert got == expected, (
            f"{case}, max_length {max_length}:\nexpected {expected}\ngot      {got}"
        )


class WithBOS:
    """The tokenizer made to start every text with a special token unless told not to, as
    Llama's does."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.eos_token_id = tokenizer, tokenizer.eos_token_id

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return {"input_ids": [self.eos_token_id] * add_special_tokens + ids}


def test_pieces_are_tokenized_without_special_tokens(instruct, tokenizer):
    expected = instruct.encode_example(tokenizer, "Add them.", "2 and 3", "5", 256)
    got = instruct.encode_example(WithBOS(tokenizer), "Add them.", "2 and 3", "5", 256)
    assert got == expected, (
        "with a tokenizer that adds a start token, each piece must be tokenized with "
        "add_special_tokens=False "
        f"(or start tokens land inside the text): expected {expected['input_ids']}, "
        f"got {got['input_ids']}"
    )


# --- pair_ids ---------------------------------------------------------------------------

PAIRS = [
    ([1, 2, 3], [4, 5], 8),
    ([1, 2, 3, 4, 5, 6], [7, 8], 6),
    ([1, 2], [3, 4, 5, 6, 7, 8], 5),
    ([1], [2], 3),
    ([], [2, 3], 4),
    ([1, 2, 3], [4, 5], 6),
]


@pytest.mark.parametrize("first, second, max_length", PAIRS)
def test_pair_ids(instruct, returns, first, second, max_length):
    ids, mask = instruct.pair_ids(first, second, 0, max_length)
    returns(ids, list, "pair_ids' input_ids")
    expected = join_pair(first, second, 0, max_length)
    assert ids == expected, (
        f"first={first}, second={second}, separator 0, max_length {max_length}: "
        f"expected {expected} (cut the "
        f"first text before the second), got {ids}"
    )
    assert mask == [1] * len(ids), (
        "the separator (id 0 here, GPT-2's end-of-text and pad id) is read: "
        f"every mask entry is 1, got {mask}"
    )


def test_pair_ids_equals_the_course_tokenizer_path(instruct, tokenizer):
    """The generated entailment pairs, tokenized the way `peft_course.data.tokenize` does for
    GPT-2."""
    from peft_course.data import load_classification_data, tokenize

    data = load_classification_data("synthetic-entailment", max_examples=8)
    expected = tokenize(data, tokenizer, 24)["train"]
    for row, encoded in zip(data.splits["train"], expected):
        first = tokenizer(row["text"], add_special_tokens=False)["input_ids"]
        second = tokenizer(row["text_pair"], add_special_tokens=False)["input_ids"]
        ids, mask = instruct.pair_ids(first, second, tokenizer.eos_token_id, 24)
        assert (ids, mask) == (encoded["input_ids"], encoded["attention_mask"]), (
            f"{row['text']!r} / {row['text_pair']!r}: expected {encoded['input_ids']}, got {ids}"
        )


# --- exact_match ------------------------------------------------------------------------

CASES = [
    ("positive", "positive", True),
    ("Positive", "positive", True),
    ("positive.", "positive", True),
    ("  1 2  5 ", "1 2 5", True),
    ("1 2 5.", "1 2 5", True),
    ("a\tb\nc", "a b c", True),
    ("The Answer", "the answer.", True),
    ("1 25", "1 2 5", False),
    ("positive review", "positive", False),
    ("negative", "positive", False),
    ("", "positive", False),
    ("5 .", "5", True),
    ("5..", "5", False),
    ("", "", True),
    ("positive. ", "positive", True),  # whitespace after the final stop goes first
    ("The answer.\n", "the answer", True),
    ("1 2 5 .\t", "1 2 5", True),
    ("  x.  ", "X", True),
    ("5 . .", "5", False),
    (".", "", True),
]


@pytest.mark.parametrize("prediction, answer, expected", CASES)
def test_exact_match(instruct, prediction, answer, expected):
    got = instruct.exact_match(prediction, answer)
    assert got is expected, (
        f"exact_match({prediction!r}, {answer!r}) should be {expected} "
        "(case, runs of whitespace and one final full stop do not count: lower-case, collapse and "
        f"strip the whitespace, then remove one final '.' and strip again), got {got!r}"
    )


def normal(text: str) -> str:
    """The docstring's steps, in its order: lower-case, collapse runs of whitespace to single
    spaces and strip, remove one final full stop, strip again."""
    text = " ".join(text.lower().split())
    return (text[:-1] if text.endswith(".") else text).strip()


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    words=st.lists(st.sampled_from(["a", "B", "5", "ab", "x.y"]), min_size=0, max_size=4),
    gaps=st.lists(st.sampled_from([" ", "  ", "\t", "\n", " \n "]), min_size=5, max_size=5),
    stop=st.sampled_from(["", ".", "..", " .", ". "]),
    other=st.sampled_from(["same", "upper", "respaced", "stopped", "different"]),
)
def test_exact_match_normalises_in_the_documented_order(instruct, words, gaps, stop, other):
    """Random texts of words, runs of whitespace and final stops, compared with a variant of
    themselves (re-cased, re-spaced, with a stop, or another text)."""
    prediction = gaps[0] + gaps[1].join(words) + stop + gaps[2]
    answer = {
        "same": prediction,
        "upper": prediction.upper(),
        "respaced": gaps[3] + " ".join(words) + gaps[4],
        "stopped": " ".join(words) + ".",
        "different": " ".join(words) + " extra",
    }[other]
    expected = normal(prediction) == normal(answer)
    got = instruct.exact_match(prediction, answer)
    assert got is expected, (
        f"exact_match({prediction!r}, {answer!r}) should be {expected}: both become "
        f"{normal(prediction)!r} and {normal(answer)!r} when lower-cased, their whitespace "
        f"collapsed and stripped, *then* one final '.' removed and stripped again; got {got!r}"
    )
