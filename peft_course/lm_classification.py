"""Classification through the language-model head: a prompt, label words and the LM loss.

A causal language model can classify without a new head. Each example becomes a prompt (an
instruction, the text, an answer cue) followed by a label word:

    Classify the following text as either positive or negative sentiment.

    Text: the plot was not good
    Sentiment: negative

Training is ordinary next-token prediction with the loss on the label word alone: every prompt
token's label is -100, which the loss ignores. The answer is read two ways:

* the **verbalizer**: of the label words, the one the model finds likeliest after the cue. It
  always names a label, so even an untrained model scores about chance. The label words are
  tokenized and checked as the prompting chapter's verbalizer does it
  (`peft_course.prompting.label_word_ids`);
* **strict match**: greedy generation must write exactly the label word. An untrained model
  writes whatever comes next in its kind of text, which is why an untrained GPT-2 scores far
  *below* chance this way (0.105 on Rotten Tomatoes in the seed project).

For one-token label words, a strict-match hit that writes the label word's own token is also a
verbalizer hit (the token that wins the whole vocabulary beats the other label words), so strict
match scores at most what the verbalizer does, up to rare exceptions: the word generated without
its leading space (another token), or a near-tie rounded differently in bf16 on a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict
from peft import TaskType
from torch import nn

from peft_course.data import ClassificationData
from peft_course.errors import CourseError
from peft_course.methods import prepare_full, prepare_lora
from peft_course.models import logits_at, make_loader
from peft_course.prompting import SENTIMENT_WORDS, label_word_ids
from peft_course.system import pick_device, use_bf16
from peft_course.settings import TRAINING

# --8<-- [start:templates]
TEMPLATES: dict[str, str] = {  # the five instructions of the seed project's prompt ablation
    "default": (
        "Please read the following text and classify it as either positive or negative sentiment. "
        "Remember to consider the overall tone, context, and emotional cues conveyed in the text. "
        "Positive sentiments generally express happiness, satisfaction, or positivity, while "
        "negative sentiments convey sadness, anger, or negativity."
    ),
    "simple-1": "Classify the following text as either positive or negative sentiment.",
    "simple-2": (
        "Read the text below and classify its sentiment as either positive or negative. Positive "
        "means happiness or satisfaction, while negative means sadness or anger."
    ),
    "similar": (
        "Classify the sentiment of the following text as either positive or negative. A positive "
        "sentiment conveys happiness, satisfaction, or optimism, while a negative sentiment "
        "reflects sadness, frustration, or dissatisfaction. Focus on the overall tone and context."
    ),
    "complex": (
        "Analyze the following text and determine whether its sentiment is positive or negative. "
        "Consider the emotional intent, tone, and wording used. Positive sentiment includes "
        "expressions of joy, gratitude, enthusiasm, or appreciation, while negative sentiment "
        "includes frustration, disappointment, criticism, or sadness. Provide the most accurate "
        "classification based on these cues."
    ),
}
ANSWER_CUE = "\nSentiment:"


@dataclass(frozen=True)
class PromptFormat:
    """How an example is written: instruction, blank line, `Text: ...`, the cue, a label word.

    Label words start with a space (" positive") and the cue does not end with one: GPT-2's
    tokenizer attaches a word's leading space to the word, so " positive" is one token.

    Attributes:
        instruction: the instruction the prompt starts with.
        label_words: one word per class, in label order.
        cue: the text after the example's text, just before the label word.

    Raises:
        CourseError: if the cue ends in whitespace, or there are no label words.
    """

    instruction: str
    label_words: tuple[str, ...] = SENTIMENT_WORDS
    cue: str = ANSWER_CUE

    def __post_init__(self) -> None:
        if self.cue[-1:].isspace():
            raise CourseError(
                f"the cue {self.cue!r} ends in whitespace: "
                "the label word brings its own leading space"
            )
        if not self.label_words:
            raise CourseError("no label words")

    def prompt(self, text: str) -> str:
        """The prompt for `text`, up to the cue; the label word comes next.

        Args:
            text: the example's text.
        """
        return f"{self.instruction}\n\nText: {text}{self.cue}"


# --8<-- [end:templates]


def get_template(name: str) -> str:
    """The instruction called `name`, or an error listing the names.

    Args:
        name: a key of `TEMPLATES`.

    Raises:
        CourseError: if no template has that name.
    """
    try:
        return TEMPLATES[name]
    except KeyError:
        raise CourseError(
            f"unknown prompt template '{name}'; known: {', '.join(TEMPLATES)}"
        ) from None


def label_words_for(label_names: Sequence[str]) -> tuple[str, ...]:
    """One label word per class: the label's name after a space (" negative", " positive").

    Args:
        label_names: the class names, in label order.
    """
    return tuple(f" {name}" for name in label_names)


# --8<-- [start:encode]
def encode_examples(
    texts: Sequence[str],
    labels: Sequence[int],
    tokenizer: Any,
    prompt_format: PromptFormat,
    max_length: int = TRAINING.max_length,
) -> Dataset:
    """Token ids of `prompt + label word` per example, with the LM labels on the label word only.

    Only the text is cut to fit `max_length`: the instruction, the cue and the label word always
    stay whole. The pieces are tokenized apart and joined; they meet at a space or a newline,
    where GPT-2's tokenizer splits anyway, so the ids equal those of the whole prompt string.

    Args:
        texts: the examples' texts.
        labels: each example's class, an index into `prompt_format.label_words`.
        tokenizer: the model's tokenizer.
        prompt_format: how each example is written.
        max_length: the most tokens an example may have, label word included.

    Returns:
        A dataset with `input_ids`, `attention_mask`, `labels` (-100 except on the label word) and
            `label` (the class).

    Raises:
        CourseError: if the instruction and cue leave no room for the text.
    """
    head = tokenizer(f"{prompt_format.instruction}\n\nText:")["input_ids"]
    cue = tokenizer(prompt_format.cue, add_special_tokens=False)["input_ids"]
    words = label_word_ids(tokenizer, prompt_format.label_words)
    room = max_length - len(head) - len(cue) - max(len(w) for w in words)
    if room < 1:
        raise CourseError(
            f"the instruction and cue take {len(head) + len(cue)} tokens, leaving no room for the "
            f"text within max_length={max_length}: raise --max-length or shorten the instruction"
        )
    bodies = tokenizer([f" {text}" for text in texts], add_special_tokens=False)["input_ids"]
    rows: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": [], "label": []}
    for body, label in zip(bodies, labels):
        prompt, answer = head + body[:room] + cue, words[label]
        rows["input_ids"].append(prompt + answer)
        rows["attention_mask"].append([1] * (len(prompt) + len(answer)))
        rows["labels"].append([-100] * len(prompt) + answer)
        rows["label"].append(int(label))
    return Dataset.from_dict(rows)


# --8<-- [end:encode]


def encode(
    data: ClassificationData,
    tokenizer: Any,
    prompt_format: PromptFormat,
    max_length: int = TRAINING.max_length,
) -> DatasetDict:
    """`encode_examples` on every split of `data`, after checking that the two fit together.

    Args:
        data: a classification dataset of single texts.
        tokenizer: the model's tokenizer.
        prompt_format: how each example is written; one label word per class of `data`.
        max_length: the most tokens an example may have, label word included.

    Raises:
        CourseError: if `data` holds text pairs, or the label words do not match its labels.
    """
    if data.is_pair:
        raise CourseError(
            f"'{data.name}' holds text pairs; prompt-based classification here takes single texts"
        )
    if len(prompt_format.label_words) != data.num_labels:
        raise CourseError(
            f"{len(prompt_format.label_words)} label words {list(prompt_format.label_words)} for "
            f"{data.num_labels} labels {data.label_names}: give one word per label"
        )
    return DatasetDict(
        {
            split: encode_examples(
                rows["text"], rows["label"], tokenizer, prompt_format, max_length
            )
            for split, rows in data.splits.items()
        }
    )


def prompt_ids(example: dict[str, list[int]]) -> list[int]:
    """The prompt part of an encoded example: every token before the label word.

    Args:
        example: one row of an `encode_examples` dataset.
    """
    answer_start = next(i for i, label in enumerate(example["labels"]) if label != -100)
    return example["input_ids"][:answer_start]


# --8<-- [start:answer_positions]
def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """`True` at each position whose next token is an answer token: where its logits are read.

    A causal model predicts token t+1 at position t, so the label word's logits sit one position
    before it, at the cue's last token for the word's first token.

    Args:
        labels: the LM labels, `(batch, length)`: -100 except on the answer tokens.
    """
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != -100
    return keep


# --8<-- [end:answer_positions]


# --8<-- [start:answer_logits]
def answer_logits(
    model: nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits predicting each answer token `[n_answer_tokens, vocab]`, and those tokens.

    Args:
        model: the causal language model.
        batch: `input_ids`, `attention_mask` and `labels`, as `encode_examples` makes them.
    """
    keep = answer_positions(batch["labels"])
    logits = logits_at(model, batch["input_ids"], batch["attention_mask"], keep)
    return logits, batch["labels"][:, 1:][keep[:, :-1]]


# --8<-- [end:answer_logits]


# --8<-- [start:answer_loss]
def answer_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The LM loss on the label words only, as `model(**batch).loss` computes it (the mean over
    answer tokens), with the LM head applied at the answer positions alone.

    Args:
        model: the causal language model.
        batch: `input_ids`, `attention_mask` and `labels`, as `encode_examples` makes them.
    """
    logits, targets = answer_logits(model, batch)
    return F.cross_entropy(logits.float(), targets)


# --8<-- [end:answer_loss]


# --8<-- [start:evaluate_verbalizer]
@torch.no_grad()
def evaluate_verbalizer(
    model: nn.Module,
    encoded: Dataset,
    tokenizer: Any,
    label_words: Sequence[str],
    batch_size: int = 32,
    device: str | torch.device | None = None,
    bf16: bool | None = None,
) -> dict[str, Any]:
    """The LM loss on the label words and the verbalizer's accuracy,
    from one forward pass per batch.

    The logits at the token before the label word are the model's next-token distribution
    after the cue (a causal model cannot see the label word there); the verbalizer's score of
    a class is the log-probability of its word's first token.

    Args:
        model: the causal language model; moved to `device` and put in eval mode.
        encoded: a split made by `encode_examples`.
        tokenizer: the model's tokenizer.
        label_words: one word per class, in label order.
        batch_size: examples per forward pass.
        device: where to run; None: CUDA when present, else the CPU.
        bf16: bf16 autocast; None: only on a CUDA device that supports it.

    Returns:
        `loss` (per answer token), `accuracy`, `scores` (`[n, n_labels]`), `predictions` and
            `greedy` (the likeliest token after each cue, over the whole vocabulary).
    """
    device = pick_device(str(device) if device else None)
    firsts = [ids[0] for ids in label_word_ids(tokenizer, label_words)]
    model.to(device).eval()
    loader = make_loader(encoded, tokenizer, batch_size, shuffle=False, seed=0, device=device)
    scores, greedy, total_loss, answer_tokens = [], [], 0.0, 0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(device, bf16)):
            logits, targets = answer_logits(model, batch)
        logits = logits.float()
        per_row = answer_positions(batch["labels"]).sum(dim=1)
        # each row's first kept position: before its label word
        first = torch.cumsum(per_row, dim=0) - per_row
        scores.append(torch.log_softmax(logits[first], dim=-1)[:, firsts].cpu())
        greedy.append(logits[first].argmax(dim=-1).cpu())
        total_loss += F.cross_entropy(logits, targets, reduction="sum").item()
        answer_tokens += len(targets)
    scores = torch.cat(scores)
    predictions = scores.argmax(dim=1)
    accuracy = sum(p == y for p, y in zip(predictions.tolist(), encoded["label"])) / len(
        predictions
    )
    return {
        "loss": total_loss / answer_tokens,
        "accuracy": accuracy,
        "scores": scores,
        "predictions": predictions.tolist(),
        "greedy": torch.cat(greedy).tolist(),
    }


# --8<-- [end:evaluate_verbalizer]


# --8<-- [start:strict]
def is_strict_match(completion: str, label_word: str) -> bool:
    """The completion is the label word and nothing else (surrounding whitespace aside).

    Args:
        completion: the generated text.
        label_word: the true label word.
    """
    return completion.strip() == label_word.strip()


@torch.no_grad()
def evaluate_strict_match(
    model: nn.Module,
    encoded: Dataset,
    tokenizer: Any,
    label_words: Sequence[str],
    batch_size: int = 32,
    max_new_tokens: int | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Greedy generation after each prompt; right only if it writes exactly the true label word.

    Prompts are padded on the left, where generation expects padding; positions are counted
    from the first real token.

    Args:
        model: the causal language model; moved to `device` and put in eval mode.
        encoded: a split made by `encode_examples`.
        tokenizer: the model's tokenizer.
        label_words: one word per class, in label order.
        batch_size: prompts per `generate` call.
        max_new_tokens: defaults to the longest label word's token count, so a model that has
            learned the answer has room to write it and nothing after it.
        device: where to run; None: CUDA when present, else the CPU.

    Returns:
        The `accuracy` and every generated text (`completions`).
    """
    device = pick_device(str(device) if device else None)
    max_new_tokens = max_new_tokens or max(len(w) for w in label_word_ids(tokenizer, label_words))
    model.to(device).eval()
    prompts = [prompt_ids(example) for example in encoded]
    completions: list[str] = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        width = max(len(p) for p in batch)
        pad = tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
        output = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
        )
        completions += tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
    hits = [is_strict_match(c, label_words[y]) for c, y in zip(completions, encoded["label"])]
    return {"accuracy": sum(hits) / len(hits), "completions": completions}


# --8<-- [end:strict]


def score(
    model: nn.Module,
    encoded: Dataset,
    tokenizer: Any,
    label_words: Sequence[str],
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Both accuracies on one split: `verbalizer` and `strict` (strict match of greedy generation).

    When every label word is one token, greedy generation writes one token, the argmax of the
    logits the verbalizer has just read; strict match is then scored from that pass instead of
    a second one (`evaluate_strict_match` generates, for longer words).

    Args:
        model: the causal language model.
        encoded: a split made by `encode_examples`.
        tokenizer: the model's tokenizer.
        label_words: one word per class, in label order.
        batch_size: examples per forward pass (or per `generate` call).
        device: where to run; None: CUDA when present, else the CPU.
    """
    verbalizer = evaluate_verbalizer(model, encoded, tokenizer, label_words, batch_size, device)
    if all(len(ids) == 1 for ids in label_word_ids(tokenizer, label_words)):
        hits = [
            is_strict_match(tokenizer.decode([token], skip_special_tokens=True), label_words[y])
            for token, y in zip(verbalizer["greedy"], encoded["label"])
        ]
        return {"verbalizer": verbalizer["accuracy"], "strict": sum(hits) / len(hits)}
    strict = evaluate_strict_match(
        model, encoded, tokenizer, label_words, batch_size, device=device
    )
    return {"verbalizer": verbalizer["accuracy"], "strict": strict["accuracy"]}


# --8<-- [start:prepare]
def prepare_lm_lora(
    model: nn.Module,
    r: int = 16,
    alpha: float = 64.0,
    dropout: float = 0.0,
    targets: list[str] | None = None,
) -> nn.Module:
    """peft LoRA on a causal LM: adapters only, the LM head stays frozen
    (it is the tied embedding).

    Args:
        model: the causal language model to wrap.
        r: the LoRA rank.
        alpha: peft's `lora_alpha`: the update is scaled by `alpha / r`.
        dropout: peft's `lora_dropout`, on the input of the LoRA path.
        targets: names of the modules to adapt; None: peft's default for the architecture.
    """
    return prepare_lora(
        model, r=r, alpha=alpha, dropout=dropout, targets=targets, task_type=TaskType.CAUSAL_LM
    )


def prepare_lm_full(model: nn.Module, dropout: float | None = None) -> nn.Module:
    """Every parameter trains; `dropout`, when given,
    replaces the model's own dropout everywhere.

    Args:
        model: the model, changed in place.
        dropout: the new rate of every `nn.Dropout`; None keeps the model's own.

    Raises:
        CourseError: if `dropout` is outside [0, 1).
    """
    if dropout is not None:
        if not 0 <= dropout < 1:
            raise CourseError(f"dropout must be in [0, 1), got {dropout}")
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = dropout  # GPT-2's attention reads its dropout rate from this module too
    return prepare_full(model)


# --8<-- [end:prepare]
