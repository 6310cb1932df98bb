"""Instruction and entailment tuning: response-only labels, an unmasked separator, exact match.

Reference answers. The package's versions are `peft_course.instruct.encode`,
`peft_course.data.join_pair` and `peft_course.instruct.exact_match`.
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

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    answer = ids(" " + response.strip()) + [tokenizer.eos_token_id]
    header = ids("\n\n### Response:")
    first = ids("### Instruction: " + instruction.strip())
    middle = ids("\n\n### Context: " + context.strip()) if context.strip() else []
    room = max_length - len(header) - len(answer)
    if room < 1:
        raise ValueError(
            f"the response ({len(answer)} tokens) and its header do not fit max_length {max_length}"
        )
    middle = middle[: max(0, room - len(first))]
    first = first[:room]
    prompt = first + middle + header
    return {"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer}


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
    second = second[: max_length - 1]
    first = first[: max(0, max_length - 1 - len(second))]
    ids = first + [separator] + second
    return ids, [1] * len(ids)


def exact_match(prediction: str, answer: str) -> bool:
    """Whether `prediction` is `answer`, ignoring case, runs of whitespace and one final full stop.

    Both are lower-cased, their whitespace collapsed to single spaces and stripped, and a
    final `"."` removed (then stripped again) before comparing.
    """

    def normal(text: str) -> str:
        return " ".join(text.lower().split()).removesuffix(".").strip()

    return normal(prediction) == normal(answer)
