"""Corollary 2 of Huang et al. (ICML 2025): KEEP n-TH with one S6 layer and a time positional encoding, exactly.

**Corollary 2 (paper).** An S6 layer whose input is augmented with the time t solves KEEP n-TH (output y_t = x_n for
every t >= n). Paper's construction (continuous time): lambda = 1, B = 1, two step bases H(s - n), H(s - (n-1)) made
by Delta = softplus(w (t - n)) with w -> -oo; their difference is the indicator of [n-1, n).

**The discrete, finite-parameter construction (ours).** In mamba_ssm's discretisation the write is Euler's
``Delta_t B_t u_t``, so the paper's limit (Delta -> oo before n, -> 0 after) does not give a step but a *spike*:
the last large-Delta step, t = n, writes ``Delta_n B x_n`` and wipes everything before it (``exp(-lambda Delta_n)``),
and every later step has Delta ~ 0, so it neither decays the state nor writes. One state entry per value channel is
enough (N = 1), so KEEP n-TH needs only one "basis" (the spike at n) instead of the paper's two steps. With the
position p_t = t in the last input coordinate (raw, 1-based; see ``verify.tasks.keep_nth``):

* conv on the position channel: tap ``pos_gain = 1`` on x_t, bias ``-(n + 1/2)``, so the conv output (after SiLU)
  is ``u_t = silu(t - n - 1/2)``: in (-1, 0) for t <= n and >= (t - n - 1/2)/2 > 0 for t > n;
* ``Delta_t = softplus(dt_bias - w u_t)`` (x_proj's dt row reads u_t, dt_proj weight ``-w``): at least
  ``softplus(dt_bias)`` for t <= n, at most ``exp(dt_bias - w (t - n - 1/2) / 2)`` for t > n (a geometric tail);
* value channels: one-hot embedding, conv tap ``value_gain`` on x_t, so ``silu(value_gain)`` on the token's channel
  and exactly 0 elsewhere; B_t = beta * (sum of value channels) and C_t = gamma * (the same sum) are the constants
  ``beta silu(value_gain)`` and ``gamma silu(value_gain)`` (every token lights exactly one value channel);
* A = -lambda (A_log = log lambda, lambda = 1 as in the paper), D = 0, constant gate silu(gate_pre), out_proj = I,
  readout row m = e_{value[m]}.

**Proven margin** (``margin_lower_bound``), for every sequence of every length T >= n, every t in [n, T]:
``logit[x_n] - max_{m != x_n} logit[m] >= G [Delta_n e^{-lambda S} - e^{-lambda Delta_n} (n-1) Delta_max - S]`` with
``G = silu(gate_pre) gamma beta silu(value_gain)^3``, ``Delta_n = softplus(dt_bias - w silu(-1/2))`` (the write at n),
``Delta_max = softplus(dt_bias + w)`` (any Delta before n) and ``S = e^{dt_bias - w/4} / (1 - e^{-w/2})`` >= sum of
every Delta after n. ``Delta`` is taken as an interval ``[delta_lo(x), softplus(x)]`` that contains both the exact
softplus and torch's / the CUDA kernel's thresholded one (identity above 20), so the bound covers every engine.
The same S is Lemma 2's hypothesis: lambda * sum_{t>n} Delta_t <= c = lambda S, so dh_t/dx_n keeps at least e^{-c} of
its value at n for all t (``symbolic.sensitivity``).
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from symbolic.blocks import sigmoid, silu, softplus
from symbolic.proofs import Obligation, delta_lo, identity, nonnegative_on_halfline, positive

n_sym = sp.Symbol("n", positive=True, integer=True)


@dataclass(frozen=True)
class Corollary2Constants:
    value_gain: sp.Expr = sp.Integer(1)  # conv tap on the value channels
    pos_gain: sp.Expr = sp.Integer(1)  # conv tap on the position channel
    dt_bias: sp.Expr = sp.Integer(30)  # Delta_t = softplus(dt_bias - w u_t)
    w: sp.Expr = sp.Integer(400)  # dt slope (the paper's |w_Delta|)
    lam: sp.Expr = sp.Integer(1)  # A = -lam (paper: lambda = 1)
    beta: sp.Expr = sp.Integer(1)  # B_t = beta * sum(value channels)
    gamma: sp.Expr = sp.Integer(1)  # C_t = gamma * sum(value channels)
    gate_pre: sp.Expr = sp.Integer(1)  # the gate is silu(gate_pre)

    @property
    def s_v(self):
        return silu(self.value_gain)

    @property
    def gain(self):
        """G: logit of the stored token per unit of Delta_n (gate * C * B * value)."""
        return silu(self.gate_pre) * self.gamma * self.beta * self.s_v**3

    def u(self, k):
        """Conv output on the position channel at t = n + k (k <= 0: before/at n; k >= 1: after)."""
        return silu(self.pos_gain * (k - sp.Rational(1, 2)))

    def pre(self, k):
        return self.dt_bias - self.w * self.u(k)

    @property
    def delta_n_lo(self):
        """Delta at t = n, lower end of the engine interval."""
        return delta_lo(self.pre(0))

    @property
    def delta_max(self):
        """Upper bound on Delta_t for t <= n (uses silu(z) > -1 for z <= 0)."""
        return softplus(self.dt_bias + self.w)

    @property
    def tail(self):
        """S >= sum_{t > n} Delta_t for every T (uses silu(z) >= z/2 for z >= 0 and softplus(x) <= e^x)."""
        return sp.exp(self.dt_bias - self.pos_gain * self.w / 4) / (1 - sp.exp(-self.pos_gain * self.w / 2))

    @property
    def a_log(self):
        return sp.log(self.lam)


DEFAULT = Corollary2Constants()


def margin_lower_bound(c: Corollary2Constants = DEFAULT, n=n_sym):
    """Proven lower bound on logit[x_n] - max other logit at every t >= n, for every T (see the module docstring)."""
    lam, S = c.lam, c.tail
    return c.gain * (c.delta_n_lo * sp.exp(-lam * S) - sp.exp(-lam * c.delta_n_lo) * (n - 1) * c.delta_max - S)


def lemma2_constant(c: Corollary2Constants = DEFAULT):
    """c in Lemma 2: lambda * sum_{t > n} Delta_t <= c for every T."""
    return c.lam * c.tail


def obligations(c: Corollary2Constants = DEFAULT, n: int = 5):
    """Every step of the margin proof, decided exactly by sympy, for KEEP n-TH with this n."""
    y = sp.Symbol("y", real=True)
    k = sp.Symbol("k", integer=True, nonnegative=True)
    r = sp.exp(-c.pos_gain * c.w / 2)
    geometric = sp.summation(sp.exp(c.dt_bias - c.pos_gain * c.w / 4) * r**k, (k, 0, sp.oo))
    bound = margin_lower_bound(c, sp.Integer(n))
    return [
        Obligation("sigmoid(y) >= 1/2 for y >= 0", "sigmoid(y) - 1/2 = tanh(y/2)/2 >= 0",
                   nonnegative_on_halfline(sigmoid(y) - sp.Rational(1, 2), y)),
        Obligation("silu(y) >= y/2 for y >= 0 (after n the position feature grows at least linearly)",
                   "silu(y) - y/2 >= 0 on [0, oo)", nonnegative_on_halfline(silu(y) - y / 2, y)),
        Obligation("-1 < silu(-y) <= 0 for y >= 0 (before n: Delta in [softplus(b), softplus(b + w)])",
                   "silu(-y) = -y/(1+e^y) and 1 + e^y - y >= 2 > 0 on [0, oo)",
                   identity(silu(-y), -y / (1 + sp.exp(y))) and nonnegative_on_halfline(1 + sp.exp(y) - y - 2, y)),
        Obligation("softplus(x) <= e^x for all x", "u - log(1 + u) >= 0 for u = e^x >= 0",
                   nonnegative_on_halfline(y - sp.log(1 + y), y)),
        Obligation("the tail sum is a convergent geometric series", "sum_k e^{b - w/4} r^k = S, r = e^{-w/2} < 1",
                   identity(geometric, c.tail) and positive(1 - r)),
        Obligation("the position feature and its weight are positive (the two bounds above on silu apply to it)",
                   "pos_gain > 0 and w > 0: silu(pos_gain (k - 1/2)) is <= 0 before n and >= pos_gain (k - 1/2) / 2 "
                   "after it, and Delta = softplus(b - w u) moves the other way", positive(c.pos_gain) and positive(c.w)),
        Obligation("value channels: the token's channel survives the conv, others are exactly 0",
                   "silu(value_gain) > 0 and silu(0) = 0", positive(c.s_v) and silu(sp.Integer(0)) == 0),
        Obligation("gate, B and C are positive constants", "silu(gate_pre) beta gamma > 0", positive(c.gain)),
        Obligation("the step at n writes and wipes", "Delta_n > 0 and lam > 0", positive(c.delta_n_lo) and positive(c.lam)),
        Obligation(f"margin > 0 for n = {n}, every T",
                   "G [Delta_n e^{-lam S} - e^{-lam Delta_n} (n-1) Delta_max - S] > 0", positive(bound)),
        Obligation("Lemma 2 hypothesis: lam * sum_{t>n} Delta_t <= c < 1e-20", "lam S < 1e-20",
                   positive(sp.Rational(1, 10**20) - lemma2_constant(c))),
    ]
