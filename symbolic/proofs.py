"""Small exact proof tools shared by the theorem modules (sympy decides every step; nothing is sampled).

* ``Obligation`` (re-exported from ``symbolic.theorem2``): one identity or inequality with sympy's verdict.
* ``nonnegative_on_halfline(f, y, a)``: proves ``f(y) >= 0`` for every real ``y >= a`` by the monotonicity argument
  ``f(a) >= 0`` and ``f' >= 0`` on ``[a, oo)``, applied recursively to ``f'`` (a few levels). Each level's sign is
  decided by sympy's assumptions on a nonnegative symbol, so a ``True`` is a proof; ``False`` means "not proved".
* ``positive(expr)``: sympy's exact sign of a closed-form number (``True`` only if sympy proves it positive).
* ``delta_lo(x)``: the smallest Delta any engine computes for softplus(x): torch's ``F.softplus`` and
  selective_scan_cuda return x itself above the threshold 20, which is below the exact softplus(x); proofs take
  Delta in ``[delta_lo(x), softplus(x)]`` so they cover every engine.
"""
from __future__ import annotations

import sympy as sp

from symbolic.theorem2 import Obligation

__all__ = ["Obligation", "nonnegative_on_halfline", "positive", "nonnegative", "identity", "delta_lo",
           "SOFTPLUS_THRESHOLD"]

SOFTPLUS_THRESHOLD = 20  # torch.nn.functional.softplus and selective_scan_cuda: softplus(x) := x for x > 20


def delta_lo(x):
    """Smallest value any engine returns for Delta = softplus(x): x above the threshold 20, softplus(x) otherwise."""
    from symbolic.blocks import softplus

    x = sp.sympify(x)
    return x if bool(x > SOFTPLUS_THRESHOLD) else softplus(x)


def positive(expr) -> bool:
    if isinstance(expr, (bool, sp.logic.boolalg.BooleanAtom)):
        return bool(expr)
    return bool(sp.sympify(expr).is_positive)


def nonnegative(expr) -> bool:
    return bool(sp.sympify(expr).is_nonnegative)


def identity(lhs, rhs) -> bool:
    """lhs == rhs as expressions (sympy simplifies the difference to exactly 0, also after rewriting in exp)."""
    diff = sp.simplify(sp.sympify(lhs) - sp.sympify(rhs))
    return diff == 0 or sp.simplify(diff.rewrite(sp.exp)) == 0


def nonnegative_on_halfline(f, y, a=0, depth: int = 4) -> bool:
    """``f(y) >= 0`` for all real ``y >= a``: f(a) >= 0 and f' >= 0 on [a, oo) (recursively), each step exact."""
    s = sp.Symbol("s_", nonnegative=True)
    g = sp.simplify(sp.sympify(f).subs(y, a + s))
    if g.is_nonnegative or sp.simplify(g.rewrite(sp.tanh)).is_nonnegative:
        return True
    start = sp.simplify(g.subs(s, 0))
    if not start.is_nonnegative or depth == 0:
        return False
    return nonnegative_on_halfline(sp.simplify(sp.diff(g, s)), s, 0, depth - 1)
