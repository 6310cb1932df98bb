"""Preference exercises beyond DPO: the IPO, SimPO and KTO losses from their derivations.

Reference answers. The package's versions, which give the losses of TRL's trainers on the same
batches, are `peft_course.preference.ipo_loss`, `simpo_loss` and `kto_loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from peft_course.preference import PreferenceLoss


def ipo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
) -> PreferenceLoss:
    """Return IPO's loss and rewards, as `PreferenceLoss(loss, chosen, rejected)`.

    Each of the first four arguments holds one sequence log-probability (a sum over the
    completion's tokens) per pair; the lengths are each completion's number of tokens (at
    least 1). A completion's log-ratio is `log pi - log pi_ref`; IPO's margin is the chosen
    log-ratio *per token* minus the rejected one per token, and the loss is the mean over pairs
    of the squared distance between that margin and IPO's target `1 / (2 beta)`. The rewards, as
    TRL logs them, are beta times each completion's log-ratio (not per token), detached.
    """
    chosen_ratios = policy_chosen - reference_chosen
    rejected_ratios = policy_rejected - reference_rejected
    margin = chosen_ratios / chosen_lengths - rejected_ratios / rejected_lengths
    loss = ((margin - 1 / (2 * beta)) ** 2).mean()
    return PreferenceLoss(loss, beta * chosen_ratios.detach(), beta * rejected_ratios.detach())


def simpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    beta: float,
    gamma: float,
) -> PreferenceLoss:
    """Return SimPO's loss and rewards, as `PreferenceLoss(loss, chosen, rejected)`.

    SimPO has no reference model. A completion's reward is beta times the policy's *average*
    log-probability per token (its sequence log-probability over its length, at least 1);
    the loss is the mean over pairs of `-log sigmoid(chosen reward - rejected reward - gamma)`,
    gamma the target reward margin, computed so that it stays finite for a very wrong pair. The
    rewards are returned detached.
    """
    chosen_rewards = beta * policy_chosen / chosen_lengths
    rejected_rewards = beta * policy_rejected / rejected_lengths
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards - gamma).mean()
    return PreferenceLoss(loss, chosen_rewards.detach(), rejected_rewards.detach())


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
    """Return KTO's loss and rewards, as `PreferenceLoss(loss, chosen, rejected)`.

    Each completion stands alone, labelled desirable (True) or undesirable (False). Its
    log-ratio is `r = log pi - log pi_ref`. The reference point `z` is one number for the
    batch: the mean log-ratio of the *mismatched* completions (`kl_policy_logps` against
    `kl_reference_logps`), an estimate of KL(pi || pi_ref), so never below 0, and a constant
    (no gradient flows through it). A desirable completion's loss is
    `desirable_weight * (1 - sigmoid(beta (r - z)))`, an undesirable one's
    `undesirable_weight * (1 - sigmoid(beta (z - r)))`; the loss is the mean over all the
    completions. The rewards are `beta r` of the desirable completions (chosen) and of the
    undesirable ones (rejected), in batch order, detached.
    """
    z = (kl_policy_logps - kl_reference_logps).mean().clamp(min=0).detach()
    log_ratios = policy_logps - reference_logps
    desirable = desirable.bool()
    liked = desirable_weight * (1 - torch.sigmoid(beta * (log_ratios - z)))
    disliked = undesirable_weight * (1 - torch.sigmoid(beta * (z - log_ratios)))
    loss = torch.where(desirable, liked, disliked).mean()
    rewards = beta * log_ratios.detach()
    return PreferenceLoss(loss, rewards[desirable], rewards[~desirable])
