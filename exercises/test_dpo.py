"""Grades exercises/dpo.py: sequence log-probabilities, the DPO loss, the reward from the policy.

`sequence_logprobs` is checked first on a batch small enough to add up by hand, where each
common mistake (no shift by one, the mask not shifted with the tokens, no mask, no log-softmax)
gives a number of its own, so the message can name the mistake. Then both functions are compared
on random batches with the package's versions (`peft_course.dpo`); float32 sums computed in a
different order differ by ~1e-6, so comparisons allow 1e-5
(`peft_course.tolerances.LOGPROB_ATOL`). The derivation step is checked by sympy
(`peft_course.derivations`).
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


def by_hand_batch():
    """One row of 4 tokens over a vocabulary of 4, every probability a power of 1/2, so every
    sum below is a whole number of `ln 2`. The completion is the tokens at positions 2 and 3."""
    probabilities = torch.tensor(
        [
            [1 / 2, 1 / 4, 1 / 8, 1 / 8],  # position 0 predicts the token at 1
            [1 / 2, 1 / 4, 1 / 8, 1 / 8],  # position 1 predicts the token at 2
            [1 / 2, 1 / 8, 1 / 4, 1 / 8],  # position 2 predicts the token at 3
            [1 / 4, 1 / 8, 1 / 2, 1 / 8],  # position 3 predicts what follows the row
        ]
    )
    logits = probabilities.log()[None] + 1.0  # not normalised: log-softmax takes the 1.0 off
    input_ids = torch.tensor([[0, 1, 3, 2]])
    completion_mask = torch.tensor([[0, 0, 1, 1]])
    return logits, input_ids, completion_mask


LN2 = math.log(2)
SHIFT = (
    "the logits at position t predict the token at t + 1, so score the tokens of positions "
    "1..L-1 with the logits of positions 0..L-2"
)
# What each common mistake gives on `by_hand_batch`, in units of ln 2 (the table above; every
# mistake gives a number of its own).
BY_HAND_MISTAKES = {
    -4.0: f"no shift: each token was scored with the logits at its own position; {SHIFT}",
    -6.0: f"shifted the wrong way: each token was scored with the logits one position after it; "
    f"{SHIFT}",
    -3.0: f"shifted the wrong way, the mask too: {SHIFT}",
    -2.0: "the tokens were shifted but the mask was not: the completion mask belongs to the "
    "tokens, so shift it with them (the mask of positions 1..L-1)",
    -7.0: "the prompt token at position 1 was counted too: only tokens where completion_mask is 1 "
    "add to the sum",
}


def test_sequence_logprob_by_hand(dpo):
    """Checked first: the shift by one, on numbers that can be added up by hand."""
    logits, input_ids, completion_mask = by_hand_batch()
    got = dpo.sequence_logprobs(logits, input_ids, completion_mask)
    assert got.shape == (1,), f"expected one number per row, shape (1,), got {tuple(got.shape)}"
    expected = -5.0  # log p(3 | position 1) + log p(2 | position 2) = log 1/8 + log 1/4
    value = got.item() / LN2
    if abs(value - expected) < 1e-4:
        return
    case = (
        "one row, ids [0, 1, 3, 2], completion mask [0, 0, 1, 1]: the completion tokens 3 and 2 "
        "are predicted by the logits at positions 1 and 2, so the answer is "
        f"log 1/8 + log 1/4 = -5 ln 2 = {-5 * LN2:.4f}; got {got.item():.4f}"
    )
    for mistake, why in BY_HAND_MISTAKES.items():
        if abs(value - mistake) < 1e-4:
            pytest.fail(f"{case} = {mistake:g} ln 2. Likely cause: {why}", pytrace=False)
    if abs(got.item() - (expected * LN2 + 2.0)) < 1e-4:
        pytest.fail(
            f"{case}, 2 more than the answer: the logits here are log-probabilities plus 1, so "
            "raw logits were added; normalise them first (log-softmax over the vocabulary)",
            pytrace=False,
        )
    pytest.fail(case, pytrace=False)


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
    as_integers = dpo.sequence_logprobs(logits, input_ids, completion_mask)
    assert torch.allclose(as_integers, expected, atol=LOGPROB_ATOL), (
        f"already wrong with a 0/1 integer mask (expected {expected.tolist()}, got "
        f"{as_integers.tolist()}), so the dtype {dtype} is not the cause: fix the sum first "
        "(test_sequence_logprob_by_hand says how)"
    )
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
    result = dpo.dpo_loss(*logps, beta)
    assert isinstance(result, reference.DPOLoss), (
        f"dpo_loss must return a DPOLoss(loss, chosen_rewards, rejected_rewards), got "
        f"{type(result).__name__}"
    )
    loss, chosen, rejected = result.loss, result.chosen_rewards, result.rejected_rewards
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
    loss = dpo.dpo_loss(logps, logps - 1, logps, logps - 1, 0.1).loss
    assert loss.item() == pytest.approx(math.log(2)), (
        f"policy = reference: expected ln 2 = 0.6931, got {loss.item():.4f}"
    )


def test_dpo_loss_does_not_underflow(dpo):
    loss = dpo.dpo_loss(
        torch.tensor([-500.0]),
        torch.tensor([-1.0]),
        torch.tensor([-1.0]),
        torch.tensor([-500.0]),
        1.0,
    ).loss
    assert torch.isfinite(loss), (
        "a very wrong pair gave an infinite loss: use F.logsigmoid, not log(sigmoid(...))"
    )
    assert loss.item() == pytest.approx(998.0, rel=LARGE_LOSS_RTOL)


def test_dpo_loss_keeps_the_graph_of_the_loss_only(dpo):
    """Training steps on the loss; the rewards are logged, so they carry no graph."""
    policy = (-10 * torch.rand(4, generator=torch.Generator().manual_seed(9))).requires_grad_()
    result = dpo.dpo_loss(policy, policy.detach() - 1, policy.detach() + 0.5, policy.detach(), 0.1)
    assert result.loss.requires_grad, "the loss lost its graph: the policy could not learn from it"
    for name in ("chosen_rewards", "rejected_rewards"):
        assert not getattr(result, name).requires_grad, (
            f"{name} still carries the graph: detach the rewards (they are only logged)"
        )


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


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_dpo_loss_trains_through_both_policy_logprobs(dpo, seed):
    """The loss keeps its graph to the chosen *and* the rejected log-probability of the policy:
    DPO pulls the chosen completion up and pushes the rejected one down. Both gradients are
    compared with autograd on the package's loss."""
    generator = torch.Generator().manual_seed(seed + 20)
    n, beta = 5, 0.1 + float(torch.rand(1, generator=generator))
    logps = [-30 * torch.rand(n, generator=generator) for _ in range(4)]

    def gradients(loss_function):
        chosen, rejected = (t.clone().requires_grad_(True) for t in logps[:2])
        loss = loss_function(chosen, rejected, logps[2], logps[3], beta).loss
        if not loss.requires_grad:
            return None, None
        grads = torch.autograd.grad(loss, [chosen, rejected], allow_unused=True)
        return tuple(torch.zeros(n) if g is None else g for g in grads)

    got = gradients(dpo.dpo_loss)
    expected = gradients(reference.dpo_loss)
    assert got[0] is not None, "the loss lost its graph: the policy could not learn from it"
    for name, mine, theirs, push in (
        ("policy_chosen", got[0], expected[0], "pulls the chosen completion up"),
        ("policy_rejected", got[1], expected[1], "pushes the rejected completion down"),
    ):
        if not mine.abs().sum():
            pytest.fail(
                f"the loss carries no gradient to {name}: it was detached or treated as a "
                f"constant, yet the loss {push} through it (only the reference log-probabilities "
                "and the logged rewards are constants)",
                pytrace=False,
            )
        assert torch.allclose(mine, theirs, atol=LOGPROB_ATOL), (
            f"d loss / d {name}: expected {theirs.tolist()}, got {mine.tolist()}"
        )
