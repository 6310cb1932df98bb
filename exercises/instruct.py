"""Exercise: instruction and entailment tuning - response-only labels, the pair, exact match.

Three pieces of the instruction-tuning chapter, written by you and compared with what the
tokenizer and the course's own code produce: `pytest exercises -k instruct`.
"""

from __future__ import annotations

from typing import Any


def encode_example(
    tokenizer: Any, instruction: str, context: str, response: str, max_length: int
) -> dict:
    """`{"input_ids": [...], "labels": [...]}` for one instruction-tuning example.

    The text is `"### Instruction: " + instruction`, then (only when `context` is not blank)
    `"\\n\\n### Context: " + context`, then `"\\n\\n### Response:"`, then `" " + response` and
    the end-of-text token (`tokenizer.eos_token_id`). Strip the three strings first. Tokenize
    each piece with `add_special_tokens=False`. `labels` is -100 for every prompt token and the
    token id itself for the response and the end-of-text token. When the whole is longer than
    `max_length`, cut tokens from the end of the context piece first, then from the end of the
    instruction piece; the response header and the response are never cut. Raise `ValueError`
    when the response header, the response and its end-of-text alone leave no room for at
    least one instruction token.
    """
    raise NotImplementedError(
        "not written yet: pytest exercises/test_instruct.py grades it, with hints"
    )


def pair_ids(
    first: list[int], second: list[int], separator: int, max_length: int
) -> tuple[list[int], list[int]]:
    """`(input_ids, attention_mask)` of a sentence pair joined by `separator`, at most
    `max_length` long.

    The ids are `first + [separator] + second`. The separator is a real token the model must
    read (GPT-2 uses its end-of-text id, which is also its pad id), so its attention-mask entry
    is 1 like every other position here. When the pair is too long, cut the end of `first`;
    cut the end of `second` only when `first` is already empty.
    """
    raise NotImplementedError(
        "not written yet: pytest exercises/test_instruct.py grades it, with hints"
    )


def exact_match(prediction: str, answer: str) -> bool:
    """Whether `prediction` is `answer`, ignoring case, runs of whitespace and one final full stop.

    Both are lower-cased, their whitespace collapsed to single spaces and stripped, and a
    final `"."` removed (then stripped again) before comparing.
    """
    raise NotImplementedError(
        "not written yet: pytest exercises/test_instruct.py grades it, with hints"
    )
