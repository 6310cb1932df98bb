"""Direct Preference Optimization: the loss by hand, checked against TRL, then training with TRL.

DPO learns from pairs `(prompt, chosen, rejected)`. For each pair it compares how much more
likely the policy makes each completion than a frozen reference does:

    r(y) = beta * (log pi(y | x) - log pi_ref(y | x))        (the implicit reward)
    loss = -log sigmoid(r(chosen) - r(rejected))

`peft_course.derivations` shows why this is the right loss. This module writes the pieces a
trainer hides (sequence log-probabilities of completions, the loss, the implicit rewards),
shows that they give TRL's numbers, and then trains with `trl.DPOTrainer`, with LoRA (the
reference is the base model with the adapters switched off) or without (an explicit frozen
copy as reference). It also generates a preference set about films: the chosen completion
praises, the rejected one pans.
"""

from __future__ import annotations

import json
import math
import random
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from peft_course.errors import (
    CourseError,
    check_int,
    check_number,
    check_positive_int,
    describe,
)
from peft_course.configs import DPORunConfig, beta_check
from peft_course.files import write_metrics_and_plot
from peft_course.lora import default_targets, stores_transposed
from peft_course.models import load_model
from peft_course.plots import plt, save_figure
from peft_course.settings import DPO
from peft_course.synthetic import INTENSIFIERS, NEGATIVE_ADJECTIVES, POSITIVE_ADJECTIVES, SUBJECTS
from peft_course.settings import EMBEDDED_MODEL

REQUIRED_FIELDS = ("prompt", "chosen", "rejected")
if TYPE_CHECKING:  # `datasets` is imported where it is used: the loss functions do not need it
    from datasets import Dataset, DatasetDict

METRIC_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins")


class PreferenceDataError(CourseError):
    """Preference pairs that DPO cannot use: a missing field, an empty or non-text completion."""


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def check_pairs(rows: Iterable[dict[str, Any]], source: str = "the data") -> list[dict[str, str]]:
    """Return the rows as `{"prompt", "chosen", "rejected"}` dicts, or say what is wrong.

    The prompt may be empty (an unconditional preference); a completion may not, because an
    empty completion has log-probability 0 under every model and carries no preference.

    Args:
        rows: the preference pairs, one dict per pair (a dataset split or a list).
        source: what the rows are, for the messages; rows are counted from 1 in messages.

    Returns:
        One dict per row with exactly the three text fields.

    Raises:
        PreferenceDataError: if `rows` is a string, or holds no pairs.
    """
    if isinstance(rows, (str, bytes)):
        raise PreferenceDataError(
            f"{source}: expected preference pairs (dicts), got {describe(rows)}"
        )
    pairs = [check_pair(row, f"{source}: row {i}") for i, row in enumerate(rows, start=1)]
    if not pairs:
        raise PreferenceDataError(f"{source}: no preference pairs")
    return pairs


def check_pair(row: Any, where: str) -> dict[str, str]:
    """One row as `{"prompt", "chosen", "rejected"}`,
    or a `PreferenceDataError` naming `where` it is.

    Args:
        row: one preference pair.
        where: where the row is (file and line, or split and row), for the message.

    Raises:
        PreferenceDataError: if the row is not a dict, lacks a field, has a non-text field or an
            empty completion, or if its chosen and rejected completions are the same text.
    """
    if not isinstance(row, dict):
        raise PreferenceDataError(
            f"{where} is {describe(row)}, not an object with 'prompt', 'chosen' and 'rejected'"
        )
    missing = [name for name in REQUIRED_FIELDS if name not in row]
    if missing:
        raise PreferenceDataError(
            f"{where} has no {', '.join(repr(m) for m in missing)} field "
            f"(a preference pair needs 'prompt', 'chosen' and 'rejected'; it has {sorted(row)})"
        )
    for name in REQUIRED_FIELDS:
        if not isinstance(row[name], str):
            raise PreferenceDataError(
                f"{where}: '{name}' must be text, got {type(row[name]).__name__} "
                f"(conversational pairs are not handled by this chapter)"
            )
    for name in ("chosen", "rejected"):
        if not row[name].strip():
            raise PreferenceDataError(f"{where}: the '{name}' completion is empty")
    if row["chosen"] == row["rejected"]:
        raise PreferenceDataError(
            f"{where}: 'chosen' and 'rejected' are the same text ({row['chosen'][:40]!r}): "
            "the pair states no preference"
        )
    return {name: row[name] for name in REQUIRED_FIELDS}


def load_preference_jsonl(path: str | Path) -> Dataset:
    """Read standard-format pairs (one JSON object per line with prompt/chosen/rejected).

    Args:
        path: the JSONL file; blank lines are skipped.

    Returns:
        The checked pairs as a `datasets.Dataset`.

    Raises:
        PreferenceDataError: if the file is missing, a directory, not UTF-8, has a line that is
            not JSON or a bad pair, or holds no pairs.
    """
    from datasets import Dataset

    path = Path(path)
    if path.is_dir():
        raise PreferenceDataError(f"cannot read '{path}': it is a directory, not a file")
    if not path.is_file():
        raise PreferenceDataError(f"cannot read '{path}': no such file")
    pairs = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise PreferenceDataError(
            f"cannot read '{path}': not UTF-8 text ({error.reason})"
        ) from None
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise PreferenceDataError(f"{path}: line {number} is not JSON ({error})") from None
            pairs.append(check_pair(row, f"{path}: line {number}"))
    if not pairs:
        raise PreferenceDataError(f"{path}: no preference pairs (the file is empty)")
    return Dataset.from_list(pairs)


def load_preference_hub(name: str, split: str = "train", limit: int | None = None) -> Dataset:
    """Standard-format pairs from the hub (e.g. `trl-lib/ultrafeedback_binarized`), checked.

    Only text pairs are accepted; conversational datasets (lists of messages) are refused.

    Args:
        name: the dataset's name on the hub.
        split: which split to load.
        limit: keep at most this many pairs from the start of the split; None keeps them all.

    Returns:
        The checked pairs as a `datasets.Dataset`.
    """
    from datasets import Dataset, load_dataset

    dataset = load_dataset(name, split=split)
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    return Dataset.from_list(check_pairs(dataset, name))


FILM_WORDS = ["silent", "last", "red", "hidden", "long", "broken", "northern", "lost"]
FILM_NOUNS = ["river", "garden", "letter", "station", "summer", "kingdom", "harbour", "mirror"]
PROMPTS = [
    "my review of {film} :",
    "what did you think of {film} ?",
    "a few words on {film} :",
    "tell me about {film} .",
]


# --8<-- [start:film_pairs]
def film_pair(rng: random.Random, prefer: str = "positive") -> dict[str, str]:
    """One pair: a prompt about a film, a completion that praises and one that pans.

    Both completions share the subject and the intensifier and differ only in the adjective,
    so the one thing to learn is the wanted property: the sentiment named by `prefer`.

    Args:
        rng: the random generator the film, prompt and words are drawn from.
        prefer: `"positive"` makes the praise the chosen completion; any other value, the pan.
    """
    film = f"the {rng.choice(FILM_WORDS)} {rng.choice(FILM_NOUNS)}"
    prompt = rng.choice(PROMPTS).format(film=film)
    subject, intensifier = rng.choice(SUBJECTS), rng.choice(INTENSIFIERS)
    praise = f" {subject} was {intensifier}{rng.choice(POSITIVE_ADJECTIVES)} ."
    pan = f" {subject} was {intensifier}{rng.choice(NEGATIVE_ADJECTIVES)} ."
    chosen, rejected = (praise, pan) if prefer == "positive" else (pan, praise)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def film_preferences(
    n_train: int = DPO.n_train, n_test: int = DPO.n_test, seed: int = 0, prefer: str = "positive"
) -> DatasetDict:
    """Distinct generated pairs, split into `train` and held-out `test` (same seed, same splits).

    Args:
        n_train: pairs in the `train` split.
        n_test: pairs in the `test` split (distinct from the training pairs).
        seed: seeds the generator; the same seed gives the same splits.
        prefer: `"positive"` or `"negative"`. `prefer="negative"` swaps chosen and rejected: a
            preference the pretrained model does not already share, so that DPO has to reverse
            its ranking.

    Raises:
        CourseError: if `prefer` is neither `"positive"` nor `"negative"`.
    """
    from datasets import Dataset, DatasetDict

    if prefer not in ("positive", "negative"):
        raise CourseError(f"prefer must be 'positive' or 'negative', got {prefer!r}")
    check_positive_int("n_train", n_train)
    check_positive_int("n_test", n_test)
    check_int("seed", seed, minimum=0)
    rng, seen, pairs = random.Random(seed), set(), []
    while len(pairs) < n_train + n_test:
        pair = film_pair(rng, prefer)
        key = tuple(pair.values())
        if key not in seen:
            seen.add(key)
            pairs.append(pair)
    return DatasetDict(
        train=Dataset.from_list(pairs[:n_train]), test=Dataset.from_list(pairs[n_train:])
    )


# --8<-- [end:film_pairs]


def split_pairs(
    dataset: Dataset, test_fraction: float = DPO.test_fraction, seed: int = 0
) -> DatasetDict:
    """Hold out a fraction of a file's pairs as `test`.

    Args:
        dataset: the pairs to split.
        test_fraction: the share held out, strictly between 0 and 1 (rounded up to whole pairs).
        seed: seeds the shuffle before the split.

    Returns:
        A `DatasetDict` with `train` and `test` splits.

    Raises:
        PreferenceDataError: if there are fewer than 2 pairs, or the fraction leaves none to
            train on.
    """
    check_number("test_fraction", test_fraction, 0, 1, low_open=True, high_open=True)
    if len(dataset) < 2:
        raise PreferenceDataError(f"need at least 2 pairs to hold some out, got {len(dataset)}")
    held_out = math.ceil(test_fraction * len(dataset))  # how `train_test_split` rounds
    if held_out >= len(dataset):
        raise PreferenceDataError(
            f"test_fraction {test_fraction:g} of {len(dataset)} pairs holds out "
            f"{held_out}, leaving none to train on"
        )
    return dataset.train_test_split(test_size=test_fraction, seed=seed)


# ----------------------------------------------------------------------------------------------
# The loss by hand
# ----------------------------------------------------------------------------------------------


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens `a` and `b` share.

    Args:
        a: one sequence of token ids.
        b: the other.
    """
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


# --8<-- [start:tokenize]
def tokenize_pair(tokenizer: Any, pair: dict[str, str]) -> dict[str, list[int]]:
    """Token ids of the prompt and of each completion, the completions ending with eos.

    The prompt and `prompt + completion` are tokenized separately; the completion is whatever
    follows their common prefix. (A BPE tokenizer may merge across the boundary, so the
    prompt's tokens are not always a prefix - the same rule TRL uses.)

    Args:
        tokenizer: a Hugging Face tokenizer with an `eos_token`.
        pair: one `{"prompt", "chosen", "rejected"}` dict.

    Returns:
        `{"prompt_ids", "chosen_ids", "rejected_ids"}`, lists of token ids.
    """
    eos = tokenizer.eos_token
    prompt_ids = tokenizer(pair["prompt"])["input_ids"]
    full = {
        name: tokenizer(pair["prompt"] + pair[name] + eos)["input_ids"]
        for name in ("chosen", "rejected")
    }
    start = min(common_prefix_length(prompt_ids, ids) for ids in full.values())
    return {
        "prompt_ids": prompt_ids[:start],
        "chosen_ids": full["chosen"][start:],
        "rejected_ids": full["rejected"][start:],
    }


def check_pairs_fit(
    tokenizer: Any,
    pairs: Iterable[dict[str, str]],
    max_length: int,
    context: int | None,
    source: str,
) -> None:
    """Refuse a pair whose prompt leaves no room for its completions, before any training.

    TRL drops the completion of a prompt longer than `max_length` (and a split of only such
    pairs trains on nothing), and a sequence longer than the model's context has no position
    embedding to read.

    Args:
        tokenizer: the model's tokenizer.
        pairs: `{"prompt", "chosen", "rejected"}` dicts.
        max_length: the longest sequence TRL keeps (`DPORunConfig.max_length`).
        context: the model's positions (`n_positions`, `max_position_embeddings`); None if unknown.
        source: where the pairs come from, for the message.

    Raises:
        CourseError: naming the first pair that does not fit and what to change.
    """
    for number, pair in enumerate(pairs, 1):
        ids = tokenize_pair(tokenizer, pair)
        prompt = len(ids["prompt_ids"])
        longest = prompt + max(len(ids["chosen_ids"]), len(ids["rejected_ids"]))
        if prompt >= max_length:
            raise CourseError(
                f"{source}, pair {number}: its prompt is {prompt} tokens, which leaves none of "
                f"its completions inside max_length {max_length}: raise --max-length or "
                "shorten the prompt"
            )
        if context is not None and longest > context:
            raise CourseError(
                f"{source}, pair {number}: prompt and completion are {longest} tokens, more "
                f"than the model's context of {context} positions: shorten the pair"
            )


def model_context(model: torch.nn.Module) -> int | None:
    """The most positions `model` reads (GPT-2's `n_positions`, Llama's
    `max_position_embeddings`), or None when its config says neither."""
    config = getattr(model, "config", None)
    for name in ("n_positions", "max_position_embeddings"):
        if isinstance(getattr(config, name, None), int):
            return getattr(config, name)
    return None


def check_same_shape(**tensors: torch.Tensor) -> None:
    """Refuse log-probabilities of different shapes, which would broadcast into a wrong loss.

    Args:
        tensors: the named log-probability tensors, one value per pair each.

    Raises:
        CourseError: naming the shapes when they differ.
    """
    shapes = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise CourseError(
            f"the log-probabilities must have one shape, one value per pair: got {listed}"
        )


def collate_pairs(
    examples: Sequence[dict[str, list[int]]], pad_token_id: int
) -> dict[str, torch.Tensor]:
    """One batch: the `prompt + chosen` rows first, then the `prompt + rejected` rows.

    Rows are right-padded. `completion_mask` is 1 on completion tokens only - 0 on the prompt
    (the model is not judged on the prompt, which both completions share) and 0 on padding.

    Args:
        examples: pairs as `tokenize_pair` returns them.
        pad_token_id: the id padding is filled with.

    Returns:
        `input_ids`, `attention_mask` and `completion_mask`, each `(2 * len(examples), width)`.
    """
    rows, masks = [], []
    for name in ("chosen_ids", "rejected_ids"):
        for example in examples:
            rows.append(example["prompt_ids"] + example[name])
            masks.append([0] * len(example["prompt_ids"]) + [1] * len(example[name]))
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    completion_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, mask) in enumerate(zip(rows, masks)):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
        completion_mask[i, : len(row)] = torch.tensor(mask)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "completion_mask": completion_mask,
    }


# --8<-- [end:tokenize]


# --8<-- [start:sequence_logprobs]
def sequence_logprobs(
    logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor
) -> torch.Tensor:
    """`log pi(completion | prompt)` for each row:
    the sum of the completion tokens' log-probabilities.

    The logits at position `t` predict token `t + 1`, so logits and targets are shifted by one.

    Args:
        logits: the model's output, `(rows, length, vocabulary)`.
        input_ids: the rows' token ids, `(rows, length)`.
        completion_mask: 1 on completion tokens; prompt tokens and padding have
            `completion_mask == 0` and add nothing.

    Returns:
        One log-probability per row, `(rows,)`.
    """
    log_probs = F.log_softmax(logits[:, :-1].float(), dim=-1)
    targets = input_ids[:, 1:]
    token_logps = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (token_logps * completion_mask[:, 1:]).sum(dim=-1)


# --8<-- [end:sequence_logprobs]


@dataclass
class DPOLoss:
    """The mean loss of a batch and each pair's implicit rewards `beta * (logp - logp_ref)`.

    Attributes:
        loss: the mean DPO loss over the pairs (a scalar, with its graph).
        chosen_rewards: each pair's implicit reward of the chosen completion (detached).
        rejected_rewards: each pair's implicit reward of the rejected completion (detached).
    """

    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


# --8<-- [start:dpo_loss]
def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
) -> DPOLoss:
    """The sigmoid DPO loss `-log sigmoid(r_chosen - r_rejected)`, averaged over pairs.

    Each argument holds one sequence log-probability per pair. `logsigmoid` is used rather
    than `log(sigmoid(...))`, which underflows to `-inf` for large negative margins.

    Args:
        policy_chosen: the policy's log-probabilities of the chosen completions.
        policy_rejected: the policy's log-probabilities of the rejected completions.
        reference_chosen: the reference's log-probabilities of the chosen completions.
        reference_rejected: the reference's log-probabilities of the rejected completions.
        beta: scales the implicit rewards (the weight of the KL penalty); positive.
    """
    check_beta(beta)
    check_same_shape(
        policy_chosen=policy_chosen,
        policy_rejected=policy_rejected,
        reference_chosen=reference_chosen,
        reference_rejected=reference_rejected,
    )
    chosen_rewards = beta * (policy_chosen - reference_chosen)
    rejected_rewards = beta * (policy_rejected - reference_rejected)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    return DPOLoss(loss, chosen_rewards.detach(), rejected_rewards.detach())


# --8<-- [end:dpo_loss]


def check_beta(beta: float) -> None:
    """`beta` scales the KL penalty: it must be a positive, finite number.

    Args:
        beta: the value to check.

    Raises:
        CourseError: if `beta` is not a positive, finite number (a bool is refused).
    """
    beta_check("beta", beta)


@torch.no_grad()
def pair_logprobs(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence log-probabilities of the chosen and of the rejected rows
    of a `collate_pairs` batch.

    Args:
        model: the causal LM to score with (no gradients are kept).
        batch: a `collate_pairs` batch; it is moved to the model's device.

    Returns:
        `(chosen, rejected)`: one log-probability per pair each, on the CPU.
    """
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logps = sequence_logprobs(logits, batch["input_ids"], batch["completion_mask"]).cpu()
    return logps.chunk(2)


def reference_logprobs(
    policy: torch.nn.Module, reference: torch.nn.Module | None, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's log-probabilities: `reference`,
    or a peft policy with its adapters disabled.

    Args:
        policy: the policy; used with its adapters off when `reference` is None.
        reference: an explicit frozen reference model, or None.
        batch: a `collate_pairs` batch.

    Returns:
        `(chosen, rejected)`: one log-probability per pair each.

    Raises:
        CourseError: if `reference` is None and the policy has no adapters to switch off.
    """
    if reference is not None:
        return pair_logprobs(reference, batch)
    if not hasattr(policy, "disable_adapter"):
        raise CourseError("no reference model given, and the policy has no adapters to switch off")
    with policy.disable_adapter():
        return pair_logprobs(policy, batch)


def preference_metrics(
    policy: torch.nn.Module,
    tokenizer: Any,
    pairs: Dataset | Sequence[dict[str, str]],
    beta: float,
    reference: torch.nn.Module | None = None,
    batch_size: int = 64,
) -> dict[str, float]:
    """TRL's logged metrics, computed by hand, plus how the policy itself ranks each pair.

    `rewards/*` and `loss` are what `DPOTrainer` logs (means over pairs). `likelihood_accuracy`
    is the fraction of pairs where the policy gives the chosen completion the higher
    log-probability; unlike `rewards/accuracies` it is meaningful before training, when the
    policy equals the reference and every reward is 0.

    Args:
        policy: the model being judged; put back in its training mode afterwards.
        tokenizer: the policy's tokenizer.
        pairs: the preference pairs to measure on.
        beta: scales the implicit rewards; positive.
        reference: the frozen reference; None uses the policy with its adapters disabled.
        batch_size: pairs scored per forward pass.

    Returns:
        Metric name to value: `loss`, `rewards/*`, `logps/*`, `likelihood_accuracy` and
        `likelihood_margin`.
    """
    check_beta(beta)
    pairs = check_pairs(pairs)
    was_training = policy.training
    policy.eval()
    totals: dict[str, list[torch.Tensor]] = {k: [] for k in ("pc", "pr", "rc", "rr")}
    for start in range(0, len(pairs), batch_size):
        batch = collate_pairs(
            [tokenize_pair(tokenizer, p) for p in pairs[start : start + batch_size]],
            tokenizer.pad_token_id,
        )
        pc, pr = pair_logprobs(policy, batch)
        # before training the reference is the policy itself: the same scores, not scored twice
        rc, rr = (pc, pr) if reference is policy else reference_logprobs(policy, reference, batch)
        for key, value in zip(("pc", "pr", "rc", "rr"), (pc, pr, rc, rr)):
            totals[key].append(value)
    policy.train(was_training)
    pc, pr, rc, rr = (torch.cat(totals[k]) for k in ("pc", "pr", "rc", "rr"))
    result = dpo_loss(pc, pr, rc, rr, beta)
    margins = result.chosen_rewards - result.rejected_rewards
    return {
        "loss": result.loss.item(),
        "rewards/chosen": result.chosen_rewards.mean().item(),
        "rewards/rejected": result.rejected_rewards.mean().item(),
        "rewards/accuracies": (margins > 0).float().mean().item(),
        "rewards/margins": margins.mean().item(),
        "logps/chosen": pc.mean().item(),
        "logps/rejected": pr.mean().item(),
        "likelihood_accuracy": (pc > pr).float().mean().item(),
        "likelihood_margin": (pc - pr).mean().item(),
    }


# ----------------------------------------------------------------------------------------------
# Training through TRL
# ----------------------------------------------------------------------------------------------


# --8<-- [start:dpo_config]
def make_dpo_config(config: DPORunConfig, output_dir: str | Path, eval_batch_size: int = 64) -> Any:
    """TRL's `DPOConfig` for a small run on whatever device is here.

    DPOConfig turns on gradient checkpointing and bf16 by default; both are switched off (bf16
    kept only on a CUDA GPU that has it). Nothing is reported, saved mid-run or pushed.

    Args:
        config: the run's hyper-parameters.
        output_dir: TRL's output directory.
        eval_batch_size: pairs per evaluation batch.
    """
    from trl import DPOConfig

    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return DPOConfig(
        output_dir=str(output_dir),
        beta=config.beta,
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=eval_batch_size,
        max_length=config.max_length,
        gradient_checkpointing=False,
        bf16=bf16,
        logging_steps=config.logging_steps,
        report_to="none",
        save_strategy="no",
        push_to_hub=False,
        seed=config.seed,
        disable_tqdm=not config.progress,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
    )


# --8<-- [end:dpo_config]


def frozen_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights the reference is made of (a peft model's base, LoRA left out).

    peft renames a wrapped layer's weight `...c_attn.base_layer.weight`; the names are mapped
    back so that a snapshot before `get_peft_model` compares with one after training.

    Args:
        model: a plain model or a peft model.

    Returns:
        Parameter name (without peft's prefixes) to a CPU copy of its value.
    """
    weights = {}
    for name, parameter in model.named_parameters():
        if "lora_" in name:
            continue
        name = name.removeprefix("base_model.model.").replace(".base_layer", "")
        weights[name] = parameter.detach().to("cpu", copy=True)
    return weights


def same_weights(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> bool:
    """Exactly the same names and values.

    Args:
        before: a `frozen_weights` snapshot.
        after: another snapshot to compare with it.
    """
    return before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@dataclass
class DPORun:
    """A finished run: held-out metrics before and after, the logged history, the trained policy.

    Attributes:
        before: `preference_metrics` on the test pairs before training.
        after: `preference_metrics` on the test pairs after training.
        history: the training log entries that carry reward metrics.
        reference_unchanged: whether the reference's weights are the same after training.
        config: the run's hyper-parameters.
        seconds: wall-clock time of `trainer.train()`.
        model: the trained policy.
        reference: the explicit reference model; None with LoRA.
    """

    before: dict[str, float]
    after: dict[str, float]
    history: list[dict[str, float]]
    reference_unchanged: bool
    config: DPORunConfig
    seconds: float
    model: Any = field(repr=False, default=None)
    reference: Any = field(repr=False, default=None)

    def as_dict(self) -> dict[str, Any]:
        """The JSON-friendly part (models left out)."""
        return {
            "config": asdict(self.config),
            "before": self.before,
            "after": self.after,
            "history": self.history,
            "reference_unchanged": self.reference_unchanged,
            "seconds": round(self.seconds, 2),
        }


# --8<-- [start:train_dpo]
def train_dpo(
    pairs: DatasetDict,
    model_name: str = EMBEDDED_MODEL,
    config: DPORunConfig | None = None,
    output_dir: str | Path | None = None,
) -> DPORun:
    """Train a causal LM with `trl.DPOTrainer` on `pairs["train"]`; measure on `pairs["test"]`.

    With `config.lora`, TRL wraps the model with LoRA and the reference is the same model with
    the adapters disabled. Without it, a second copy of the model is loaded and handed over as
    an explicit `ref_model` (a model object with no saved path would otherwise make TRL try to
    load a reference from an empty name). Either way the reference's weights are compared
    before and after training.

    Args:
        pairs: a `DatasetDict` with `train` and `test` preference pairs.
        model_name: the causal LM to load.
        config: the run's hyper-parameters; None uses `DPORunConfig()`.
        output_dir: TRL's output directory; None uses a temporary directory.
    """
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import PrinterCallback
    from trl import DPOTrainer

    config = config or DPORunConfig()
    train_pairs, test_pairs = (
        Dataset.from_list(check_pairs(pairs[s], f"the {s} split")) for s in ("train", "test")
    )
    policy, tokenizer = load_model(model_name, task="causal-lm", seed=config.seed)
    for split, split_pairs in (("train", train_pairs), ("test", test_pairs)):
        check_pairs_fit(
            tokenizer, split_pairs, config.max_length, model_context(policy), f"the {split} split"
        )
    reference = (
        None if config.lora else load_model(model_name, task="causal-lm", seed=config.seed)[0]
    )
    frozen_before = frozen_weights(policy if config.lora else reference)
    before = preference_metrics(policy, tokenizer, test_pairs, config.beta, reference or policy)
    peft_config = (
        LoraConfig(
            r=config.r,
            lora_alpha=config.alpha,
            target_modules=default_targets(policy),
            fan_in_fan_out=stores_transposed(policy),
            task_type="CAUSAL_LM",
        )
        if config.lora
        else None
    )
    with tempfile.TemporaryDirectory() as scratch:
        trainer = DPOTrainer(
            model=policy,
            ref_model=reference,
            args=make_dpo_config(config, output_dir or scratch),
            train_dataset=train_pairs,
            processing_class=tokenizer,
            peft_config=peft_config,
        )
        trainer.remove_callback(PrinterCallback)  # the before/after summary is printed instead
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    policy = trainer.model
    after = preference_metrics(policy, tokenizer, test_pairs, config.beta, reference)
    frozen_after = frozen_weights(policy if config.lora else reference)
    history = [entry for entry in trainer.state.log_history if "rewards/chosen" in entry]
    return DPORun(
        before,
        after,
        history,
        same_weights(frozen_before, frozen_after),
        config,
        seconds,
        policy,
        reference,
    )


# --8<-- [end:train_dpo]


# ----------------------------------------------------------------------------------------------
# The same numbers from TRL
# ----------------------------------------------------------------------------------------------


def trl_metrics(
    policy: torch.nn.Module,
    reference: torch.nn.Module,
    tokenizer: Any,
    pairs: Dataset | Sequence[dict[str, str]],
    beta: float,
    label_smoothing: float = 0.0,
) -> dict[str, float]:
    """What `DPOTrainer.evaluate` logs for `pairs` (one batch), with the `eval_` prefix removed.

    Nothing is trained. Note that TRL patches `policy` and `reference` in place with a fused
    LM head; their ordinary forward is unchanged.

    Args:
        policy: the policy to judge.
        reference: the frozen reference.
        tokenizer: their tokenizer.
        pairs: the preference pairs, all evaluated in one batch.
        beta: scales the implicit rewards; positive.
        label_smoothing: TRL's label smoothing; 0 is the plain sigmoid loss.
    """
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import DPOTrainer

    pairs = Dataset.from_list(check_pairs(pairs))
    config = DPORunConfig(beta=beta)
    with tempfile.TemporaryDirectory() as scratch:
        args = make_dpo_config(config, scratch, eval_batch_size=len(pairs))
        args.label_smoothing = label_smoothing
        trainer = DPOTrainer(
            model=policy,
            ref_model=reference,
            args=args,
            train_dataset=pairs,
            eval_dataset=pairs,
            processing_class=tokenizer,
        )
        trainer.remove_callback(PrinterCallback)
        logged = trainer.evaluate()
    return {key.removeprefix("eval_"): value for key, value in logged.items()}


def perturbed_copy(model: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """A copy of `model` with Gaussian noise added to every weight:
    a policy that differs from it.

    Args:
        model: the model to copy (left unchanged).
        scale: standard deviation of the noise.
        seed: seeds the noise.
    """
    import copy

    generator = torch.Generator().manual_seed(seed)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return other


def compare_with_trl(
    model_name: str = EMBEDDED_MODEL, n_pairs: int = 8, beta: float = 0.5, seed: int = 0
) -> list[dict[str, Any]]:
    """Rows `metric | by hand | TRL | difference` for a perturbed policy against its reference.

    Args:
        model_name: the causal LM used as reference.
        n_pairs: generated film pairs compared on.
        beta: scales the implicit rewards.
        seed: seeds the model, the perturbation and the pairs.
    """

    reference, tokenizer = load_model(model_name, task="causal-lm", seed=seed)
    policy = perturbed_copy(reference, seed=seed)
    pairs = list(film_preferences(n_pairs, 1, seed)["train"])
    ours = preference_metrics(policy, tokenizer, pairs, beta, reference)
    theirs = trl_metrics(policy, reference, tokenizer, pairs, beta)
    keys = ("loss", *METRIC_KEYS, "logps/chosen", "logps/rejected")
    return [
        {
            "metric": k,
            "by hand": round(ours[k], 6),
            "TRL": round(theirs[k], 6),
            "difference": f"{abs(ours[k] - theirs[k]):.1e}",
        }
        for k in keys
    ]


# ----------------------------------------------------------------------------------------------
# Saving and plotting
# ----------------------------------------------------------------------------------------------


def plot_rewards(history: Sequence[dict[str, float]], path: str | Path, title: str = "") -> Path:
    """Logged rewards (chosen, rejected, margin) and reward accuracy against the training step.

    Args:
        history: the logged entries, each with `step` and the `rewards/*` metrics.
        path: the image file to write.
        title: the figure's title.

    Returns:
        The path written.
    """

    steps = [h["step"] for h in history]
    figure, (rewards, accuracy) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, label in (
        ("rewards/chosen", "chosen"),
        ("rewards/rejected", "rejected"),
        ("rewards/margins", "margin"),
    ):
        rewards.plot(steps, [h[key] for h in history], marker=".", label=label)
    rewards.axhline(0, color="grey", linewidth=0.5)
    rewards.set(xlabel="step", ylabel="implicit reward  beta log(pi / pi_ref)")
    rewards.legend(
        loc="upper left", bbox_to_anchor=(0, -0.18), ncol=3, fontsize=8, frameon=False
    )  # under the axes
    accuracy.plot(steps, [h["rewards/accuracies"] for h in history], marker=".", color="tab:green")
    accuracy.set(xlabel="step", ylabel="reward accuracy (train batch)", ylim=(-0.05, 1.05))
    return save_figure(figure, path, title)


def save_dpo_run(run: DPORun, output: str | Path, title: str = "") -> tuple[Path, Path]:
    """Write `metrics.json` (config, before/after, logged history) and `rewards.png`.

    Args:
        run: the finished run.
        output: the directory written into.
        title: the plot's title.

    Returns:
        `(metrics.json, rewards.png)` paths.
    """
    return write_metrics_and_plot(
        output, run.as_dict(), lambda path: plot_rewards(run.history, path, title)
    )


def before_after_table(run: DPORun) -> str:
    """Held-out metrics before and after training, as a markdown table.

    Args:
        run: the finished run.
    """
    keys = (
        "likelihood_accuracy",
        "likelihood_margin",
        "rewards/accuracies",
        "rewards/margins",
        "loss",
    )
    lines = ["| held-out metric | step 0 | after DPO |", "|---|---|---|"]
    lines += [f"| {k} | {run.before[k]:.4f} | {run.after[k]:.4f} |" for k in keys]
    return "\n".join(lines)
