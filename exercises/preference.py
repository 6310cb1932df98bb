"""Preference exercises beyond DPO: the IPO, SimPO and KTO losses from their derivations.

Fill in the three functions. `pytest exercises -k preference` grades them on fixed batches
against the package's versions (which give TRL's trainers' losses on the same batches) and
says which term is off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: F401  (the answers use it)

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
    raise NotImplementedError(
        "not written yet: pytest exercises/test_preference.py grades it, with hints"
    )


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
    raise NotImplementedError(
        "not written yet: pytest exercises/test_preference.py grades it, with hints"
    )


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
    raise NotImplementedError(
        "not written yet: pytest exercises/test_preference.py grades it, with hints"
    )
