"""Grades exercises/dpo.py: sequence log-probabilities, the DPO loss, the reward from the policy.

The first two are compared on random batches with the package's versions
(`peft_course.dpo`); float32 sums computed in a different order differ by ~1e-6, so
comparisons allow 1e-5 (`peft_course.tolerances.LOGPROB_ATOL`). The derivation step is checked
by sympy (`peft_course.derivations`).
"""

import math

import pytest
import sympy as sp
import torch

from peft_course import derivations
from peft_course import dpo as reference
from peft_course.tolerances import FLOAT64_ATOL, LARGE_LOSS_RTOL, LOGPROB_ATOL

SEEDS = [0, 1, 2, 3]


@pytest.fixture
def dpo(load):
    return load("dpo")


def random_batch(seed: int):
    """Random logits and tokens; each row a prompt, then a completion, then padding."""
    generator = torch.Generator().manual_seed(seed)
    rows, length, vocab = (
        int(v) for v in torch.randint(2, 9, (3,), generator=generator) * torch.tensor([1, 2, 3])
    )
    logits = 3 * torch.randn(rows, length, vocab, generator=generator)
    input_ids = torch.randint(0, vocab, (rows, length), generator=generator)
    completion_mask = torch.zeros(rows, length, dtype=torch.long)
    for row in range(rows):
        start = int(torch.randint(1, length - 1, (1,), generator=generator))
        end = int(torch.randint(start + 1, length + 1, (1,), generator=generator))
        completion_mask[row, start:end] = 1
    return logits, input_ids, completion_mask


@pytest.mark.parametrize("seed", SEEDS)
def test_sequence_logprob(dpo, seed):
    logits, input_ids, completion_mask = random_batch(seed)
    got = dpo.sequence_logprobs(logits, input_ids, completion_mask)
    expected = reference.sequence_logprobs(logits, input_ids, completion_mask)
    assert got.shape == expected.shape, (
        f"expected one number per row, shape {tuple(expected.shape)}, got {tuple(got.shape)}"
    )
    assert torch.allclose(got, expected, atol=LOGPROB_ATOL), (
        f"expected {expected.tolist()}, got {got.tolist()} (are the logits shifted by one? "
        f"are prompt and padding masked?)"
    )


@pytest.mark.parametrize("dtype", [torch.bool, torch.float32, torch.int32])
def test_sequence_logprob_takes_any_mask_dtype(dpo, dtype):
    logits, input_ids, completion_mask = random_batch(5)
    expected = reference.sequence_logprobs(logits, input_ids, completion_mask)
    got = dpo.sequence_logprobs(logits, input_ids, completion_mask.to(dtype))
    assert torch.allclose(got, expected, atol=LOGPROB_ATOL), (
        f"a completion mask of dtype {dtype} should give the same sums as 0/1 integers: "
        f"expected {expected.tolist()}, got {got.tolist()}"
    )


def test_sequence_logprob_ignores_prompt_and_padding(dpo):
    logits, input_ids, completion_mask = random_batch(7)
    completion_mask[:, :] = 0
    got = dpo.sequence_logprobs(logits, input_ids, completion_mask)
    assert torch.allclose(got, torch.zeros_like(got)), (
        f"with no completion tokens expected 0 per row, got {got.tolist()}"
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_dpo_loss(dpo, seed):
    generator = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 9, (1,), generator=generator))
    beta = float(torch.rand(1, generator=generator)) + 0.01
    logps = [-30 * torch.rand(n, generator=generator) for _ in range(4)]
    loss, chosen, rejected = dpo.dpo_loss(*logps, beta)
    expected = reference.dpo_loss(*logps, beta)
    assert torch.allclose(chosen, expected.chosen_rewards, atol=LOGPROB_ATOL), (
        "chosen rewards: expected beta * (policy - reference) = "
        f"{expected.chosen_rewards.tolist()}, "
        f"got {chosen.tolist()}"
    )
    assert torch.allclose(rejected, expected.rejected_rewards, atol=LOGPROB_ATOL), (
        f"rejected rewards: expected {expected.rejected_rewards.tolist()}, got {rejected.tolist()}"
    )
    assert loss.dim() == 0, "the loss must be one number (the mean over pairs)"
    assert torch.allclose(loss, expected.loss, atol=LOGPROB_ATOL), (
        f"loss: expected {expected.loss.item():.6f}, got {loss.item():.6f}"
    )


def test_dpo_loss_is_ln2_at_the_start(dpo):
    logps = -10 * torch.rand(5)
    loss, _, _ = dpo.dpo_loss(logps, logps - 1, logps, logps - 1, 0.1)
    assert loss.item() == pytest.approx(math.log(2)), (
        f"policy = reference: expected ln 2 = 0.6931, got {loss.item():.4f}"
    )


def test_dpo_loss_does_not_underflow(dpo):
    loss, _, _ = dpo.dpo_loss(
        torch.tensor([-500.0]),
        torch.tensor([-1.0]),
        torch.tensor([-1.0]),
        torch.tensor([-500.0]),
        1.0,
    )
    assert torch.isfinite(loss), (
        "a very wrong pair gave an infinite loss: use F.logsigmoid, not log(sigmoid(...))"
    )
    assert loss.item() == pytest.approx(998.0, rel=LARGE_LOSS_RTOL)


def test_reward_from_policy(dpo):
    check = derivations.check_reward_from_policy(dpo.reward_from_policy)
    assert check.holds, (
        "putting pi* = pi_ref exp(r/beta)/Z into your expression does not give r back: "
        f"{check.detail}"
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_reward_from_policy_on_numbers(dpo, seed):
    generator = torch.Generator().manual_seed(seed)
    r, pi_ref, beta, z = (float(v) for v in torch.rand(4, generator=generator) + 0.1)
    pi_star = pi_ref * math.exp(r / beta) / z
    got = float(
        dpo.reward_from_policy(sp.Float(pi_star), sp.Float(pi_ref), sp.Float(beta), sp.Float(z))
    )
    assert got == pytest.approx(r, abs=FLOAT64_ATOL), (
        f"with pi*={pi_star:.4f}, pi_ref={pi_ref:.4f}, beta={beta:.4f}, Z={z:.4f}: "
        f"expected r={r:.6f}, got {got:.6f}"
    )
