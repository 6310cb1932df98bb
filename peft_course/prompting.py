"""In-context learning and chain-of-thought prompting, measured.

No weights change in this chapter: a causal language model is *prompted*. The module has
four parts, each usable on its own:

* prompt builders for zero-shot, few-shot, one-shot chain-of-thought and zero-shot
  chain-of-thought prompts, driven by a table of named templates (`STRATEGIES`);
* `extract_answer`, which reads a number out of free text;
* `evaluate_prompting`, which runs each strategy over a problem set with any
  `generate(prompt) -> str` (a Hugging Face model through `hf_generate`, or a plain Python
  function) and reports accuracy per strategy, saving every prompt and completion;
* classification by prompting: `verbalizer_scores` turns the model's next-token
  probabilities of label words (" negative", " positive") into class scores.
"""

from __future__ import annotations

import copy
import json
import re
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import torch

from peft_course.data import load_classification_data
from peft_course.errors import (
    CourseError,
    check_int,
    check_number,
    check_positive_int,
    check_positive_number,
    check_string_list,
    describe,
)
from peft_course.files import replacing
from peft_course.models import load_model, logits_at
from peft_course.settings import EMBEDDED_MODEL, PROMPTING
from peft_course.tables import markdown_table
from peft_course.word_problems import (
    PRICE_EXAMPLE,
    Problem,
    ProblemError,
    format_number,
    generate_problems,
    load_gsm8k_jsonl,
)

Generate = Callable[[str], str]

# ---------------------------------------------------------------------------------------
# Prompt templates and builders
# ---------------------------------------------------------------------------------------

QUESTION_FORMAT = "Q: {question}\nA:"
SOLVED_FORMAT = "Q: {question}\nA: {reasoning}The answer is {answer}.\n\n"
STOP = "\nQ:"  # a model that has answered starts the next question: cut it there


# --8<-- [start:templates]
@dataclass(frozen=True)
class PromptTemplate:
    """One prompting strategy, as data: what comes before the question and after it.

    The prompt is `instruction`, then the solved examples (the `fixed_examples`, then `k`
    drawn from the example pool when `from_pool`), each with its worked reasoning when
    `worked`, then the question and `cue` (text the model's answer is made to start with).

    Attributes:
        name: the strategy's name, its key in `STRATEGIES`.
        instruction: the text the prompt starts with; empty: none.
        from_pool: whether `k` examples are drawn from the example pool.
        worked: whether the examples show their worked reasoning.
        fixed_examples: the examples every prompt of the strategy has.
        cue: the text the model's answer is made to start with.
        description: what the strategy shows, for the prompt gallery.
    """

    name: str
    instruction: str = ""
    from_pool: bool = False
    worked: bool = False
    fixed_examples: tuple[Problem, ...] = ()
    cue: str = ""
    description: str = ""


STRATEGIES: dict[str, PromptTemplate] = {
    t.name: t
    for t in [
        PromptTemplate(
            "zero-shot", "Answer each question with a number.", description="the question alone"
        ),
        PromptTemplate(
            "few-shot",
            "Answer each question with a number.",
            from_pool=True,
            description="k solved examples, answers only",
        ),
        PromptTemplate(
            "cot",
            "Solve each problem step by step, then give the answer.",
            worked=True,
            fixed_examples=(PRICE_EXAMPLE,),
            description="one example with its worked reasoning",
        ),
        PromptTemplate(
            "zero-shot-cot",
            cue=" Let's think step by step.",
            description="an instruction to reason step by step, no example",
        ),
        PromptTemplate(
            "few-shot-cot",
            "Solve each problem step by step, then give the answer.",
            from_pool=True,
            worked=True,
            description="k examples with their worked reasoning",
        ),
    ]
}
DEFAULT_STRATEGIES = ("zero-shot", "few-shot", "cot", "zero-shot-cot")
# --8<-- [end:templates]


def get_strategy(strategy: str | PromptTemplate) -> PromptTemplate:
    """The template named `strategy` (a template passes through), or an error listing the names.

    Args:
        strategy: a name in `STRATEGIES`, or a `PromptTemplate`.

    Raises:
        CourseError: if no strategy has that name.
    """
    if isinstance(strategy, PromptTemplate):
        return strategy
    try:
        return STRATEGIES[strategy]
    except (KeyError, TypeError):
        raise CourseError(
            f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}"
        ) from None


def format_solved(problem: Problem, worked: bool) -> str:
    """One solved example: the question, the reasoning when `worked`, and the answer.

    Args:
        problem: the solved problem.
        worked: whether to show its reasoning.

    Raises:
        CourseError: if `worked` and the problem has no reasoning.
    """
    if worked and not problem.reasoning:
        raise CourseError(
            f"a worked example needs reasoning, and this one has none: {problem.question[:60]!r}"
        )
    reasoning = f"{problem.reasoning} " if worked else ""
    return SOLVED_FORMAT.format(
        question=problem.question, reasoning=reasoning, answer=format_number(problem.answer)
    )


# --8<-- [start:build_prompt]
def build_prompt(
    strategy: str | PromptTemplate,
    question: str,
    examples: Sequence[Problem] = (),
    k: int = 4,
) -> str:
    """The prompt `strategy` makes for `question`; pool strategies use the first `k` `examples`.

    Args:
        strategy: a name in `STRATEGIES`, or a `PromptTemplate`.
        question: the question to ask.
        examples: the example pool: solved problems.
        k: how many pool examples a pool strategy shows.

    Raises:
        CourseError: if a pool strategy gets `k < 1` or fewer than `k` examples.
    """
    template = get_strategy(strategy)
    shots = list(template.fixed_examples)
    if template.from_pool:
        check_int("k (the number of examples)", k, minimum=0)
        if k < 1 or len(examples) < k:
            raise CourseError(
                f"'{template.name}' needs k >= 1 examples; got k={k} and {len(examples)} examples"
            )
        shots += list(examples[:k])
    header = f"{template.instruction}\n\n" if template.instruction else ""
    solved = "".join(format_solved(example, template.worked) for example in shots)
    return header + solved + QUESTION_FORMAT.format(question=question) + template.cue


# --8<-- [end:build_prompt]


def zero_shot_prompt(question: str) -> str:
    """The question with an instruction to answer with a number, and nothing else.

    Args:
        question: the question to ask.
    """
    return build_prompt("zero-shot", question)


def few_shot_prompt(question: str, examples: Sequence[Problem], k: int = 4) -> str:
    """`k` solved examples (answers only) before the question: in-context learning.

    Args:
        question: the question to ask.
        examples: solved problems; the first `k` are shown.
        k: how many examples to show.
    """
    return build_prompt("few-shot", question, examples, k)


def chain_of_thought_prompt(question: str, example: Problem = PRICE_EXAMPLE) -> str:
    """One-shot chain of thought: one example whose answer shows its worked reasoning.

    Args:
        question: the question to ask.
        example: the solved example; it must have its reasoning.
    """
    return build_prompt(replace(STRATEGIES["cot"], fixed_examples=(example,)), question)


def zero_shot_cot_prompt(question: str) -> str:
    """Zero-shot chain of thought: the answer is made to start with "Let's think step by step.".

    Args:
        question: the question to ask.
    """
    return build_prompt("zero-shot-cot", question)


# ---------------------------------------------------------------------------------------
# Answer extraction
# ---------------------------------------------------------------------------------------

# --8<-- [start:extract]
NUMBER = re.compile(
    r"""(?<![\w.,/-])                   # not the tail of a word, a number or a date
        (?P<sign>-)?\$?(?P<sign2>-)?    # -4, -$4 and $-4 are all negative
        (?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+|(?=\.\d))   # 1,234 or 1234 (or none: .5)
        (?P<dec>\.\d+)?                 # 4.50 (a full stop after 4 is not a decimal point)
        (?:/(?P<den>\d+))?              # 3/4
    """,
    re.VERBOSE,
)
# "the answer is 4", "Answer: 4", GSM8K's "#### 4" and LaTeX's \boxed{4} announce the answer.
MARKER = re.compile(r"answer\s*(?:is|=|:)|####|\\boxed\{", re.IGNORECASE)


def read_numbers(text: str) -> list[Fraction]:
    """Every number in `text`, in order, exactly (thousands separators and `$` dropped).

    Args:
        text: the text to read.
    """
    numbers = []
    for match in NUMBER.finditer(text.replace("\u2212", "-")):  # U+2212 is the minus sign
        whole = (match["int"] or "0").replace(",", "")
        value = Fraction(whole + (match["dec"] or ""))
        if match["den"] is not None:
            if int(match["den"]) == 0:
                continue
            value /= int(match["den"])
        numbers.append(-value if match["sign"] or match["sign2"] else value)
    return numbers


def extract_answer(text: str) -> Fraction | None:
    """The answer a completion gives: the number after the last "answer is", else the last number.

    When an answer marker is present but no number follows it ("the answer is four"),
    the result is None: the model announced an answer that cannot be read, and guessing
    a number from its working would score reasoning that it did not commit to.

    Args:
        text: the completion to read.
    """
    markers = list(MARKER.finditer(text))
    if markers:
        after = read_numbers(text[markers[-1].end() :])
        return after[0] if after else None
    numbers = read_numbers(text)
    return numbers[-1] if numbers else None


# --8<-- [end:extract]


def cut_completion(completion: str, stop: str = STOP) -> str:
    """The completion up to where the model starts a new question of its own.

    Args:
        completion: the generated text.
        stop: the text that starts a new question (`STOP`).
    """
    return completion.split(stop, 1)[0]


# ---------------------------------------------------------------------------------------
# Generating with a Hugging Face model
# ---------------------------------------------------------------------------------------


# --8<-- [start:hf_generate]
@dataclass
class HFGenerate:
    """`generate(prompt) -> str` for a Hugging Face causal LM: greedy, or sampled when `do_sample`.

    Only the new text is returned. Sampling is seeded per prompt (seed + a hash of the
    prompt), so a prompt gets the same completion whatever order prompts come in. A prompt
    longer than the context leaves room for `max_new_tokens` by dropping its oldest tokens,
    the way evaluation harnesses do; `truncated` counts how often that happened. `many`
    decodes greedily `batch_size` prompts at a time: one pass over the weights for a token of
    every row, where a CPU spends a token's time reading the weights, not computing with them.

    Attributes:
        model: the causal language model.
        tokenizer: its tokenizer.
        max_new_tokens: the most tokens generated per prompt.
        do_sample: sample instead of decoding greedily.
        temperature: the sampling temperature.
        top_p: the nucleus of top-p sampling.
        seed: the sampling seed, to which the prompt's hash is added.
        stop: generation stops once this text is written.
        chat: wrap each prompt in the model's chat template (instruct models).
        batch_size: prompts `many` decodes together (greedy only; sampling goes one at a time).
        truncated: how many prompts were cut to fit the context.

    Raises:
        CourseError: if an option is out of range, or `chat` is set for a model without a chat
            template.
    """

    model: Any
    tokenizer: Any
    max_new_tokens: int = PROMPTING.max_new_tokens
    do_sample: bool = False
    temperature: float = PROMPTING.temperature
    top_p: float = PROMPTING.top_p
    seed: int = 0
    stop: str = STOP
    chat: bool = False
    batch_size: int = 1
    truncated: int = field(default=0, init=False)
    _stopping: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        """Check the decoding options,
        and that `max_new_tokens` leaves room in the model's context."""
        check_positive_int("max_new_tokens", self.max_new_tokens)
        if not isinstance(self.do_sample, bool):
            raise CourseError(f"do_sample must be True or False, got {describe(self.do_sample)}")
        check_positive_number("temperature", self.temperature)
        check_number("top_p", self.top_p, 0, 1, low_open=True)
        check_int("seed", self.seed, minimum=0)
        check_positive_int("batch_size", self.batch_size)
        if self.chat and not getattr(self.tokenizer, "chat_template", None):
            raise CourseError(
                "the model's tokenizer has no chat template (it is not a chat model): drop --chat"
            )
        context = (
            getattr(self.model.config, "n_positions", None)
            or self.model.config.max_position_embeddings
        )
        if self.max_new_tokens >= context:
            raise CourseError(
                f"max_new_tokens={self.max_new_tokens} leaves no room for the prompt in the "
                f"model's context of {context} tokens; use fewer than {context}"
            )

    def __call__(self, prompt: str) -> str:
        ids = self._prompt_ids(prompt)
        if self.do_sample:
            torch.manual_seed(self.seed + zlib.crc32(prompt.encode()))
        return self._generate([ids])[0]

    def many(self, prompts: Sequence[str]) -> list[str]:
        """The completions of `prompts`, greedy ones `batch_size` at a time.

        A batch is padded on the left, so every row's new tokens follow its own last token,
        and its prompts are the ones of most similar length. Finished rows wait (padded) for
        the others, and their text ends where it would have alone.

        Args:
            prompts: the prompts, in order; the completions come back in the same order.
        """
        if self.do_sample or self.batch_size == 1:
            return [self(prompt) for prompt in prompts]
        rows = [self._prompt_ids(prompt) for prompt in prompts]
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        completions: list[str] = [""] * len(rows)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            for i, text in zip(batch, self._generate([rows[i] for i in batch])):
                completions[i] = text
        return completions

    def _prompt_ids(self, prompt: str) -> list[int]:
        """The prompt's token ids (in the chat template with `chat`), its oldest tokens dropped
        where it would leave no room for `max_new_tokens`."""
        text = chat_prompt(self.tokenizer, prompt) if self.chat else prompt
        ids = self.tokenizer(text, verbose=False)["input_ids"]
        context = (
            getattr(self.model.config, "n_positions", None)
            or self.model.config.max_position_embeddings
        )
        room = context - self.max_new_tokens
        if len(ids) > room:
            ids, self.truncated = ids[-room:], self.truncated + 1
        return ids

    def _generate(self, rows: list[list[int]]) -> list[str]:
        """The new text after each row of token ids, the rows padded on the left together."""
        from transformers import StoppingCriteriaList, StopStringCriteria

        if self._stopping is None:  # built once: it pre-computes how every token can end `stop`
            self._stopping = StoppingCriteriaList([StopStringCriteria(self.tokenizer, [self.stop])])
        width = max(len(row) for row in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(row)) + row for row in rows])
        mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows])
        sampling = (
            {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}
            if self.do_sample
            else {"do_sample": False}
        )
        self.model.eval()
        with torch.no_grad():
            output = self.model.generate(
                input_ids=ids.to(self.model.device),
                attention_mask=mask.to(self.model.device),
                max_new_tokens=self.max_new_tokens,
                stopping_criteria=self._stopping,
                pad_token_id=pad,
                **sampling,
            )
        return self.tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)


# --8<-- [end:hf_generate]


def load_generate(model_name: str = EMBEDDED_MODEL, seed: int = 0, **options: Any) -> HFGenerate:
    """Load `model_name` as a causal LM and wrap it
    (options: `max_new_tokens`, `do_sample`, ...).

    Args:
        model_name: a hub id, a local directory or an embedded name (`tiny-gpt2`).
        seed: the seed of the loading and of the sampling.
        **options: further `HFGenerate` fields.
    """

    model, tokenizer = load_model(model_name, task="causal-lm", seed=seed)
    return HFGenerate(model, tokenizer, seed=seed, **options)


# ---------------------------------------------------------------------------------------
# The evaluation harness
# ---------------------------------------------------------------------------------------


def answers_match(predicted: Fraction | None, gold: Fraction) -> bool:
    """Exact comparison: `4.50`, `4.5` and `9/2` all equal 4.5; no answer is never right.

    Args:
        predicted: the answer read from the completion; None if none was found.
        gold: the true answer.
    """
    return predicted is not None and predicted == gold


@dataclass
class PromptingResult:
    """Accuracy per strategy, and every prompt, completion and verdict behind it.

    Attributes:
        records: one dict per (strategy, problem): prompt, completion, answers and verdict.
        strategies: the names of the strategies, in the order they ran.
    """

    records: list[dict[str, Any]]
    strategies: tuple[str, ...]

    def accuracy(self) -> dict[str, float]:
        """The share of problems each strategy answered correctly."""
        return {
            s: sum(r["correct"] for r in self._of(s)) / max(1, len(self._of(s)))
            for s in self.strategies
        }

    def rows(self) -> list[dict[str, str]]:
        """One table row per strategy."""
        rows = []
        for strategy in self.strategies:
            records = self._of(strategy)
            correct = sum(r["correct"] for r in records)
            unanswered = sum(r["predicted"] is None for r in records)
            rows.append(
                {
                    "strategy": strategy,
                    "correct": f"{correct} / {len(records)}",
                    "accuracy": f"{correct / max(1, len(records)):.3f}",
                    "no number found": str(unanswered),
                    "mean prompt chars": (
                        f"{sum(len(r['prompt']) for r in records) / max(1, len(records)):.0f}"
                    ),
                }
            )
        return rows

    def table(self) -> str:
        """The rows as a Markdown table."""
        return markdown_table(self.rows())

    def _of(self, strategy: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["strategy"] == strategy]


# --8<-- [start:evaluate_prompting]
def evaluate_prompting(
    generate: Generate,
    problems: Sequence[Problem],
    strategies: Sequence[str | PromptTemplate] = DEFAULT_STRATEGIES,
    examples: Sequence[Problem] = (),
    k: int = 4,
    log_path: str | Path | None = None,
) -> PromptingResult:
    """Prompt `generate` with every strategy on every problem and score the answers.

    Each completion is cut where the model starts a question of its own, then
    `extract_answer` reads it and the number is compared exactly with the gold answer. With
    `log_path`, one JSON line per (strategy, problem) is written as it is produced, to a
    temporary file beside `log_path` that replaces it only when every prompt has run: a failed
    or interrupted run leaves an earlier log as it was. Every prompt is built (and so checked)
    before the first is sent.

    Args:
        generate: `generate(prompt) -> str`, which returns the completion.
        problems: the problems to solve.
        strategies: names in `STRATEGIES`, or `PromptTemplate`s.
        examples: the example pool of the pool strategies.
        k: how many pool examples a pool strategy shows.
        log_path: the JSON Lines log to write; None: no log.

    Raises:
        CourseError: if there are no problems, a list is a string, or a pool example is also
            a problem.
    """
    problems = _check_sequence("problems", problems)
    if not problems:
        raise CourseError("no problems to evaluate")
    templates = [get_strategy(s) for s in _check_sequence("strategies", strategies)]
    if not templates:
        raise CourseError(f"no strategies to compare: name at least one of {sorted(STRATEGIES)}")
    examples = _check_sequence("examples", examples)
    overlap = {p.question for p in examples[:k]} & {p.question for p in problems}
    if overlap and any(t.from_pool for t in templates):
        raise CourseError(
            f"{len(overlap)} example(s) are also test problems, e.g. {sorted(overlap)[0][:60]!r}"
        )
    jobs = [
        (template, index, problem, build_prompt(template, problem.question, examples, k))
        for template in templates
        for index, problem in enumerate(problems)
    ]
    records = []
    with ExitStack() as stack:
        log = None
        if log_path is not None:
            log = stack.enter_context(
                open(stack.enter_context(replacing(log_path)), "w", encoding="utf-8")
            )
        many = getattr(generate, "many", None)  # batches of prompts, if `generate` has them
        size = getattr(generate, "batch_size", 1) if many else 1
        for first in range(0, len(jobs), size):
            chunk = jobs[first : first + size]
            start = time.perf_counter()
            completions = many([job[3] for job in chunk]) if many else [generate(chunk[0][3])]
            seconds = (time.perf_counter() - start) / len(chunk)
            records += [
                _scored(template, index, problem, prompt, completion, seconds, log)
                for (template, index, problem, prompt), completion in zip(chunk, completions)
            ]
    return PromptingResult(records, tuple(t.name for t in templates))


def _scored(
    template: PromptTemplate,
    index: int,
    problem: Problem,
    prompt: str,
    completion: str,
    seconds: float,
    log: Any,
) -> dict[str, Any]:
    """The record of one (strategy, problem): the answer read from the completion and its
    verdict, written to `log` (if any) at once."""
    predicted = extract_answer(cut_completion(completion))
    record = {
        "strategy": template.name,
        "index": index,
        "kind": problem.kind,
        "question": problem.question,
        "gold": format_number(problem.answer),
        "prompt": prompt,
        "completion": completion,
        "predicted": None if predicted is None else format_number(predicted),
        "correct": answers_match(predicted, problem.answer),
        "seconds": round(seconds, 3),
    }
    if log is not None:
        log.write(json.dumps(record) + "\n")
        log.flush()
    return record


# --8<-- [end:evaluate_prompting]


# --8<-- [start:_check_sequence]
def _check_sequence(name: str, value: Any) -> list[Any]:
    """`value` as a list if it is a list or tuple;
    a single string (read letter by letter) is refused."""
    if isinstance(value, str):
        raise CourseError(
            f"{name} must be a list, got the string {value!r} (write [{value!r}] for a list of one)"
        )
    if not isinstance(value, Sequence):
        raise CourseError(f"{name} must be a list, got {describe(value)}")
    return list(value)


# --8<-- [end:_check_sequence]


def load_problem_set(source: str = "generated", n: int | None = 27, seed: int = 0) -> list[Problem]:
    """`"generated"` (n problems, seeded)
    or the path of a GSM8K-format JSONL file (first n rows).

    Args:
        source: `"generated"`, or the path of the JSONL file.
        n: how many problems; None: 27 generated ones, or every row of the file.
        seed: the seed of the generated problems.
    """
    if n is not None:
        check_positive_int("the number of problems", n)
    if source == "generated":
        return generate_problems(27 if n is None else n, seed)
    return load_gsm8k_jsonl(source, limit=n)


def example_pool(problems: Sequence[Problem], k: int, seed: int = 0) -> list[Problem]:
    """`k` generated, solved examples that are none of `problems`
    (a different seed, then filtered).

    Args:
        problems: the problems the examples must differ from.
        k: how many examples.
        seed: the seed of the problems; the examples are generated under `seed + 1`.

    Raises:
        ProblemError: if fewer than `k` distinct examples could be drawn.
    """
    check_int("k (the number of examples)", k, minimum=0)
    taken = {p.question for p in problems}
    candidates = generate_problems(k + len(problems), seed=seed + 1)
    pool = [p for p in candidates if p.question not in taken][:k]
    if len(pool) < k:
        raise ProblemError(f"could not draw {k} examples distinct from the problems")
    return pool


# ---------------------------------------------------------------------------------------
# Classification by prompting: the verbalizer
# ---------------------------------------------------------------------------------------

SENTIMENT_TEMPLATE = "Review: {text}\nSentiment:"
SENTIMENT_WORDS = (" negative", " positive")  # label 0, label 1; the leading space matters
Reduction = Literal["first", "sum"]


def sentiment_prompt(
    text: str,
    template: str = SENTIMENT_TEMPLATE,
    examples: Sequence[tuple[str, int]] = (),
    label_words: Sequence[str] = SENTIMENT_WORDS,
) -> str:
    """`template` filled with `text`, after `examples` filled the same way and answered.

    Args:
        text: the text to classify.
        template: a format string with a `{text}` field.
        examples: `(text, label)` demonstrations, each answered with its label word.
        label_words: the word of each label, in label order.
    """
    solved = "".join(template.format(text=t) + label_words[y] + "\n\n" for t, y in examples)
    return solved + template.format(text=text)


def chat_prompt(tokenizer: Any, prompt: str) -> str:
    """`prompt` as the user's turn of the model's chat template, ending where the assistant answers.

    Instruct models (SmolLM2-Instruct) were tuned on this layout; a base model has no template.
    The answer then starts a turn, so label words go without their leading space ("positive").

    Args:
        tokenizer: the model's tokenizer.
        prompt: the user's message.

    Raises:
        CourseError: if the tokenizer has no chat template.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise CourseError(
            "this tokenizer has no chat template: the "
            "model is not a chat model; drop the chat option"
        )
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )


def _token_ids(
    tokenizer: Any, texts: Sequence[str], limit: int, what: str, special: bool
) -> list[list[int]]:
    """Token ids of each text, checked: each a string, none empty, none longer than `limit`."""
    texts = check_string_list(f"the {what}s", texts)
    ids = [tokenizer(t, add_special_tokens=special, verbose=False)["input_ids"] for t in texts]
    for i, row in enumerate(ids):
        if not row:
            raise CourseError(f"{what} {i} ({texts[i]!r}) has no tokens")
        if len(row) > limit:
            raise CourseError(
                f"{what} {i} has {len(row)} tokens; at most {limit} fit in the model's context"
            )
    return ids


# --8<-- [start:label_word_ids]
def label_word_ids(
    tokenizer: Any,
    label_words: Sequence[str],
    limit: int | None = None,
    distinct_first: bool = True,
    remedy: str = "choose words that start differently",
) -> list[list[int]]:
    """The token ids of each label word, checked; `verbalizer_scores` and everything in
    `peft_course.lm_classification` (encoding, verbalizer, strict match) read them from here.

    A word is tokenized on its own, without special tokens: it follows a prompt, it does not
    start a text. A verbalizer that scores a word by its first token cannot tell two words
    apart that share one, so that is refused unless `distinct_first` is off.

    Args:
        tokenizer: the model's tokenizer.
        label_words: one word per class, in label order.
        limit: the most tokens a word may have (the model's context); None: no limit.
        distinct_first: whether two words sharing a first token is an error.
        remedy: what the shared-first-token error advises.

    Raises:
        CourseError: if `label_words` is not a non-empty list of strings, a word has no tokens
            or more than `limit`, or (with `distinct_first`) two words share a first token.
    """
    limit = sys.maxsize if limit is None else limit
    ids = _token_ids(tokenizer, label_words, limit, "label word", special=False)
    firsts = [row[0] for row in ids]
    if distinct_first and len(set(firsts)) < len(firsts):
        raise CourseError(
            f"label words {list(label_words)} share a first token: the verbalizer could not tell "
            f"them apart; {remedy}"
        )
    return ids


# --8<-- [end:label_word_ids]


def _pad_right(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad on the right, so every real token keeps its position (GPT-2's positions are absolute)."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask


SHARED_PREFIX_MIN = 32  # tokens; a shorter shared prefix is cheaper to recompute than to copy


# --8<-- [start:shared_prefix_length]
def shared_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every row shares, keeping at least one token of each row's own.

    Args:
        rows: token-id rows.
    """
    shortest = min(len(row) for row in rows)
    n = 0
    while n < shortest - 1 and all(row[n] == rows[0][n] for row in rows):
        n += 1
    return n


# --8<-- [end:shared_prefix_length]


# --8<-- [start:next_token_logprobs]
def next_token_logprobs(
    model: Any, tokenizer: Any, rows: list[list[int]], batch_size: int = 16
) -> torch.Tensor:
    """`[n_rows, vocab]`: log-probabilities of the token that would follow each token-id row.

    Rows are padded on the right, so the prediction is read at each row's own last real
    position, not at the end of the padded batch; the LM head runs at that position only.
    A prefix every row shares (the k solved examples of a few-shot prompt) runs once, and its
    keys and values are reused for every row: the same numbers, computed once instead of 500
    times.

    Args:
        model: the causal language model.
        tokenizer: its tokenizer (for the pad id).
        rows: token-id rows, one per prompt.
        batch_size: rows per forward pass.
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.eval()
    shared = shared_prefix_length(rows) if len(rows) > 1 else 0
    out = []
    with torch.no_grad():
        prefix = None
        if shared >= SHARED_PREFIX_MIN:
            prefix = model(
                input_ids=torch.tensor([rows[0][:shared]], device=model.device), use_cache=True
            ).cache
        else:
            shared = 0
        for start in range(0, len(rows), batch_size):
            batch = [row[shared:] for row in rows[start : start + batch_size]]
            ids, mask = _pad_right(batch, pad_id)
            last = torch.zeros_like(ids, dtype=torch.bool)
            last[torch.arange(len(batch)), torch.tensor([len(r) - 1 for r in batch])] = True
            inputs = {}
            if prefix is not None:
                cache = copy.deepcopy(prefix)
                cache.batch_repeat_interleave(len(batch))
                mask = torch.cat([torch.ones(len(batch), shared, dtype=mask.dtype), mask], dim=1)
                inputs["cache"] = cache
            logits = logits_at(
                model, ids.to(model.device), mask.to(model.device), last.to(model.device), **inputs
            )
            out.append(torch.log_softmax(logits.float(), dim=-1).cpu())
    return torch.cat(out)


# --8<-- [end:next_token_logprobs]


# --8<-- [start:continuation_logprobs]
def continuation_logprobs(
    model: Any,
    tokenizer: Any,
    rows: list[list[int]],
    continuation: list[int],
    batch_size: int = 16,
) -> torch.Tensor:
    """`[n_rows]`: log p(continuation | row), the sum over the continuation's tokens.

    Args:
        model: the causal language model.
        tokenizer: its tokenizer (for the pad id).
        rows: token-id rows, one per prompt.
        continuation: the token ids that follow each row.
        batch_size: rows per forward pass.
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.eval()
    target = torch.tensor(continuation)
    out = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = [r + continuation for r in rows[start : start + batch_size]]
            ids, mask = _pad_right(batch, pad_id)
            keep = torch.zeros_like(ids, dtype=torch.bool)
            for i, row in enumerate(batch):
                # positions L-1 .. L+m-2 of a prompt of length L predict the m continuation tokens
                keep[i, len(row) - len(continuation) - 1 : len(row) - 1] = True
            logits = logits_at(
                model, ids.to(model.device), mask.to(model.device), keep.to(model.device)
            )
            logp = (
                torch.log_softmax(logits.float(), dim=-1)
                .cpu()
                .view(len(batch), len(continuation), -1)
            )
            out.extend(logp[:, torch.arange(len(continuation)), target].sum(dim=1))
    return torch.stack(out)


# --8<-- [end:continuation_logprobs]


# --8<-- [start:verbalizer]
def verbalizer_scores(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    label_words: Sequence[str],
    reduction: Reduction = "first",
    batch_size: int = 16,
    return_greedy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """`[n_prompts, n_labels]` log-probabilities of each label word following each prompt.

    `reduction="first"` scores a word by its first token only: one forward pass per
    prompt, exact for single-token words; two words that share a first token would be
    indistinguishable, which is an error. `reduction="sum"` scores the whole word, the sum
    of its tokens' log-probabilities, at one pass per (prompt, word); it favours shorter
    words, since every extra token adds a negative number.
    Label words should start with a space (" positive") and prompts should not end in one:
    that is how GPT-2's tokenizer splits "Sentiment: positive".

    Args:
        model: the causal language model.
        tokenizer: its tokenizer.
        prompts: the prompts to score.
        label_words: one word per class, in label order.
        reduction: `"first"` or `"sum"`, as above.
        batch_size: rows per forward pass.
        return_greedy: with `return_greedy` (first-token scoring only) the model's likeliest
            next token over the whole vocabulary comes back too.

    Returns:
        The scores, or `(scores, greedy)` with `return_greedy`.

    Raises:
        CourseError: if there is no prompt or no label word, `reduction` is unknown, two words
            share a first token under `"first"`, or `return_greedy` comes with `"sum"`.
    """
    label_words = check_string_list("label_words", label_words, allow_empty=True)
    prompts = check_string_list("prompts", prompts, allow_empty=True)
    if not label_words or not prompts:
        raise CourseError("verbalizer_scores needs at least one prompt and one label word")
    if reduction not in ("first", "sum"):
        raise CourseError(f"unknown reduction '{reduction}': use 'first' or 'sum'")
    context = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    words = label_word_ids(
        tokenizer, label_words, context, reduction == "first", remedy="use reduction='sum'"
    )
    rows = _token_ids(
        tokenizer, prompts, context - max(len(w) for w in words), "prompt", special=True
    )
    if reduction == "first":
        firsts = [w[0] for w in words]
        logprobs = next_token_logprobs(model, tokenizer, rows, batch_size)
        return (
            (logprobs[:, firsts], logprobs.argmax(dim=1)) if return_greedy else logprobs[:, firsts]
        )
    if return_greedy:
        raise CourseError("return_greedy needs reduction='first'")
    return torch.stack(
        [continuation_logprobs(model, tokenizer, rows, w, batch_size) for w in words], dim=1
    )


# --8<-- [end:verbalizer]


def verbalizer_accuracy(scores: torch.Tensor, labels: Sequence[int] | torch.Tensor) -> float:
    """The share of rows whose highest-scoring label word is the true label.

    Args:
        scores: `[n, n_labels]` scores, as `verbalizer_scores` returns them.
        labels: the true label of each row.

    Raises:
        CourseError: if the shapes do not match, or there are no rows.
    """
    labels = torch.as_tensor(labels)
    if scores.ndim != 2 or scores.shape[0] != labels.shape[0]:
        raise CourseError(
            f"scores of shape {tuple(scores.shape)} do not match {labels.shape[0]} labels"
        )
    if len(labels) == 0:
        raise CourseError("no examples to score")
    return (scores.argmax(dim=1) == labels).float().mean().item()


def balanced_examples(
    texts: Sequence[str], labels: Sequence[int], k: int, seed: int = 0
) -> list[tuple[str, int]]:
    """`k` (text, label) demonstrations, labels taking turns, order shuffled under `seed`.

    Args:
        texts: the texts to draw from.
        labels: the label of each text.
        k: how many demonstrations.
        seed: the seed of the draw and of the shuffle.

    Raises:
        CourseError: if `k` is more than there are texts.
    """
    import random

    texts = check_string_list("texts", texts, allow_empty=True)
    check_int("k (the number of examples)", k, minimum=0)
    rng = random.Random(seed)
    by_label: dict[int, list[str]] = {}
    for text, label in zip(texts, labels):
        by_label.setdefault(int(label), []).append(text)
    order = sorted(by_label)
    if k > len(texts):
        raise CourseError(f"asked for {k} examples from {len(texts)} texts")
    picked = [
        (rng.choice(by_label[order[i % len(order)]]), order[i % len(order)]) for i in range(k)
    ]
    rng.shuffle(picked)
    return picked


def sentiment_by_prompting(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    labels: Sequence[int],
    label_words: Sequence[str] = SENTIMENT_WORDS,
    template: str = SENTIMENT_TEMPLATE,
    examples: Sequence[tuple[str, int]] = (),
    reduction: Reduction = "first",
    chat: bool = False,
    instruction: str = "",
) -> dict[str, Any]:
    """Classify `texts` with no training: the label word the model finds likeliest wins.

    With `reduction="first"` the same pass also gives `strict`: the share of texts whose single
    likeliest next token, over the whole vocabulary, is the true label word's first token - what
    greedy decoding would write first, so a model that prefers to answer "The review is..."
    scores low there however well its verbalizer ranks the two words.

    Args:
        model: the causal language model.
        tokenizer: its tokenizer.
        texts: the texts to classify.
        labels: the true label of each text.
        label_words: one word per class, in label order.
        template: a format string with a `{text}` field.
        examples: `(text, label)` demonstrations put before each text.
        reduction: `"first"` or `"sum"`, as in `verbalizer_scores`.
        chat: `chat=True` wraps each prompt in the model's chat template (`chat_prompt`).
        instruction: goes once before the examples.

    Returns:
        `accuracy`, `strict` (None with `"sum"`), `predictions`, `predicted counts` and `scores`.
    """
    texts = check_string_list("texts", texts)
    label_words = check_string_list("label_words", label_words)
    prompts = [instruction + sentiment_prompt(t, template, examples, label_words) for t in texts]
    if chat:
        prompts = [chat_prompt(tokenizer, prompt) for prompt in prompts]
    strict = None
    if reduction == "first":
        scores, greedy = verbalizer_scores(
            model, tokenizer, prompts, label_words, reduction, return_greedy=True
        )
        firsts = torch.tensor([ids[0] for ids in label_word_ids(tokenizer, label_words)])
        strict = (greedy == firsts[torch.as_tensor(labels)]).float().mean().item()
    else:
        scores = verbalizer_scores(model, tokenizer, prompts, label_words, reduction)
    predictions = scores.argmax(dim=1)
    counts = torch.bincount(predictions, minlength=len(label_words))
    return {
        "accuracy": verbalizer_accuracy(scores, labels),
        "strict": strict,
        "predictions": predictions.tolist(),
        "predicted counts": counts.tolist(),
        "scores": scores,
    }


# ---------------------------------------------------------------------------------------
# The results page of the docs
# ---------------------------------------------------------------------------------------

SENTIMENT_SETTINGS: list[tuple[str, tuple[str, ...], Reduction, int]] = [
    # (template, label words, reduction, shots)
    (SENTIMENT_TEMPLATE, SENTIMENT_WORDS, "first", 0),
    (SENTIMENT_TEMPLATE, SENTIMENT_WORDS, "first", 4),
    ("{text}", (" one", " five"), "first", 0),
    ("{text}", (" one", " five"), "first", 4),
    ("{text}", (" one star", " five stars"), "sum", 0),
]


def sentiment_rows(
    model: Any, tokenizer: Any, seed: int = 0, max_examples: int | None = None
) -> list[dict[str, str]]:
    """Accuracy of each `SENTIMENT_SETTINGS` row on the synthetic-sentiment test split.

    Args:
        model: the causal language model.
        tokenizer: its tokenizer.
        seed: the seed of the data and of the demonstrations.
        max_examples: at most this many rows a split; None keeps every row.
    """

    data = load_classification_data("synthetic-sentiment", seed=seed, max_examples=max_examples)
    train, test = data.splits["train"], data.splits["test"]
    rows = []
    for template, words, reduction, shots in SENTIMENT_SETTINGS:
        examples = balanced_examples(train["text"], train["label"], shots, seed) if shots else []
        result = sentiment_by_prompting(
            model, tokenizer, test["text"], test["label"], words, template, examples, reduction
        )
        rows.append(
            {
                "template": _code(template),
                "label words": " / ".join(f'"{w}"' for w in words),
                "scoring": reduction,
                "shots": str(shots),
                "accuracy": f"{result['accuracy']:.3f}",
                "predicted counts": " / ".join(str(c) for c in result["predicted counts"]),
            }
        )
    return rows


def _code(text: str) -> str:
    """`text` as inline code in a table cell: newlines shown as \\n, pipes escaped."""
    return "`" + json.dumps(text)[1:-1].replace("|", "\\|") + "`"


def prompt_gallery(question: str | None = None, k: int = 2, seed: int = 0) -> str:
    """Markdown showing the prompt each strategy builds for one generated problem.

    Args:
        question: the question; None: that of a problem generated under `seed`.
        k: how many pool examples a pool strategy shows.
        seed: the seed of the problem and of the examples.
    """
    problems = load_problem_set("generated", 1, seed)
    question = question or problems[0].question
    examples = example_pool(problems, k, seed)
    parts = []
    for template in STRATEGIES.values():
        parts.append(f'??? example "{template.name}: {template.description}"\n\n    ```text\n')
        prompt = build_prompt(template, question, examples, k)
        parts.append("".join(f"    {line}\n" if line else "\n" for line in prompt.split("\n")))
        parts.append("    ```\n\n")
    return "".join(parts)


def results_page(
    model_name: str = EMBEDDED_MODEL,
    n_problems: int = 27,
    k: int = 2,
    seed: int = 0,
    max_new_tokens: int = 96,
) -> str:
    """The Markdown results of `docs/prompting.md`: arithmetic by strategy, then sentiment.

    Args:
        model_name: the causal language model: a hub id, a local directory or an embedded name.
        n_problems: how many generated problems.
        k: how many pool examples a pool strategy shows.
        seed: the seed of the model, the problems and the examples.
        max_new_tokens: the most tokens generated per prompt.
    """

    model, tokenizer = load_model(model_name, task="causal-lm", seed=seed)
    generate = HFGenerate(model, tokenizer, max_new_tokens=max_new_tokens, seed=seed)
    problems = load_problem_set("generated", n_problems, seed)
    result = evaluate_prompting(
        generate, problems, DEFAULT_STRATEGIES, example_pool(problems, k, seed), k
    )
    samples = [
        {
            "strategy": r["strategy"],
            "gold": r["gold"],
            "predicted": str(r["predicted"]),
            "completion (first 70 characters)": _code(r["completion"][:70]),
        }
        for r in result.records
        if r["index"] == 0
    ]
    return (
        f"**Arithmetic** ({n_problems} generated problems, `{model_name}`, greedy, "
        f"{max_new_tokens} new tokens at most, k={k} examples; {generate.truncated} prompts "
        f"were cut to fit the context):\n\n{result.table()}\n"
        f"What the model wrote for the first problem:\n\n{markdown_table(samples)}\n"
        f"**Sentiment by verbalizer** (`{model_name}`, synthetic-sentiment test split, "
        f"no training; counts are predictions of label 0 / label 1):\n\n"
        f"{markdown_table(sentiment_rows(model, tokenizer, seed))}"
    )
