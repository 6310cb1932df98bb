"""Instruction tuning: train a language model to answer, with the loss on the response only.

Each example is an instruction, an optional context and a response, written as

    ### Instruction: <instruction>

    ### Context: <context>

    ### Response: <response><end of text>

(the context header is left out when there is none), as the seed project did on Databricks
Dolly-15k. The model reads the whole text, but only the response and the end-of-text token
that closes it are *labels*: every prompt position is -100, which the loss ignores. The model
is trained to answer, not to write instructions.

The embedded data is generated (`generated_instructions`): five tasks whose answers can be
checked exactly, so the chapter measures exact match of greedy answers before and after
training, not only a loss.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from datasets import Dataset, DatasetDict
from peft import TaskType
from torch import nn
from tqdm.auto import tqdm
from transformers.pytorch_utils import Conv1D

from peft_course.models import count_parameters
from peft_course.data import REGISTRY, DataError, read_table
from peft_course.errors import CourseError, check_int
from peft_course.methods import prepare_full, prepare_lora
from peft_course.models import check_max_length, load_model, make_loader
from peft_course.settings import EMBEDDED_MODEL, INSTRUCT, LORA
from peft_course.synthetic import make_sentence
from peft_course.system import pick_device
from peft_course.training import TrainConfig, TrainResult, load_trainable_state, train

INSTRUCTION, CONTEXT, RESPONSE = "### Instruction:", "### Context:", "### Response:"
ROLES = ("instruction", "context", "response")


class InstructError(CourseError):
    """Instruction data or settings the chapter cannot use."""


@dataclass(frozen=True)
class Example:
    """One instruction-following example; `task` names the generator (empty for real data).

    Attributes:
        instruction: what the model is asked to do.
        context: the text the instruction is about; empty when there is none.
        response: the reference answer.
        task: the generator's name (a key of `TASKS`); empty for real data.
    """

    instruction: str
    context: str
    response: str
    task: str = ""


# --8<-- [start:format]
def prompt_text(instruction: str, context: str = "") -> str:
    """Everything before the response: the headers, ending with `### Response:` (no space).

    The response is appended as `" " + response`, so its first word carries its own leading
    space, as GPT-2's tokenizer writes a word inside a sentence: the ids of prompt and
    response, tokenized apart, are then the ids of the whole text tokenized at once.

    Args:
        instruction: the instruction (stripped).
        context: the context; empty or blank leaves the context header out.
    """
    parts = [f"{INSTRUCTION} {instruction.strip()}"]
    if context.strip():
        parts.append(f"{CONTEXT} {context.strip()}")
    parts.append(RESPONSE)
    return "\n\n".join(parts)


def full_text(example: Example) -> str:
    """The whole training text of `example`, without the end-of-text token.

    Args:
        example: the example to write out.
    """
    return prompt_text(example.instruction, example.context) + " " + example.response.strip()


# --8<-- [end:format]


# --8<-- [start:encode]
def encode(example: Example, tokenizer: Any, max_length: int) -> dict[str, list[int]]:
    """`input_ids` and `labels` (-100 on the prompt) of one example, cut to `max_length`.

    Too long, the context is cut first (from its end), then the instruction; the response
    header and the response never are. A response that cannot fit even so is an error: a
    training example whose answer is cut off teaches the model to stop mid-answer.

    Args:
        example: the example to encode.
        tokenizer: the model's tokenizer (its eos token ends the response).
        max_length: the most tokens the encoded example may have.

    Raises:
        InstructError: if the response header and the response do not fit in `max_length`.
    """
    eos = tokenizer.eos_token_id
    response = tokenizer(" " + example.response.strip(), add_special_tokens=False)["input_ids"] + [
        eos
    ]
    header = tokenizer("\n\n" + RESPONSE, add_special_tokens=False)["input_ids"]
    instruction = tokenizer(
        f"{INSTRUCTION} {example.instruction.strip()}", add_special_tokens=False
    )["input_ids"]
    context = (
        tokenizer(f"\n\n{CONTEXT} {example.context.strip()}", add_special_tokens=False)["input_ids"]
        if example.context.strip()
        else []
    )
    room = max_length - len(header) - len(response)
    if room < 1:
        raise InstructError(
            f"a response of {len(response)} tokens (with its end-of-text) and the response "
            f"header do not fit max_length {max_length}: raise max_length or shorten the response"
        )
    context = context[: max(0, room - len(instruction))]
    instruction = instruction[:room]
    prompt = instruction + context + header
    return {"input_ids": prompt + response, "labels": [-100] * len(prompt) + response}


# --8<-- [end:encode]


def encode_split(examples: Sequence[Example], tokenizer: Any, max_length: int) -> Dataset:
    """A `datasets.Dataset` of `input_ids`, `attention_mask` and `labels`, one row per example.

    Args:
        examples: the split's examples.
        tokenizer: the model's tokenizer.
        max_length: the most tokens an encoded example may have.
    """
    rows = [encode(e, tokenizer, max_length) for e in examples]
    return Dataset.from_dict(
        {
            "input_ids": [r["input_ids"] for r in rows],
            "attention_mask": [[1] * len(r["input_ids"]) for r in rows],
            "labels": [r["labels"] for r in rows],
        }
    )


# ----------------------------------------------------------------------------------------
# Data: generated, Dolly, local files
# ----------------------------------------------------------------------------------------

COLOURS = ["red", "blue", "green", "black", "white", "brown", "pink", "grey"]
ANIMALS = ["cat", "dog", "fox", "owl", "cow", "bee", "hen", "pig"]


def _sentiment(rng: random.Random) -> Example:
    """A review's sentiment: negative or positive."""
    label = rng.randint(0, 1)
    return Example(
        "What is the sentiment of this review?",
        make_sentence(rng, label),
        ("negative", "positive")[label],
        "sentiment",
    )


def _nth_word(rng: random.Random) -> Example:
    """The first to fourth word of four colours and animals."""
    words = rng.sample(COLOURS + ANIMALS, 4)
    n = rng.randint(1, 4)
    ordinal = ("first", "second", "third", "fourth")[n - 1]
    return Example(
        f"What is the {ordinal} word of the text?", " ".join(words), words[n - 1], "nth word"
    )


def _add(rng: random.Random) -> Example:
    """The sum of two numbers from 0 to 29."""
    a, b = rng.randint(0, 29), rng.randint(0, 29)
    return Example("Add these two numbers.", f"{a} and {b}", str(a + b), "add")


def _reverse(rng: random.Random) -> Example:
    """Three words in reverse order."""
    words = rng.sample(COLOURS + ANIMALS, 3)
    return Example(
        "Write these words in reverse order.", " ".join(words), " ".join(reversed(words)), "reverse"
    )


def _sort(rng: random.Random) -> Example:
    """Three digits sorted from smallest to largest."""
    numbers = rng.sample(range(10), 3)
    return Example(
        "Sort these numbers from smallest to largest.",
        " ".join(map(str, numbers)),
        " ".join(map(str, sorted(numbers))),
        "sort",
    )


TASKS: dict[str, Callable[[random.Random], Example]] = {
    "sentiment": _sentiment,
    "nth word": _nth_word,
    "add": _add,
    "reverse": _reverse,
    "sort": _sort,
}


def generated_instructions(
    n_train: int = INSTRUCT.n_train,
    n_validation: int = INSTRUCT.n_validation,
    n_test: int = INSTRUCT.n_test,
    seed: int = 0,
) -> dict[str, list[Example]]:
    """Train/validation/test examples of the five tasks in turn, no example in two splits.

    Args:
        n_train: examples in `train`; at least 1.
        n_validation: examples in `validation`; at least 1.
        n_test: examples in `test`; at least 1.
        seed: seeds the generator; the same seed gives the same splits.

    Raises:
        InstructError: if that many distinct examples cannot be generated.
    """
    sizes = {"train": n_train, "validation": n_validation, "test": n_test}
    for name, n in sizes.items():
        check_int(f"n_{name}", n)
    rng, seen, examples, attempts = random.Random(seed), set(), [], 0
    makers = list(TASKS.values())
    while len(examples) < sum(sizes.values()):
        attempts += 1
        if attempts > 50 * sum(sizes.values()):
            raise InstructError(
                f"cannot generate {sum(sizes.values())} distinct examples; ask for fewer"
            )
        example = makers[len(examples) % len(makers)](rng)
        key = (example.instruction, example.context)
        if key not in seen:
            seen.add(key)
            examples.append(example)
    splits, start = {}, 0
    for name, n in sizes.items():
        splits[name], start = examples[start : start + n], start + n
    return splits


def examples_from_table(frame: pd.DataFrame, columns: dict[str, str], where: str) -> list[Example]:
    """Examples from a table with instruction/context/response columns (context optional).

    Args:
        frame: the table.
        columns: role ("instruction", "context", "response") -> the column that holds it.
        where: what the table is, for the messages.

    Raises:
        DataError: if the instruction or response column is missing, or a row leaves one empty.
    """
    missing = [columns[r] for r in ("instruction", "response") if columns[r] not in frame.columns]
    if missing:
        raise DataError(
            f"{where} has no column(s) {missing} (it has {list(frame.columns)}); name them with "
            f"--instruction-column/--response-column"
        )
    examples = []
    for number, row in enumerate(frame.to_dict("records"), start=1):
        values = {r: row.get(columns[r]) for r in ROLES}
        for role in ("instruction", "response"):
            if not isinstance(values[role], str) or not values[role].strip():
                raise DataError(f"{where}, row {number}: the {role} is empty")
        context = values["context"] if isinstance(values["context"], str) else ""
        examples.append(Example(values["instruction"], context, values["response"]))
    return examples


def load_instructions(
    source: str = "generated",
    seed: int = 0,
    max_examples: int | None = None,
    columns: dict[str, str] | None = None,
    test_fraction: float = 0.1,
) -> dict[str, list[Example]]:
    """Train/validation/test examples from `generated`, `dolly` (the hub)
    or a local CSV/JSONL/Parquet file.

    A source with one split (Dolly, a file) is shuffled under `seed` and cut into 80/10/10 by
    default.

    Args:
        source: `generated`, `dolly`, or the path of a local file.
        seed: seeds the generated examples, or the shuffle of a one-split source.
        max_examples: keep at most this many examples of each split; None keeps them all.
        columns: role -> column name, for the roles whose column has another name (a file, Dolly).
        test_fraction: the share of a one-split source for each of validation and test.

    Raises:
        InstructError: if `source` is not known or a file, or has too few examples to split.
    """
    if source == "generated":
        splits = generated_instructions(seed=seed)
    else:
        columns = {**{r: r for r in ROLES}, **(columns or {})}
        if source == "dolly":
            frame, where = _dolly_frame(), "databricks-dolly-15k"
        elif Path(source).is_file():
            frame, where = read_table(source), source
        else:
            raise InstructError(
                f"unknown instruction data {source!r}: use generated, dolly or a local file"
            )
        examples = examples_from_table(frame, columns, where)
        random.Random(seed).shuffle(examples)
        n = max(1, int(len(examples) * test_fraction))
        if len(examples) < 3 * n:
            raise InstructError(
                f"{where} has {len(examples)} examples: too "
                "few to split into train, validation, test"
            )
        splits = {
            "validation": examples[:n],
            "test": examples[n : 2 * n],
            "train": examples[2 * n :],
        }
    if max_examples is not None:
        splits = {name: rows[:max_examples] for name, rows in splits.items()}
    return splits


def _dolly_frame() -> pd.DataFrame:
    """Databricks Dolly-15k's one split, from the hub (for users with a connection)."""
    import datasets

    spec = REGISTRY["dolly"]
    try:
        return datasets.load_dataset(spec.hub_id, split="train").to_pandas()
    except Exception as error:  # offline, missing repo: all mean "not available"
        raise DataError(
            f"could not load dolly from the hub ({type(error).__name__}); offline, pass a local "
            f"JSONL/CSV file with instruction, context and response columns"
        ) from error


# ----------------------------------------------------------------------------------------
# Answers and their scores
# ----------------------------------------------------------------------------------------


# --8<-- [start:exact_match]
def normalize(text: str) -> str:
    """Lower case, single spaces, no surrounding whitespace or final full stop.

    Args:
        text: the text to normalize.
    """
    return " ".join(text.lower().split()).removesuffix(".").strip()


def exact_match(prediction: str, answer: str) -> bool:
    """Whether the generated answer is the reference answer,
    up to case, spacing and a final stop.

    Args:
        prediction: the generated answer.
        answer: the reference answer.
    """
    return normalize(prediction) == normalize(answer)


# --8<-- [end:exact_match]


@torch.no_grad()
def answer(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: Sequence[Example],
    max_new_tokens: int = INSTRUCT.max_new_tokens,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
) -> list[str]:
    """The model's answer to each example:
    greedy (or sampled) after the prompt, up to end-of-text.

    Args:
        model: the causal LM; put in eval mode.
        tokenizer: its tokenizer (left-padded while generating, then restored).
        examples: the examples to answer (their responses are not used).
        max_new_tokens: the most tokens an answer may have.
        do_sample: sample instead of greedy decoding.
        temperature: the sampling temperature (with `do_sample` only).
        top_k: sample from the `top_k` likeliest tokens (with `do_sample` only); None: not set.
        top_p: nucleus sampling's probability mass (with `do_sample` only); None: not set.
        seed: seeds torch before generating (what sampling draws).
        batch_size: examples answered per `generate` call.
        progress: show a progress bar.

    Returns:
        One stripped answer per example.
    """
    model.eval()
    device = next(model.parameters()).device
    side, tokenizer.padding_side = (
        tokenizer.padding_side,
        "left",
    )  # new tokens follow every prompt directly
    torch.manual_seed(seed)
    answers = []
    try:
        for start in tqdm(range(0, len(examples), batch_size), desc="answer", disable=not progress):
            batch = examples[start : start + batch_size]
            inputs = tokenizer(
                [prompt_text(e.instruction, e.context) for e in batch],
                return_tensors="pt",
                padding=True,
            ).to(device)
            sampling = (
                {"temperature": temperature, "top_k": top_k, "top_p": top_p} if do_sample else {}
            )
            out = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=do_sample,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                **sampling,
            )
            answers += tokenizer.batch_decode(
                out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
            )
    finally:
        tokenizer.padding_side = side
    return [a.strip() for a in answers]


def response_loss(
    model: torch.nn.Module, dataset: Dataset, tokenizer: Any, batch_size: int = 32
) -> float:
    """Mean loss per response token on an encoded split (prompt positions are not counted).

    Args:
        model: the causal LM; put in eval mode.
        dataset: an `encode_split` dataset.
        tokenizer: its tokenizer (pads the batches).
        batch_size: rows per forward pass.
    """
    device = next(model.parameters()).device
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for batch in make_loader(dataset, tokenizer, batch_size, False, 0, device):
            batch = {k: v.to(device) for k, v in batch.items()}
            n = int((batch["labels"][:, 1:] != -100).sum())
            total += model(**batch).loss.item() * n
            tokens += n
    return total / max(tokens, 1)


def scores(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: Sequence[Example],
    encoded: Dataset,
    progress: bool = False,
) -> dict[str, Any]:
    """Response loss, exact match overall and per task, and the answers themselves.

    Args:
        model: the causal LM.
        tokenizer: its tokenizer.
        examples: the split's examples (greedy answers are scored against their responses).
        encoded: the same split encoded (`encode_split`), for the response loss.
        progress: show a progress bar while answering.

    Returns:
        `loss`, `accuracy` (exact match), `per_task` (task -> exact match; "all" for
        real data) and `answers`.
    """
    answers = answer(model, tokenizer, examples, progress=progress)
    hits = [exact_match(a, e.response) for a, e in zip(answers, examples)]
    per_task: dict[str, list[bool]] = {}
    for example, hit in zip(examples, hits):
        per_task.setdefault(example.task or "all", []).append(hit)
    return {
        "loss": response_loss(model, encoded, tokenizer),
        "accuracy": sum(hits) / len(hits),
        "per_task": {task: sum(v) / len(v) for task, v in per_task.items()},
        "answers": answers,
    }


# ----------------------------------------------------------------------------------------
# Tuning
# ----------------------------------------------------------------------------------------


@dataclass
class InstructResult:
    """Scores on the test split before and after training, and a few answers side by side.

    Attributes:
        method: "lora" or "full".
        trainable: parameters the method trains.
        untrained: `scores` on the test split before training.
        best: `scores` on the test split at the best validation.
        training: the training loop's result.
        examples: the test examples.
        model: the trained model, at its best-validation weights.
    """

    method: str
    trainable: int
    untrained: dict[str, Any]
    best: dict[str, Any]
    training: TrainResult
    examples: list[Example]
    model: torch.nn.Module = field(repr=False)

    def rows(self, n: int = 5) -> list[dict[str, str]]:
        """The first `n` test examples of different tasks: prompt, reference,
        answers before and after.

        Args:
            n: the most rows to show (examples without a task are never skipped as repeats).
        """
        shown, tasks = [], set()
        for i, example in enumerate(self.examples):
            if example.task not in tasks or not example.task:
                tasks.add(example.task)
                shown.append(
                    {
                        "task": example.task or "-",
                        "instruction": example.instruction,
                        "context": example.context or "-",
                        "reference": example.response,
                        "before": self.untrained["answers"][i] or "(nothing)",
                        "after": self.best["answers"][i] or "(nothing)",
                    }
                )
            if len(shown) == n:
                break
        return shown


def projection_names(model: torch.nn.Module) -> list[str]:
    """The last name part of every linear projection but the LM head: LoRA's "all linear" targets.

    `c_attn`, `c_proj`, `c_fc` for GPT-2 (`c_proj` names both the attention's and the MLP's);
    `q_proj` ... `down_proj` for a Llama such as SmolLM2.

    Args:
        model: the causal LM.
    """
    head = model.get_output_embeddings()
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, (nn.Linear, Conv1D)) and module is not head and name
        }
    )


# --8<-- [start:prepare]
def prepare(
    model: torch.nn.Module,
    method: str,
    r: int = LORA.r,
    alpha: float = LORA.alpha,
    targets: Sequence[str] | None = None,
    train_embeddings: bool = False,
) -> torch.nn.Module:
    """`lora` (peft, causal LM: no head to add) or `full` fine-tuning.

    Args:
        model: the causal LM.
        method: "lora" or "full".
        r: LoRA rank.
        alpha: LoRA scale numerator (the update is scaled by alpha/r).
        targets: the modules LoRA wraps; None: every projection (`projection_names`).
        train_embeddings: also trains the token embedding, which GPT-2 ties to its LM head (one
            matrix: training it changes both what the model reads and what it can write). A model
            whose vocabulary was never trained on the answers' tokens needs it; see the chapter.

    Raises:
        InstructError: if `method` is neither "lora" nor "full".
    """
    if method == "full":
        return prepare_full(model)
    if method != "lora":
        raise InstructError(f"unknown method {method!r} for instruction tuning: use lora or full")
    targets = list(targets) if targets is not None else projection_names(model)
    model = prepare_lora(model, r=r, alpha=alpha, targets=targets, task_type=TaskType.CAUSAL_LM)
    if train_embeddings:
        model.get_input_embeddings().weight.requires_grad_(True)
    return model


# --8<-- [end:prepare]


def instruct_tune(
    splits: dict[str, list[Example]],
    method: str = "lora",
    model_name: str = EMBEDDED_MODEL,
    config: TrainConfig | None = None,
    max_length: int = INSTRUCT.max_length,
    r: int = INSTRUCT.r,
    alpha: float = INSTRUCT.alpha,
    targets: Sequence[str] | None = INSTRUCT.targets,
    train_embeddings: bool = False,
) -> InstructResult:
    """Answer the test split, train on the response tokens of `train`, answer it again.

    Validation after each epoch scores exact match of greedy answers on `validation`; the
    returned scores are the test split's at the best validation.

    Args:
        splits: `train`, `validation` and `test` examples.
        method: "lora" or "full".
        model_name: the causal LM to load.
        config: the training loop's settings; None uses the chapter's epochs, batch size and
            the method's learning rate.
        max_length: the most tokens an encoded example may have.
        r: LoRA rank.
        alpha: LoRA scale numerator.
        targets: the modules LoRA wraps; None: every projection but the LM head.
        train_embeddings: also train the token embedding (tied to the LM head in GPT-2).

    Raises:
        InstructError: if `method` is neither "lora" nor "full".
    """
    if method not in ("lora", "full"):
        raise InstructError(f"unknown method {method!r} for instruction tuning: use lora or full")
    config = config or TrainConfig(
        epochs=INSTRUCT.epochs,
        learning_rate=INSTRUCT.learning_rates[method],
        batch_size=INSTRUCT.batch_size,
    )
    model, tokenizer = load_model(model_name, task="causal-lm", seed=config.seed)
    check_max_length(max_length, model)
    encoded = DatasetDict(
        {name: encode_split(rows, tokenizer, max_length) for name, rows in splits.items()}
    )
    device = pick_device(config.device)
    model.to(device)
    untrained = scores(model, tokenizer, splits["test"], encoded["test"], config.progress)
    model = prepare(model, method, r, alpha, targets, train_embeddings)
    trainable, _ = count_parameters(model)
    training = train(
        model,
        encoded,
        tokenizer,
        config,
        evaluator=lambda m: scores(m, tokenizer, splits["validation"], encoded["validation"]),
    )
    load_trainable_state(model, training.best_state)
    best = scores(model, tokenizer, splits["test"], encoded["test"], config.progress)
    return InstructResult(method, trainable, untrained, best, training, splits["test"], model)


def score_cells(scored: dict[str, Any]) -> dict[str, str]:
    """Exact match per task and overall, and the response loss, as table cells.

    Args:
        scored: what `scores` returns.
    """
    return {
        **{task: f"{value:.3f}" for task, value in scored["per_task"].items()},
        "exact match": f"{scored['accuracy']:.3f}",
        "response loss": f"{scored['loss']:.3f}",
    }


def instruct_rows(
    untrained: dict[str, Any], trained: dict[str, Any], label: str = "trained"
) -> list[dict[str, str]]:
    """The table of one run: its scores before and after training.

    Args:
        untrained: `scores` before training.
        trained: `scores` after training.
        label: the trained row's name in the `model` column.
    """
    return [
        {"model": "untrained", **score_cells(untrained)},
        {"model": label, **score_cells(trained)},
    ]
