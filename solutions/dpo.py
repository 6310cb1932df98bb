"""DPO exercises: the sequence log-probability, the DPO loss, and one step of the derivation.

Reference answers. The package's versions are `peft_course.dpo.sequence_logprobs`,
`peft_course.dpo.dpo_loss` and `peft_course.derivations.reward_from_policy`.
"""

from __future__ import annotations

import sympy as sp
import torch
import torch.nn.functional as F

from peft_course.dpo import DPOLoss


def sequence_logprobs(
    logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor
) -> torch.Tensor:
    """Return `log pi(completion | prompt)` for each row of a batch, shape `(batch,)`.

    `logits` is `(batch, length, vocab)`; the logits at position `t` are the model's
    prediction for the token at `t + 1`. Add up the log-probabilities of the tokens where
    `completion_mask` is 1 (prompt tokens and padding are 0 and must add nothing).
    """
    log_probs = F.log_softmax(logits[:, :-1].float(), dim=-1)
    token_logps = log_probs.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (token_logps * completion_mask[:, 1:]).sum(dim=-1)


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
    chosen_rewards = beta * (policy_chosen - reference_chosen)
    rejected_rewards = beta * (policy_rejected - reference_rejected)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    return DPOLoss(loss, chosen_rewards.detach(), rejected_rewards.detach())


def reward_from_policy(pi_star: sp.Expr, pi_ref: sp.Expr, beta: sp.Expr, z: sp.Expr) -> sp.Expr:
    """Return the reward `r` as a sympy expression, given `pi* = pi_ref exp(r / beta) / Z`.

    Solve that equation for `r`: take logs of both sides.
    """
    return beta * sp.log(pi_star / pi_ref) + beta * sp.log(z)
