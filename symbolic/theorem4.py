"""Theorem 4 of Huang et al. (ICML 2025): MQAR with the Mamba-S4D block (S4D mixer, gate on), in sympy.

**Theorem 4 (paper).** A one-layer Mamba block whose mixer is S4D (Delta, B, C input-independent) solves MQAR with
N = 1 and d = kappa |V| (step 1, one-hot) or d = kappa p, p = O(log |V|) (step 2, JL value codes). Mechanism: the
mixer channels form kappa blocks, one per key; a size-2 conv with a threshold (eq. 87: k = 10, v = 1, c0 = 10,
c1 = 1, b = 100) turns the pair (key i, value j) into a 1 at (block i, slot j); the S4D state (Lambda-bar = 1,
B = C = 1, N = 1) is a running sum per channel, so before retrieval block i holds e_{j(i)}; at a query of key i the
gate ``silu(z)``, z = the raw embedding, keeps only block i.

**The real block.** The gate and the conv+SiLU are mamba_ssm's; Delta = softplus(dt_bias), A = -exp(A_log) spends a
decay budget (r_min), B = C = 1, D = 0. A channel (i, s) of block i reads the key-i coordinate and the slot-s value
coordinate; its conv pre-activation is c0 a_prev + c1 a_cur - b with a in {0, k, v} (step 2: {0, k, 0, 2} for
value codes q = -1 / +1 shifted by beta = 1). Unlike Theorems 2 and 3, a threshold is unavoidable here (an affine
function of (a_prev, a_cur) that is 0 on every pair but one is 0 everywhere), so SiLU's negative tail leaks:

* ``conv_table`` classifies every (previous, current) pair: the **signal** (key i, value j) -> silu(c1 v) at slot j
  (step 2: silu(2 c1) where q_j = +1, i.e. (silu(2 c1)/2)(q_j + 1)); the **uniform** write (key i, key i) ->
  silu(c1 k) on every slot of block i (a repeated adjacent key, the paper's edge case); **exact zeros**
  c0 k - b = 0 for (key i, anything else); and **leaks**, every other pair, with pre-activation <= -L.
* ``leak_bound``: for x >= L >= 1, 0 < -silu(-x) = x / (1 + e^x) < x e^{-x} <= L e^{-L} =: ell.
* The gate is exact: z = k on block i at a query of key i, z = 0 (silu(0) = 0) on every other block.
* Uniform writes shift every logit of block i equally (one-hot readout) or are orthogonal to the balanced readout
  rows (step 2: <1, q_m> = 0), so repeated adjacent keys are harmless. Queries followed by noise write exact zeros
  (noise embeds at 0): a key may be queried any number of times. Keys never interfere (disjoint blocks).

**Margins (``margin_lower_bound``),** at most T writes per channel, the own write decayed to >= r_min:
step 1 ``silu(k) delta (r_min silu(c0 k + c1 v - b) - (T - 1) ell)``;
step 2 ``silu(k) delta p (r_min (silu(2 c1)/2) (1 - mu) - 2 (T - 1) ell)`` for value codes of coherence mu < 1.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from symbolic.blocks import ConstantStepDecay, silu
from symbolic.theorem2 import Obligation, _is_true, decay_obligation


@dataclass(frozen=True)
class Theorem4Constants(ConstantStepDecay):
    """The paper's constants (eq. 87 / 94) and ours for the real block; each property is exact."""

    key: sp.Expr = sp.Integer(10)  # embedding of key i on its block (and the gate pre-activation)
    value: sp.Expr = sp.Integer(1)  # embedding of value j on slot j (step 1)
    c_prev: sp.Expr = sp.Integer(10)  # conv tap -2 (x_{t-1})
    c_cur: sp.Expr = sp.Integer(1)  # conv tap -1 (x_t)
    threshold: sp.Expr = sp.Integer(100)  # b: the conv bias is -b
    delta: sp.Expr = sp.Integer(1)
    decay_budget: sp.Expr = field(default_factory=lambda: sp.log(sp.Rational(5, 4)))

    beta: sp.Expr = sp.Integer(1)  # step 2: value codes q in {±1} embed as q + beta in {0, 2}

    @property
    def gate(self):
        return silu(self.key)

    def value_coords(self, step: int):
        """The values a value token puts on a slot channel: own / other slot (step 1), q = +1 / q = -1 (step 2)."""
        return (self.value, sp.Integer(0)) if step == 1 else (1 + self.beta, -1 + self.beta)

    def pre(self, a_prev, a_cur):
        return self.c_prev * a_prev + self.c_cur * a_cur - self.threshold


DEFAULT = Theorem4Constants()


def conv_table(c: Theorem4Constants = DEFAULT, step: int = 1):
    """{(prev, cur): (pre-activation, class)} on a channel of block i, class in signal / uniform / zero / leak.

    Token kinds on the channel: ``blank`` (padding, noise, another key: coordinate 0), ``key`` (key i: k), and
    ``value+`` / ``value-`` (a value whose coordinate on this slot is the first / second of ``value_coords``).
    """
    coords = {"blank": sp.Integer(0), "key": c.key}
    coords["value+"], coords["value-"] = c.value_coords(step)
    table = {}
    for prev, a in coords.items():
        for cur, b in coords.items():
            p = c.pre(a, b)
            if prev == "key" and cur == "value+":
                kind = "signal"
            elif prev == "key" and cur == "key":
                kind = "uniform"
            elif prev == "key":
                kind = "zero"
            else:
                kind = "leak"
            table[(prev, cur)] = (p, kind)
    return table


def leak_gap(c: Theorem4Constants = DEFAULT, step: int = 1):
    """L = the smallest |pre-activation| over the leak pairs."""
    return min(-p for p, kind in conv_table(c, step).values() if kind == "leak")


def leak_bound(c: Theorem4Constants = DEFAULT, step: int = 1):
    """ell = L e^{-L}: a bound on |silu(x)| for every leak pre-activation x <= -L."""
    L = leak_gap(c, step)
    return L * sp.exp(-L)


def signal(c: Theorem4Constants = DEFAULT, step: int = 1):
    """The conv output written at the own slot by the (key i, value j(i)) pair (step 2: where q = +1)."""
    return silu(c.pre(c.key, c.value_coords(step)[0]))


def margin_lower_bound(c: Theorem4Constants = DEFAULT, step: int = 1, seq_len=None, p=None, mu=None):
    """Proven lower bound on logit[target] - max other logit at every query of every sequence of length <= T."""
    ell, head = leak_bound(c, step), c.gate * c.delta
    if step == 1:
        return head * (c.r_min * signal(c, 1) - (seq_len - 1) * ell)
    return head * p * (c.r_min * signal(c, 2) / 2 * (1 - mu) - 2 * (seq_len - 1) * ell)


def _leak_lemma(L):
    """For x >= L >= 1: x / (1 + e^x) < x e^{-x} and x e^{-x} is non-increasing (so <= L e^{-L})."""
    x, y = sp.symbols("x y", positive=True)
    rest = x * sp.exp(-x) / (1 + sp.exp(x))  # x e^{-x} - x / (1 + e^x), positive
    tail_ok = sp.simplify(x * sp.exp(-x) - x / (1 + sp.exp(x)) - rest) == 0 and bool(rest.is_positive)
    slope = sp.diff(x * sp.exp(-x), x).subs(x, 1 + y)  # x = 1 + y, y > 0
    return tail_ok and bool(sp.simplify(slope).is_negative) and bool((L - 1).is_nonnegative)


def obligations(c: Theorem4Constants = DEFAULT, seq_len=None, p=None, mu=None):
    """Every identity and inequality Theorem 4's construction relies on, decided exactly by sympy."""
    obs = []
    for step in (1, 2):
        table = conv_table(c, step)
        kinds = {k: [pre for pre, kd in table.values() if kd == k] for k in ("signal", "uniform", "zero", "leak")}
        obs += [
            Obligation(f"step {step}: conv signal is positive", "c0 k + c1 v - b > 0",
                       all(_is_true(v) for v in kinds["signal"])),
            Obligation(f"step {step}: (key i, key i) writes the same positive value on every slot",
                       "c0 k + c1 k - b > 0", all(_is_true(v) for v in kinds["uniform"])),
            Obligation(f"step {step}: (key i, anything else) writes exactly 0",
                       "c0 k - b = 0 (and c1 (beta - 1) = 0)", all(v == 0 for v in kinds["zero"])),
            Obligation(f"step {step}: every other pair leaks at most L e^-L",
                       f"pre-activation <= -L = {-leak_gap(c, step)}", _leak_lemma(leak_gap(c, step))),
        ]
    obs += [
        Obligation("step 2: signal is affine in the code", "silu(c1 (q + beta)) = (silu(2 c1)/2)(q + 1) for q = ±1",
                   all(sp.simplify(silu(c.pre(c.key, q + c.beta)) - signal(c, 2) / 2 * (q + 1)) == 0 for q in (1, -1))),
        Obligation("gate is exact", "silu(k) > 0 on the queried block, silu(0) = 0 elsewhere",
                   _is_true(c.gate) and silu(sp.Integer(0)) == 0),
        decay_obligation(),
    ]
    if seq_len is not None:
        obs.append(Obligation("step 1 margin > 0", f"silu(k) delta (r_min signal - (T-1) ell) > 0, T = {seq_len}",
                              _is_true(margin_lower_bound(c, 1, sp.Integer(seq_len)))))
    if p is not None:
        m = margin_lower_bound(c, 2, sp.Integer(seq_len), sp.Integer(p), sp.nsimplify(mu))
        obs.append(Obligation("step 2 margin > 0 for the drawn codes", f"mu = {mu} < 1 and leaks, T = {seq_len}",
                              _is_true(m)))
    return obs
