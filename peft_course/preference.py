"""Preference optimisation beyond DPO: IPO, hinge (SLiC), robust DPO, SimPO, ORPO, KTO, APO-zero.

DPO (`peft_course.dpo`) is one member of a family. Every member scores a completion `y` by a
log-probability - the policy's `log pi(y)`, usually against a frozen reference's
`log pi_ref(y)` - and turns the scores of a pair (or of one unpaired completion) into a loss.
They differ in what they do with the *log-ratio margin*

    h = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l)),

the amount by which the policy, more than the reference, prefers the winner `y_w` to the loser
`y_l`:

- DPO, `-log sigmoid(beta h)`: keeps pushing; the push vanishes only at infinity;
- IPO, `(h / |y| - 1 / (2 beta))^2` (per token): stops at `1 / (2 beta)`, pulls back beyond;
- hinge (SLiC), `max(0, 1 - beta h)`: stops dead at `h = 1 / beta`;
- robust DPO: DPO corrected for labels flipped with probability `eps`; never stops;
- SimPO, `-log sigmoid(beta a - gamma)`, `a` the per-token margin, no reference: DPO's curve
  moved by `gamma / beta`;
- ORPO: the SFT loss plus `-lambda log sigmoid(log-odds margin)`, no reference;
- KTO, unpaired: `1 - sigmoid(beta (r - z))` for a liked `y`, `1 - sigmoid(beta (z - r))` for
  a disliked one; saturates both ways;
- APO-zero, `1 - sigmoid(beta r_w) + sigmoid(beta r_l)`: raises `r_w` and lowers `r_l`, each
  on its own.

(`r = log pi(y) - log pi_ref(y)` of one completion; `z` is KTO's reference point, an estimate
of the KL divergence between policy and reference.) `peft_course.preference_derivations`
derives each of these statements with sympy. This module writes each loss as a short function
of the sequence log-probabilities that `peft_course.dpo` computes, in `dpo.dpo_loss`'s style,
and returns the loss together with the rewards TRL logs for it.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from peft_course.configs import DPORunConfig
from peft_course.dpo import (
    check_beta,
    check_pairs,
    check_pairs_fit,
    common_prefix_length,
    dpo_loss,
    film_preferences,
    frozen_weights,
    model_context,
    perturbed_copy,
    same_weights,
    sequence_logprobs,
    tokenize_pair,
)
from peft_course.errors import CourseError, check_number
from peft_course.files import atomic_write_text, replacing, write_metrics_and_plot
from peft_course.lora import default_targets, stores_transposed
from peft_course.models import load_model
from peft_course.plots import plt, save_figure
from peft_course.settings import EMBEDDED_MODEL, PREFERENCE

# The losses of this chapter (and of `peft-course align --loss`), each with a line about it.
LOSSES = {
    "dpo": "DPO: -log sigmoid(beta h) of the log-ratio margin h",
    "ipo": "IPO: (h per token - 1/(2 beta))^2, a squared loss with its minimum at 1/(2 beta)",
    "hinge": "hinge (SLiC): max(0, 1 - beta h), no push beyond h = 1/beta",
    "robust": "robust DPO: unbiased under labels flipped with probability label_smoothing",
    "simpo": "SimPO: -log sigmoid(beta * per-token margin - gamma), no reference",
    "orpo": "ORPO: the SFT loss on the chosen row plus lambda times the odds-ratio loss",
    "kto": "KTO: unpaired; each completion's log-ratio against a KL reference point",
    "apo-zero": "APO-zero: 1 - sigmoid(beta r_chosen) + sigmoid(beta r_rejected), anchored",
}


@dataclass
class PreferenceLoss:
    """The mean loss of a batch and the rewards TRL logs beside it.

    Attributes:
        loss: the mean loss over the batch (a scalar, with its graph).
        chosen_rewards: each chosen (for KTO: each desirable) completion's reward (detached).
        rejected_rewards: each rejected (undesirable) completion's reward (detached).
    """

    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


def log_ratio_rewards(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The implicit rewards `beta * (log pi(y) - log pi_ref(y))` of the chosen and rejected rows.

    Args:
        policy_chosen: the policy's log-probabilities of the chosen completions.
        policy_rejected: the policy's log-probabilities of the rejected completions.
        reference_chosen: the reference's log-probabilities of the chosen completions.
        reference_rejected: the reference's log-probabilities of the rejected completions.
        beta: scales the log-ratios; positive.
    """
    check_beta(beta)
    return beta * (policy_chosen - reference_chosen), beta * (policy_rejected - reference_rejected)


def _detached(loss: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor) -> PreferenceLoss:
    return PreferenceLoss(loss, chosen.detach(), rejected.detach())


# --8<-- [start:ipo_loss]
def ipo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
) -> PreferenceLoss:
    """IPO (Azar et al., 2023): `(h - 1 / (2 beta))^2`, `h` the margin of per-token log-ratios.

    A squared loss has a minimum: the margin is pulled towards `1 / (2 beta)` from both sides,
    so a pair the model already separates well is pushed back rather than further apart - the
    regularisation that DPO's ever-decreasing loss lacks. Each log-ratio is divided by its
    completion's number of tokens, as TRL does (and the IPO authors confirmed to TRL).

    Args:
        policy_chosen: the policy's log-probabilities of the chosen completions (sums).
        policy_rejected: the policy's log-probabilities of the rejected completions.
        reference_chosen: the reference's log-probabilities of the chosen completions.
        reference_rejected: the reference's log-probabilities of the rejected completions.
        beta: IPO's regularisation (tau in the paper); the target margin is `1 / (2 beta)`.
        chosen_lengths: the number of tokens of each chosen completion.
        rejected_lengths: the number of tokens of each rejected completion.
    """
    chosen, rejected = log_ratio_rewards(
        policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta
    )
    per_token_margin = (policy_chosen - reference_chosen) / chosen_lengths.clamp(min=1) - (
        policy_rejected - reference_rejected
    ) / rejected_lengths.clamp(min=1)
    loss = ((per_token_margin - 1 / (2 * beta)) ** 2).mean()
    return _detached(loss, chosen, rejected)


# --8<-- [end:ipo_loss]


# --8<-- [start:hinge_loss]
def hinge_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
) -> PreferenceLoss:
    """The hinge loss of SLiC (Zhao et al., 2023): `max(0, 1 - beta h)`.

    Pairs whose reward margin `beta h` has reached 1 give no gradient at all; below it every
    pair pushes equally hard (DPO weights each pair by how wrong it is).

    Args:
        policy_chosen: the policy's log-probabilities of the chosen completions.
        policy_rejected: the policy's log-probabilities of the rejected completions.
        reference_chosen: the reference's log-probabilities of the chosen completions.
        reference_rejected: the reference's log-probabilities of the rejected completions.
        beta: scales the margin; the hinge closes at `h = 1 / beta`.
    """
    chosen, rejected = log_ratio_rewards(
        policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta
    )
    loss = torch.relu(1 - (chosen - rejected)).mean()
    return _detached(loss, chosen, rejected)


# --8<-- [end:hinge_loss]


def check_label_smoothing(label_smoothing: float) -> float:
    """The probability that a pair's label is flipped: in `[0, 0.5)`.

    At 0.5 a label says nothing, and the robust loss divides by `1 - 2 eps`.

    Args:
        label_smoothing: the value to check.

    Raises:
        CourseError: if it is not a number in `[0, 0.5)`.
    """
    return check_number("label_smoothing", label_smoothing, 0, 0.5, high_open=True)


# --8<-- [start:robust_loss]
def robust_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
    label_smoothing: float,
) -> PreferenceLoss:
    """Robust DPO (Chowdhury et al., 2024): DPO made unbiased under flipped labels.

    If each label is flipped with probability `eps`, the loss
    `((1 - eps) l(h) - eps l(-h)) / (1 - 2 eps)`, with `l(h) = -log sigmoid(beta h)` DPO's loss,
    has DPO's loss on the *true* labels as its expectation. (cDPO, the conservative variant,
    adds the two terms instead: `(1 - eps) l(h) + eps l(-h)`, a loss with a finite minimum.)

    Args:
        policy_chosen: the policy's log-probabilities of the chosen completions.
        policy_rejected: the policy's log-probabilities of the rejected completions.
        reference_chosen: the reference's log-probabilities of the chosen completions.
        reference_rejected: the reference's log-probabilities of the rejected completions.
        beta: scales the margin.
        label_smoothing: `eps`, the probability that a label is flipped; in `[0, 0.5)`.
    """
    eps = check_label_smoothing(label_smoothing)
    chosen, rejected = log_ratio_rewards(
        policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta
    )
    margin = chosen - rejected
    loss = ((1 - eps) * -F.logsigmoid(margin) - eps * -F.logsigmoid(-margin)) / (1 - 2 * eps)
    return _detached(loss.mean(), chosen, rejected)


# --8<-- [end:robust_loss]


def cdpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
    label_smoothing: float,
) -> PreferenceLoss:
    """Conservative DPO (cDPO): `(1 - eps) l(h) + eps l(-h)`, DPO with smoothed labels.

    Unlike DPO's, its minimum is finite: at `h = log((1 - eps) / eps) / beta`. (TRL 1.16's
    DPOTrainer no longer has it: its sigmoid loss ignores `label_smoothing`.)

    Args:
        policy_chosen: the policy's log-probabilities of the chosen completions.
        policy_rejected: the policy's log-probabilities of the rejected completions.
        reference_chosen: the reference's log-probabilities of the chosen completions.
        reference_rejected: the reference's log-probabilities of the rejected completions.
        beta: scales the margin.
        label_smoothing: `eps`, the weight of the flipped label; in `[0, 0.5)`.
    """
    eps = check_label_smoothing(label_smoothing)
    chosen, rejected = log_ratio_rewards(
        policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta
    )
    margin = chosen - rejected
    loss = (1 - eps) * -F.logsigmoid(margin) + eps * -F.logsigmoid(-margin)
    return _detached(loss.mean(), chosen, rejected)


# --8<-- [start:apo_zero_loss]
def apo_zero_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
) -> PreferenceLoss:
    """APO-zero (D'Oosterlinck et al., 2024): `1 - sigmoid(r_w) + sigmoid(r_l)`.

    Each reward is pushed on its own - the chosen one up, the rejected one down - rather than
    only their difference: DPO can lower both log-probabilities as long as the rejected one
    falls faster; APO-zero cannot. For data whose chosen completions are better than what the
    model writes now.

    Args:
        policy_chosen: the policy's log-probabilities of the chosen completions.
        policy_rejected: the policy's log-probabilities of the rejected completions.
        reference_chosen: the reference's log-probabilities of the chosen completions.
        reference_rejected: the reference's log-probabilities of the rejected completions.
        beta: scales the log-ratios.
    """
    chosen, rejected = log_ratio_rewards(
        policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta
    )
    loss = (1 - torch.sigmoid(chosen)) + torch.sigmoid(rejected)
    return _detached(loss.mean(), chosen, rejected)


# --8<-- [end:apo_zero_loss]


def check_gamma(gamma: float) -> float:
    """SimPO's target margin: a finite number of at least 0."""
    return check_number("gamma", gamma, 0, None)


# --8<-- [start:simpo_loss]
def simpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    beta: float,
    gamma: float,
) -> PreferenceLoss:
    """SimPO (Meng et al., 2024): `-log sigmoid(beta (a_w - a_l) - gamma)`, with no reference.

    `a = log pi(y) / |y|` is the policy's *average* per-token log-probability: the reward is
    length-normalised, so a long completion is not rewarded for being long (nor punished), and
    there is no reference model to run. `gamma` asks for a margin: the loss is DPO's shifted so
    that a pair scores `ln 2` at `beta (a_w - a_l) = gamma`, not at 0.

    Args:
        policy_chosen: the policy's log-probabilities of the chosen completions (sums).
        policy_rejected: the policy's log-probabilities of the rejected completions (sums).
        chosen_lengths: the number of tokens of each chosen completion.
        rejected_lengths: the number of tokens of each rejected completion.
        beta: scales the per-token rewards (SimPO's paper uses 2 to 2.5).
        gamma: the target reward margin, at least 0.
    """
    check_beta(beta)
    check_gamma(gamma)
    chosen = beta * policy_chosen / chosen_lengths.clamp(min=1)
    rejected = beta * policy_rejected / rejected_lengths.clamp(min=1)
    loss = -F.logsigmoid(chosen - rejected - gamma).mean()
    return _detached(loss, chosen, rejected)


# --8<-- [end:simpo_loss]


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """`log(1 - exp(x))` for `x < 0`, without cancellation at either end.

    Near 0, `1 - exp(x)` loses its digits: `log(-expm1(x))` keeps them. Far below 0, `exp(x)` is
    tiny and `log1p(-exp(x))` is exact. The switch at `-ln 2` is where both are equally good.

    Args:
        x: log-probabilities (at most 0).
    """
    return torch.where(
        x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x))
    )


# --8<-- [start:orpo_loss]
def orpo_loss(
    policy_chosen_mean: torch.Tensor,
    policy_rejected_mean: torch.Tensor,
    chosen_nll: torch.Tensor,
    beta: float,
) -> PreferenceLoss:
    """ORPO (Hong et al., 2024): the SFT loss plus `lambda` times an odds-ratio loss.

    With `p = exp(a)` the policy's per-token (geometric mean) probability of a completion, the
    odds of it are `p / (1 - p)`. The odds-ratio term is `-log sigmoid(log odds_w - log odds_l)`:
    DPO's form, applied to log-odds instead of log-ratios, with no reference model. The SFT
    term is the chosen rows' next-token loss, which keeps the model writing the chosen answers.

    Args:
        policy_chosen_mean: the policy's per-token log-probability of each chosen completion.
        policy_rejected_mean: the same of each rejected completion.
        chosen_nll: the SFT loss: the mean next-token loss over the chosen rows' tokens (TRL
            counts the prompt's tokens too).
        beta: `lambda`, the weight of the odds-ratio term (0.1 in the paper and in TRL).
    """
    check_beta(beta)
    log_odds = (policy_chosen_mean - policy_rejected_mean) - (
        log1mexp(policy_chosen_mean) - log1mexp(policy_rejected_mean)
    )
    loss = chosen_nll - beta * F.logsigmoid(log_odds).mean()
    return _detached(loss, beta * policy_chosen_mean, beta * policy_rejected_mean)


# --8<-- [end:orpo_loss]


def check_weight(name: str, value: float) -> float:
    """A weight of KTO's desirable or undesirable losses: a finite number above 0."""
    return check_number(name, value, 0, None, low_open=True)


# --8<-- [start:kto_loss]
def kto_loss(
    policy_logps: torch.Tensor,
    reference_logps: torch.Tensor,
    desirable: torch.Tensor,
    kl_policy_logps: torch.Tensor,
    kl_reference_logps: torch.Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> PreferenceLoss:
    """KTO (Ethayarajh et al., 2024): one loss per completion, each labelled good or bad.

    KTO needs no pairs. Each completion's log-ratio `r = log pi(y) - log pi_ref(y)` is compared
    with a reference point `z`, an estimate of `KL(pi || pi_ref)` from completions paired with
    *other* prompts (clamped at 0 and not differentiated): a desirable completion scores
    `1 - sigmoid(beta (r - z))`, an undesirable one `1 - sigmoid(beta (z - r))`. Like prospect
    theory's value function the loss saturates both ways: a completion far on the right side of
    `z`, or hopelessly far on the wrong side, hardly moves the model.

    Args:
        policy_logps: the policy's log-probability of each completion.
        reference_logps: the reference's log-probability of each completion.
        desirable: True where a completion is desirable, False where it is not.
        kl_policy_logps: the policy's log-probabilities of the mismatched completions.
        kl_reference_logps: the reference's log-probabilities of the mismatched completions.
        beta: scales the log-ratios.
        desirable_weight: the weight of the desirable completions' losses.
        undesirable_weight: the weight of the undesirable completions' losses.

    Returns:
        The mean loss over all completions; `chosen_rewards` are `beta r` of the desirable
        completions, `rejected_rewards` of the undesirable ones.
    """
    check_beta(beta)
    check_weight("desirable_weight", desirable_weight)
    check_weight("undesirable_weight", undesirable_weight)
    desirable = desirable.bool()
    z = (kl_policy_logps - kl_reference_logps).mean().clamp(min=0).detach()
    log_ratios = policy_logps - reference_logps
    losses = torch.where(
        desirable,
        desirable_weight * (1 - torch.sigmoid(beta * (log_ratios - z))),
        undesirable_weight * (1 - torch.sigmoid(beta * (z - log_ratios))),
    )
    rewards = beta * log_ratios
    return _detached(losses.mean(), rewards[desirable], rewards[~desirable])


# --8<-- [end:kto_loss]


def check_loss_name(name: str) -> str:
    """One of `LOSSES`, or a `CourseError` that lists them.

    Args:
        name: the loss asked for (`apo_zero` is accepted for `apo-zero`).
    """
    key = name.replace("_", "-") if isinstance(name, str) else name
    if key not in LOSSES:
        raise CourseError(f"unknown preference loss {name!r}; choose one of {', '.join(LOSSES)}")
    return key


# ----------------------------------------------------------------------------------------------
# Scores of a policy and a reference on pairs, and each loss of them
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossSettings:
    """The parameters some losses have beside beta.

    Attributes:
        gamma: SimPO's target reward margin.
        label_smoothing: robust DPO's probability that a label is flipped, in `[0, 0.5)`.
        desirable_weight: KTO's weight of the desirable completions' losses.
        undesirable_weight: KTO's weight of the undesirable completions' losses.
        orpo_lambda: ORPO's weight of the odds-ratio term beside the SFT loss (TRL's ORPO
            `beta`; it plays no KL role, so ORPO ignores the run's beta). The paper's 0.1
            hardly moves the preference in this chapter's few steps: on tiny-gpt2, 64 film
            pairs that reverse its preference, 8 steps at learning rate 1e-2, the held-out
            reward accuracy went 0.09 -> 0.00 at 0.1, -> 0.19 at 1, -> 0.91 at 2.
    """

    gamma: float = PREFERENCE.gamma
    label_smoothing: float = PREFERENCE.label_smoothing
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0
    orpo_lambda: float = PREFERENCE.orpo_lambda

    def __post_init__(self) -> None:
        """Check every value before a model is loaded."""
        check_gamma(self.gamma)
        check_label_smoothing(self.label_smoothing)
        check_weight("desirable_weight", self.desirable_weight)
        check_weight("undesirable_weight", self.undesirable_weight)
        check_weight("orpo_lambda", self.orpo_lambda)


def loss_beta(name: str, beta: float, settings: LossSettings) -> float:
    """The beta loss `name` runs with: the run's, but ORPO's lambda for ORPO.

    Args:
        name: one of `LOSSES`.
        beta: the run's beta.
        settings: the losses' other parameters.
    """
    return settings.orpo_lambda if name == "orpo" else beta


# TRL's CPOTrainer and ORPOTrainer put the beginning-of-text token before the prompt (when the
# prompt does not already start with it); DPOTrainer and KTOTrainer do not.
BOS_LOSSES = ("simpo", "orpo")


def with_bos(example: dict[str, list[int]], bos_token_id: int | None) -> dict[str, list[int]]:
    """`tokenize_pair`'s ids with `bos_token_id` before the prompt, as CPO and ORPO tokenize.

    Args:
        example: `{"prompt_ids", "chosen_ids", "rejected_ids"}`.
        bos_token_id: the tokenizer's beginning-of-text id; None leaves the example unchanged.
    """
    prompt = example["prompt_ids"]
    if bos_token_id is None or prompt[:1] == [bos_token_id]:
        return example
    return {**example, "prompt_ids": [bos_token_id, *prompt]}


@dataclass
class Scores:
    """What a policy and its reference make of a set of rows (pairs: chosen rows, then rejected).

    Attributes:
        policy: the policy's log-probability of each completion (a sum over its tokens).
        reference: the reference's log-probability of each completion.
        lengths: each completion's number of tokens.
        nll: the policy's next-token loss on each row's tokens, prompt included (a sum).
        tokens: each row's number of predicted tokens (what `nll` is summed over).
    """

    policy: torch.Tensor
    reference: torch.Tensor
    lengths: torch.Tensor
    nll: torch.Tensor
    tokens: torch.Tensor

    def halves(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The chosen and rejected halves of field `name`."""
        return getattr(self, name).chunk(2)


def collate_rows(
    rows: list[tuple[list[int], list[int]]], pad_token_id: int
) -> dict[str, torch.Tensor]:
    """Right-padded `prompt + completion` rows with their attention and completion masks.

    Args:
        rows: `(prompt_ids, completion_ids)` per row.
        pad_token_id: the id padding is filled with.
    """
    width = max(len(p) + len(c) for p, c in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    completion_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (prompt, completion) in enumerate(rows):
        input_ids[i, : len(prompt) + len(completion)] = torch.tensor(prompt + completion)
        attention_mask[i, : len(prompt) + len(completion)] = 1
        completion_mask[i, len(prompt) : len(prompt) + len(completion)] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "completion_mask": completion_mask,
    }


@torch.no_grad()
def row_scores(
    model: torch.nn.Module,
    rows: list[tuple[list[int], list[int]]],
    pad_token_id: int,
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's completion log-probability, its whole-row log-probability and token count.

    Args:
        model: the causal LM to score with (put in eval mode, and back).
        rows: `(prompt_ids, completion_ids)` per row.
        pad_token_id: the padding id.
        batch_size: rows per forward pass.

    Returns:
        `(completion, whole, predicted)`: per row, the sum of the completion tokens'
        log-probabilities, the same over every token after the first, and that token count.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    completion, whole, predicted = [], [], []
    for start in range(0, len(rows), batch_size):
        batch = collate_rows(rows[start : start + batch_size], pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        completion.append(
            sequence_logprobs(logits, batch["input_ids"], batch["completion_mask"]).cpu()
        )
        whole.append(sequence_logprobs(logits, batch["input_ids"], batch["attention_mask"]).cpu())
        predicted.append(batch["attention_mask"][:, 1:].sum(-1).cpu())
    model.train(was_training)
    return torch.cat(completion), torch.cat(whole), torch.cat(predicted)


def reference_row_scores(
    policy: torch.nn.Module,
    reference: torch.nn.Module | None,
    rows: list[tuple[list[int], list[int]]],
    pad_token_id: int,
) -> torch.Tensor:
    """The reference's completion log-probabilities: `reference`'s, or the policy's with its
    adapters disabled.

    Raises:
        CourseError: if `reference` is None and the policy has no adapters to switch off.
    """
    if reference is not None:
        return row_scores(reference, rows, pad_token_id)[0]
    if not hasattr(policy, "disable_adapter"):
        raise CourseError("no reference model given, and the policy has no adapters to switch off")
    with policy.disable_adapter():
        return row_scores(policy, rows, pad_token_id)[0]


def score_rows(
    policy: torch.nn.Module,
    reference: torch.nn.Module | None,
    rows: list[tuple[list[int], list[int]]],
    pad_token_id: int,
) -> Scores:
    """`Scores` of token-id rows under the policy and the reference.

    Args:
        policy: the model being judged.
        reference: the frozen reference; None uses the policy with its adapters disabled.
        rows: `(prompt_ids, completion_ids)` per row.
        pad_token_id: the padding id.
    """
    policy_logps, whole, predicted = row_scores(policy, rows, pad_token_id)
    if reference is policy:  # the same model in eval mode scores the same: no second pass
        reference_logps = policy_logps.detach().clone()
    else:
        reference_logps = reference_row_scores(policy, reference, rows, pad_token_id)
    return Scores(
        policy=policy_logps,
        reference=reference_logps,
        lengths=torch.tensor([len(c) for _, c in rows], dtype=torch.float32),
        nll=-whole,
        tokens=predicted.float(),
    )


def pair_rows(
    tokenizer: Any, pairs: Sequence[dict[str, str]], bos: bool = False
) -> list[tuple[list[int], list[int]]]:
    """The `(prompt_ids, completion_ids)` rows of pairs: every chosen row, then every rejected.

    Args:
        tokenizer: the policy's tokenizer.
        pairs: checked preference pairs.
        bos: put the beginning-of-text token before each prompt (as CPO and ORPO do).
    """
    examples = [tokenize_pair(tokenizer, pair) for pair in pairs]
    if bos:
        examples = [with_bos(e, tokenizer.bos_token_id) for e in examples]
    return [
        (e["prompt_ids"], e[f"{side}_ids"]) for side in ("chosen", "rejected") for e in examples
    ]


def score_pairs(
    policy: torch.nn.Module,
    reference: torch.nn.Module | None,
    tokenizer: Any,
    pairs: Sequence[dict[str, str]],
    bos: bool = False,
) -> Scores:
    """`Scores` of preference pairs: the first half the chosen rows, the second the rejected.

    Args:
        policy: the model being judged.
        reference: the frozen reference; None uses the policy with its adapters disabled.
        tokenizer: their tokenizer.
        pairs: the preference pairs.
        bos: put the beginning-of-text token before each prompt (as CPO and ORPO do).
    """
    rows = pair_rows(tokenizer, check_pairs(pairs), bos)
    return score_rows(policy, reference, rows, tokenizer.pad_token_id)


# --8<-- [start:paired_loss]
def paired_loss(
    name: str, scores: Scores, beta: float, settings: LossSettings | None = None
) -> PreferenceLoss:
    """Loss `name` (any of `LOSSES` but `kto`) of a batch of scored pairs.

    Args:
        name: the loss.
        scores: `score_pairs` of the batch.
        beta: the loss's beta (ORPO takes `settings.orpo_lambda` instead).
        settings: gamma, label smoothing, ORPO's lambda; None uses `LossSettings()`.

    Raises:
        CourseError: for an unknown loss, or `kto` (unpaired: see `unpaired_loss`).
    """
    name, settings = check_loss_name(name), settings or LossSettings()
    (pc, pr), (rc, rr), (lc, lr) = (scores.halves(f) for f in ("policy", "reference", "lengths"))
    if name == "dpo":
        result = dpo_loss(pc, pr, rc, rr, beta)
        return PreferenceLoss(result.loss, result.chosen_rewards, result.rejected_rewards)
    if name == "ipo":
        return ipo_loss(pc, pr, rc, rr, beta, lc, lr)
    if name == "hinge":
        return hinge_loss(pc, pr, rc, rr, beta)
    if name == "robust":
        return robust_loss(pc, pr, rc, rr, beta, settings.label_smoothing)
    if name == "apo-zero":
        return apo_zero_loss(pc, pr, rc, rr, beta)
    if name == "simpo":
        return simpo_loss(pc, pr, lc, lr, beta, settings.gamma)
    if name == "orpo":
        nll, tokens = scores.halves("nll")[0], scores.halves("tokens")[0]
        return orpo_loss(pc / lc, pr / lr, nll.sum() / tokens.sum(), settings.orpo_lambda)
    raise CourseError("kto learns from unpaired completions: use unpaired_loss")


# --8<-- [end:paired_loss]


# ----------------------------------------------------------------------------------------------
# KTO's unpaired data
# ----------------------------------------------------------------------------------------------


def unpaired(pairs: Sequence[dict[str, str]], seed: int = 0) -> list[dict[str, Any]]:
    """Each pair as two labelled completions, `{"prompt", "completion", "label"}`, shuffled.

    The chosen completion is desirable (`label` True), the rejected one undesirable. The rows
    are shuffled so that a batch holds both kinds, and so that the completion KTO borrows for
    its KL estimate from the previous row seldom shares the row's prompt.

    Args:
        pairs: checked preference pairs.
        seed: seeds the shuffle.
    """
    rows = [
        {"prompt": p["prompt"], "completion": p[side], "label": side == "chosen"}
        for p in check_pairs(pairs)
        for side in ("chosen", "rejected")
    ]
    random.Random(seed).shuffle(rows)
    return rows


def tokenize_completion(tokenizer: Any, row: dict[str, Any]) -> tuple[list[int], list[int]]:
    """`(prompt_ids, completion_ids)` of one unpaired row, the completion ending with eos.

    The same rule as `dpo.tokenize_pair` (and TRL's): the completion is what follows the common
    prefix of the tokenized prompt and the tokenized `prompt + completion + eos`.
    """
    prompt_ids = tokenizer(row["prompt"])["input_ids"]
    full = tokenizer(row["prompt"] + row["completion"] + tokenizer.eos_token)["input_ids"]
    start = common_prefix_length(prompt_ids, full)
    return prompt_ids[:start], full[start:]


def kl_rows(
    rows: list[tuple[list[int], list[int]]], batch_size: int
) -> list[tuple[list[int], list[int]]]:
    """Mismatched rows for KTO's KL estimate: each prompt with the previous row's completion.

    Completions are rotated by one within each run of `batch_size` rows, `(x_1, y_n), (x_2,
    y_1), ..., (x_n, y_(n-1))`, as TRL does, so that the mismatched completions of a batch are
    the batch's own completions.

    Args:
        rows: `(prompt_ids, completion_ids)` per row, in batch order.
        batch_size: the training batch size.
    """
    mismatched = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        completions = [chunk[-1][1]] + [c for _, c in chunk[:-1]]
        mismatched += [(p, c) for (p, _), c in zip(chunk, completions)]
    return mismatched


# --8<-- [start:unpaired_loss]
def unpaired_loss(
    policy: torch.nn.Module,
    reference: torch.nn.Module | None,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    beta: float,
    settings: LossSettings | None = None,
    batch_size: int | None = None,
) -> tuple[PreferenceLoss, torch.Tensor, torch.Tensor]:
    """KTO's loss of unpaired rows (one batch), its KL reference point estimated from them.

    Args:
        policy: the model being judged.
        reference: the frozen reference; None uses the policy with its adapters disabled.
        tokenizer: their tokenizer.
        rows: `unpaired` rows, all in one batch.
        beta: KTO's beta.
        settings: the desirable and undesirable weights; None uses `LossSettings()`.
        batch_size: the run of rows whose completions are rotated for the KL estimate; None
            rotates all the rows as one.

    Returns:
        `(loss, policy_logps, desirable)`: the loss and rewards, each row's log-probability and
        whether it is desirable.
    """
    settings = settings or LossSettings()
    tokenized = [tokenize_completion(tokenizer, row) for row in rows]
    pad = tokenizer.pad_token_id
    scores = score_rows(policy, reference, tokenized, pad)
    mismatched = kl_rows(tokenized, batch_size or len(tokenized))
    kl = score_rows(policy, reference, mismatched, pad)
    desirable = torch.tensor([bool(row["label"]) for row in rows])
    loss = kto_loss(
        scores.policy,
        scores.reference,
        desirable,
        kl.policy,
        kl.reference,
        beta,
        settings.desirable_weight,
        settings.undesirable_weight,
    )
    return loss, scores.policy, desirable


# --8<-- [end:unpaired_loss]


def loss_metrics(
    name: str,
    policy: torch.nn.Module,
    reference: torch.nn.Module | None,
    tokenizer: Any,
    pairs: Sequence[dict[str, str]],
    beta: float,
    settings: LossSettings | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """What TRL's trainer for loss `name` logs for `pairs` in one batch, computed by hand.

    `loss` and the `rewards/*` are the loss's own (SimPO's and ORPO's rewards are `beta` times
    the per-token log-probability, as TRL logs them; KTO's are the means over the desirable and
    the undesirable rows, from `unpaired(pairs, seed)`).

    Args:
        name: one of `LOSSES`.
        policy: the model being judged.
        reference: the frozen reference; None uses the policy with its adapters disabled.
        tokenizer: their tokenizer.
        pairs: the preference pairs.
        beta: the loss's beta.
        settings: the loss's other parameters; None uses `LossSettings()`.
        seed: seeds KTO's shuffle of the unpaired rows.
    """
    name = check_loss_name(name)
    if name == "kto":
        result, logps, desirable = unpaired_loss(
            policy, reference, tokenizer, unpaired(pairs, seed), beta, settings
        )
        chosen, rejected = result.chosen_rewards.mean(), result.rejected_rewards.mean()
        return {
            "loss": result.loss.item(),
            "rewards/chosen": chosen.item(),
            "rewards/rejected": rejected.item(),
            "rewards/margins": (chosen - rejected).item(),
            "logps/chosen": logps[desirable].mean().item(),
            "logps/rejected": logps[~desirable].mean().item(),
        }
    scores = score_pairs(policy, reference, tokenizer, pairs, bos=name in BOS_LOSSES)
    result = paired_loss(name, scores, beta, settings)
    (pc, pr), (lc, lr) = scores.halves("policy"), scores.halves("lengths")
    if name in BOS_LOSSES:  # CPO and ORPO log per-token log-probabilities
        pc, pr = pc / lc, pr / lr
    margins = result.chosen_rewards - result.rejected_rewards
    return {
        "loss": result.loss.item(),
        "rewards/chosen": result.chosen_rewards.mean().item(),
        "rewards/rejected": result.rejected_rewards.mean().item(),
        "rewards/accuracies": (margins > 0).float().mean().item(),
        "rewards/margins": margins.mean().item(),
        "logps/chosen": pc.mean().item(),
        "logps/rejected": pr.mean().item(),
    }


# ----------------------------------------------------------------------------------------------
# The same losses through TRL's trainers
# ----------------------------------------------------------------------------------------------

# The losses DPOTrainer computes, by its `loss_type` names.
DPO_LOSS_TYPES = {
    "dpo": "sigmoid",
    "ipo": "ipo",
    "hinge": "hinge",
    "robust": "robust",
    "apo-zero": "apo_zero",
}
TRAINERS = {  # which TRL trainer computes each loss
    **dict.fromkeys(DPO_LOSS_TYPES, "trl.DPOTrainer"),
    "simpo": "trl.experimental.cpo.CPOTrainer (loss_type='simpo', cpo_alpha=0)",
    "orpo": "trl.experimental.orpo.ORPOTrainer",
    "kto": "trl.KTOTrainer",
}


def machine_bf16() -> bool:
    """bf16 where this machine has it: a CUDA GPU that supports it, never the CPU.

    TRL's configs default to `bf16=True`, which fails on a CPU without bf16 ("Your setup
    doesn't support bf16/gpu") and would make CPU runs differ from GPU runs anyway.
    """
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def trainer_arguments(
    config: DPORunConfig, output_dir: str | Path, eval_batch_size: int = 64
) -> dict[str, Any]:
    """The arguments every TRL config of this chapter shares (`dpo.make_dpo_config`'s).

    Gradient checkpointing off, bf16 from the machine, nothing reported, saved or pushed.

    Args:
        config: the run's hyper-parameters.
        output_dir: TRL's output directory.
        eval_batch_size: rows per evaluation batch.
    """
    return {
        "output_dir": str(output_dir),
        "beta": config.beta,
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.epochs,
        "per_device_train_batch_size": config.batch_size,
        "per_device_eval_batch_size": eval_batch_size,
        "max_length": config.max_length,
        "gradient_checkpointing": False,
        "bf16": machine_bf16(),
        "logging_steps": config.logging_steps,
        "report_to": "none",
        "save_strategy": "no",
        "push_to_hub": False,
        "seed": config.seed,
        "disable_tqdm": not config.progress,
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": False,
    }


# --8<-- [start:make_trainer]
def make_trainer(
    name: str,
    policy: torch.nn.Module,
    reference: torch.nn.Module | None,
    tokenizer: Any,
    train_rows: Sequence[dict[str, Any]],
    config: DPORunConfig,
    settings: LossSettings,
    output_dir: str | Path,
    eval_rows: Sequence[dict[str, Any]] | None = None,
    peft_config: Any = None,
    eval_batch_size: int = 64,
) -> Any:
    """The TRL trainer of loss `name`, set up as this chapter runs them.

    DPOTrainer takes DPO's relatives by `loss_type`; SimPO is CPO with `loss_type="simpo"` and
    `cpo_alpha=0` (no SFT term); ORPO has its own trainer; KTO takes unpaired rows (`unpaired`)
    and wants a batch of at least 2, in order, for its KL estimate.

    Args:
        name: one of `LOSSES`.
        policy: the model to train.
        reference: an explicit frozen reference (DPO's relatives and KTO), or None (with LoRA:
            the base with the adapters off; SimPO and ORPO need none).
        tokenizer: the policy's tokenizer.
        train_rows: pairs (KTO: unpaired rows).
        config: the run's hyper-parameters.
        settings: the loss's other parameters.
        output_dir: TRL's output directory.
        eval_rows: rows to evaluate on, or None.
        peft_config: a `peft.LoraConfig` for TRL to wrap the policy with, or None.
        eval_batch_size: rows per evaluation batch.
    """
    from datasets import Dataset
    from transformers import PrinterCallback

    name = check_loss_name(name)
    common = trainer_arguments(config, output_dir, eval_batch_size)
    data = {
        "train_dataset": Dataset.from_list(list(train_rows)),
        "eval_dataset": None if eval_rows is None else Dataset.from_list(list(eval_rows)),
        "processing_class": tokenizer,
        "peft_config": peft_config,
    }
    if name in DPO_LOSS_TYPES:
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(
            **common, loss_type=[DPO_LOSS_TYPES[name]], label_smoothing=settings.label_smoothing
        )
        trainer = DPOTrainer(model=policy, ref_model=reference, args=args, **data)
    elif name == "simpo":
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        args = CPOConfig(**common, loss_type="simpo", cpo_alpha=0.0, simpo_gamma=settings.gamma)
        trainer = CPOTrainer(model=policy, args=args, **data)
    elif name == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        args = ORPOConfig(**{**common, "beta": settings.orpo_lambda})
        trainer = ORPOTrainer(model=policy, args=args, **data)
    else:
        from trl import KTOConfig, KTOTrainer

        args = KTOConfig(
            **common,
            desirable_weight=settings.desirable_weight,
            undesirable_weight=settings.undesirable_weight,
        )
        trainer = KTOTrainer(model=policy, ref_model=reference, args=args, **data)
    trainer.remove_callback(PrinterCallback)
    return trainer


# --8<-- [end:make_trainer]


def trl_loss_metrics(
    name: str,
    policy: torch.nn.Module,
    reference: torch.nn.Module | None,
    tokenizer: Any,
    pairs: Sequence[dict[str, str]],
    beta: float,
    settings: LossSettings | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """What TRL's trainer for loss `name` logs when it evaluates `pairs` in one batch.

    Nothing is trained. KTO evaluates `unpaired(pairs, seed)`, its KL completions rotated over
    the whole batch (its training batch size is set to the number of rows).

    Args:
        name: one of `LOSSES`.
        policy: the policy.
        reference: the frozen reference (ignored by SimPO and ORPO).
        tokenizer: their tokenizer.
        pairs: the preference pairs.
        beta: the loss's beta.
        settings: the loss's other parameters; None uses `LossSettings()`.
        seed: seeds KTO's shuffle of the unpaired rows.
    """
    name, settings = check_loss_name(name), settings or LossSettings()
    pairs = check_pairs(pairs)
    rows = unpaired(pairs, seed) if name == "kto" else pairs
    config = DPORunConfig(beta=beta, batch_size=len(rows), seed=seed)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = make_trainer(
            name,
            policy,
            None if name in BOS_LOSSES else reference,
            tokenizer,
            rows,
            config,
            settings,
            scratch,
            eval_rows=rows,
            eval_batch_size=len(rows),
        )
        logged = trainer.evaluate()
    return {key.removeprefix("eval_"): value for key, value in logged.items()}


COMPARED = (
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
)


def compare_losses_with_trl(
    model_name: str = EMBEDDED_MODEL,
    n_pairs: int = 8,
    beta: float = 0.5,
    settings: LossSettings | None = None,
    seed: int = 0,
    losses: Sequence[str] = tuple(LOSSES),
) -> list[dict[str, Any]]:
    """Rows `loss | metric | by hand | TRL | difference` for a perturbed policy and its reference.

    Args:
        model_name: the causal LM used as reference (the policy is a perturbed copy).
        n_pairs: generated film pairs compared on.
        beta: every loss's beta.
        settings: the losses' other parameters; None uses `LossSettings()`.
        seed: seeds the model, the perturbation, the pairs and KTO's shuffle.
        losses: the losses compared.
    """
    reference, tokenizer = load_model(model_name, task="causal-lm", seed=seed)
    policy = perturbed_copy(reference, seed=seed)
    pairs = list(film_preferences(n_pairs, 1, seed)["train"])
    rows = []
    for name in losses:
        ours = loss_metrics(name, policy, reference, tokenizer, pairs, beta, settings, seed)
        theirs = trl_loss_metrics(name, policy, reference, tokenizer, pairs, beta, settings, seed)
        rows += [
            {
                "loss": name,
                "metric": key,
                "by hand": ours[key],
                "TRL": theirs[key],
                "difference": abs(ours[key] - theirs[key]),
            }
            for key in COMPARED
        ]
    return rows


# ----------------------------------------------------------------------------------------------
# Trained side by side
# ----------------------------------------------------------------------------------------------


def pair_rewards(name: str, scores: Scores, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pair's chosen and rejected reward as loss `name` defines it.

    SimPO and ORPO have no reference: their reward is `beta` times the per-token
    log-probability (what TRL logs); the others' is `beta` times the log-ratio.

    Args:
        name: one of `LOSSES`.
        scores: `score_pairs` of the pairs.
        beta: the loss's beta.
    """
    (pc, pr), (rc, rr), (lc, lr) = (scores.halves(f) for f in ("policy", "reference", "lengths"))
    if name in BOS_LOSSES:
        return beta * pc / lc, beta * pr / lr
    return beta * (pc - rc), beta * (pr - rr)


def held_out_metrics(
    name: str,
    policy: torch.nn.Module,
    reference: torch.nn.Module | None,
    tokenizer: Any,
    pairs: Sequence[dict[str, str]],
    beta: float,
    settings: LossSettings | None = None,
    reference_scores: torch.Tensor | None = None,
) -> dict[str, float]:
    """How the policy ranks held-out pairs, by the loss's own reward and by DPO's.

    Args:
        name: one of `LOSSES`.
        policy: the model being judged.
        reference: the frozen reference; None uses the policy with its adapters disabled.
        tokenizer: their tokenizer.
        pairs: the held-out pairs.
        beta: the loss's beta.
        settings: the loss's other parameters; None uses `LossSettings()`.
        reference_scores: the reference's `Scores.reference` of these pairs when already known
            (a run's starting model is its reference); None scores them.

    Returns:
        `loss` (the loss's own, on all the pairs at once), `rewards/accuracies` (the share of
        pairs whose chosen reward is strictly higher), `rewards/margins`, `rewards/chosen`,
        `rewards/rejected` (means, the loss's own rewards), `log_ratio_accuracy` (by DPO's
        implicit reward, for every loss) and `likelihood_accuracy` (by the policy's
        log-probabilities alone).
    """
    name, settings = check_loss_name(name), settings or LossSettings()
    pairs = check_pairs(pairs)
    if reference_scores is None:
        scores = score_pairs(policy, reference, tokenizer, pairs, bos=name in BOS_LOSSES)
    else:
        scores = score_pairs(policy, policy, tokenizer, pairs, bos=name in BOS_LOSSES)
        scores.reference = reference_scores
    return metrics_of_scores(name, scores, beta, settings, policy, reference, tokenizer, pairs)


def metrics_of_scores(
    name: str,
    scores: Scores,
    beta: float,
    settings: LossSettings,
    policy: torch.nn.Module,
    reference: torch.nn.Module | None,
    tokenizer: Any,
    pairs: Sequence[dict[str, str]],
) -> dict[str, float]:
    """`held_out_metrics` from the pairs' `Scores` (KTO's loss, over unpaired rows, apart)."""
    chosen, rejected = pair_rewards(name, scores, loss_beta(name, beta, settings))
    (pc, pr), (rc, rr) = scores.halves("policy"), scores.halves("reference")
    if name == "kto":
        loss = loss_metrics(name, policy, reference, tokenizer, pairs, beta, settings)["loss"]
    else:
        loss = paired_loss(name, scores, beta, settings).loss.item()
    return {
        "loss": loss,
        "rewards/accuracies": (chosen > rejected).float().mean().item(),
        "rewards/margins": (chosen - rejected).mean().item(),
        "rewards/chosen": chosen.mean().item(),
        "rewards/rejected": rejected.mean().item(),
        "log_ratio_accuracy": ((pc - rc) > (pr - rr)).float().mean().item(),
        "likelihood_accuracy": (pc > pr).float().mean().item(),
    }


@dataclass
class StartingPoint:
    """What a run's starting model makes of the held-out pairs, before any training.

    The starting model is also the reference every loss is measured against (a fresh LoRA's
    base, or an untouched copy), so its scores serve twice: as the policy's before training and
    as the reference's after. Every loss trained from the same model on the same pairs shares
    it (SimPO and ORPO score with a beginning-of-text token, the others without).

    Attributes:
        scores: `score_pairs` of the held-out pairs with the model as policy and reference.
        length: `mean_response_length` of the model on the held-out prompts.
        bos: whether the pairs were scored with the beginning-of-text token.
    """

    scores: Scores
    length: float
    bos: bool


def starting_point(
    model: torch.nn.Module,
    tokenizer: Any,
    pairs: Sequence[dict[str, str]],
    bos: bool = False,
    max_new_tokens: int = 24,
    length: float | None = None,
) -> StartingPoint:
    """The `StartingPoint` of `model` on held-out `pairs`.

    Args:
        model: the model runs start from.
        tokenizer: its tokenizer.
        pairs: the held-out pairs.
        bos: score with the beginning-of-text token (as CPO and ORPO do).
        max_new_tokens: the longest greedy response measured.
        length: the mean response length when already measured (it does not depend on `bos`).
    """
    pairs = check_pairs(pairs)
    prompts = [pair["prompt"] for pair in pairs]
    if length is None:
        length = mean_response_length(model, tokenizer, prompts, max_new_tokens)
    return StartingPoint(score_pairs(model, model, tokenizer, pairs, bos), length, bos)


@torch.no_grad()
def mean_response_length(
    model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int = 24
) -> float:
    """The mean number of tokens the model writes after each prompt, greedily, eos included.

    A row stops at its first eos; one that never writes it counts `max_new_tokens`.

    Args:
        model: the causal LM (put in eval mode, and back).
        tokenizer: its tokenizer.
        prompts: the prompts.
        max_new_tokens: the most tokens a response may have.
    """
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"  # generation continues every row at its last column
    try:
        batch = tokenizer(list(prompts), return_tensors="pt", padding=True)
        batch = {k: v.to(next(model.parameters()).device) for k, v in batch.items()}
        output = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    new = output[:, batch["input_ids"].shape[1] :].cpu()
    is_eos = new == tokenizer.eos_token_id
    first_eos = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, new.shape[1])
    return first_eos.float().mean().item()


def completion_ids(new_tokens: torch.Tensor, eos_token_id: int) -> list[int]:
    """One generated row's tokens up to and including its first eos (all of them if none).

    Args:
        new_tokens: the tokens generated after the prompt, one row.
        eos_token_id: the end-of-text id.
    """
    tokens = new_tokens.tolist()
    return tokens[: tokens.index(eos_token_id) + 1] if eos_token_id in tokens else tokens


@torch.no_grad()
def sampled_kl(
    policy: torch.nn.Module,
    reference: torch.nn.Module | None,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 24,
    samples: int = 4,
    seed: int = 0,
) -> float:
    """`KL(pi || pi_ref)` on completions the policy samples for `prompts`, in nats per response.

    A Monte-Carlo estimate: the policy samples `samples` completions of each prompt (temperature
    1, no top-k or top-p cut, seeded: the global random state is left as it was), each up to its
    first eos or `max_new_tokens`; both models score the sampled tokens, and the estimate is the
    mean over the completions of `log pi(y | x) - log pi_ref(y | x)`, the sum of the sampled
    tokens' log-ratios. Its expectation is the KL divergence between the two models' response
    distributions (truncated at `max_new_tokens`), which the KL-regularised objective DPO
    solves keeps small; a single estimate can fall below 0 where the true value is near it.

    Args:
        policy: the model that samples (put in eval mode, and back).
        reference: the frozen reference; None uses the policy with its adapters disabled.
        tokenizer: their tokenizer.
        prompts: the prompts completions are sampled for.
        max_new_tokens: the longest completion sampled.
        samples: completions sampled per prompt.
        seed: seeds the sampling.
    """
    was_training, side = policy.training, tokenizer.padding_side
    policy.eval()
    tokenizer.padding_side = "left"  # generation continues every row at its last column
    try:
        batch = tokenizer(list(prompts), return_tensors="pt", padding=True)
        device = next(policy.parameters()).device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            output = policy.generate(
                **{k: v.to(device) for k, v in batch.items()},
                max_new_tokens=max_new_tokens,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                num_return_sequences=samples,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
    finally:
        tokenizer.padding_side = side
        policy.train(was_training)
    new = output[:, batch["input_ids"].shape[1] :].cpu()
    prompt_ids = [tokenizer(prompt)["input_ids"] for prompt in prompts]
    rows = [
        (prompt_ids[i // samples], completion_ids(new[i], tokenizer.eos_token_id))
        for i in range(len(new))
    ]
    scores = score_rows(policy, reference, rows, tokenizer.pad_token_id)
    return (scores.policy - scores.reference).mean().item()


def training_tokens(tokenizer: Any, pairs: Sequence[dict[str, str]]) -> int:
    """The tokens of the pairs' rows, prompt and completion, chosen and rejected (eos included).

    Args:
        tokenizer: the policy's tokenizer.
        pairs: the training pairs.
    """
    return sum(len(p) + len(c) for p, c in pair_rows(tokenizer, check_pairs(pairs)))


@dataclass
class AlignRun:
    """One loss trained on the pairs: held-out metrics before and after, and its costs.

    Attributes:
        loss: the loss's name.
        before: `held_out_metrics` on the test pairs before training.
        after: `held_out_metrics` on the test pairs after training.
        length_before: the mean greedy response length on the test prompts before training.
        length_after: the same after training.
        kl_before: `sampled_kl` of the policy to the reference on the test prompts, before
            training (0 with a fresh LoRA or a copy: the policy is the reference).
        kl_after: the same after training.
        history: the training log entries that carry reward metrics.
        steps: optimizer steps taken.
        seconds: wall-clock time of `trainer.train()`.
        tokens_per_second: `training_tokens` times the epochs, over `seconds`.
        reference_unchanged: whether the reference's weights are the same after training.
        config: the run's hyper-parameters.
        settings: the loss's other parameters.
        model: the trained policy.
        start: the `StartingPoint` the run was measured from (left out of `as_dict`).
    """

    loss: str
    before: dict[str, float]
    after: dict[str, float]
    length_before: float
    length_after: float
    kl_before: float
    kl_after: float
    history: list[dict[str, float]]
    steps: int
    seconds: float
    tokens_per_second: float
    reference_unchanged: bool
    config: DPORunConfig
    settings: LossSettings
    model: Any = field(repr=False, default=None)
    start: StartingPoint | None = field(repr=False, default=None)

    def as_dict(self) -> dict[str, Any]:
        """The JSON-friendly part (the model and the starting point left out)."""
        return {
            "loss": self.loss,
            "trainer": TRAINERS[self.loss],
            "config": asdict(self.config),
            "settings": asdict(self.settings),
            "before": self.before,
            "after": self.after,
            "length_before": self.length_before,
            "length_after": self.length_after,
            "kl_before": self.kl_before,
            "kl_after": self.kl_after,
            "history": self.history,
            "steps": self.steps,
            "seconds": round(self.seconds, 2),
            "tokens_per_second": round(self.tokens_per_second, 1),
            "reference_unchanged": self.reference_unchanged,
        }


# --8<-- [start:train_preference]
def train_preference(
    name: str,
    pairs: Any,
    model_name: str = EMBEDDED_MODEL,
    config: DPORunConfig | None = None,
    settings: LossSettings | None = None,
    max_new_tokens: int = 24,
    kl_samples: int = 4,
    start: StartingPoint | None = None,
) -> AlignRun:
    """Train with loss `name` through its TRL trainer on `pairs["train"]`; measure on `"test"`.

    As `dpo.train_dpo`: with `config.lora` TRL wraps the model with LoRA and the reference is
    the base with the adapters off; without it a second copy is the frozen reference. SimPO and
    ORPO train without a reference; it is still used to measure them. KTO trains on
    `unpaired(pairs["train"])` with twice the batch size in rows, so that each of its steps
    sees the completions of `config.batch_size` pairs, as the paired losses' steps do.

    Args:
        name: one of `LOSSES`.
        pairs: a `DatasetDict` (or dict) with `train` and `test` preference pairs.
        model_name: the causal LM to load.
        config: the run's hyper-parameters; None uses `DPORunConfig()`.
        settings: the loss's other parameters; None uses `LossSettings()`.
        max_new_tokens: the longest response generated to measure response lengths and the KL.
        kl_samples: completions sampled per held-out prompt for the KL (`sampled_kl`).
        start: the `StartingPoint` of `model_name` on `pairs["test"]` when already measured
            (losses trained side by side share it: pass the last run's `start`); None, or one
            scored with the other beginning-of-text choice, measures it (keeping its length).
    """
    from peft import LoraConfig

    name = check_loss_name(name)
    config, settings = config or DPORunConfig(), settings or LossSettings()
    train, test = (check_pairs(pairs[s], f"the {s} split") for s in ("train", "test"))
    policy, tokenizer = load_model(model_name, task="causal-lm", seed=config.seed)
    for split, rows in (("train", train), ("test", test)):
        check_pairs_fit(
            tokenizer, rows, config.max_length, model_context(policy), f"the {split} split"
        )
    reference = (
        None if config.lora else load_model(model_name, task="causal-lm", seed=config.seed)[0]
    )
    frozen_before = frozen_weights(policy if config.lora else reference)
    prompts = [pair["prompt"] for pair in test]
    bos = name in BOS_LOSSES
    if start is None or start.bos != bos:  # its length holds for either choice
        length = start.length if start else None
        start = starting_point(policy, tokenizer, test, bos, max_new_tokens, length)
    before = metrics_of_scores(
        name, start.scores, config.beta, settings, policy, reference or policy, tokenizer, test
    )
    kl = (tokenizer, prompts, max_new_tokens, kl_samples, config.seed)
    kl_before = 0.0  # at step 0 the policy is the reference: every sampled log-ratio is 0
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
    rows, run_config = train, config
    if name == "kto":
        rows = unpaired(train, config.seed)
        run_config = replace(config, batch_size=2 * config.batch_size)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = make_trainer(
            name,
            policy,
            None if name in BOS_LOSSES else reference,
            tokenizer,
            rows,
            run_config,
            settings,
            scratch,
            peft_config=peft_config,
        )
        began = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - began
    policy = trainer.model
    reference_scores = start.scores.reference  # the starting model is the reference
    after = held_out_metrics(
        name, policy, reference, tokenizer, test, config.beta, settings, reference_scores
    )
    length_after = mean_response_length(policy, tokenizer, prompts, max_new_tokens)
    kl_after = sampled_kl(policy, reference, *kl)
    tokens = training_tokens(tokenizer, train) * config.epochs
    return AlignRun(
        loss=name,
        before=before,
        after=after,
        length_before=start.length,
        length_after=length_after,
        kl_before=kl_before,
        kl_after=kl_after,
        history=[e for e in trainer.state.log_history if "rewards/chosen" in e],
        steps=trainer.state.global_step,
        seconds=seconds,
        tokens_per_second=tokens / seconds,
        reference_unchanged=same_weights(
            frozen_before, frozen_weights(policy if config.lora else reference)
        ),
        config=config,
        settings=settings,
        model=policy,
        start=start,
    )


# --8<-- [end:train_preference]


def train_side_by_side(
    pairs: Any,
    losses: Sequence[str] = tuple(LOSSES),
    model_name: str = EMBEDDED_MODEL,
    config: DPORunConfig | None = None,
    settings: LossSettings | None = None,
) -> list[AlignRun]:
    """Every loss in `losses` trained from the same model on the same pairs, same steps.

    Args:
        pairs: a `DatasetDict` (or dict) with `train` and `test` preference pairs.
        losses: the losses to train.
        model_name: the causal LM every run starts from.
        config: the hyper-parameters every run shares.
        settings: the losses' other parameters.
    """
    runs: list[AlignRun] = []
    for name in losses:
        start = runs[-1].start if runs else None
        runs.append(train_preference(name, pairs, model_name, config, settings, start=start))
    return runs


def side_by_side_rows(runs: Sequence[AlignRun]) -> list[dict[str, str]]:
    """The comparison table: one row per run, held-out figures before -> after.

    Args:
        runs: finished runs (`train_side_by_side`).
    """

    def change(run: AlignRun, key: str) -> str:
        return f"{run.before[key]:.3f} -> {run.after[key]:.3f}"

    return [
        {
            "loss": run.loss,
            "reward accuracy": change(run, "rewards/accuracies"),
            "mean margin": f"{run.after['rewards/margins']:.3f}",
            "chosen reward": f"{run.after['rewards/chosen']:.3f}",
            "rejected reward": f"{run.after['rewards/rejected']:.3f}",
            "log-ratio accuracy": change(run, "log_ratio_accuracy"),
            "likelihood accuracy": change(run, "likelihood_accuracy"),
            "response length": f"{run.length_before:.1f} -> {run.length_after:.1f}",
            "KL to reference (sampled)": f"{run.kl_after:.3f}",
            "steps": str(run.steps),
            "tokens/s": f"{run.tokens_per_second:.0f}",
        }
        for run in runs
    ]


def plot_histories(runs: Sequence[AlignRun], path: str | Path, title: str = "") -> Path:
    """The logged reward margin and the chosen reward of every run against the training step.

    Args:
        runs: finished runs.
        path: the image file to write.
        title: the figure's title.

    Returns:
        The path written.
    """
    figure, (margins, chosen) = plt.subplots(1, 2, figsize=(10, 3.8))
    for run in runs:
        steps = [h["step"] for h in run.history]
        margins.plot(steps, [h["rewards/margins"] for h in run.history], marker=".", label=run.loss)
        chosen.plot(steps, [h["rewards/chosen"] for h in run.history], marker=".")
    for axes, label in ((margins, "reward margin (train batch)"), (chosen, "chosen reward")):
        axes.axhline(0, color="grey", linewidth=0.5)
        axes.set(xlabel="step", ylabel=label)
    margins.legend(fontsize=8, ncol=2)
    return save_figure(figure, path, title)


def before_after_rows(run: AlignRun) -> list[dict[str, str]]:
    """Held-out metrics of one run before and after training, as table rows.

    Args:
        run: the finished run.
    """
    keys = (
        "rewards/accuracies",
        "rewards/margins",
        "rewards/chosen",
        "rewards/rejected",
        "log_ratio_accuracy",
        "likelihood_accuracy",
        "loss",
    )
    rows = [
        {"held-out metric": k, "step 0": f"{run.before[k]:.4f}", "after": f"{run.after[k]:.4f}"}
        for k in keys
    ]
    rows.append(
        {
            "held-out metric": "mean response length (tokens)",
            "step 0": f"{run.length_before:.1f}",
            "after": f"{run.length_after:.1f}",
        }
    )
    rows.append(
        {
            "held-out metric": "KL to the reference on sampled completions (nats)",
            "step 0": f"{run.kl_before:.4f}",
            "after": f"{run.kl_after:.4f}",
        }
    )
    return rows


def save_align_run(run: AlignRun, output: str | Path, title: str = "") -> tuple[Path, Path]:
    """Write `metrics.json` (config, settings, before/after, history) and `rewards.png`.

    The same files as `dpo.save_dpo_run`, each written whole or not at all.

    Args:
        run: the finished run.
        output: the directory written into.
        title: the plot's title.

    Returns:
        `(metrics.json, rewards.png)` paths.
    """
    return write_metrics_and_plot(
        output, run.as_dict(), lambda path: plot_histories([run], path, title)
    )


# ----------------------------------------------------------------------------------------------
# A reward model beside DPO's implicit one
# ----------------------------------------------------------------------------------------------


@dataclass
class RewardModelRun:
    """A scalar reward model trained on the pairs, and DPO trained on the same pairs.

    Attributes:
        before: what `RewardTrainer.evaluate` logs on the test pairs before training (`accuracy`
            is the share of pairs whose chosen completion gets the higher reward).
        after: the same after training.
        dpo_before: DPO's `held_out_metrics` on the test pairs before training.
        dpo_after: the same after DPO's training.
        steps: optimizer steps of each run.
        seconds: wall-clock time of the reward model's `trainer.train()`.
        history: the reward model's training log entries (`margin` and `accuracy` of each
            logged training batch).
        config: the hyper-parameters both runs shared.
    """

    before: dict[str, float]
    after: dict[str, float]
    dpo_before: dict[str, float]
    dpo_after: dict[str, float]
    steps: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    config: DPORunConfig = field(default_factory=DPORunConfig)

    def as_dict(self) -> dict[str, Any]:
        """The JSON-friendly record of both runs."""
        return {
            "trainer": "trl.RewardTrainer (scalar head + LoRA), trl.DPOTrainer beside it",
            "config": asdict(self.config),
            "before": self.before,
            "after": self.after,
            "dpo_before": self.dpo_before,
            "dpo_after": self.dpo_after,
            "history": self.history,
            "steps": self.steps,
            "seconds": round(self.seconds, 2),
        }


# --8<-- [start:train_reward_model]
def train_reward_model(
    pairs: Any,
    model_name: str = EMBEDDED_MODEL,
    config: DPORunConfig | None = None,
    dpo: AlignRun | None = None,
) -> RewardModelRun:
    """A reward model (`trl.RewardTrainer`: a scalar head on the same base, LoRA) beside DPO.

    The reward model learns `r(x, y)` with the Bradley-Terry loss `-log sigmoid(r_w - r_l)`;
    DPO learns a policy whose implicit reward `beta log(pi / pi_ref)` ranks the same pairs. Both
    start from the same base, train on the same pairs for the same steps, and are measured by
    the same held-out accuracy: DPO's paper's point that the policy is its own reward model.

    Args:
        pairs: a `DatasetDict` (or dict) with `train` and `test` preference pairs.
        model_name: the base both start from.
        config: the hyper-parameters both share (LoRA's rank and alpha, steps, learning rate).
        dpo: a finished DPO run on the same pairs under `config` to set beside it; None: trained.

    Raises:
        CourseError: if `config.lora` is off (the reward model trains LoRA adapters and its
            new scalar head, nothing else), or the pairs are not valid.
    """
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import PrinterCallback
    from trl import RewardConfig, RewardTrainer

    config = config or DPORunConfig()
    if not config.lora:
        raise CourseError(
            "the reward model trains LoRA adapters and its scalar head: lora must be on"
        )
    train, test = (check_pairs(pairs[s], f"the {s} split") for s in ("train", "test"))
    model, tokenizer = load_model(model_name, task="classification", num_labels=1, seed=config.seed)
    arguments = {k: v for k, v in trainer_arguments(config, "unused").items() if k != "beta"}
    peft_config = LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        target_modules=default_targets(model),
        fan_in_fan_out=stores_transposed(model),
        task_type="SEQ_CLS",  # the new scalar head trains in full beside the adapters
    )
    with tempfile.TemporaryDirectory() as scratch:
        trainer = RewardTrainer(
            model=model,
            args=RewardConfig(**{**arguments, "output_dir": scratch}),
            train_dataset=Dataset.from_list(train),
            eval_dataset=Dataset.from_list(test),
            processing_class=tokenizer,
            peft_config=peft_config,
        )
        trainer.remove_callback(PrinterCallback)
        before = trainer.evaluate()
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        after = trainer.evaluate()
    if dpo is None:
        dpo = train_preference("dpo", {"train": train, "test": test}, model_name, config)
    return RewardModelRun(
        {k.removeprefix("eval_"): v for k, v in before.items()},
        {k.removeprefix("eval_"): v for k, v in after.items()},
        dpo.before,
        dpo.after,
        trainer.state.global_step,
        seconds,
        [e for e in trainer.state.log_history if "margin" in e],
        config,
    )


# --8<-- [end:train_reward_model]


def reward_model_rows(run: RewardModelRun, pairs: str = "") -> list[dict[str, str]]:
    """Held-out accuracy and mean margin of the reward model and of DPO's implicit reward.

    Args:
        run: the finished runs.
        pairs: what the pairs were, for the table's first column.
    """
    rm_before, rm_after, dpo_before, dpo_after = (
        run.before,
        run.after,
        run.dpo_before,
        run.dpo_after,
    )
    return [
        {
            "pairs": pairs,
            "ranker": "reward model (RewardTrainer: scalar head + LoRA)",
            "held-out accuracy": f"{rm_before['accuracy']:.3f} -> {rm_after['accuracy']:.3f}",
            "mean margin": f"{rm_before['margin']:.3f} -> {rm_after['margin']:.3f}",
            "steps": str(run.steps),
        },
        {
            "pairs": pairs,
            "ranker": "DPO's implicit reward beta log(pi / pi_ref)",
            "held-out accuracy": (
                f"{dpo_before['rewards/accuracies']:.3f} -> {dpo_after['rewards/accuracies']:.3f}"
            ),
            "mean margin": (
                f"{dpo_before['rewards/margins']:.3f} -> {dpo_after['rewards/margins']:.3f}"
            ),
            "steps": str(run.steps),
        },
    ]


def save_reward_model_run(
    run: RewardModelRun, output: str | Path, title: str = ""
) -> tuple[Path, Path]:
    """Write `metrics.json` (config, both runs before/after, history) and `rewards.png`.

    The files `save_align_run` writes, each whole or not at all; the plot is the reward model's
    margin and accuracy on each logged training batch.

    Args:
        run: the finished runs.
        output: the directory written into.
        title: the plot's title.

    Returns:
        `(metrics.json, rewards.png)` paths.
    """
    output = Path(output)
    metrics = atomic_write_text(output / "metrics.json", json.dumps(run.as_dict(), indent=1))
    figure, (margins, accuracies) = plt.subplots(1, 2, figsize=(10, 3.8))
    steps = [h["step"] for h in run.history]
    margins.plot(steps, [h["margin"] for h in run.history], marker=".")
    accuracies.plot(steps, [h["accuracy"] for h in run.history], marker=".")
    margins.axhline(0, color="grey", linewidth=0.5)
    margins.set(xlabel="step", ylabel="reward margin (train batch)")
    accuracies.set(xlabel="step", ylabel="accuracy (train batch)", ylim=(-0.05, 1.05))
    figure.suptitle(title)
    figure.tight_layout()
    with replacing(output / "rewards.png") as temporary:
        figure.savefig(temporary, dpi=100, format="png")
    plt.close(figure)
    return metrics, output / "rewards.png"
