"""The DPO derivation, one step at a time, each step checked by sympy.

Direct Preference Optimization (Rafailov et al., 2023) turns "fit a reward model, then run RL
against it with a KL leash" into one classification loss on preference pairs. The argument has
four steps, and each one is a function here that takes the *claimed* expression and checks it:

1. the KL-regularized objective is maximized by `pi* = pi_ref exp(r / beta) / Z`;
2. so the reward can be read off the optimal policy: `r = beta log(pi*/pi_ref) + beta log Z`;
3. under Bradley-Terry, `P(y_w > y_l)` depends only on log-ratios: `Z` cancels;
4. the gradient of the resulting loss pushes `y_w` up and `y_l` down, weighted by
   `beta sigmoid(r_l - r_w)`, which is largest when the model ranks the loser above the winner.

A check tries to simplify `claimed - true` to zero symbolically. Where sympy's simplifier cannot
decide, it evaluates the difference at random points instead, and says which way it decided.
Passing a wrong expression makes the check fail: that is how the tests know a check can fail.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sympy as sp

NUMERIC_TOLERANCE = 1e-9  # float64 evaluation of expressions of size ~1: round-off is ~1e-15
RANDOM_POINTS = 6


@dataclass(frozen=True)
class Check:
    """The outcome of checking one derivation step.

    Attributes:
        step: the step's name.
        holds: whether the claimed expression is right.
        method: "symbolic" or "numeric": how it was decided.
        detail: what was found (e.g. the difference at a failing point).
    """

    step: str
    holds: bool
    method: str  # "symbolic" or "numeric"
    detail: str = ""


def sigmoid(x: sp.Expr) -> sp.Expr:
    """The logistic function `1 / (1 + exp(-x))`, as a sympy expression.

    Args:
        x: the argument.
    """
    return 1 / (1 + sp.exp(-x))


def vanishes(
    expr: sp.Expr, sample: Callable[[random.Random], dict], seed: int = 0
) -> tuple[bool, str, str]:
    """Is `expr` identically zero? Returns `(holds, method, detail)`.

    First symbolically (logs expanded, then simplified). If that does not reach 0, the
    expression is evaluated at random points drawn by `sample`; it holds only if every value
    is below `NUMERIC_TOLERANCE`.

    Args:
        expr: the expression to test, usually `claimed - true`.
        sample: draws one random point (symbol to value) from the generator it is given.
        seed: seeds the random points.

    Returns:
        `(holds, method, detail)`: whether it is zero, "symbolic" or "numeric", and why.
    """
    simplified = sp.simplify(sp.expand_log(sp.expand(expr), force=True))
    if simplified == 0:
        return True, "symbolic", "simplifies to 0"
    rng = random.Random(seed)
    for _ in range(RANDOM_POINTS):
        point = sample(rng)
        value = complex(sp.N(expr.subs(point), 30))
        if abs(value) > NUMERIC_TOLERANCE:
            shown = {str(k): round(float(v), 4) for k, v in point.items()}
            return False, "numeric", f"difference = {value.real:.6g} at {shown}"
    return True, "numeric", f"below {NUMERIC_TOLERANCE:g} at {RANDOM_POINTS} random points"


# --8<-- [start:objective]
def kl_objective(
    p: Sequence[sp.Expr], q: Sequence[sp.Expr], r: Sequence[sp.Expr], beta: sp.Expr
) -> sp.Expr:
    """`E_p[r] - beta KL(p || q)` on a discrete set of completions: what RLHF maximizes.

    Args:
        p: the policy's probability of each completion.
        q: the reference's probability of each completion.
        r: each completion's reward.
        beta: the weight of the KL penalty.
    """
    return sum(pi * ri for pi, ri in zip(p, r)) - beta * kl_divergence(p, q)


def kl_divergence(p: Sequence[sp.Expr], q: Sequence[sp.Expr]) -> sp.Expr:
    """`KL(p || q) = sum_i p_i log(p_i / q_i)`.

    Args:
        p: the first distribution's probabilities.
        q: the second distribution's probabilities, in the same order.
    """
    return sum(pi * sp.log(pi / qi) for pi, qi in zip(p, q))


def optimal_policy(q: Sequence[sp.Expr], r: Sequence[sp.Expr], beta: sp.Expr) -> list[sp.Expr]:
    """The claim of step 1: `pi*(y) = pi_ref(y) exp(r(y) / beta) / Z`.

    Args:
        q: the reference's probability of each completion.
        r: each completion's reward.
        beta: the weight of the KL penalty.
    """
    z = partition_function(q, r, beta)
    return [qi * sp.exp(ri / beta) / z for qi, ri in zip(q, r)]


def partition_function(q: Sequence[sp.Expr], r: Sequence[sp.Expr], beta: sp.Expr) -> sp.Expr:
    """`Z = sum_y pi_ref(y) exp(r(y) / beta)`, the normalizer of `pi*`.

    Args:
        q: the reference's probability of each completion.
        r: each completion's reward.
        beta: the weight of the KL penalty.
    """
    return sum(qi * sp.exp(ri / beta) for qi, ri in zip(q, r))


# --8<-- [end:objective]


def _distribution_symbols(
    n: int,
) -> tuple[list[sp.Expr], list[sp.Symbol], list[sp.Symbol], list[sp.Symbol], sp.Symbol]:
    """A policy `p` with `p_n = 1 - (p_1 + ... + p_{n-1})`, a reference `q`, rewards `r`, `beta`."""
    free = list(sp.symbols(f"p1:{n}", positive=True))
    p = free + [1 - sum(free)]
    q = list(sp.symbols(f"q1:{n + 1}", positive=True))
    r = list(sp.symbols(f"r1:{n + 1}", real=True))
    beta = sp.Symbol("beta", positive=True)
    return p, free, q, r, beta


# --8<-- [start:check_optimal_policy]
def check_optimal_policy(
    claimed: Callable[[list, list, sp.Symbol], list[sp.Expr]] = optimal_policy, n: int = 3
) -> Check:
    """Step 1: `claimed(q, r, beta)` maximizes `E_p[r] - beta KL(p || q)` over distributions `p`.

    The identity `E_p[r] - beta KL(p || q) = -beta KL(p || pi*) + beta log Z` holds for every
    distribution `p` on `n` outcomes. Since `KL >= 0` with equality only at `p = pi*`, and
    `beta log Z` does not depend on `p`, the objective is largest at `p = pi*`. The check also
    asks that `pi*` sums to one (a maximizer must be a distribution).

    Args:
        claimed: the claimed optimal policy, from `(q, r, beta)` to one probability per outcome.
        n: the number of outcomes (completions).
    """
    p, free, q, r, beta = _distribution_symbols(n)
    pi_star = claimed(q, r, beta)
    z = partition_function(q, r, beta)
    identity = kl_objective(p, q, r, beta) - (-beta * kl_divergence(p, pi_star) + beta * sp.log(z))

    def sample(rng: random.Random) -> dict:
        weights = [rng.uniform(0.1, 1.0) for _ in range(n)]
        point = {s: w / sum(weights) for s, w in zip(free, weights)}
        point.update({s: rng.uniform(0.1, 1.0) for s in q})
        point.update({s: rng.uniform(-2.0, 2.0) for s in r})
        return point | {beta: rng.uniform(0.1, 2.0)}

    holds, method, detail = vanishes(identity, sample)
    if holds:
        normalized, _, why = vanishes(sum(pi_star) - 1, sample)
        if not normalized:
            return Check(
                "optimal policy", False, "numeric", f"the claimed pi* does not sum to 1: {why}"
            )
    return Check("optimal policy", holds, method, detail)


# --8<-- [end:check_optimal_policy]


# --8<-- [start:check_reward]
def reward_from_policy(pi_star: sp.Expr, pi_ref: sp.Expr, beta: sp.Expr, z: sp.Expr) -> sp.Expr:
    """The claim of step 2: `r = beta log(pi* / pi_ref) + beta log Z`.

    Args:
        pi_star: the optimal policy's probability of a completion.
        pi_ref: the reference's probability of it.
        beta: the weight of the KL penalty.
        z: the partition function `Z`.
    """
    return beta * sp.log(pi_star / pi_ref) + beta * sp.log(z)


def check_reward_from_policy(
    claimed: Callable[[sp.Expr, sp.Expr, sp.Expr, sp.Expr], sp.Expr] = reward_from_policy,
) -> Check:
    """Step 2: put `pi* = pi_ref exp(r/beta) / Z` into `claimed(pi*, pi_ref, beta, Z)`;
    get `r` back.

    Taking logs of step 1 and solving for `r` expresses the (unknown) reward through the
    optimal policy. `Z` is still there; step 3 shows that it never matters.

    Args:
        claimed: the claimed reward, from `(pi*, pi_ref, beta, Z)`.
    """
    r = sp.Symbol("r", real=True)
    pi_ref, beta, z = sp.symbols("pi_ref beta Z", positive=True)
    pi_star = pi_ref * sp.exp(r / beta) / z
    difference = claimed(pi_star, pi_ref, beta, z) - r

    def sample(rng: random.Random) -> dict:
        return {
            r: rng.uniform(-3, 3),
            pi_ref: rng.uniform(0.01, 1),
            beta: rng.uniform(0.1, 2),
            z: rng.uniform(0.1, 5),
        }

    return Check("reward from policy", *vanishes(difference, sample))


# --8<-- [end:check_reward]


# --8<-- [start:check_bradley_terry]
def preference_probability(
    pi_w: sp.Expr, ref_w: sp.Expr, pi_l: sp.Expr, ref_l: sp.Expr, beta: sp.Expr
) -> sp.Expr:
    """The claim of step 3:
    `P(y_w > y_l) = sigmoid(beta log(pi_w/ref_w) - beta log(pi_l/ref_l))`.

    Args:
        pi_w: the policy's probability of the winner `y_w`.
        ref_w: the reference's probability of the winner.
        pi_l: the policy's probability of the loser `y_l`.
        ref_l: the reference's probability of the loser.
        beta: the weight of the KL penalty.
    """
    return sigmoid(beta * sp.log(pi_w / ref_w) - beta * sp.log(pi_l / ref_l))


def check_bradley_terry(
    claimed: Callable[
        [sp.Expr, sp.Expr, sp.Expr, sp.Expr, sp.Expr], sp.Expr
    ] = preference_probability,
) -> Check:
    """Step 3: Bradley-Terry with step 2's rewards equals `claimed(pi_w, ref_w, pi_l, ref_l, beta)`.

    Bradley-Terry says `P(y_w > y_l) = exp(r_w) / (exp(r_w) + exp(r_l)) = sigmoid(r_w - r_l)`.
    Both rewards carry the same `beta log Z(x)` (same prompt), so it cancels in the difference:
    the preference probability needs only the policy and the reference, never `Z`. The claimed
    expression is not given `Z`; if the true probability still depended on `Z`, it would fail.

    Args:
        claimed: the claimed preference probability, from `(pi_w, ref_w, pi_l, ref_l, beta)`.
    """
    pi_w, ref_w, pi_l, ref_l, beta, z = sp.symbols("pi_w ref_w pi_l ref_l beta Z", positive=True)
    r_w = reward_from_policy(pi_w, ref_w, beta, z)
    r_l = reward_from_policy(pi_l, ref_l, beta, z)
    bradley_terry = sp.exp(r_w) / (sp.exp(r_w) + sp.exp(r_l))
    difference = bradley_terry - claimed(pi_w, ref_w, pi_l, ref_l, beta)

    def sample(rng: random.Random) -> dict:
        values = {s: rng.uniform(0.01, 1.0) for s in (pi_w, ref_w, pi_l, ref_l)}
        return values | {beta: rng.uniform(0.1, 2.0), z: rng.uniform(0.1, 5.0)}

    return Check("Bradley-Terry, Z cancels", *vanishes(difference, sample))


# --8<-- [end:check_bradley_terry]


# --8<-- [start:dpo_gradient]
def dpo_gradient(
    r_w: sp.Expr, r_l: sp.Expr, beta: sp.Expr, grad_w: sp.Expr, grad_l: sp.Expr
) -> sp.Expr:
    """The claim of step 4: `-beta sigmoid(r_l - r_w) (grad log pi(y_w) - grad log pi(y_l))`.

    Args:
        r_w: the winner's implicit reward.
        r_l: the loser's implicit reward.
        beta: the weight of the KL penalty.
        grad_w: the gradient of `log pi(y_w)`.
        grad_l: the gradient of `log pi(y_l)`.
    """
    return -gradient_weight(r_w, r_l, beta) * (grad_w - grad_l)


# --8<-- [end:dpo_gradient]


# --8<-- [start:gradient_weight]
def gradient_weight(r_w: sp.Expr, r_l: sp.Expr, beta: sp.Expr) -> sp.Expr:
    """How hard one pair pushes: `beta sigmoid(r_l - r_w)`, with `r = beta log(pi / pi_ref)`.

    Args:
        r_w: the winner's implicit reward.
        r_l: the loser's implicit reward.
        beta: the weight of the KL penalty.
    """
    return beta * sigmoid(r_l - r_w)


# --8<-- [end:gradient_weight]


# --8<-- [start:_loss_and_gradient]
def _loss_and_gradient() -> tuple[dict, sp.Expr]:
    """The DPO loss of one pair, as a function of a parameter `theta`, and its derivative.

    `log pi(y_w)` and `log pi(y_l)` are arbitrary functions of `theta`; the reference does not
    depend on `theta`.
    """
    theta = sp.Symbol("theta", real=True)
    beta, ref_w, ref_l = sp.symbols("beta ref_w ref_l", positive=True)
    logp_w, logp_l = sp.Function("logpi_w")(theta), sp.Function("logpi_l")(theta)
    r_w, r_l = beta * (logp_w - sp.log(ref_w)), beta * (logp_l - sp.log(ref_l))
    loss = -sp.log(sigmoid(r_w - r_l))
    names = {
        "theta": theta,
        "beta": beta,
        "ref_w": ref_w,
        "ref_l": ref_l,
        "logp_w": logp_w,
        "logp_l": logp_l,
        "r_w": r_w,
        "r_l": r_l,
    }
    return names, sp.diff(loss, theta)


# --8<-- [end:_loss_and_gradient]


# --8<-- [start:_gradient_sample]
def _gradient_sample(names: dict) -> Callable[[random.Random], dict]:
    """Random values for the loss's symbols, the functions and their derivatives at `theta`."""

    def sample(rng: random.Random) -> dict:
        return {
            sp.Derivative(names["logp_w"], names["theta"]): rng.uniform(-2, 2),
            sp.Derivative(names["logp_l"], names["theta"]): rng.uniform(-2, 2),
            names["logp_w"]: rng.uniform(-8, -0.1),
            names["logp_l"]: rng.uniform(-8, -0.1),
            names["ref_w"]: rng.uniform(0.01, 1),
            names["ref_l"]: rng.uniform(0.01, 1),
            names["beta"]: rng.uniform(0.05, 2),
        }

    return sample


# --8<-- [end:_gradient_sample]


# --8<-- [start:check_dpo_gradient]
def check_dpo_gradient(
    claimed: Callable[[sp.Expr, sp.Expr, sp.Expr, sp.Expr, sp.Expr], sp.Expr] = dpo_gradient,
) -> Check:
    """Step 4a: sympy differentiates `-log sigmoid(r_w - r_l)`; it must equal `claimed(...)`.

    The true gradient raises `log pi(y_w)`, lowers `log pi(y_l)`, and scales both by one
    weight per pair.

    Args:
        claimed: the claimed gradient; `claimed(r_w, r_l, beta, grad_w, grad_l)` gets the two
            implicit rewards and the gradients of the two log-probabilities.
    """
    names, gradient = _loss_and_gradient()
    theta = names["theta"]
    grad_w, grad_l = sp.diff(names["logp_w"], theta), sp.diff(names["logp_l"], theta)
    difference = gradient - claimed(names["r_w"], names["r_l"], names["beta"], grad_w, grad_l)
    return Check("DPO gradient", *vanishes(difference, _gradient_sample(names)))


# --8<-- [end:check_dpo_gradient]


# --8<-- [start:check_gradient_weight]
def check_gradient_weight(
    weight: Callable[[sp.Expr, sp.Expr, sp.Expr], sp.Expr] = gradient_weight,
) -> Check:
    """Step 4b: `weight(r_w, r_l, beta)` is the pair's weight, and largest when the loser leads.

    Three things must hold: the gradient equals `-weight (grad_w - grad_l)`; the weight grows
    with `r_l - r_w` (its derivative in `r_l` is positive); and it tends to `beta` when the model
    ranks the loser far above the winner and to 0 when it already ranks the winner far above.
    A pair the model gets wrong pushes hardest; one it gets right by a wide margin, hardly at all.

    Args:
        weight: the claimed weight, from `(r_w, r_l, beta)`.
    """
    names, gradient = _loss_and_gradient()
    theta, beta = names["theta"], names["beta"]
    factor = sp.diff(names["logp_w"], theta) - sp.diff(names["logp_l"], theta)
    holds, method, detail = vanishes(
        gradient + weight(names["r_w"], names["r_l"], beta) * factor, _gradient_sample(names)
    )
    if not holds:
        return Check("gradient weight", False, method, f"not the gradient's weight: {detail}")
    a, b = sp.symbols("a b", real=True)
    slope = sp.diff(weight(a, b, beta), b)
    rng = random.Random(1)
    for _ in range(RANDOM_POINTS):
        point = {a: rng.uniform(-5, 5), b: rng.uniform(-5, 5), beta: rng.uniform(0.05, 2)}
        if float(slope.subs(point)) <= 0:
            return Check(
                "gradient weight", False, "numeric", f"does not grow with r_l - r_w at {point}"
            )
    d = sp.Symbol("d", real=True)  # d = r_l - r_w
    loser_leads = sp.limit(weight(0, d, beta), d, sp.oo)
    winner_leads = sp.limit(weight(0, d, beta), d, -sp.oo)
    if sp.simplify(loser_leads - beta) != 0 or winner_leads != 0:
        return Check(
            "gradient weight",
            False,
            "symbolic",
            f"limits are {loser_leads} (loser far ahead) and {winner_leads} (winner far ahead)",
        )
    return Check(
        "gradient weight",
        True,
        method,
        f"{detail}; grows with r_l - r_w; -> beta when the loser leads, -> 0 when the winner does",
    )


# --8<-- [end:check_gradient_weight]


def all_checks() -> list[Check]:
    """Every step of the derivation, checked with the correct expressions."""
    return [
        check_optimal_policy(),
        check_reward_from_policy(),
        check_bradley_terry(),
        check_dpo_gradient(),
        check_gradient_weight(),
    ]


def checks_table() -> str:
    """The checks as a markdown table (step, holds, how it was decided)."""
    rows = ["| step | holds | decided | detail |", "|---|---|---|---|"]
    rows += [
        f"| {c.step} | {'yes' if c.holds else 'NO'} | {c.method} | {c.detail} |"
        for c in all_checks()
    ]
    return "\n".join(rows)
