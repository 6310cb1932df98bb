"""Prompting: build a few-shot prompt, read the answer back, and classify by label words.

Three pieces of the prompting chapter, written by you:

1. `few_shot_prompt` lays out k solved examples before a question (in-context learning);
2. `extract_answer` finds the number a model's free-text answer commits to;
3. `verbalizer_scores` turns a language model into a classifier: the score of a class is
   the log-probability that its label word comes next.

Grade them with `pytest exercises -k prompting`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import torch

from peft_course.word_problems import Problem, format_number

_NUMBER = re.compile(
    r"(?<![\w.,/-])(?P<sign>-)?\$?(?P<sign2>-)?"
    r"(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+|(?=\.\d))(?P<dec>\.\d+)?(?:/(?P<den>\d+))?"
)
_MARKER = re.compile(r"answer\s*(?:is|=|:)|####|\\boxed\{", re.IGNORECASE)


def few_shot_prompt(question: str, examples: Sequence[Problem], k: int = 4) -> str:
    """The few-shot prompt for `question`, with the first `k` (4 by default) of `examples` solved
    before it.

    The layout, exactly (each example's answer written with `format_number`):

        Answer each question with a number.

        Q: <example 1 question>
        A: The answer is <example 1 answer>.

        Q: <question>
        A:

    That is: the instruction and a blank line, then per example
    `"Q: {q}\\nA: The answer is {a}.\\n\\n"`, then `"Q: {question}\\nA:"` with nothing after
    the colon. Raise `ValueError` when `k < 1` or there are fewer than `k` examples.
    """
    if k < 1 or len(examples) < k:
        raise ValueError(f"need k >= 1 examples; got k={k} and {len(examples)} examples")
    solved = "".join(
        f"Q: {e.question}\nA: The answer is {format_number(e.answer)}.\n\n" for e in examples[:k]
    )
    return f"Answer each question with a number.\n\n{solved}Q: {question}\nA:"


def _numbers(text: str) -> list[Fraction]:
    numbers = []
    for match in _NUMBER.finditer(text):
        value = Fraction((match["int"] or "0").replace(",", "") + (match["dec"] or ""))
        if match["den"] is not None:
            if int(match["den"]) == 0:
                continue
            value /= int(match["den"])
        numbers.append(-value if match["sign"] or match["sign2"] else value)
    return numbers


def extract_answer(text: str) -> Fraction | None:
    """The number a free-text answer commits to, exactly, or None.

    Numbers: an optional minus sign and/or dollar sign (`-4`, `-$4`, `$-4`; the Unicode
    minus U+2212 counts as `-`), then digits, either plain (`1234`) or in groups of three
    with commas (`1,234,567`), then optionally a decimal part (`.5`: a digit must follow
    the point, so the full stop in "is 4." is not one) and optionally `/denominator`
    (`3/4`). A number may start with its decimal point (`.5`). A number does not start
    right after a letter, a digit, `.`, `,`, `/` or `-` (so "step3" holds none, and
    "9-5" holds only 9).

    Which number: if the text contains an answer marker - "answer is", "answer:" or
    "answer =" (any case, spaces allowed before the "is"/":"/"="), "####" or "\\boxed{" -
    the first number after the *last* marker, or None when no number follows it.
    Without a marker, the last number in the text, or None when there is none.
    """
    text = text.replace("\u2212", "-")
    markers = list(_MARKER.finditer(text))
    if markers:
        after = _numbers(text[markers[-1].end() :])
        return after[0] if after else None
    numbers = _numbers(text)
    return numbers[-1] if numbers else None


def verbalizer_scores(
    model: Any, tokenizer: Any, prompts: Sequence[str], label_words: Sequence[str]
) -> torch.Tensor:
    """`[len(prompts), len(label_words)]`: log p(first token of each label word | prompt).

    For each prompt: tokenize it, run the model, take the logits at the prompt's last
    position, turn them into log-probabilities (log-softmax over the vocabulary) and read
    off the entry of each label word's *first* token (tokenize the word with
    `add_special_tokens=False`). Run the model in eval mode (no dropout) and without
    gradients. Raise `ValueError` when two label words share their first token, since they
    could not be told apart.
    """
    firsts = [tokenizer(word, add_special_tokens=False)["input_ids"][0] for word in label_words]
    if len(set(firsts)) < len(firsts):
        raise ValueError(f"label words {list(label_words)} share a first token")
    rows = []
    model.eval()
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([tokenizer(prompt)["input_ids"]])
            logits = model(input_ids=ids).logits[0, -1]
            rows.append(torch.log_softmax(logits.float(), dim=-1)[firsts])
    return torch.stack(rows)
