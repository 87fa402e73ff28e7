"""Lemmas 1 and 2 of Huang et al. (ICML 2025): how much of x_j an S4D or S6 state still holds at time t.

Setting (paper §4.2, App. B): one state component, scalar input, mamba_ssm's discretisation (ZOH on A, Euler on B):

    h_t = exp(-lam Delta(x_t)) h_{t-1} + B(x_t) Delta(x_t) x_t,  h_0 = 0,    lam > 0.

S4D is the special case Delta = 1, B constant.

**Lemma 1 (paper).** For j <= t, ``dh_t/dx_j = exp(-lam sum_{r=j+1}^t Delta(x_r)) * c_j`` with
``c_j = d(B Delta x)/dx (x_j) - lam Delta'(x_j) sum_{s<j} exp(-lam sum_{r=s+1}^{j} Delta(x_r)) B(x_s) Delta(x_s) x_s``
(eq. 38); c_j depends on x_{<=j} only. For S4D this is ``B exp(-lam (t - j))``: exponential decay in t - j.
``lemma1_obligations`` proves the formula by sympy for *generic* (undefined) functions Delta and B and every
j <= t <= T_max, by differentiating the recurrence itself; the test suite evaluates the same expressions with
concrete Delta, B and compares them with torch autograd on random sequences of length >> T_max.

**Lemma 2 (paper).** If ``lam sum_{r<=t} Delta(x_r) <= c`` then ``|dh_t/dx_j| >= e^{-c} |d(B Delta x)/dx (x_j)|``.
**[gap]** By Lemma 1 what holds is ``|dh_t/dx_j| >= e^{-c} |c_j|``: the second term of c_j (x_j also changes how
much of the *earlier* state survives) can cancel the first. ``lemma2_counterexample`` gives an exact instance
(Delta = softplus, B = 1, lam = 1, x_2 = 0, x_1 the root of ``softplus(x) x = 4 ln 2`` in (3/2, 8/5), about 1.5736, x_r = -r after)
where dh_t/dx_2 = 0 for every t while the paper's bound is positive. The paper's form holds when Delta does not
depend on x_j (then c_j = d(B Delta x)/dx), e.g. when Delta reads only the position, as in Corollary 2's
construction, or when nothing precedes x_j.
"""
from __future__ import annotations

import sympy as sp

from symbolic.blocks import softplus
from symbolic.proofs import Obligation, identity, nonnegative_on_halfline, positive

lam = sp.Symbol("lambda", positive=True)
Delta = sp.Function("Delta")
Bf = sp.Function("B")


def xs(T: int):
    return sp.symbols(f"x1:{T + 1}", real=True)


def states(x, delta=Delta, b=Bf, lam_=lam):
    """h_1..h_T of the recurrence, built step by step (the definition, not a closed form)."""
    h, out = sp.Integer(0), []
    for xt in x:
        h = sp.exp(-lam_ * delta(xt)) * h + b(xt) * delta(xt) * xt
        out.append(h)
    return out


def c_tilde(x, j: int, delta=Delta, b=Bf, lam_=lam):
    """Lemma 1's constant c_j (1-based j), eq. 38."""
    xj = x[j - 1]
    v = sp.Symbol("v", real=True)
    write = sp.diff(b(v) * delta(v) * v, v).subs(v, xj)
    ddelta = sp.diff(delta(v), v).subs(v, xj)
    prefix = sum((sp.exp(-lam_ * sum(delta(x[r - 1]) for r in range(s + 1, j + 1))) * b(x[s - 1]) * delta(x[s - 1])
                  * x[s - 1] for s in range(1, j)), sp.Integer(0))
    return write - lam_ * ddelta * prefix


def lemma1(x, t: int, j: int, delta=Delta, b=Bf, lam_=lam):
    """Lemma 1's closed form of dh_t/dx_j (1-based, j <= t)."""
    decay = sp.exp(-lam_ * sum((delta(x[r - 1]) for r in range(j + 1, t + 1)), sp.Integer(0)))
    return decay * c_tilde(x, j, delta, b, lam_)


def s4d_sensitivity(t, j, B=sp.Symbol("B"), lam_=lam):
    """dh_t/dx_j for S4D (Delta = 1, constant B): B exp(-lam (t - j))."""
    return B * sp.exp(-lam_ * (t - j))


def lemma1_obligations(T_max: int = 4):
    """Lemma 1 for generic Delta, B and every 1 <= j <= t <= T_max, and its S4D special case, proved by sympy."""
    x = xs(T_max)
    h = states(x)
    generic = all(identity(sp.diff(h[t - 1], x[j - 1]), lemma1(x, t, j))
                  for t in range(1, T_max + 1) for j in range(1, t + 1))
    Bc = sp.Symbol("B", real=True)
    h4 = states(x, delta=lambda v: sp.Integer(1), b=lambda v: Bc)
    s4d = all(identity(sp.diff(h4[t - 1], x[j - 1]), s4d_sensitivity(t, j, Bc))
              for t in range(1, T_max + 1) for j in range(1, t + 1))
    causal = all(sp.diff(h[t - 1], x[j - 1]) == 0 for t in range(1, T_max + 1) for j in range(t + 1, T_max + 1))
    return [
        Obligation(f"Lemma 1 (S6): dh_t/dx_j = exp(-lam sum_(j<r<=t) Delta_r) c_j, generic Delta, B, t <= {T_max}",
                   "diff of the recurrence minus the closed form simplifies to 0", generic),
        Obligation(f"Lemma 1 (S4D): dh_t/dx_j = B exp(-lam (t - j)), t <= {T_max}", "identity", s4d),
        Obligation("causality: dh_t/dx_j = 0 for j > t", "identity", causal),
    ]


def lemma2_obligations(T_max: int = 4):
    """The corrected Lemma 2 (|dh_t/dx_j| >= e^{-c} |c_j|) and the paper's form where Delta ignores x_j."""
    x = xs(T_max)
    a = sp.Symbol("a", real=True)  # a = c - lam sum_(j<r<=t) Delta_r >= 0 under the hypothesis
    # |dh_t/dx_j| / (e^{-c} |c_j|) = exp(c - lam sum Delta) = e^a >= 1 for a >= 0
    ratio_ok = nonnegative_on_halfline(sp.exp(a) - 1, a)
    # Delta at step j a constant D_j (it reads the position, not x_j): differentiate the recurrence itself
    Dj = sp.Symbol("D_j", positive=True)
    j = T_max - 1
    h = sp.Integer(0)
    for pos, xt in enumerate(x, start=1):
        d = Dj if pos == j else Delta(xt)
        h = sp.exp(-lam * d) * h + Bf(xt) * d * xt
    v = sp.Symbol("v", real=True)
    decay = sp.exp(-lam * sum(Delta(x[r - 1]) for r in range(j + 1, T_max + 1)))
    paper_form = identity(sp.diff(h, x[j - 1]), decay * sp.diff(Bf(v) * Dj * v, v).subs(v, x[j - 1]))
    first = identity(c_tilde(x, 1), sp.diff(Bf(v) * Delta(v) * v, v).subs(v, x[0]))
    return [
        Obligation("Lemma 2 (corrected): lam sum Delta <= c  =>  |dh_t/dx_j| >= e^{-c} |c_j|",
                   "|dh_t/dx_j| = exp(-lam sum_(j<r<=t) Delta_r) |c_j| (Lemma 1) and e^a >= 1 for a >= 0", ratio_ok),
        Obligation("Lemma 2 (paper's form) when Delta does not depend on x_j",
                   f"dh_{T_max}/dx_{j} = exp(-lam sum Delta) d(B D_j x)/dx (x_j), from the recurrence", paper_form),
        Obligation("Lemma 2 (paper's form) for j = 1 (empty prefix)", "c_1 = d(B Delta x)/dx (x_1)", first),
    ]


def lemma2_counterexample(digits: int = 60):
    """An input where the paper's Lemma 2 fails: returns a dict of exact facts (see the module docstring).

    Delta = softplus, B = 1, lam = 1, x_2 = 0; c_2 = ln 2 - (1/4) softplus(x_1) x_1 vanishes at the root x_1* of
    ``softplus(x) x = 4 ln 2``, which lies in (3/2, 8/5) (sign change, proved exactly). With x_r = -r for r >= 3 the
    hypothesis holds with c = sum_r softplus(x_r) < oo, yet dh_t/dx_2 = exp(-sum_{3<=r<=t} Delta_r) c_2 = 0 for all t.
    """
    v = sp.Symbol("v", real=True)
    c2_of = lambda x1: sp.log(2) - sp.Rational(1, 4) * softplus(x1) * x1  # noqa: E731
    x = sp.symbols("x1 x2", real=True)
    c2_general = c_tilde(list(x), 2, delta=softplus, b=lambda u: sp.Integer(1), lam_=sp.Integer(1)).subs(x[1], 0)
    formula = identity(c2_general, c2_of(x[0]))
    lo, hi = sp.Rational(3, 2), sp.Rational(8, 5)
    sign_change = positive(c2_of(lo)) and positive(-c2_of(hi))
    root = sp.nsolve(softplus(v) * v - 4 * sp.log(2), v, 1.55, prec=digits)
    paper_bound_at_root = sp.diff(softplus(v) * v, v).subs(v, 0)  # |d(B Delta x)/dx (x_2)| = ln 2
    return {
        "c2_formula": formula,
        "root_bracket": (lo, hi),
        "sign_change": sign_change,
        "root": root,
        "c2_at_root": sp.N(c2_of(root), digits),
        "paper_lower_bound_factor": paper_bound_at_root,  # times e^{-c} > 0
    }


def lemma2_counterexample_obligation() -> Obligation:
    ce = lemma2_counterexample()
    holds = ce["c2_formula"] and ce["sign_change"] and positive(ce["paper_lower_bound_factor"])
    return Obligation("[gap] the paper's Lemma 2 fails for some inputs (dh_t/dx_2 = 0 < e^{-c} ln 2)",
                      "c_2(x_1) changes sign on (3/2, 8/5), so c_2 = 0 at some x_1 there", holds)
