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

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from peft_course.dpo import check_beta
from peft_course.errors import CourseError, check_number

# The losses of this chapter (and of `peft-course align --loss`), each with a line about it.
LOSSES = {
    "dpo": "DPO: -log sigmoid(beta h) of the log-ratio margin h",
    "ipo": "IPO: (h per token - 1/(2 beta))^2, a squared loss with its minimum at 1/(2 beta)",
    "hinge": "hinge (SLiC): max(0, 1 - beta h), no push beyond h = 1/beta",
    "robust": "robust DPO: unbiased under labels flipped with probability label_smoothing",
    "simpo": "SimPO: -log sigmoid(beta * per-token margin - gamma), no reference",
    "orpo": "ORPO: the SFT loss on the chosen row plus lambda (= beta) times the odds-ratio loss",
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
