"""Lemma 3 of Huang et al. (ICML 2025): induction heads with one Mamba-Delta-transpose layer, d = 2|V|, N = |V|.

**Task.** y_t = x_{j(t)+1} with j(t) = max{j < t : x_j = x_t}, or a blank if x_t has not appeared before.

**Mamba-Delta-transpose (eq. 15).** Delta_t in R^N varies along the state axis, the write has no Delta:
``h_t[c, k] = exp(-lam Delta_t[k]) h_{t-1}[c, k] + x^_t[c] B_t[k]``, ``y_t = h_t C_t``.

**Lemma 3 (paper).** Embedding v -> [e_v; e_v]; a size-2 conv makes x^_t = [e_{x_{t-1}}; e_{x_t}] (the (previous,
current) pair); Delta(x^) = softplus(w [I|0] x^) (keyed on the previous token), B = [I|0] x^, C = [0|I] x^, Lambda = -1;
readout [0|I]. A write stores the pair (x_{t-1}, x_t) in column x_{t-1} and wipes that column first (Delta = w large);
the query x_t reads column x_t, whose second half is the token after x_t's latest occurrence.

**The softplus(0) = ln 2 bug, and the fix (ours).** Taken literally, every inactive column has Delta = softplus(0) =
ln 2, so it decays by e^{-ln 2} = 1/2 per step: after g steps the stored pair is scaled by 2^{-g}, which underflows
(float32: g > 149, float64: g > 1074) and can never beat a blank threshold (``paper_margin_lower_bound`` < 0). We use
``Delta = softplus(w (2 [I|0] x^ - 1))``: the active column gets softplus(w) (a wipe by e^{-lam softplus(w)}), every
inactive column softplus(-w) <= e^{-w}, so a stored pair keeps at least ``r_min = exp(-lam T e^{-w})`` of itself over
any sequence of length <= T (Lemma 2's condition with c = lam T e^{-w}).

**In the real block.** SiLU after the conv: the previous/current channels use taps ``g_prev`` on x_{t-1} and
``g_cur`` on x_t with zero bias, so x^ is exactly ``[s_p e_{x_{t-1}}; s_c e_{x_t}]`` (s = silu(g), silu(0) = 0);
x_proj rescales by 1/s_p, 1/s_c. The gate is the constant silu(gate_pre). **Blank** (the paper does not say how ×
is produced): out_proj's bias puts a constant 1 on output coordinate ``prev[0]`` and the readout's blank row is
``theta e_{prev[0]}`` with theta = K/2, K = silu(gate_pre) gamma beta s_c (the logit of a freshly stored answer);
a never-written column is exactly 0, so every value logit is 0 < theta there.

**Proven margin** (``margin_lower_bound``): every entry of the state is >= 0; a column's latest write survives with
factor >= r_min; everything written before it was wiped by a <= e^{-lam delta_lo(w)} at each later write, so it is
<= beta s a / (1 - a) per entry. At a position with an answer, the answer logit >= K r_min, any other value logit
<= K a / (1 - a), blank = K / 2; at a blank position every value logit = 0. Hence
``margin >= K min(r_min - a/(1-a), r_min - 1/2, 1/2)`` for every sequence of length <= T.

**Exact reduction to mamba_ssm's kernel** (``flattening_obligations``): the Delta-transpose recurrence is elementwise
in (c, k), so each pair is an S6 channel of state size 1 with delta = Delta[k], A = A[c, k], u = x^[c], and
B' = B[k]/Delta[k]: the S6 write delta B' u equals B[k] x^[c] whenever Delta[k] > 0 (and B' = 0 where B = 0); the
outputs sum over k. Proved by sympy for symbolic tensors (``verify.blocks.mamba_delta_t`` implements it).
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from symbolic.blocks import silu, softplus
from symbolic.proofs import Obligation, delta_lo, identity, nonnegative_on_halfline, positive

T_sym = sp.Symbol("T", positive=True, integer=True)


@dataclass(frozen=True)
class Lemma3Constants:
    g_prev: sp.Expr = sp.Integer(1)  # conv tap on the "previous" channels (reads x_{t-1})
    g_cur: sp.Expr = sp.Integer(1)  # conv tap on the "current" channels (reads x_t)
    w: sp.Expr = sp.Integer(40)  # Delta = softplus(w (2 [I|0] x^/s_p - 1))
    lam: sp.Expr = sp.Integer(1)  # Lambda = -1 (paper)
    beta: sp.Expr = sp.Integer(1)  # B = beta [I|0] x^ / s_p
    gamma: sp.Expr = sp.Integer(1)  # C = gamma [0|I] x^ / s_c
    gate_pre: sp.Expr = sp.Integer(1)

    @property
    def s_p(self):
        return silu(self.g_prev)

    @property
    def s_c(self):
        return silu(self.g_cur)

    @property
    def K(self):
        """Logit of a freshly stored answer: gate * gamma * beta * s_c."""
        return silu(self.gate_pre) * self.gamma * self.beta * self.s_c

    @property
    def theta(self):
        return self.K / 2

    def active_pre(self, variant="ours"):
        return self.w

    def inactive_pre(self, variant="ours"):
        return -self.w if variant == "ours" else sp.Integer(0)

    def wipe(self, variant="ours"):
        """a >= e^{-lam Delta_active} for every engine."""
        return sp.exp(-self.lam * delta_lo(self.active_pre(variant)))

    def r_min(self, T=T_sym, variant="ours"):
        """Lower bound on what a stored pair keeps over <= T steps: exp(-lam T softplus(inactive pre))."""
        return sp.exp(-self.lam * T * softplus(self.inactive_pre(variant)))


DEFAULT = Lemma3Constants()


def margin_lower_bound(c: Lemma3Constants = DEFAULT, T=T_sym, variant="ours"):
    """Proven lower bound on (true class logit - best other logit) at every position of every sequence of length <= T."""
    a, r = c.wipe(variant), c.r_min(T, variant)
    return c.K * sp.Min(r - a / (1 - a), r - sp.Rational(1, 2), sp.Rational(1, 2))


def paper_decay_after(g: int):
    """Literal Lemma 3: an inactive column is multiplied by exp(-softplus(0)) = 1/2 per step; after g steps 2^{-g}."""
    return sp.exp(-softplus(sp.Integer(0))) ** g


def flattening_obligations(d: int = 2, N: int = 2, L: int = 3):
    """The Delta-transpose scan equals N*d size-1 S6 channels with delta = Delta[k], B' = B[k]/Delta[k] (symbolic)."""
    u = sp.Matrix(L, d, lambda t, c: sp.Symbol(f"u_{t}_{c}", real=True))
    Dl = sp.Matrix(L, N, lambda t, k: sp.Symbol(f"D_{t}_{k}", positive=True))
    A = sp.Matrix(d, N, lambda c, k: sp.Symbol(f"A_{c}_{k}", negative=True))
    B = sp.Matrix(L, N, lambda t, k: sp.Symbol(f"B_{t}_{k}", real=True))
    C = sp.Matrix(L, N, lambda t, k: sp.Symbol(f"C_{t}_{k}", real=True))
    h = sp.zeros(d, N)
    y_dt = []
    for t in range(L):  # Delta-transpose, eq. 15
        h = sp.Matrix(d, N, lambda c, k: sp.exp(Dl[t, k] * A[c, k]) * h[c, k] + u[t, c] * B[t, k])
        y_dt.append([sum(h[c, k] * C[t, k] for k in range(N)) for c in range(d)])
    y_fl = []
    hs = {(k, c): sp.Integer(0) for k in range(N) for c in range(d)}
    for t in range(L):  # S6 channel k*d + c, state size 1, group k: B' = B/Delta
        for k in range(N):
            for c in range(d):
                delta, Bp = Dl[t, k], B[t, k] / Dl[t, k]
                hs[k, c] = sp.exp(delta * A[c, k]) * hs[k, c] + delta * Bp * u[t, c]
        y_fl.append([sum(C[t, k] * hs[k, c] for k in range(N)) for c in range(d)])
    same = all(identity(y_dt[t][c], y_fl[t][c]) for t in range(L) for c in range(d))
    return [Obligation(f"Delta-transpose scan == N*d size-1 S6 channels with B' = B/Delta (d={d}, N={N}, L={L})",
                       "outputs identical for symbolic u, Delta > 0, A, B, C", same)]


def obligations(c: Lemma3Constants = DEFAULT, T: int = 100_000):
    """Every step of the construction's proof, decided exactly by sympy, for sequences of length <= T."""
    x = sp.Symbol("x", real=True)
    bound = margin_lower_bound(c, sp.Integer(T))
    return [
        Obligation("conv: silu(0) = 0, the pair's channels survive", "silu(0) = 0, s_p > 0, s_c > 0",
                   silu(sp.Integer(0)) == 0 and positive(c.s_p) and positive(c.s_c)),
        Obligation("gate, B and C scales are positive", "K = silu(gate_pre) gamma beta s_c > 0", positive(c.K)),
        Obligation("the dt pre-activation is +w on the previous token's column and -w elsewhere",
                   "w (2 * 1 - 1) = w, w (2 * 0 - 1) = -w", identity(c.w * (2 - 1), c.active_pre())
                   and identity(c.w * (0 - 1), c.inactive_pre())),
        Obligation("softplus(-w) <= e^{-w} (inactive columns barely decay)", "u - log(1 + u) >= 0 for u >= 0",
                   nonnegative_on_halfline(x - sp.log(1 + x), x)),
        Obligation("wipe factor a < 1/2", "e^{-lam delta_lo(w)} < 1/2", positive(sp.Rational(1, 2) - c.wipe())),
        Obligation(f"margin > 0 for every sequence of length <= {T}",
                   "K min(r_min - a/(1-a), r_min - 1/2, 1/2) > 0", positive(bound)),
        Obligation("[gap] the literal Lemma 3 (softplus(0) = ln 2) halves every inactive column per step",
                   "exp(-softplus(0)) = 1/2", identity(paper_decay_after(1), sp.Rational(1, 2))),
        Obligation("[gap] the literal Lemma 3 has no positive margin against a blank threshold once T >= 2",
                   "paper margin bound at T = 2 < 0", positive(-margin_lower_bound(c, sp.Integer(2), "paper"))),
        *flattening_obligations(),
    ]
