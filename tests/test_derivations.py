"""Each DPO derivation step holds for the true expression and fails for a wrong one."""

from __future__ import annotations

import pytest
import sympy as sp

from peft_course.derivations import (
    all_checks,
    check_bradley_terry,
    check_dpo_gradient,
    check_gradient_weight,
    check_optimal_policy,
    check_reward_from_policy,
    checks_table,
    optimal_policy,
    partition_function,
    sigmoid,
)


def test_every_step_holds():
    checks = all_checks()
    assert [c.step for c in checks] == [
        "optimal policy",
        "reward from policy",
        "Bradley-Terry, Z cancels",
        "DPO gradient",
        "gradient weight",
    ]
    for check in checks:
        assert check.holds, f"{check.step}: {check.detail}"
    assert "| optimal policy | yes |" in checks_table()


@pytest.mark.parametrize("n", [2, 4])
def test_optimal_policy_on_other_sizes(n):
    assert check_optimal_policy(n=n).holds


WRONG_POLICIES = {
    "beta multiplies instead of divides": lambda q, r, b: [
        qi * sp.exp(ri * b) / sum(qj * sp.exp(rj * b) for qj, rj in zip(q, r))
        for qi, ri in zip(q, r)
    ],
    "not normalized": lambda q, r, b: [qi * sp.exp(ri / b) for qi, ri in zip(q, r)],
    "reference left out": lambda q, r, b: [
        sp.exp(ri / b) / sum(sp.exp(rj / b) for rj in r) for ri in r
    ],
    "the reference itself": lambda q, r, b: list(q),
    "normalized by the wrong Z": lambda q, r, b: [
        qi * sp.exp(ri / b) / partition_function(q, r, 2 * b) for qi, ri in zip(q, r)
    ],
}


@pytest.mark.parametrize("name", WRONG_POLICIES)
def test_wrong_optimal_policy_fails(name):
    assert check_optimal_policy(optimal_policy).holds
    check = check_optimal_policy(WRONG_POLICIES[name])
    assert not check.holds, f"'{name}' passed: {check.detail}"


@pytest.mark.parametrize(
    "claimed",
    [
        lambda ps, pr, b, z: b * sp.log(ps / pr),  # log Z dropped
        lambda ps, pr, b, z: sp.log(ps / pr) + sp.log(z),  # beta dropped
        lambda ps, pr, b, z: b * sp.log(pr / ps) + b * sp.log(z),  # ratio upside down
        lambda ps, pr, b, z: b * sp.log(ps / pr) - b * sp.log(z),  # wrong sign on log Z
    ],
    ids=["log Z dropped", "beta dropped", "ratio upside down", "sign of log Z"],
)
def test_wrong_reward_fails(claimed):
    assert not check_reward_from_policy(claimed).holds


@pytest.mark.parametrize(
    "claimed",
    [
        lambda pw, rw, pl, rl, b: sigmoid(sp.log(pw / rw) - sp.log(pl / rl)),  # beta dropped
        lambda pw, rw, pl, rl, b: sigmoid(b * sp.log(pw) - b * sp.log(pl)),  # reference dropped
        lambda pw, rw, pl, rl, b: sigmoid(
            b * sp.log(pl / rl) - b * sp.log(pw / rw)
        ),  # winner and loser swapped
        lambda pw, rw, pl, rl, b: pw / (pw + pl),  # raw likelihoods
    ],
    ids=["beta dropped", "reference dropped", "winner and loser swapped", "raw likelihoods"],
)
def test_wrong_preference_probability_fails(claimed):
    assert not check_bradley_terry(claimed).holds


@pytest.mark.parametrize(
    "claimed",
    [
        lambda rw, rl, b, gw, gl: (
            -b * sigmoid(rw - rl) * (gw - gl)
        ),  # weight of the wrong sign of margin
        lambda rw, rl, b, gw, gl: b * sigmoid(rl - rw) * (gw - gl),  # ascent instead of descent
        lambda rw, rl, b, gw, gl: -sigmoid(rl - rw) * (gw - gl),  # beta dropped
        lambda rw, rl, b, gw, gl: -b * sigmoid(rl - rw) * gw,  # loser's gradient dropped
    ],
    ids=["weight reversed", "ascent", "beta dropped", "loser dropped"],
)
def test_wrong_gradient_fails(claimed):
    assert not check_dpo_gradient(claimed).holds


@pytest.mark.parametrize(
    "weight",
    [
        lambda rw, rl, b: b * sigmoid(rw - rl),  # largest when the winner already leads: wrong
        lambda rw, rl, b: b / 2,  # a constant weight (what a plain likelihood loss does)
        lambda rw, rl, b: sigmoid(rl - rw),  # beta dropped
    ],
    ids=["winner leads", "constant", "beta dropped"],
)
def test_wrong_weight_fails(weight):
    assert not check_gradient_weight(weight).holds
