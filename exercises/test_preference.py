"""Grades exercises/preference.py: the IPO, SimPO and KTO losses, from their derivations.

Each loss is checked first on a fixed batch (float64; lengths, beta and gamma chosen so that
every common mistake gives a number of its own). When the loss is off, the grader computes what
each likely mistake would give - the reference ratio upside down, no length normalisation,
another target margin, beta in another place, KTO's reference point z missing, unclamped, per
completion or taken from the wrong completions - and names the one that matches. The expected
numbers are `peft_course.preference`'s, whose losses are TRL's on the same batch (DPOTrainer with
`loss_type="ipo"`, CPOTrainer with `loss_type="simpo"`, KTOTrainer: within
`tolerances.PREFERENCE_LOSS_ATOL`, tests/test_preference.py), and on one batch TRL's trainers
scored, TRL's logged loss itself (TRL_BATCHES). Then random batches against the package, the
gradients (to both policy log-probabilities, never through z) and a very wrong pair.

The fixed batches are float64, where the reference answer and the package agree to ~1e-15; a
correct answer summed in another order in float32 stays within 1e-6. The comparisons allow
`tolerances.LOGPROB_ATOL` (1e-5), as the DPO grader does; each mistake below that changes the
loss of its batch moves it, from the answer and from every other mistake, by at least 5e-3
(measured 5.9e-3 at the closest; tests/test_preference.py checks the bound).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from peft_course import preference as package
from peft_course.tolerances import LARGE_LOSS_RTOL, LOGPROB_ATOL

SEEDS = [0, 1, 2, 3]
Batch = dict[str, torch.Tensor]


@pytest.fixture
def preference(load):
    return load("preference")


def tensor(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# --- the fixed batches and what each mistake gives on them ------------------------------------

IPO_BETA = 0.3  # target 1/(2 beta) = 1.667; 1/beta = 3.33 and beta/2 = 0.15 are far from it
IPO_BATCH: Batch = {
    "policy_chosen": tensor(-12.5, -20.0, -7.25, -31.0),
    "policy_rejected": tensor(-14.0, -18.5, -11.0, -29.5),
    "reference_chosen": tensor(-13.0, -21.5, -9.0, -30.0),
    "reference_rejected": tensor(-13.5, -19.0, -10.0, -31.5),
    "chosen_lengths": tensor(5, 8, 3, 11),
    "rejected_lengths": tensor(6, 7, 4, 12),
}


def ipo_call(function: Callable, b: Batch, beta: float = IPO_BETA) -> package.PreferenceLoss:
    keys = ("policy_chosen", "policy_rejected", "reference_chosen", "reference_rejected")
    return function(*(b[k] for k in keys), beta, b["chosen_lengths"], b["rejected_lengths"])


def ipo_mistakes(b: Batch, beta: float = IPO_BETA) -> dict[str, float]:
    """What IPO's loss is on `b` with each mistake, keyed by what the grader says of it."""
    r_w = b["policy_chosen"] - b["reference_chosen"]
    r_l = b["policy_rejected"] - b["reference_rejected"]
    l_w, l_l = b["chosen_lengths"], b["rejected_lengths"]
    margin, target = r_w / l_w - r_l / l_l, 1 / (2 * beta)

    def squared(m: torch.Tensor, t: float) -> float:
        return ((m - t) ** 2).mean().item()

    return {
        "the reference ratio is upside down: a completion's log-ratio is log pi - log pi_ref "
        "(policy minus reference), positive when the policy likes it more": squared(
            -margin, target
        ),
        "no length normalisation: IPO's margin is of per-token log-ratios, each completion's "
        "log-ratio divided by its own number of tokens": squared(r_w - r_l, target),
        "the lengths are swapped: divide the chosen log-ratio by the chosen completion's length, "
        "the rejected one by the rejected's": squared(r_w / l_l - r_l / l_w, target),
        "the target margin is 1/beta (the hinge's); IPO's squared loss has its minimum at "
        "1/(2 beta)": squared(margin, 1 / beta),
        "the target margin is beta/2: 1 / 2 * beta reads as (1/2) * beta; IPO's target is "
        "1 / (2 * beta)": squared(margin, beta / 2),
        "the target margin is missing: the squared distance is to IPO's target 1/(2 beta), "
        "not to 0": squared(margin, 0.0),
        "beta is in DPO's place, multiplying the margin: in IPO beta only sets the target "
        "1/(2 beta)": squared(beta * margin, target),
        "the losses of the pairs were added up: the loss is their mean": ((margin - target) ** 2)
        .sum()
        .item(),
    }


SIMPO_BETA, SIMPO_GAMMA = 2.0, 0.5  # SimPO's paper uses beta 2-2.5; gamma 0.5 here
SIMPO_BATCH: Batch = {
    "policy_chosen": tensor(-6.0, -15.0, -4.5, -22.0),
    "policy_rejected": tensor(-7.5, -12.0, -9.0, -20.5),
    "chosen_lengths": tensor(3, 9, 2, 10),
    "rejected_lengths": tensor(5, 6, 7, 13),
}


def simpo_call(
    function: Callable, b: Batch, beta: float = SIMPO_BETA, gamma: float = SIMPO_GAMMA
) -> package.PreferenceLoss:
    keys = ("policy_chosen", "policy_rejected", "chosen_lengths", "rejected_lengths")
    return function(*(b[k] for k in keys), beta, gamma)


def simpo_mistakes(
    b: Batch, beta: float = SIMPO_BETA, gamma: float = SIMPO_GAMMA
) -> dict[str, float]:
    """What SimPO's loss is on `b` with each mistake, keyed by what the grader says of it."""
    p_w, p_l = b["policy_chosen"], b["policy_rejected"]
    a_w, a_l = p_w / b["chosen_lengths"], p_l / b["rejected_lengths"]

    def loss(x: torch.Tensor) -> float:
        return -F.logsigmoid(x).mean().item()

    return {
        "no length normalisation: SimPO's reward is beta times the *average* log-probability "
        "per token, each sequence log-probability divided by its own length": loss(
            beta * (p_w - p_l) - gamma
        ),
        "the lengths are swapped: divide the chosen log-probability by the chosen completion's "
        "length, the rejected one by the rejected's": loss(
            beta * (p_w / b["rejected_lengths"] - p_l / b["chosen_lengths"]) - gamma
        ),
        "the target margin gamma is added: SimPO asks the reward margin to exceed gamma, so "
        "gamma is subtracted from it": loss(beta * (a_w - a_l) + gamma),
        "the target margin gamma is missing: the loss is -log sigmoid(margin - gamma)": loss(
            beta * (a_w - a_l)
        ),
        "gamma is inside beta's product: beta scales the per-token log-probabilities only, "
        "gamma is subtracted from the reward margin as it is": loss(beta * (a_w - a_l - gamma)),
        "gamma was divided by beta: gamma is on the rewards' scale, subtract it as it is": loss(
            beta * (a_w - a_l) - gamma / beta
        ),
        "beta is missing: a reward is beta times the average log-probability": loss(
            a_w - a_l - gamma
        ),
        "the margin is the wrong way round: chosen reward minus rejected reward": loss(
            -(beta * (a_w - a_l) - gamma)
        ),
        "the losses of the pairs were added up: the loss is their mean": -F.logsigmoid(
            beta * (a_w - a_l) - gamma
        )
        .sum()
        .item(),
    }


KTO_BETA, KTO_WEIGHTS = 0.4, (1.5, 0.5)  # unequal weights, so that swapping them shows
KTO_BATCH: Batch = {
    "policy_logps": tensor(-10.0, -14.0, -6.5, -21.0, -9.0, -16.5),
    "reference_logps": tensor(-12.5, -13.0, -7.0, -24.0, -12.0, -15.0),
    "desirable": torch.tensor([True, False, True, True, False, True]),  # 4 and 2
    # the mismatched completions: their mean log-ratio is z = 1.3 > 0
    "kl_policy_logps": tensor(-11.0, -15.0, -8.0, -19.0, -10.2, -14.0),
    "kl_reference_logps": tensor(-12.0, -17.0, -8.5, -21.0, -10.0, -16.5),
}
# the same completions, the policy less likely than the reference on the mismatched ones: the
# mean log-ratio is -2.0, so z is clamped at 0
KTO_CLAMPED: Batch = {
    **KTO_BATCH,
    "kl_policy_logps": tensor(-13.0, -18.0, -11.0, -22.0, -12.0, -16.0),
    "kl_reference_logps": tensor(-12.0, -17.0, -8.5, -21.0, -10.0, -14.5),
}


def kto_call(
    function: Callable, b: Batch, beta: float = KTO_BETA, weights=KTO_WEIGHTS
) -> package.PreferenceLoss:
    keys = ("policy_logps", "reference_logps", "desirable", "kl_policy_logps", "kl_reference_logps")
    return function(*(b[k] for k in keys), beta, *weights)


def kto_mistakes(b: Batch, beta: float = KTO_BETA, weights=KTO_WEIGHTS) -> dict[str, float]:
    """What KTO's loss is on `b` with each mistake, keyed by what the grader says of it."""
    good = b["desirable"]
    r = b["policy_logps"] - b["reference_logps"]
    kl = b["kl_policy_logps"] - b["kl_reference_logps"]
    z = kl.mean().clamp(min=0)

    def losses(r=r, z=z, weights=weights, scale=beta, swapped=False) -> torch.Tensor:
        liked = weights[0] * (1 - torch.sigmoid(scale * (r - z)))
        disliked = weights[1] * (1 - torch.sigmoid(scale * (z - r)))
        return torch.where(good, disliked, liked) if swapped else torch.where(good, liked, disliked)

    mistakes = {
        "the reference point z is missing (taken as 0), or its log-ratio is upside down (clamped "
        "to 0): z is the mean of kl_policy_logps - kl_reference_logps": losses(z=0.0),
        "z is not clamped at 0: it estimates KL(pi || pi_ref), which is never negative": losses(
            z=kl.mean()
        ),
        "z was computed per completion: it is one number for the batch, the mean log-ratio of "
        "the mismatched completions": losses(z=kl.clamp(min=0)),
        "z was taken from the completions' own log-ratios: it comes from the mismatched "
        "completions (kl_policy_logps, kl_reference_logps)": losses(z=r.mean().clamp(min=0)),
        "the reference ratio is upside down: a completion's log-ratio is log pi - log pi_ref "
        "(policy minus reference)": losses(r=-r),
        "desirable and undesirable are swapped: a desirable completion's loss is "
        "1 - sigmoid(beta (r - z))": losses(swapped=True),
        "the weights are swapped: desirable_weight weighs the desirable completions' "
        "losses": losses(weights=weights[::-1]),
        "beta is in the wrong place: it scales r - z, the distance from the reference point, "
        "not r alone": torch.where(
            good,
            weights[0] * (1 - torch.sigmoid(beta * r - z)),
            weights[1] * (1 - torch.sigmoid(z - beta * r)),
        ),
        "beta is missing: the losses are 1 - sigmoid(beta (r - z)) and "
        "1 - sigmoid(beta (z - r))": losses(scale=1.0),
    }
    if kl.mean() < 0:  # where it differs from z missing: z would be above 0, wrongly
        mistakes[
            "the KL log-ratio is upside down: z is the mean of kl_policy_logps - "
            "kl_reference_logps (policy minus reference), clamped at 0"
        ] = losses(z=(-kl).mean())
    mistakes = {why: value.mean().item() for why, value in mistakes.items()}
    right = losses()
    mistakes[
        "the loss is the mean of each kind's mean: it is the mean over all the "
        "completions, desirable and undesirable together"
    ] = ((right[good].mean() + right[~good].mean()) / 2).item()
    mistakes["the losses of the completions were added up: the loss is their mean"] = (
        right.sum().item()
    )
    return mistakes


def close(mine: torch.Tensor, theirs: torch.Tensor) -> bool:
    """Equal within LOGPROB_ATOL, whatever float dtype each is in."""
    return torch.allclose(mine.detach().double(), theirs.detach().double(), atol=LOGPROB_ATOL)


def diagnose(case: str, got: float, expected: float, mistakes: dict[str, float]) -> None:
    """Pass if `got` is `expected`; else fail in one line naming the mistake that gives `got`."""
    if math.isfinite(got) and abs(got - expected) <= LOGPROB_ATOL:
        return
    text = f"{case}: expected loss {expected:.6f}, got {got:.6f}"
    matching = [why for why, value in mistakes.items() if abs(got - value) <= LOGPROB_ATOL]
    if len(matching) == 1:
        pytest.fail(f"{text}. Likely cause: {matching[0]}", pytrace=False)
    pytest.fail(f"{text} (no single common mistake gives this: see --hint 2)", pytrace=False)


def check_result(result: object, what: str) -> package.PreferenceLoss:
    assert isinstance(result, package.PreferenceLoss), (
        f"{what} must return a PreferenceLoss(loss, chosen_rewards, rejected_rewards), got "
        f"{type(result).__name__}"
    )
    assert result.loss.dim() == 0, (
        f"{what}: the loss must be one number (the mean), got shape {tuple(result.loss.shape)}"
    )
    return result


def check_rewards(got: package.PreferenceLoss, expected: package.PreferenceLoss, how: str) -> None:
    for side in ("chosen_rewards", "rejected_rewards"):
        mine, theirs = getattr(got, side), getattr(expected, side)
        assert mine.shape == theirs.shape and close(mine, theirs), (
            f"{side}: expected {how} = {theirs.tolist()}, got {mine.tolist()}"
        )


# --- the signatures ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ipo_loss", "simpo_loss", "kto_loss"])
def test_signature_is_the_package_functions(preference, name):
    """Code written against the exercise runs against `peft_course.preference`, and back."""
    mine, theirs = (
        inspect.signature(getattr(preference, name)),
        inspect.signature(getattr(package, name)),
    )
    assert list(mine.parameters) == list(theirs.parameters), (
        f"{name} takes {list(theirs.parameters)}, in that order; yours takes "
        f"{list(mine.parameters)}"
    )


# --- IPO --------------------------------------------------------------------------------------


def test_ipo_loss_on_a_fixed_batch(preference):
    """Checked first: each term of IPO's loss, on a batch where each mistake shows."""
    result = check_result(ipo_call(preference.ipo_loss, IPO_BATCH), "ipo_loss")
    expected = ipo_call(package.ipo_loss, IPO_BATCH)
    diagnose(
        f"IPO on the fixed batch, beta {IPO_BETA} (target margin {1 / (2 * IPO_BETA):.4f})",
        result.loss.item(),
        expected.loss.item(),
        ipo_mistakes(IPO_BATCH),
    )
    check_rewards(result, expected, "beta * (log pi - log pi_ref) of each sequence, not per token")


@pytest.mark.parametrize("seed", SEEDS)
def test_ipo_loss(preference, seed):
    b, beta = random_pairs(seed), random_beta(seed)
    result = check_result(ipo_call(preference.ipo_loss, b, beta), "ipo_loss")
    expected = ipo_call(package.ipo_loss, b, beta)
    assert close(result.loss, expected.loss), (
        f"random batch {seed}, beta {beta:.3f}: expected loss {expected.loss.item():.6f}, got "
        f"{result.loss.item():.6f} (test_ipo_loss_on_a_fixed_batch names the likely cause)"
    )
    check_rewards(result, expected, "beta * (log pi - log pi_ref)")


def test_ipo_loss_is_zero_at_its_target(preference):
    """A pair whose per-token margin is exactly 1/(2 beta) costs nothing: IPO stops there."""
    beta = 0.25
    lengths = tensor(4.0, 2.0)
    b = {
        "policy_chosen": tensor(-3.0, -5.0),
        "policy_rejected": tensor(-6.0, -4.0),
        "reference_chosen": tensor(-3.0 - 4 * 2.0, -5.0 - 2 * 2.0),  # r_w = 2 per token
        "reference_rejected": tensor(-6.0, -4.0),  # r_l = 0
        "chosen_lengths": lengths,
        "rejected_lengths": lengths,
    }
    loss = ipo_call(preference.ipo_loss, b, beta).loss.item()
    assert abs(loss) <= LOGPROB_ATOL, (
        f"per-token margin 2 = 1/(2 beta) at beta 0.25: expected loss 0, got {loss:.6f}"
    )


# --- SimPO ------------------------------------------------------------------------------------


def test_simpo_loss_on_a_fixed_batch(preference):
    """Checked first: each term of SimPO's loss, on a batch where each mistake shows."""
    result = check_result(simpo_call(preference.simpo_loss, SIMPO_BATCH), "simpo_loss")
    expected = simpo_call(package.simpo_loss, SIMPO_BATCH)
    diagnose(
        f"SimPO on the fixed batch, beta {SIMPO_BETA}, gamma {SIMPO_GAMMA}",
        result.loss.item(),
        expected.loss.item(),
        simpo_mistakes(SIMPO_BATCH),
    )
    check_rewards(result, expected, "beta * log pi / length, the average per token")


@pytest.mark.parametrize("seed", SEEDS)
def test_simpo_loss(preference, seed):
    b, beta = random_pairs(seed), 2 * random_beta(seed)
    gamma = float(torch.rand(1, generator=torch.Generator().manual_seed(seed + 50)))
    result = check_result(simpo_call(preference.simpo_loss, b, beta, gamma), "simpo_loss")
    expected = simpo_call(package.simpo_loss, b, beta, gamma)
    assert close(result.loss, expected.loss), (
        f"random batch {seed}, beta {beta:.3f}, gamma {gamma:.3f}: expected loss "
        f"{expected.loss.item():.6f}, got {result.loss.item():.6f} "
        "(test_simpo_loss_on_a_fixed_batch names the likely cause)"
    )
    check_rewards(result, expected, "beta * log pi / length")


def test_simpo_loss_does_not_underflow(preference):
    b = {
        "policy_chosen": tensor(-900.0),
        "policy_rejected": tensor(-1.0),
        "chosen_lengths": tensor(1.0),
        "rejected_lengths": tensor(1.0),
    }
    loss = simpo_call(preference.simpo_loss, {k: v.float() for k, v in b.items()}, 1.0, 0.5).loss
    assert torch.isfinite(loss), (
        "a very wrong pair gave an infinite loss: use F.logsigmoid, not log(sigmoid(...))"
    )
    assert loss.item() == pytest.approx(899.5, rel=LARGE_LOSS_RTOL)


# --- KTO --------------------------------------------------------------------------------------


def test_kto_loss_on_a_fixed_batch(preference):
    """Checked first: each term of KTO's loss, on a batch whose reference point z is 1.3."""
    result = check_result(kto_call(preference.kto_loss, KTO_BATCH), "kto_loss")
    expected = kto_call(package.kto_loss, KTO_BATCH)
    diagnose(
        f"KTO on the fixed batch, beta {KTO_BETA}, weights {KTO_WEIGHTS}, z = 1.3",
        result.loss.item(),
        expected.loss.item(),
        kto_mistakes(KTO_BATCH),
    )
    check_rewards(result, expected, "beta * (log pi - log pi_ref) of each kind, in batch order")


def test_kto_reference_point_is_clamped_at_zero(preference):
    """The policy is *less* likely than the reference on the mismatched completions: z is 0."""
    result = check_result(kto_call(preference.kto_loss, KTO_CLAMPED), "kto_loss")
    expected = kto_call(package.kto_loss, KTO_CLAMPED)
    diagnose(
        "KTO on the fixed batch whose mismatched completions' mean log-ratio is -2.0",
        result.loss.item(),
        expected.loss.item(),
        kto_mistakes(KTO_CLAMPED),
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_kto_loss(preference, seed):
    generator = torch.Generator().manual_seed(seed + 30)
    n = int(torch.randint(2, 10, (1,), generator=generator))
    logps = [-30 * torch.rand(n, generator=generator) for _ in range(4)]
    desirable = torch.arange(n) % 2 == 0
    desirable = desirable[torch.randperm(n, generator=generator)]
    beta, weights = random_beta(seed), tuple((torch.rand(2, generator=generator) + 0.5).tolist())
    arguments = (logps[0], logps[1], desirable, logps[2], logps[3], beta, *weights)
    result = check_result(preference.kto_loss(*arguments), "kto_loss")
    expected = package.kto_loss(*arguments)
    assert close(result.loss, expected.loss), (
        f"random batch {seed}: expected loss {expected.loss.item():.6f}, got "
        f"{result.loss.item():.6f} (test_kto_loss_on_a_fixed_batch names the likely cause)"
    )
    check_rewards(result, expected, "beta * (log pi - log pi_ref) of each kind")


def test_kto_weights_default_to_one(preference):
    keys = ("policy_logps", "reference_logps", "desirable", "kl_policy_logps", "kl_reference_logps")
    got = preference.kto_loss(*(KTO_BATCH[k] for k in keys), KTO_BETA).loss.item()
    expected = package.kto_loss(*(KTO_BATCH[k] for k in keys), KTO_BETA).loss.item()
    assert abs(got - expected) <= LOGPROB_ATOL, (
        f"without weights given, both are 1: expected loss {expected:.6f}, got {got:.6f}"
    )


# --- TRL's own numbers --------------------------------------------------------------------------

# One batch as TRL's trainers score it: 6 film pairs (film_preferences(6, 1, seed=2)), a policy
# that is tiny-gpt2 with noise of scale 0.05 added (dpo.perturbed_copy(seed=3)) against tiny-gpt2,
# beta 0.5, SimPO's gamma 0.3, KTO's weights 1 and its rows `preference.unpaired(pairs, 0)`; and
# the loss each trainer logged for it (`trainer.evaluate()`: DPOTrainer with loss_type="ipo",
# CPOTrainer with loss_type="simpo" and cpo_alpha=0, KTOTrainer). Written by
# `python tests/test_preference.py`; tests/test_preference.py checks that TRL still gives them.
TRL_BETA, TRL_GAMMA = 0.5, 0.3
TRL_TRAINERS = {
    "ipo_loss": "DPOTrainer(loss_type='ipo')",
    "simpo_loss": "CPOTrainer(loss_type='simpo', cpo_alpha=0)",
    "kto_loss": "KTOTrainer",
}
TRL_BATCHES = {
    "ipo_loss": {
        "policy_chosen": [
            -30.013593673706055,
            -25.50237464904785,
            -27.325687408447266,
            -31.400081634521484,
            -31.782760620117188,
            -31.27901840209961,
        ],
        "policy_rejected": [
            -28.08928680419922,
            -25.014991760253906,
            -29.109451293945312,
            -30.57404327392578,
            -32.36777114868164,
            -32.30317687988281,
        ],
        "reference_chosen": [
            -25.60840606689453,
            -24.072750091552734,
            -23.378610610961914,
            -23.7592830657959,
            -28.473575592041016,
            -25.03946304321289,
        ],
        "reference_rejected": [
            -26.558074951171875,
            -24.813018798828125,
            -24.714176177978516,
            -24.868310928344727,
            -29.166671752929688,
            -25.76987075805664,
        ],
        "chosen_lengths": [9.0, 7.0, 7.0, 6.0, 7.0, 9.0],
        "rejected_lengths": [9.0, 7.0, 7.0, 6.0, 7.0, 9.0],
        "trl_loss": 1.2856898307800293,
    },
    "simpo_loss": {
        "policy_chosen": [
            -26.557331085205078,
            -26.413257598876953,
            -26.56842803955078,
            -30.075008392333984,
            -29.736242294311523,
            -31.671171188354492,
        ],
        "policy_rejected": [
            -25.799327850341797,
            -24.89667510986328,
            -27.89810562133789,
            -29.274261474609375,
            -29.077314376831055,
            -32.19575500488281,
        ],
        "chosen_lengths": [9.0, 7.0, 7.0, 6.0, 7.0, 9.0],
        "rejected_lengths": [9.0, 7.0, 7.0, 6.0, 7.0, 9.0],
        "trl_loss": 0.8683807253837585,
    },
    "kto_loss": {
        "policy_logps": [
            -28.08928680419922,
            -32.36777114868164,
            -31.782760620117188,
            -29.109451293945312,
            -31.27901840209961,
            -25.50237464904785,
            -25.014991760253906,
            -30.57404327392578,
            -27.325687408447266,
            -30.013593673706055,
            -32.30317687988281,
            -31.400081634521484,
        ],
        "reference_logps": [
            -26.558074951171875,
            -29.166671752929688,
            -28.473575592041016,
            -24.714176177978516,
            -25.03946304321289,
            -24.072750091552734,
            -24.813018798828125,
            -24.868310928344727,
            -23.378610610961914,
            -25.60840606689453,
            -25.76987075805664,
            -23.7592830657959,
        ],
        "desirable": [False, False, True, False, True, True, False, False, True, True, False, True],
        "kl_policy_logps": [
            -29.583301544189453,
            -38.5211296081543,
            -32.36777114868164,
            -27.018362045288086,
            -31.51673126220703,
            -27.053205490112305,
            -25.50237464904785,
            -32.56914138793945,
            -25.767314910888672,
            -28.463699340820312,
            -29.33818817138672,
            -39.44263458251953,
        ],
        "kl_reference_logps": [
            -25.338388442993164,
            -30.6234130859375,
            -29.166671752929688,
            -25.3747501373291,
            -25.494176864624023,
            -23.435394287109375,
            -24.072750091552734,
            -28.531911849975586,
            -24.46887969970703,
            -23.946760177612305,
            -24.831905364990234,
            -30.55706787109375,
        ],
        "trl_loss": 0.5314199328422546,
    },
}


def trl_case(name: str):
    """The exercise's call, the batch's tensors and its mistakes, for TRL_BATCHES[name]."""
    batch = {k: torch.tensor(v) for k, v in TRL_BATCHES[name].items() if k != "trl_loss"}
    if name == "ipo_loss":
        return (lambda f: ipo_call(f, batch, TRL_BETA)), ipo_mistakes(batch, TRL_BETA)
    if name == "simpo_loss":
        call = lambda f: simpo_call(f, batch, TRL_BETA, TRL_GAMMA)  # noqa: E731
        return call, simpo_mistakes(batch, TRL_BETA, TRL_GAMMA)
    weights = (1.0, 1.0)
    return (lambda f: kto_call(f, batch, TRL_BETA, weights)), kto_mistakes(batch, TRL_BETA, weights)


@pytest.mark.parametrize("name", list(TRL_TRAINERS))
def test_the_loss_trl_logs(preference, name):
    """On a batch TRL's trainer scored, the loss it logged (float32, as TRL computes)."""
    call, mistakes = trl_case(name)
    result = check_result(call(getattr(preference, name)), name)
    diagnose(
        f"TRL's {TRL_TRAINERS[name]} logs this loss for its batch of 6 film pairs (beta "
        f"{TRL_BETA})",
        result.loss.item(),
        TRL_BATCHES[name]["trl_loss"],
        mistakes,
    )


# --- gradients --------------------------------------------------------------------------------


def gradients(loss_of: Callable, b: Batch, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """d loss / d each of `names` (zeros where the loss does not reach it)."""
    leaves = {
        k: v.clone().requires_grad_(k in names) for k, v in b.items() if v.is_floating_point()
    }
    result = loss_of({**b, **leaves})
    if not result.loss.requires_grad:
        pytest.fail("the loss lost its graph: the policy could not learn from it", pytrace=False)
    for side in ("chosen_rewards", "rejected_rewards"):
        assert not getattr(result, side).requires_grad, (
            f"{side} still carries the graph: detach the rewards (they are only logged)"
        )
    found = torch.autograd.grad(result.loss, [leaves[k] for k in names], allow_unused=True)
    return {k: torch.zeros_like(b[k]) if g is None else g for k, g in zip(names, found)}


@pytest.mark.parametrize(
    "loss, call, batch",
    [("ipo_loss", ipo_call, IPO_BATCH), ("simpo_loss", simpo_call, SIMPO_BATCH)],
    ids=["ipo", "simpo"],
)
def test_paired_losses_train_through_both_policy_logprobs(preference, loss, call, batch):
    """The loss pulls the chosen completion up and pushes the rejected one down: both policy
    log-probabilities get autograd's gradient of the package's loss."""
    names = ("policy_chosen", "policy_rejected")
    got = gradients(lambda b: call(getattr(preference, loss), b), batch, names)
    expected = gradients(lambda b: call(getattr(package, loss), b), batch, names)
    for name in names:
        if not got[name].abs().sum():
            pytest.fail(
                f"{loss} carries no gradient to {name}: it was detached or treated as a "
                "constant, yet the loss trains the policy through it",
                pytrace=False,
            )
        assert torch.allclose(got[name], expected[name], atol=LOGPROB_ATOL), (
            f"{loss}: d loss / d {name}: expected {expected[name].tolist()}, got "
            f"{got[name].tolist()}"
        )


def test_kto_trains_through_the_completions_not_through_z(preference):
    """z is a constant of the batch: no gradient reaches the mismatched completions."""
    names = ("policy_logps", "kl_policy_logps")
    got = gradients(lambda b: kto_call(preference.kto_loss, b), KTO_BATCH, names)
    expected = gradients(lambda b: kto_call(package.kto_loss, b), KTO_BATCH, names)
    if got["kl_policy_logps"].abs().sum():
        pytest.fail(
            "the gradient reaches kl_policy_logps through z: the reference point is a "
            "constant of the batch, detach it (KTO does not train the mismatched completions)",
            pytrace=False,
        )
    assert got["policy_logps"].abs().sum(), (
        "kto_loss carries no gradient to policy_logps: it was detached, yet the loss trains the "
        "policy through it"
    )
    assert torch.allclose(got["policy_logps"], expected["policy_logps"], atol=LOGPROB_ATOL), (
        f"d loss / d policy_logps: expected {expected['policy_logps'].tolist()}, got "
        f"{got['policy_logps'].tolist()}"
    )


# --- random batches ---------------------------------------------------------------------------


def random_pairs(seed: int) -> Batch:
    """float32 sequence log-probabilities of 1-8 pairs, lengths of 1-15 tokens."""
    generator = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 9, (1,), generator=generator))
    names = ("policy_chosen", "policy_rejected", "reference_chosen", "reference_rejected")
    b = {k: -30 * torch.rand(n, generator=generator) for k in names}
    for side in ("chosen_lengths", "rejected_lengths"):
        b[side] = torch.randint(1, 16, (n,), generator=generator).float()
    return b


def random_beta(seed: int) -> float:
    return 0.05 + float(torch.rand(1, generator=torch.Generator().manual_seed(seed + 90)))
