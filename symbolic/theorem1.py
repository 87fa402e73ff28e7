"""Theorem 1, Proposition 1 and Corollary 1 of Huang et al. (ICML 2025): S6 represents Haar wavelet projections.

**Theorem 1 (paper).** With time as an input, for every eps there are three Mamba basis functions
g(s; 1) = exp(-lam int_s^1 Delta(r) dr) B with ``sup_s |psi_{j,k}(s) - (g1 - 2 g2 + g3)(s)| < eps``. Construction:
lam = 1, B = 2^{j/2}, Delta(r) = softplus(w (r - t^)) with w -> -oo, which makes g -> B H(s - t^); the three steps sit
at t^ = 2^-j k, 2^-j k + 2^-(j+1), 2^-j (k+1), combined with (+1, -2, +1).

What is proved here (``obligations``):

1. **The limit** (``limit_obligations``): for s > t^, B >= g >= B exp(-lam e^{-W d}/W) -> B (W = -w, d = s - t^);
   for s < t^, g <= B exp(-lam W (t^ - s)^2 / 2) -> 0. Each inequality is proved from softplus(x) <= e^x,
   softplus(x) >= max(x, 0), and sympy evaluates the integrals and limits.
2. **The identity** (``identity_obligations``): psi_{j,k} = 2^{j/2} [H(s - a) - 2 H(s - m) + H(s - b)] on each of the
   four open intervals, for symbolic j, k. **[gap]** A sup-norm eps < 1/2 is impossible with continuous g at the
   jumps of psi (the paper's "sup" holds off any neighbourhood of the jumps, or in L^2); on a grid whose points keep
   distance >= 1/2 from every jump (below) the sup *over the grid* does go to 0.
3. **Euler-B** (``euler_spike_obligations``): mamba_ssm writes ``Delta_t B_t u_t``, so the effective kernel is
   K_i = Delta_i prod_{r>i} e^{-lam Delta_r}. The paper's limit (Delta -> oo before t^, -> 0 after) then gives
   K -> 0 everywhere except a spike of weight Delta at the last large step: **not** a step [gap]. Corollary 2's
   KEEP n-TH construction uses exactly that spike; for Haar we switch the other way.
4. **The discrete, finite-w construction (ours)**, T steps, cell i = [(i-1)/T, i/T), time input = raw i, a jump at
   q in [0, 1) becomes the threshold theta = q T + 1/2 (T a multiple of 2^{j+1}, so |i - theta| >= 1/2):
   * a feature channel ``f = silu(kappa (theta - i))`` (in_proj: -kappa on time, bias kappa theta): >= silu(kappa/2)
     before theta, in [silu(-kappa/2), 0) after (silu increases on [0, oo) and decreases on (-oo, -2]);
   * ``Delta = softplus(-f)``: <= delta_off = softplus(-silu(kappa/2)) before (nothing written), in
     (ln 2, delta_hi], delta_hi = softplus(-silu(-kappa/2)), after (writes of weight ~ ln 2 = delta_on);
   * A = -lam with lam = e^{-40} (no decay up to exp(-lam T delta_hi)); B = C = 1 from a constant channel;
   * the signal enters as two channels silu(g x) and silu(-g x) with the same Delta; their difference is
     ``silu(g x) - silu(-g x) = g x`` exactly, so the layer is exactly linear in x;
   * out_proj combines the three steps with (+1, -2, +1) 2^{j/2} / (T gate delta_on g).
   Then the layer's kernel K_i (output = sum_i K_i x_i) satisfies, for every grid point,
   ``|T K_i - psi_{j,k}(s_i)| <= 2^{j/2} c_w eps(kappa, lam, T)`` with c_w = sum |coefficients| (<= 4) and
   ``eps = max(delta_off / delta_on, delta_hi / delta_on - 1, 1 - exp(-lam T delta_hi))`` (``eps``), which -> 0 as
   kappa -> oo and lam -> 0 (proved). Hence ``|output - <x, psi_{j,k}>| <= 2^{j/2} c_w eps mean|x|``.
5. **Proposition 1** (``proposition1_obligations``): fed ones, h_t = sum_{s<=t} e^{-lam Delta (t-s)} Delta B; at lam = 0
   it is Delta B t; for lam > 0 its relative error to Delta B t is <= 1 - e^{-lam Delta T}.

**Corollary 1** (rates; measured in ``verify.haar_rates``): N Mamba bases = N/3 Haar wavelets, best N-term error
O(2^{-N/(3m)}) for m jumps vs O(N^-1) for S4D's Fourier limit. [gap] In L^2 the best n-term Haar error of a
piecewise-constant function decays like 2^{-n/(2m)} (one coefficient of size ~2^{-j/2} per jump per level) and the
Fourier one like N^{-1/2} (coefficients ~1/n); the paper's exponents are those of the coefficients.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import sympy as sp

from symbolic.blocks import sigmoid, silu, softplus
from symbolic.proofs import Obligation, identity, nonnegative_on_halfline, positive

j_, k_ = sp.symbols("j k", integer=True, nonnegative=True)
s_ = sp.Symbol("s", real=True)


def mother(u):
    """Haar mother wavelet: 1 on [0, 1/2), -1 on [1/2, 1], 0 elsewhere (paper eq. 10)."""
    half = sp.Rational(1, 2)
    return sp.Piecewise((1, (u >= 0) & (u < half)), (-1, (u >= half) & (u <= 1)), (0, True))


def psi(s, j=j_, k=k_):
    return 2 ** (sp.sympify(j) / 2) * mother(2**j * s - k)


def breakpoints(j=j_, k=k_):
    """(a, m, b) = (2^-j k, 2^-j k + 2^-(j+1), 2^-j (k+1)) and their coefficients (+1, -2, +1)."""
    a = k / sp.Integer(2) ** j
    return (a, a + 1 / sp.Integer(2) ** (j + 1), (k + 1) / sp.Integer(2) ** j), (1, -2, 1)


def three_heaviside(s, j=j_, k=k_):
    (a, m, b), (ca, cm, cb) = breakpoints(j, k)
    return 2 ** (sp.sympify(j) / 2) * (ca * sp.Heaviside(s - a) + cm * sp.Heaviside(s - m) + cb * sp.Heaviside(s - b))


# ---------------------------------------------------------------------------------------------------------------
# 1-3: the continuous statement and what Euler-B does to it
# ---------------------------------------------------------------------------------------------------------------


def limit_obligations():
    W, lam, d = sp.symbols("W lambda d", positive=True)  # W = -w -> oo, d = |s - t^| > 0
    th, r, x = sp.Symbol("that", real=True), sp.Symbol("r", real=True), sp.Symbol("x", real=True)
    after_int = sp.integrate(sp.exp(-W * (r - th)), (r, th + d, sp.oo))  # >= int_s^1 softplus(w (r - t^)) dr
    before_int = sp.integrate(W * (th - r), (r, th - d, th))  # <= int_s^t^ softplus(w (r - t^)) dr
    return [
        Obligation("softplus(x) <= e^x", "u - log(1+u) >= 0 for u = e^x >= 0", nonnegative_on_halfline(x - sp.log(1 + x), x)),
        Obligation("softplus(x) >= x and >= 0", "softplus(x) - x = log(1 + e^-x) > 0",
                   identity(softplus(x) - x, sp.log(1 + sp.exp(-x))) and positive(softplus(-W))),
        Obligation("s > t^: int_s^1 Delta <= e^{-W d}/W", "int_{t^+d}^oo e^{-W (r - t^)} dr = e^{-W d}/W",
                   identity(after_int, sp.exp(-W * d) / W)),
        Obligation("s > t^: g -> B", "lim_{W->oo} exp(-lam e^{-W d}/W) = 1",
                   sp.limit(sp.exp(-lam * sp.exp(-W * d) / W), W, sp.oo) == 1),
        Obligation("s < t^: int_s^1 Delta >= W (t^ - s)^2 / 2", "int_{t^-d}^{t^} W (t^ - r) dr = W d^2 / 2",
                   identity(before_int, W * d**2 / 2)),
        Obligation("s < t^: g -> 0", "lim_{W->oo} exp(-lam W d^2 / 2) = 0", sp.limit(sp.exp(-lam * W * d**2 / 2), W, sp.oo) == 0),
    ]


def identity_obligations():
    (a, m, b), _ = breakpoints()
    th, ph = sp.symbols("theta phi", positive=True)
    inside = 1 / (1 + ph)  # any number in (0, 1)
    points = {"s < a": a - th, "a < s < m": a + inside * (m - a), "m < s < b": m + inside * (b - m), "s > b": b + th}
    return [Obligation(f"psi_jk = 2^(j/2) [H(s-a) - 2 H(s-m) + H(s-b)] on {name}", "identity for symbolic j, k",
                       identity(psi(s), three_heaviside(s))) for name, s in points.items()]


def euler_spike_obligations():
    """Four steps, Delta = (H, H, e, e): the Euler kernel K_i = Delta_i prod_{r>i} e^{-lam Delta_r} as H->oo, e->0."""
    H, e, lam = sp.symbols("H epsilon lambda", positive=True)
    delta = [H, H, e, e]
    K = [delta[i] * sp.exp(-lam * sum(delta[i + 1:])) for i in range(4)]
    lim = lambda expr: sp.limit(sp.limit(expr, e, 0), H, sp.oo)  # noqa: E731
    return [Obligation("[gap] Euler-B turns the paper's step into a spike at the last large-Delta step",
                       "K_1 -> 0, K_2 / Delta_2 -> 1, K_3 -> 0, K_4 -> 0",
                       lim(K[0]) == 0 and lim(K[1] / H) == 1 and lim(K[2]) == 0 and lim(K[3]) == 0)]


# ---------------------------------------------------------------------------------------------------------------
# 4: the discrete construction and its bound
# ---------------------------------------------------------------------------------------------------------------

kappa_, lam_, T_ = sp.symbols("kappa lambda T", positive=True)


@dataclass(frozen=True)
class Theorem1Constants:
    kappa: sp.Expr = sp.Integer(24)  # feature slope: the paper's |w|
    a_log: sp.Expr = sp.Integer(-40)  # A = -exp(a_log): lam = e^-40, no decay
    value_gain: sp.Expr = sp.Integer(1)  # the signal channels are silu(+-value_gain x)
    one_pre: sp.Expr = sp.Integer(1)  # the constant channel is silu(one_pre); B = C = 1 through it
    gate_pre: sp.Expr = sp.Integer(1)

    @property
    def lam(self):
        return sp.exp(self.a_log)

    @property
    def gate(self):
        return silu(self.gate_pre)


DEFAULT = Theorem1Constants()
DELTA_ON = sp.log(2)  # softplus(0)


def delta_off(kappa=kappa_):
    return softplus(-silu(kappa / 2))


def delta_hi(kappa=kappa_):
    return softplus(-silu(-kappa / 2))


def eps(kappa=kappa_, lam=lam_, T=T_):
    """Per-step-function kernel error bound (see the module docstring): -> 0 as kappa -> oo, lam -> 0."""
    return sp.Max(delta_off(kappa) / DELTA_ON, delta_hi(kappa) / DELTA_ON - 1, 1 - sp.exp(-lam * T * delta_hi(kappa)))


def eps_with_time_error(time_error, kappa=kappa_, lam=lam_, T=T_):
    """eps when the time input is off by at most time_error < 1/2 (e.g. produced by Proposition 1's layer): every grid
    point is then >= 1/2 - time_error from every threshold, which is the bound at kappa (1 - 2 time_error)."""
    return eps(kappa * (1 - 2 * sp.sympify(time_error)), lam, T)


def sup_bound(j, c_w=4, kappa=kappa_, lam=lam_, T=T_):
    """sup over the grid of |psi_{j,k}(s_i) - T K_i| (c_w = sum of |step coefficients|: 4, or 3 if b = 1, 1 for phi)."""
    return 2 ** (sp.sympify(j) / 2) * c_w * eps(kappa, lam, T)


@lru_cache(maxsize=None)
def _generic_discrete_obligations() -> tuple:
    """The steps of the discrete bound that do not depend on the constants (cached: sympy limits are slow)."""
    y = sp.Symbol("y", real=True)
    dsilu = sp.diff(silu(y), y)
    K = sp.Symbol("K", positive=True)
    return (
        Obligation("silu is increasing on [0, oo): before theta the feature is >= silu(kappa/2)",
                   "silu'(y) >= 0 on [0, oo)", nonnegative_on_halfline(dsilu, y)),
        Obligation("silu is decreasing on (-oo, -2]: after theta the feature is in [silu(-kappa/2), 0)",
                   "-silu'(-y) >= 0 on [2, oo), i.e. y sigmoid(y) >= 1 there",
                   identity(-dsilu.subs(y, -y), sigmoid(-y) * (y * sigmoid(y) - 1))
                   and nonnegative_on_halfline(y * sigmoid(y) - 1, y, 2)),
        Obligation("softplus is increasing", "softplus' = sigmoid > 0", identity(sp.diff(softplus(y), y), sigmoid(y))),
        Obligation("the signal enters exactly linearly", "silu(g x) - silu(-g x) = g x", identity(silu(y) - silu(-y), y)),
        Obligation("eps -> 0 as kappa -> oo (lam = 0)", "limits of delta_off/ln2 and delta_hi/ln2 - 1",
                   sp.limit(delta_off(K) / DELTA_ON, K, sp.oo) == 0 and sp.limit(delta_hi(K) / DELTA_ON - 1, K, sp.oo) == 0),
    )


def discrete_obligations(c: Theorem1Constants = DEFAULT, T: int = 1024):
    e = eps(c.kappa, c.lam, sp.Integer(T))
    return [
        *_generic_discrete_obligations(),
        Obligation("kappa >= 4 (so kappa/2 >= 2)", "kappa - 4 >= 0", bool(sp.sympify(c.kappa) >= 4)),
        Obligation("B, C and the gate are positive constants", "silu(one_pre) > 0, silu(gate_pre) > 0",
                   positive(silu(c.one_pre)) and positive(c.gate)),
        Obligation(f"eps(kappa={c.kappa}, lam=e^{c.a_log}, T={T}) < 1e-3", "exact evaluation",
                   positive(sp.Rational(1, 1000) - e)),
    ]


def proposition1_obligations():
    """A Mamba step fed ones with B, Delta constant: h_t = Delta B sum_{s<=t} e^{-lam Delta (t-s)}."""
    t = sp.Symbol("t", positive=True, integer=True)
    lam, D, B, q = sp.symbols("lambda Delta B q", positive=True)
    closed = lambda n: (1 - q**n) / (1 - q)  # noqa: E731  (q = e^{-lam Delta} < 1)
    # induction: h_0 = 0 and h_t = q h_{t-1} + 1 (per unit Delta B) are satisfied by the closed form, for every t
    induction = closed(0) == 0 and identity(closed(t) - q * closed(t - 1), 1)
    at_zero = sp.limit(D * B * closed(t).subs(q, sp.exp(-lam * D)), lam, 0)
    x = sp.Symbol("x", real=True)
    return [
        Obligation("Proposition 1: h_t = Delta B (1 - q^t)/(1 - q), q = e^{-lam Delta}", "geometric sum",
                   induction),
        Obligation("Proposition 1: lam -> 0 gives h_t = Delta B t (time)", "limit", identity(at_zero, D * B * t)),
        Obligation("Proposition 1: relative error <= 1 - e^{-lam Delta T}", "each term e^{-lam Delta (t-s)} in "
                   "[e^{-lam Delta T}, 1] (exp decreasing)", nonnegative_on_halfline(1 - sp.exp(-x), x)),
    ]


def obligations(c: Theorem1Constants = DEFAULT, T: int = 1024):
    return (limit_obligations() + identity_obligations() + euler_spike_obligations() + discrete_obligations(c, T)
            + proposition1_obligations())
