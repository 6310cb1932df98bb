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


# ---- DPO's relatives (peft_course.preference_derivations) ------------------------------------

from peft_course import preference_derivations as pd  # noqa: E402


def test_every_relative_checks():
    checks = pd.all_checks()
    assert {c.step for c in checks} >= {f"{name} gradient" for name in pd.MARGIN_LOSSES}
    for check in checks:
        assert check.holds, f"{check.step}: {check.detail}"
    assert "| IPO: minimum at 1/(2 beta) | yes |" in pd.checks_table()


@pytest.mark.parametrize(
    "name, claimed",
    [
        ("DPO", lambda h, b: -b * pd.sigmoid(b * h)),  # the weight of the wrong side
        ("IPO", lambda h, b: 2 * h - 1 / (2 * b)),  # the target's factor 2 lost
        ("hinge", lambda h, b: sp.Piecewise((-b, h < 1), (0, True))),  # closes at h = 1
        ("robust", lambda h, b, e: -b * sp.Integer(1) * pd.sigmoid(-b * h)),  # plain DPO's
        ("cDPO", lambda h, b, e: -b * ((1 - e) * pd.sigmoid(-b * h) + e * pd.sigmoid(b * h))),
        ("SimPO", lambda a, b, g: -b * pd.sigmoid(-b * a)),  # the target margin dropped
        ("ORPO", lambda o, lam: -pd.sigmoid(-o)),  # lambda dropped
        ("KTO", lambda h, b, z: -b / 2 * pd.sigmoid(b * h) * (1 - pd.sigmoid(b * h))),  # z lost
        ("APO-zero", lambda h, b: -b * pd.sigmoid(-b * h)),  # DPO's
    ],
)
def test_wrong_gradient_of_a_relative_fails(name, claimed):
    assert pd.check_gradient(name).holds
    check = pd.check_gradient(name, claimed)
    assert not check.holds, f"{name}: a wrong gradient passed ({check.detail})"


def test_wrong_properties_fail():
    assert not pd.check_dpo_never_stops(lambda h, b: -b * pd.sigmoid(-b * h) + b / 2).holds
    assert not pd.check_ipo_minimum(lambda b: 1 / b).holds
    assert not pd.check_ipo_minimum(lambda b: 1 / (2 * b) + 0 * b - 0.5).holds
    assert not pd.check_hinge_stops(lambda b: 2 / b).holds
    assert not pd.check_hinge_stops(lambda b: sp.Integer(1)).holds
    cdpo_as_robust = pd.cdpo_margin_loss  # adding the flipped term is conservative, not unbiased
    assert not pd.check_robust_unbiased(cdpo_as_robust).holds
    assert not pd.check_robust_never_stops(lambda b, e: 0 * b).holds
    assert not pd.check_cdpo_minimum(lambda b, e: sp.log(e / (1 - e)) / b).holds
    assert not pd.check_simpo_shift(lambda b, g: g).holds
    assert not pd.check_orpo_weight(lambda o, lam, p: lam * pd.sigmoid(-o)).holds  # 1/(1-p) lost
    assert not pd.check_kto_saturates(lambda z: 0 * z).holds
    assert not pd.check_apo_zero_anchored(
        lambda rw, rl, b: 1 - pd.sigmoid(b * (rw - rl))  # a function of the margin alone
    ).holds


def test_margin_figure(tmp_path):
    path = pd.plot_margin_losses(tmp_path / "margins.png")
    assert path.stat().st_size > 10_000
    labels = pd.figure_labels(pd.FIGURE_VALUES)
    assert "= 1" in labels["IPO"] and "= 2" in labels["hinge"]
