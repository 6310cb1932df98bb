"""DPO exercises: the sequence log-probability, the DPO loss, and one step of the derivation.

Fill in the three functions. `pytest exercises -k dpo` grades them on random inputs against
the package's own versions and against sympy.
"""

from __future__ import annotations

import sympy as sp
import torch
import torch.nn.functional as F  # noqa: F401  (the answers use it)

from peft_course.dpo import DPOLoss  # the result of dpo_loss


def sequence_logprobs(
    logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor
) -> torch.Tensor:
    """Return `log pi(completion | prompt)` for each row of a batch, shape `(batch,)`.

    `logits` is `(batch, length, vocab)`; the logits at position `t` are the model's
    prediction for the token at `t + 1`. Add up the log-probabilities of the tokens where
    `completion_mask` is 1 (prompt tokens and padding are 0 and must add nothing).
    """
    raise NotImplementedError("not written yet: pytest exercises/test_dpo.py grades it, with hints")


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
) -> DPOLoss:
    """Return the sigmoid DPO loss and the rewards, as `DPOLoss(loss, chosen, rejected)`.

    Each argument holds one sequence log-probability per pair. The implicit reward of a
    completion is `beta * (log pi - log pi_ref)`; the loss is the mean over pairs of
    `-log sigmoid(chosen_reward - rejected_reward)`, with its graph (training steps on it);
    the rewards are for logging, detached from the graph.
    """
    raise NotImplementedError("not written yet: pytest exercises/test_dpo.py grades it, with hints")


def reward_from_policy(pi_star: sp.Expr, pi_ref: sp.Expr, beta: sp.Expr, z: sp.Expr) -> sp.Expr:
    """Return the reward `r` as a sympy expression, given `pi* = pi_ref exp(r / beta) / Z`.

    Solve that equation for `r`: take logs of both sides.
    """
    raise NotImplementedError("not written yet: pytest exercises/test_dpo.py grades it, with hints")
