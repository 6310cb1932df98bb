"""DPO's relatives as functions of the margin, each property checked by sympy.

`peft_course.derivations` derives DPO's loss. Its relatives keep DPO's ingredients - a log-ratio
`r = log pi(y) - log pi_ref(y)` per completion and the *margin* `h = r_w - r_l` of a pair - and
change what the loss does with them. Written as a function of the margin, each loss is a curve,
and what it does to training is read off its derivative:

- DPO, `-log sigmoid(beta h)`: the gradient `-beta sigmoid(-beta h)` is never 0; it vanishes only
  as `h -> infinity`, so DPO keeps separating pairs it already gets right;
- IPO, `(h - 1/(2 beta))^2`: a minimum at `h = 1/(2 beta)`; beyond it the gradient pulls back;
- hinge (SLiC), `max(0, 1 - beta h)`: gradient `-beta` below `h = 1/beta`, exactly 0 above;
- robust DPO: its expectation over labels flipped with probability `eps` is DPO's loss on the
  true labels; its gradient tends to `-beta eps / (1 - 2 eps)`, never 0;
- cDPO, DPO with smoothed labels: a minimum at `h = log((1 - eps)/eps) / beta`;
- SimPO, `-log sigmoid(beta a - gamma)` of the per-token margin `a` (no reference): DPO's curve
  moved right by `gamma / beta`;
- ORPO: `-lambda log sigmoid(o)` of the log-odds margin `o`, DPO's curve with `beta = 1`; its
  weight on `log p_w` is `lambda sigmoid(-o) / (1 - p_w)`, and the SFT term never stops;
- KTO, `1 - sigmoid(beta (r - z))` per completion: saturates both ways, steepest at `r = z`;
- APO-zero: KTO's two losses at `z = 0`; unlike DPO it is not a function of the margin alone.

Every check is made the way `peft_course.derivations` makes them (`derivations.vanishes`: sympy
simplifies `claimed - true` to 0, or evaluates it at random points) and takes the claimed
expression as an argument with the right one as its default, so a test can hand it a wrong one
and see it fail. The figure (`plot_margin_losses`) draws every loss and its gradient.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import sympy as sp

from peft_course.derivations import RANDOM_POINTS, Check, sigmoid, vanishes
from peft_course.plots import plt

H = sp.Symbol("h", real=True)  # a margin: of log-ratios, of per-token log-probs or of log-odds
BETA = sp.Symbol("beta", positive=True)
EPS = sp.Symbol("epsilon", positive=True)  # a label-flip probability, below 1/2
GAMMA = sp.Symbol("gamma", positive=True)  # SimPO's target margin
LAMBDA = sp.Symbol("lambda", positive=True)  # ORPO's weight of the odds-ratio term
Z = sp.Symbol("z", real=True)  # KTO's reference point


# ----------------------------------------------------------------------------------------------
# The losses, as functions of the margin
# ----------------------------------------------------------------------------------------------


# --8<-- [start:margin_losses]
def dpo_margin_loss(h: sp.Expr, beta: sp.Expr) -> sp.Expr:
    """DPO: `-log sigmoid(beta h)`."""
    return -sp.log(sigmoid(beta * h))


def ipo_margin_loss(h: sp.Expr, beta: sp.Expr) -> sp.Expr:
    """IPO: `(h - 1/(2 beta))^2` (TRL's `h` is the margin of per-token log-ratios)."""
    return (h - 1 / (2 * beta)) ** 2


def hinge_margin_loss(h: sp.Expr, beta: sp.Expr) -> sp.Expr:
    """Hinge (SLiC): `max(0, 1 - beta h)`."""
    return sp.Max(0, 1 - beta * h)


def robust_margin_loss(h: sp.Expr, beta: sp.Expr, eps: sp.Expr) -> sp.Expr:
    """Robust DPO: `((1 - eps) l(h) - eps l(-h)) / (1 - 2 eps)`, `l` DPO's loss."""
    return ((1 - eps) * dpo_margin_loss(h, beta) - eps * dpo_margin_loss(-h, beta)) / (1 - 2 * eps)


def cdpo_margin_loss(h: sp.Expr, beta: sp.Expr, eps: sp.Expr) -> sp.Expr:
    """Conservative DPO: `(1 - eps) l(h) + eps l(-h)`."""
    return (1 - eps) * dpo_margin_loss(h, beta) + eps * dpo_margin_loss(-h, beta)


def simpo_margin_loss(a: sp.Expr, beta: sp.Expr, gamma: sp.Expr) -> sp.Expr:
    """SimPO: `-log sigmoid(beta a - gamma)`, `a` the margin of per-token log-probabilities."""
    return -sp.log(sigmoid(beta * a - gamma))


def orpo_margin_loss(o: sp.Expr, lam: sp.Expr) -> sp.Expr:
    """ORPO's odds-ratio term: `-lambda log sigmoid(o)`, `o` the margin of log-odds.

    The SFT term beside it does not depend on the margin.
    """
    return -lam * sp.log(sigmoid(o))


def kto_desirable_loss(r: sp.Expr, beta: sp.Expr, z: sp.Expr) -> sp.Expr:
    """KTO, a desirable completion with log-ratio `r`: `1 - sigmoid(beta (r - z))`."""
    return 1 - sigmoid(beta * (r - z))


def kto_undesirable_loss(r: sp.Expr, beta: sp.Expr, z: sp.Expr) -> sp.Expr:
    """KTO, an undesirable completion with log-ratio `r`: `1 - sigmoid(beta (z - r))`."""
    return 1 - sigmoid(beta * (z - r))


def apo_zero_pair_loss(r_w: sp.Expr, r_l: sp.Expr, beta: sp.Expr) -> sp.Expr:
    """APO-zero: `1 - sigmoid(beta r_w) + sigmoid(beta r_l)`."""
    return 1 - sigmoid(beta * r_w) + sigmoid(beta * r_l)


def kto_margin_loss(h: sp.Expr, beta: sp.Expr, z: sp.Expr) -> sp.Expr:
    """KTO on a pair split evenly about 0 (`r_w = h/2`, `r_l = -h/2`): its two losses."""
    return kto_desirable_loss(h / 2, beta, z) + kto_undesirable_loss(-h / 2, beta, z)


def apo_zero_margin_loss(h: sp.Expr, beta: sp.Expr) -> sp.Expr:
    """APO-zero on a pair split evenly about 0 (`r_w = h/2`, `r_l = -h/2`)."""
    return apo_zero_pair_loss(h / 2, -h / 2, beta)


# --8<-- [end:margin_losses]


# --8<-- [start:margin_gradients]
def dpo_margin_gradient(h: sp.Expr, beta: sp.Expr) -> sp.Expr:
    """`d/dh` of DPO's loss: `-beta sigmoid(-beta h)`."""
    return -beta * sigmoid(-beta * h)


def ipo_margin_gradient(h: sp.Expr, beta: sp.Expr) -> sp.Expr:
    """`d/dh` of IPO's loss: `2 h - 1/beta`."""
    return 2 * h - 1 / beta


def hinge_margin_gradient(h: sp.Expr, beta: sp.Expr) -> sp.Expr:
    """`d/dh` of the hinge loss: `-beta` below `h = 1/beta`, 0 above."""
    return sp.Piecewise((-beta, beta * h < 1), (0, True))


def robust_margin_gradient(h: sp.Expr, beta: sp.Expr, eps: sp.Expr) -> sp.Expr:
    """`d/dh` of robust DPO.

    `-beta ((1 - eps) sigmoid(-beta h) + eps sigmoid(beta h)) / (1 - 2 eps)`.
    """
    return -beta * ((1 - eps) * sigmoid(-beta * h) + eps * sigmoid(beta * h)) / (1 - 2 * eps)


def cdpo_margin_gradient(h: sp.Expr, beta: sp.Expr, eps: sp.Expr) -> sp.Expr:
    """`d/dh` of cDPO: `-beta ((1 - eps) sigmoid(-beta h) - eps sigmoid(beta h))`."""
    return -beta * ((1 - eps) * sigmoid(-beta * h) - eps * sigmoid(beta * h))


def simpo_margin_gradient(a: sp.Expr, beta: sp.Expr, gamma: sp.Expr) -> sp.Expr:
    """`d/da` of SimPO's loss: `-beta sigmoid(gamma - beta a)`."""
    return -beta * sigmoid(gamma - beta * a)


def orpo_margin_gradient(o: sp.Expr, lam: sp.Expr) -> sp.Expr:
    """`d/do` of ORPO's odds-ratio term: `-lambda sigmoid(-o)`."""
    return -lam * sigmoid(-o)


def kto_desirable_gradient(r: sp.Expr, beta: sp.Expr, z: sp.Expr) -> sp.Expr:
    """`d/dr` of KTO's desirable loss: `-beta s (1 - s)`, `s = sigmoid(beta (r - z))`."""
    s = sigmoid(beta * (r - z))
    return -beta * s * (1 - s)


def apo_zero_margin_gradient(h: sp.Expr, beta: sp.Expr) -> sp.Expr:
    """`d/dh` of APO-zero on an evenly split pair: `-beta s (1 - s)`, `s = sigmoid(beta h / 2)`."""
    s = sigmoid(beta * h / 2)
    return -beta * s * (1 - s)


def kto_margin_gradient(h: sp.Expr, beta: sp.Expr, z: sp.Expr) -> sp.Expr:
    """`d/dh` of KTO on an evenly split pair: half of each completion's gradient, added."""
    s_w, s_l = sigmoid(beta * (h / 2 - z)), sigmoid(beta * (z + h / 2))
    return -beta / 2 * (s_w * (1 - s_w) + s_l * (1 - s_l))


# --8<-- [end:margin_gradients]


def _sample(rng: random.Random, u: float | None = None) -> dict:
    """A random point for every symbol of this module (`epsilon` below 1/2).

    The margin is drawn in units of `1/beta` (`h = u / beta`, `u` in [-4, 4], or `u` as given),
    the scale on which every loss here changes.
    """
    beta = rng.uniform(0.05, 2)
    return {
        H: (rng.uniform(-4, 4) if u is None else u) / beta,
        BETA: beta,
        EPS: rng.uniform(0.01, 0.45),
        GAMMA: rng.uniform(0.1, 2),
        LAMBDA: rng.uniform(0.05, 2),
        Z: rng.uniform(-2, 2),
    }


def _sample_across_kinks() -> Callable[[random.Random], dict]:
    """`_sample`, whose first two points sit just below and just above `beta h = 1`.

    Random points alone can miss the narrow interval where a piecewise claim is wrong (a hinge
    that closes at `h = 1` instead of `1/beta`); points on both sides of the true kink cannot.
    """
    kinks = iter((0.99, 1.01))

    def sample(rng: random.Random) -> dict:
        return _sample(rng, next(kinks, None))

    return sample


# name -> (loss of the margin, its claimed gradient, the loss's parameters)
MARGIN_LOSSES: dict[str, tuple[Callable[..., sp.Expr], Callable[..., sp.Expr], tuple]] = {
    "DPO": (dpo_margin_loss, dpo_margin_gradient, (BETA,)),
    "IPO": (ipo_margin_loss, ipo_margin_gradient, (BETA,)),
    "hinge": (hinge_margin_loss, hinge_margin_gradient, (BETA,)),
    "robust": (robust_margin_loss, robust_margin_gradient, (BETA, EPS)),
    "cDPO": (cdpo_margin_loss, cdpo_margin_gradient, (BETA, EPS)),
    "SimPO": (simpo_margin_loss, simpo_margin_gradient, (BETA, GAMMA)),
    "ORPO": (orpo_margin_loss, orpo_margin_gradient, (LAMBDA,)),
    "KTO": (kto_margin_loss, kto_margin_gradient, (BETA, Z)),
    "APO-zero": (apo_zero_margin_loss, apo_zero_margin_gradient, (BETA,)),
}


# ----------------------------------------------------------------------------------------------
# The checks
# ----------------------------------------------------------------------------------------------


# --8<-- [start:check_gradient]
def check_gradient(name: str, claimed: Callable[..., sp.Expr] | None = None) -> Check:
    """sympy differentiates loss `name` with respect to the margin; it must equal `claimed`.

    Args:
        name: a key of `MARGIN_LOSSES` (`"IPO"`, `"hinge"`, ...).
        claimed: the claimed derivative, a function of `(h, *parameters)` like the loss; None
            uses the module's own (`ipo_margin_gradient`, ...).
    """
    loss, gradient, parameters = MARGIN_LOSSES[name]
    claimed = claimed or gradient
    difference = sp.diff(loss(H, *parameters), H) - claimed(H, *parameters)
    return Check(f"{name} gradient", *vanishes(difference, _sample_across_kinks()))


# --8<-- [end:check_gradient]


def _failed(step: str, detail: str) -> Check:
    return Check(step, False, "symbolic", detail)


# --8<-- [start:check_dpo_never_stops]
def check_dpo_never_stops(gradient: Callable = dpo_margin_gradient) -> Check:
    """DPO's push `gradient(h, beta)` is never 0 at a finite margin, and tends to 0 at infinity.

    Also: at `h -> -infinity` (the loser far ahead) it tends to `-beta`, the strongest push.

    Args:
        gradient: the claimed derivative of DPO's loss.
    """
    step = "DPO: push vanishes only at infinity"
    g = gradient(H, BETA)
    holds, method, detail = vanishes(g - dpo_margin_gradient(H, BETA), _sample)
    if not holds:
        return Check(step, False, method, f"not DPO's gradient: {detail}")
    roots = sp.solve(sp.Eq(g, 0), H)
    if roots:
        return _failed(step, f"the gradient is 0 at h = {roots}")
    ahead, behind = sp.limit(g, H, sp.oo), sp.limit(g, H, -sp.oo)
    if ahead != 0 or sp.simplify(behind + BETA) != 0:
        return _failed(step, f"limits {ahead} at +inf, {behind} at -inf")
    return Check(step, True, "symbolic", "no finite root; -> 0 as h -> inf, -> -beta as h -> -inf")


# --8<-- [end:check_dpo_never_stops]


def _stationary(step: str, loss: sp.Expr, claimed: sp.Expr) -> Check:
    """`loss` (of `H`) has exactly one stationary point, at `claimed`, and it is a minimum."""
    slope = sp.diff(loss, H)
    roots = sp.solve(sp.Eq(slope, 0), H)
    if len(roots) != 1:
        return _failed(step, f"stationary points {roots}, not one")
    holds, method, detail = vanishes(roots[0] - claimed, _sample)
    if not holds:
        return Check(step, False, method, f"the stationary point is {roots[0]}: {detail}")
    curvature = sp.simplify(sp.diff(loss, H, 2).subs(H, roots[0]))
    rng = random.Random(2)
    for _ in range(RANDOM_POINTS):
        point = _sample(rng)
        if float(curvature.subs(point)) <= 0:
            return _failed(step, f"not a minimum: second derivative {curvature}")
    return Check(step, True, "symbolic", f"one stationary point, h = {roots[0]}; a minimum")


# --8<-- [start:check_ipo_minimum]
def check_ipo_minimum(minimum: Callable[[sp.Expr], sp.Expr] = lambda beta: 1 / (2 * beta)) -> Check:
    """IPO's loss has one stationary point, a minimum, at `minimum(beta)` (`1 / (2 beta)`).

    Beyond it the gradient is positive: a pair separated by more than the target is pulled back.

    Args:
        minimum: the claimed minimiser, from `beta`.
    """
    step = "IPO: minimum at 1/(2 beta)"
    found = _stationary(step, ipo_margin_loss(H, BETA), minimum(BETA))
    if not found.holds:
        return found
    beyond = ipo_margin_gradient(minimum(BETA) + 1, BETA)
    if sp.simplify(beyond) <= 0:
        return _failed(step, f"the gradient beyond the minimum is {beyond}, not positive")
    return Check(step, True, found.method, f"{found.detail}; gradient +2 one unit beyond")


# --8<-- [end:check_ipo_minimum]


# --8<-- [start:check_hinge_stops]
def check_hinge_stops(stop: Callable[[sp.Expr], sp.Expr] = lambda beta: 1 / beta) -> Check:
    """The hinge loss and its gradient are exactly 0 from `h = stop(beta)` on; below, `-beta`.

    Args:
        stop: the claimed margin at which the hinge closes, from `beta`.
    """
    step = "hinge: stops at h = 1/beta"
    t = sp.Symbol("t", positive=True)
    loss, slope = hinge_margin_loss(H, BETA), sp.diff(hinge_margin_loss(H, BETA), H)
    above, below = stop(BETA) + t / BETA, stop(BETA) - t / BETA
    values = {
        "loss above": sp.simplify(loss.subs(H, above)),
        "gradient above": sp.simplify(slope.subs(H, above)),
        "gradient below + beta": sp.simplify(slope.subs(H, below) + BETA),
    }
    wrong = {k: v for k, v in values.items() if v != 0}
    if wrong:
        return _failed(step, f"not 0: {wrong}")
    return Check(step, True, "symbolic", "loss and gradient 0 above 1/beta, gradient -beta below")


# --8<-- [end:check_hinge_stops]


# --8<-- [start:check_robust]
def check_robust_unbiased(loss: Callable = robust_margin_loss) -> Check:
    """With labels flipped with probability `eps`, `loss`'s expectation is DPO's true loss.

    A pair seen the right way round (probability `1 - eps`) scores `loss(h)`, a flipped one
    `loss(-h)`; their mixture must be `-log sigmoid(beta h)` for every margin.

    Args:
        loss: the claimed robust loss, from `(h, beta, eps)`.
    """
    expected = (1 - EPS) * loss(H, BETA, EPS) + EPS * loss(-H, BETA, EPS)
    difference = expected - dpo_margin_loss(H, BETA)
    return Check("robust: unbiased under flipped labels", *vanishes(difference, _sample))


def check_robust_never_stops(
    limit: Callable = lambda beta, eps: -beta * eps / (1 - 2 * eps),
) -> Check:
    """Robust DPO's gradient tends to `limit(beta, eps)`, not 0: its loss has no minimum.

    Args:
        limit: the claimed limit of the gradient as `h -> infinity`.
    """
    step = "robust: push tends to -beta eps/(1 - 2 eps)"
    found = sp.limit(sp.diff(robust_margin_loss(H, BETA, EPS), H), H, sp.oo)
    holds, method, detail = vanishes(found - limit(BETA, EPS), _sample)
    if not holds:
        return Check(step, False, method, f"the limit is {found}: {detail}")
    return Check(step, True, method, f"limit {sp.simplify(found)}, never 0 for eps > 0")


def check_cdpo_minimum(
    minimum: Callable = lambda beta, eps: sp.log((1 - eps) / eps) / beta,
) -> Check:
    """cDPO's loss has one stationary point, a minimum, at `minimum(beta, eps)`.

    Args:
        minimum: the claimed minimiser, from `(beta, eps)`.
    """
    return _stationary(
        "cDPO: minimum at log((1 - eps)/eps)/beta",
        cdpo_margin_loss(H, BETA, EPS),
        minimum(BETA, EPS),
    )


# --8<-- [end:check_robust]


# --8<-- [start:check_simpo_shift]
def check_simpo_shift(shift: Callable = lambda beta, gamma: gamma / beta) -> Check:
    """SimPO's loss is DPO's moved right by `shift(beta, gamma)`: `ln 2` at the target margin.

    Args:
        shift: the claimed shift, from `(beta, gamma)`.
    """
    step = "SimPO: DPO shifted by gamma/beta"
    moved = simpo_margin_loss(H, BETA, GAMMA) - dpo_margin_loss(H - shift(BETA, GAMMA), BETA)
    holds, method, detail = vanishes(moved, _sample)
    if not holds:
        return Check(step, False, method, detail)
    if sp.limit(simpo_margin_gradient(H, BETA, GAMMA), H, sp.oo) != 0:
        return _failed(step, "the gradient does not vanish at infinity")
    return Check(step, True, method, f"{detail}; gradient -> 0 only as h -> inf, like DPO's")


# --8<-- [end:check_simpo_shift]


# --8<-- [start:check_orpo_weight]
def check_orpo_weight(
    weight: Callable = lambda o, lam, p_w: lam * sigmoid(-o) / (1 - p_w),
) -> Check:
    """ORPO's odds-ratio term pushes `log p_w` with weight `weight(o, lambda, p_w)`.

    `a_w`, `a_l` are the per-token log-probabilities, `p = exp(a)`, and the log-odds margin is
    `o = (a_w - log(1 - p_w)) - (a_l - log(1 - p_l))`. By the chain rule, `d/da_w` of
    `-lambda log sigmoid(o)` is `-lambda sigmoid(-o) d o / d a_w`, and `d o / d a_w = 1/(1 - p_w)`:
    the push grows as the chosen completion becomes likely (ORPO's paper, eq. 10). It tends to
    0 as `o -> infinity`, while the SFT term's push on the chosen tokens never does.

    Args:
        weight: the claimed weight, from `(o, lambda, p_w)`.
    """
    step = "ORPO: weight lambda sigmoid(-o)/(1 - p_w)"
    a_w, a_l = sp.symbols("a_w a_l", negative=True)
    o = (a_w - sp.log(1 - sp.exp(a_w))) - (a_l - sp.log(1 - sp.exp(a_l)))
    slope = sp.diff(orpo_margin_loss(o, LAMBDA), a_w)

    def sample(rng: random.Random) -> dict:
        return {
            a_w: rng.uniform(-6, -0.05),
            a_l: rng.uniform(-6, -0.05),
            LAMBDA: rng.uniform(0.05, 2),
        }

    holds, method, detail = vanishes(slope + weight(o, LAMBDA, sp.exp(a_w)), sample)
    if not holds:
        return Check(step, False, method, detail)
    if sp.limit(orpo_margin_gradient(H, LAMBDA), H, sp.oo) != 0:
        return _failed(step, "the odds-ratio push does not vanish as o -> inf")
    return Check(step, True, method, f"{detail}; -> 0 as o -> inf (the SFT term's push stays)")


# --8<-- [end:check_orpo_weight]


# --8<-- [start:check_kto_saturates]
def check_kto_saturates(peak: Callable[[sp.Expr], sp.Expr] = lambda z: z) -> Check:
    """KTO's push on a desirable completion vanishes both ways and is strongest at `peak(z)`.

    The gradient `-beta s (1 - s)` tends to 0 as `r -> +infinity` (already liked) and as
    `r -> -infinity` (hopeless), and its magnitude is largest where `s = 1/2`: at `r = z`, the
    reference point.

    Args:
        peak: the claimed log-ratio of the strongest push, from `z`.
    """
    step = "KTO: saturates both ways, steepest at r = z"
    r = sp.Symbol("r", real=True)
    slope = sp.diff(kto_desirable_loss(r, BETA, Z), r)
    limits = (sp.limit(slope, r, sp.oo), sp.limit(slope, r, -sp.oo))
    if limits != (0, 0):
        return _failed(step, f"limits {limits}")
    roots = sp.solve(sp.Eq(sp.diff(slope, r), 0), r)
    if len(roots) != 1:
        return _failed(step, f"the push has extrema at {roots}, not one")
    holds, method, detail = vanishes(roots[0] - peak(Z), _sample)
    if not holds:
        return Check(step, False, method, f"the strongest push is at r = {roots[0]}: {detail}")
    return Check(step, True, "symbolic", f"-> 0 as r -> +-inf; strongest at r = {roots[0]}")


# --8<-- [end:check_kto_saturates]


# --8<-- [start:check_apo_zero]
def check_apo_zero_anchored(loss: Callable = apo_zero_pair_loss) -> Check:
    """APO-zero is KTO's two losses at `z = 0`, and, unlike DPO, moves with both rewards.

    Adding the same `c` to both log-ratios leaves DPO's loss unchanged (it sees only the
    margin); APO-zero's changes, so it can tell "both up" from "both down".

    Args:
        loss: the claimed APO-zero loss, from `(r_w, r_l, beta)`.
    """
    step = "APO-zero: KTO at z = 0, not shift-invariant"
    r_w, r_l, c = sp.symbols("r_w r_l c", real=True)
    kto = kto_desirable_loss(r_w, BETA, 0) + kto_undesirable_loss(r_l, BETA, 0)

    def sample(rng: random.Random) -> dict:
        return {r_w: rng.uniform(-5, 5), r_l: rng.uniform(-5, 5), BETA: rng.uniform(0.05, 2)}

    holds, method, detail = vanishes(loss(r_w, r_l, BETA) - kto, sample)
    if not holds:
        return Check(step, False, method, f"not KTO at z = 0: {detail}")
    dpo_shift = sp.diff(dpo_margin_loss((r_w + c) - (r_l + c), BETA), c)
    if sp.simplify(dpo_shift) != 0:
        return _failed(step, "DPO moved with a shift of both rewards")
    apo_shift = sp.diff(loss(r_w + c, r_l + c, BETA), c).subs(c, 0)
    point = sample(random.Random(3))
    if abs(float(apo_shift.subs(point))) < 1e-6:
        return _failed(step, f"APO-zero did not move with a shift at {point}")
    return Check(step, True, method, f"{detail}; DPO ignores a common shift, APO-zero does not")


# --8<-- [end:check_apo_zero]


def all_checks() -> list[Check]:
    """Every gradient and every property, checked with the correct expressions."""
    return [
        *(check_gradient(name) for name in MARGIN_LOSSES),
        check_dpo_never_stops(),
        check_ipo_minimum(),
        check_hinge_stops(),
        check_robust_unbiased(),
        check_robust_never_stops(),
        check_cdpo_minimum(),
        check_simpo_shift(),
        check_orpo_weight(),
        check_kto_saturates(),
        check_apo_zero_anchored(),
    ]


def checks_table() -> str:
    """The checks as a markdown table (step, holds, how it was decided, detail)."""
    rows = ["| step | holds | decided | detail |", "|---|---|---|---|"]
    rows += [
        f"| {c.step} | {'yes' if c.holds else 'NO'} | {c.method} | {c.detail} |"
        for c in all_checks()
    ]
    return "\n".join(rows)


# ----------------------------------------------------------------------------------------------
# The figure
# ----------------------------------------------------------------------------------------------

FIGURE_VALUES = {BETA: 0.5, EPS: 0.1, GAMMA: 0.5, LAMBDA: 0.5, Z: 1.0}


def margin_function(name: str, values: dict | None = None) -> tuple[Callable, Callable]:
    """Loss `name` and its gradient as numpy functions of the margin, at `values`.

    Args:
        name: a key of `MARGIN_LOSSES`.
        values: the parameters (`BETA`, `EPS`, ...); None uses `FIGURE_VALUES`.
    """
    loss, gradient, parameters = MARGIN_LOSSES[name]
    values = FIGURE_VALUES if values is None else values
    bound = [values[p] for p in parameters]
    return (
        sp.lambdify(H, loss(H, *bound), "numpy"),
        sp.lambdify(H, gradient(H, *bound), "numpy"),
    )


def figure_labels(values: dict) -> dict[str, str]:
    """Each loss's legend entry, with where its curve stops or turns at `values`."""
    beta, eps, gamma, lam = (float(values[s]) for s in (BETA, EPS, GAMMA, LAMBDA))
    cdpo = float(sp.log((1 - eps) / eps) / beta)
    return {
        "DPO": "DPO",
        "IPO": f"IPO: minimum at 1/(2 beta) = {1 / (2 * beta):g}",
        "hinge": f"hinge: stops at 1/beta = {1 / beta:g}",
        "robust": f"robust (eps {eps:g}): never stops",
        "cDPO": f"cDPO (eps {eps:g}): minimum at {cdpo:.2f}",
        "SimPO": f"SimPO: DPO moved by gamma/beta = {gamma / beta:g}",
        "ORPO": f"ORPO odds-ratio term (lambda {lam:g})",
        "KTO": f"KTO (z = {float(values[Z]):g})",
        "APO-zero": "APO-zero (= KTO at z = 0)",
    }


def plot_margin_losses(path: str | Path, values: dict | None = None) -> Path:
    """Every loss (left) and its gradient (right) against the margin, on one figure.

    Args:
        path: the image file to write.
        values: the parameters; None uses `FIGURE_VALUES` (beta 0.5, eps 0.1, gamma 0.5,
            lambda 0.5, z 1).

    Returns:
        The path written.
    """
    import numpy as np

    values = FIGURE_VALUES if values is None else values
    margins = np.linspace(-10, 10, 801)
    labels = figure_labels(values)
    figure, (losses, gradients) = plt.subplots(1, 2, figsize=(14, 4.6))
    for name in MARGIN_LOSSES:
        loss, gradient = margin_function(name, values)
        style = {"linestyle": "--"} if name in ("cDPO", "APO-zero") else {}
        losses.plot(margins, np.broadcast_to(loss(margins), margins.shape), **style)
        gradients.plot(
            margins, np.broadcast_to(gradient(margins), margins.shape), label=labels[name], **style
        )
    for axes in (losses, gradients):
        axes.axhline(0, color="grey", linewidth=0.5)
        axes.axvline(0, color="grey", linewidth=0.5)
    losses.set(xlabel="margin h", ylabel="loss", ylim=(-1.0, 4.0), title="loss")
    gradients.set(
        xlabel="margin h", ylabel="d loss / d h", ylim=(-0.6, 0.3), title="its gradient: the push"
    )
    gradients.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    figure.text(
        0.5,
        0.005,
        "h: the log-ratio margin r_w - r_l; for SimPO the margin of per-token log-probabilities, "
        "for ORPO of log-odds; KTO and APO-zero on r_w = -r_l = h/2",
        ha="center",
        va="bottom",
        fontsize=8,
    )
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)
