"""Theorem 3 of Huang et al. (ICML 2025): MQAR with a one-layer Mamba-2 block, exactly, in sympy.

**Theorem 3 (paper).** A one-layer Mamba-2 block without gate solves MQAR with kappa keys and |V| values with
N = kappa, d = kappa + |V| (step 1, one-hot keys and values) or N = p_k = O(log kappa), d = O(log kappa + log |V|)
(step 2, Johnson-Lindenstrauss key and value codes). Mechanism (eqs. 74-77): Mamba-2 convolves x, B and C
independently; the B stream is shifted by one token (B_s = W_k x_{s-1}), x and C pass the current token, Lambda = 0,
so y_t = sum_s x_s <B_s, C_t> is linear attention whose key at s is the *previous* token: a query k_i reads exactly
the value stored after k_i.

**The real block.** mamba_ssm's single depthwise conv over the concatenated xBC channels carries the three paper
convolutions: B channels use only tap -2 (previous token), x and C channels only tap -1 (current token); all conv
biases are 0, so every conv pre-activation is exactly 0 (``silu(0) = 0``) or one of a few constants (``conv_table``).
The gate is held at the constant ``silu(gate_pre)`` through ``in_proj.bias`` (``rmsnorm=False``, ``bias=True``),
Delta = ``delta`` through ``dt_bias``, and ``A_log`` spends a decay budget as in Theorem 2 (``r_min``). Noise tokens
embed at 0 and the x channels read only value coordinates, so the only writes are (key, value) pairs: queries write
nothing (any key may be queried any number of times, adjacent queries included), and unlike the S6 construction
no adjacent-key interference exists, because C reads only the current token.

**Step 1** (one-hot): B_s[i] = silu(b1) [x_{s-1} = key i], C_t[i] = silu(c1) [x_t = key i], x_s[j] = silu(g)
[x_s = value j], N = kappa. The query of key i reads ``gate delta silu(b1) silu(c1) silu(g) rho e_{j(i)}`` and nothing
else: margin >= ``gate delta silu(b1) silu(c1) silu(g) r_min``.

**Step 2 and SiLU on signed codes (the paper's gap).** Keys get balanced ±1 codes k_i in N dims (columns sum to 0).
On ±b, SiLU is affine: ``silu(b q) = gamma_b + alpha_b q`` with alpha_b = b/2, gamma_b = alpha_b t_b,
t_b = tanh(b/2). So <B_s, C_t> = N gamma_b gamma_c + alpha_b alpha_c <k_l, k_i>: a constant offset N gamma_b gamma_c
per stored pair, which would add every stored value to every read. **Our fix:** one extra state coordinate, fed by a
key-flag embedding coordinate (1 on every key): B[flag] = silu(b) when x_{s-1} is a key (tap -2 gain b),
C[flag] = silu(-c) when x_t is a key (tap -1 gain -c). Choosing t_b rational, b = log((1+t_b)/(1-t_b)),
t_c = (1+t_b)/(1+t_b+N t_b) and c = log((1+t_c)/(1-t_c)) makes ``N gamma_b gamma_c + silu(b) silu(-c) = 0``
exactly, for every N (``flag_cancellation``). The state is then exactly linear attention on the codes:
``<B_s, C_t> = alpha_b alpha_c <k_l, k_i>``. Values use balanced codes too; their SiLU offset gamma_g 1 is orthogonal
to every readout row q_m (Theorem 2's trick), so logit_m = K sum_l rho_l <k_l, k_i> <v_{j(l)}, v_m> with
K = gate delta alpha_g alpha_b alpha_c.

**Margin, every sequence (``margin_lower_bound``).** With mu_v the value coherence and
sigma_k = max_i sum_{l != i} |<k_l, k_i>| / N the key interference:
``margin >= K N p_v (r_min (1 - mu_v) - sigma_k (1 + mu_v))``. Orthogonal (Sylvester-Hadamard) key codes have
sigma_k = 0, N = 2^ceil(log2(kappa+1)), and need only mu_v < 1.

**What N = O(log kappa) cannot give (rank bound, in the docstring of ``constructions.mqar_mamba2``).** In this
mechanism the read at query i is sum_l W_il u_{j(l)} with W = C^T B (rank <= N) independent of the values; exact
recall on *every* value assignment (|V| >= 2) forces W strictly diagonally dominant, hence nonsingular, hence
N >= kappa. So the paper's N = O(log kappa) holds only for typical (random) values, never for all sequences
(its Remark 7); ``constructions.mqar_mamba2`` lets a user pick such N (``key_dim``) and then reports no proven margin.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from symbolic.blocks import ConstantStepDecay, silu
from symbolic.theorem2 import Obligation, _is_true, decay_obligation

N_sym = sp.symbols("N", positive=True, integer=True)


@dataclass(frozen=True)
class Theorem3Constants(ConstantStepDecay):
    """The construction's free constants (sympy numbers); every derived constant is an exact expression of them."""

    onehot_b: sp.Expr = sp.Integer(2)  # step 1: B conv gain (tap -2) on key channel i
    onehot_c: sp.Expr = sp.Integer(2)  # step 1: C conv gain (tap -1) on key channel i
    value_gain: sp.Expr = sp.Integer(2)  # x conv gain (tap -1) on value channels (one-hot value or ±1 code)
    key_tanh: sp.Expr = sp.Rational(1, 2)  # step 2: t_b = tanh(b/2), so b = log((1 + t_b)/(1 - t_b)) = log 3
    delta: sp.Expr = sp.Integer(1)  # constant step size Delta
    gate_pre: sp.Expr = sp.Integer(2)  # z, so the gate is silu(gate_pre)
    decay_budget: sp.Expr = field(default_factory=lambda: sp.log(sp.Rational(5, 4)))  # delta * |A| * T

    @property
    def gate(self):
        return silu(self.gate_pre)

    # --- step 2 key gains, as functions of the key code dimension N -----------------------------------------------
    @property
    def key_b(self):
        t = self.key_tanh
        return sp.log((1 + t) / (1 - t))

    def key_c_tanh(self, n=N_sym):
        t = self.key_tanh
        return (1 + t) / (1 + t + n * t)

    def key_c(self, n=N_sym):
        t = self.key_c_tanh(n)
        return sp.log((1 + t) / (1 - t))

    def key_scale(self, n=N_sym):
        """alpha_b alpha_c: <B_s, C_t> = key_scale * <k_l, k_i> after the flag cancellation."""
        return self.key_b / 2 * self.key_c(n) / 2


DEFAULT = Theorem3Constants()


# ----------------------------------------------------------------------------------------------------------------
# Conv outputs and the exact state read
# ----------------------------------------------------------------------------------------------------------------

KINDS = ("blank", "key", "value")  # blank = left padding or a noise token (both embed at 0)


def conv_table(c: Theorem3Constants = DEFAULT, step: int = 1, n=N_sym, q=sp.Integer(1), q_prev=sp.Integer(1)):
    """Conv outputs (after SiLU) on the B, C, x channels for every (previous, current) token kind.

    Step 1: one-hot key channel i and value channel j (the token on them is key i / value j). Step 2: a key code
    coordinate carrying q_prev (previous key) / q (current key), the flag coordinate, a value code coordinate
    carrying q. Entries not listed are exactly 0.
    """
    out = {}
    for prev in KINDS:
        for cur in KINDS:
            e = {}
            if step == 1:
                if prev == "key":
                    e["B[key]"] = silu(c.onehot_b)
                if cur == "key":
                    e["C[key]"] = silu(c.onehot_c)
                if cur == "value":
                    e["x[value]"] = silu(c.value_gain)
            else:
                if prev == "key":
                    e["B[code]"], e["B[flag]"] = silu(c.key_b * q_prev), silu(c.key_b)
                if cur == "key":
                    e["C[code]"], e["C[flag]"] = silu(c.key_c(n) * q), silu(-c.key_c(n))
                if cur == "value":
                    e["x[code]"] = silu(c.value_gain * q)
            out[(prev, cur)] = e
    return out


def affine_on_signs(gain, tanh_half=None):
    """silu(gain q) - (gamma + alpha q) for q = +1 and q = -1, with alpha = gain/2, gamma = alpha tanh(gain/2)."""
    alpha = gain / 2
    gamma = alpha * (sp.tanh(gain / 2) if tanh_half is None else tanh_half)
    return [sp.simplify((silu(gain * q) - (gamma + alpha * q)).rewrite(sp.exp)) for q in (1, -1)]


def flag_cancellation(c: Theorem3Constants = DEFAULT, n=N_sym):
    """N gamma_b gamma_c + silu(b) silu(-c): the code offset plus the flag coordinate's product (must be 0)."""
    b, cc = c.key_b, c.key_c(n)
    gamma_b, gamma_c = b / 2 * c.key_tanh, cc / 2 * c.key_c_tanh(n)
    return sp.simplify(n * gamma_b * gamma_c + silu(b) * silu(-cc))


def read_identity(c: Theorem3Constants = DEFAULT, n=N_sym):
    """<B_s, C_t> - alpha_b alpha_c <k_l, k_i> for balanced codes, as an expression in the code sums (must be 0).

    Per coordinate silu(b q') silu(c q) = (gamma_b + alpha_b q')(gamma_c + alpha_c q) (``affine_on_signs``); summed
    over N coordinates with S' = sum q', S = sum q, P = <q', q>, plus the flag product. Balanced codes: S = S' = 0.
    """
    S, S2, P = sp.symbols("S S_prev P")
    b, cc = c.key_b, c.key_c(n)
    ab, ac = b / 2, cc / 2
    gb, gc = ab * c.key_tanh, ac * c.key_c_tanh(n)
    codes = n * gb * gc + gb * ac * S + ab * gc * S2 + ab * ac * P
    total = codes + silu(b) * silu(-cc)
    return sp.simplify((total - ab * ac * P).subs({S: 0, S2: 0}))


# ----------------------------------------------------------------------------------------------------------------
# Margins
# ----------------------------------------------------------------------------------------------------------------


def margin_lower_bound(c: Theorem3Constants = DEFAULT, step: int = 1, n=None, p_v=None, mu_v=0, sigma_k=0):
    """Proven lower bound on logit[target] - max other logit at every query of every sequence of length <= T.

    Step 1: ``gate delta silu(b1) silu(c1) silu(g) r_min``. Step 2: ``K N p_v (r_min (1 - mu_v) - sigma_k (1 + mu_v))``
    with K = gate delta alpha_g alpha_b alpha_c, for key codes of dimension N with interference sigma_k and value
    codes of dimension p_v with coherence mu_v (readout row m = q_m).
    """
    base = c.gate * c.delta
    if step == 1:
        return base * silu(c.onehot_b) * silu(c.onehot_c) * silu(c.value_gain) * c.r_min
    k = base * c.value_gain / 2 * c.key_scale(n)
    return k * n * p_v * (c.r_min * (1 - mu_v) - sigma_k * (1 + mu_v))


def max_interference(c: Theorem3Constants = DEFAULT, mu_v=0):
    """The largest key interference sigma_k for which the step-2 margin stays positive."""
    return c.r_min * (1 - mu_v) / (1 + mu_v)


# ----------------------------------------------------------------------------------------------------------------
# Proof obligations
# ----------------------------------------------------------------------------------------------------------------


def _conv_support_ok(table, step):
    """B only after a key, C only at a key, x only at a value: the writes are exactly the (key, value) pairs."""
    b, cc, x = ("B[key]", "C[key]", "x[value]") if step == 1 else ("B[code]", "C[code]", "x[code]")
    return all((b in e) == (p == "key") and (cc in e) == (q == "key") and (x in e) == (q == "value")
               for (p, q), e in table.items())


def obligations(c: Theorem3Constants = DEFAULT, n=None, p_v=None, mu_v=None, sigma_k=None):
    """Every identity and inequality Theorem 3's construction relies on, each decided exactly by sympy.

    Without ``n`` only the step-1 and the N-generic step-2 obligations are listed; with the drawn codes' N, p_v,
    mu_v and sigma_k, the step-2 margin obligation for them is added.
    """
    obs = [
        Obligation("conv: B after a key, C at a key, x at a value (step 1)", "support of conv_table(step=1)",
                   _conv_support_ok(conv_table(c, 1), 1)),
        Obligation("conv: B after a key, C at a key, x at a value (step 2)", "support of conv_table(step=2)",
                   _conv_support_ok(conv_table(c, 2), 2)),
        Obligation("step 1 conv outputs are positive", "silu(b1), silu(c1), silu(g) > 0",
                   all(_is_true(silu(v)) for v in (c.onehot_b, c.onehot_c, c.value_gain))),
        Obligation("gate is a positive constant", "silu(gate_pre) > 0", _is_true(c.gate)),
        decay_obligation(),
        Obligation("step 1 margin > 0", "gate delta silu(b1) silu(c1) silu(g) r_min > 0",
                   _is_true(margin_lower_bound(c, 1))),
        Obligation("silu affine on key codes ±b", "silu(±b) = alpha_b (t_b ± 1), b = log((1+t_b)/(1-t_b))",
                   affine_on_signs(c.key_b, c.key_tanh) == [0, 0]),
        Obligation("silu affine on key codes ±c (every N)", "silu(±c) = alpha_c (t_c ± 1)",
                   affine_on_signs(c.key_c(), c.key_c_tanh()) == [0, 0]),
        Obligation("silu affine on value codes ±g", "silu(±g) = (g/2) tanh(g/2) ± g/2",
                   affine_on_signs(c.value_gain) == [0, 0]),
        Obligation("flag cancels the code offset (every N)", "N gamma_b gamma_c + silu(b) silu(-c) = 0",
                   flag_cancellation(c) == 0),
        Obligation("state read is linear attention on the codes (every N)",
                   "<B_s, C_t> = alpha_b alpha_c <k_l, k_i> for balanced codes", read_identity(c) == 0),
        Obligation("key gains are positive (every N)", "b > 0, and 0 < t_c < 1 so c = log((1+t_c)/(1-t_c)) > 0",
                   _is_true(c.key_b) and _is_true(c.key_c_tanh()) and _is_true(sp.simplify(1 - c.key_c_tanh()))),
    ]
    if n is not None:
        mu, sig = sp.nsimplify(mu_v), sp.nsimplify(sigma_k)
        bound = margin_lower_bound(c, 2, sp.Integer(n), sp.Integer(p_v), mu, sig)
        obs.append(Obligation("step 2 margin > 0 for the drawn codes",
                              f"K N p_v (r_min (1 - {mu}) - {sig} (1 + {mu})) > 0", _is_true(bound)))
    return obs


# ----------------------------------------------------------------------------------------------------------------
# What the construction gives a language model around it (symbolic.language_model)
# ----------------------------------------------------------------------------------------------------------------


def target_logit_lower_bound(c: Theorem3Constants = DEFAULT, step: int = 1, n=None, p_v=None, mu_v=0, sigma_k=0):
    """Lower bound on the queried value's own logit at every query (the wrapped LM gives non-value tokens 0).

    Step 1: the read is gate delta silu(b1) silu(c1) silu(g) rho e_{j(i)} alone: the margin bound itself.
    Step 2: K (rho_i N p_v + sum_{l != i} rho_l <k_l, k_i> <v_{j(l)}, v_{j(i)}>) >= K N p_v (r_min - sigma_k)
    (|<v, v'>| <= p_v, rho in [r_min, 1]).
    """
    if step == 1:
        return margin_lower_bound(c, 1)
    return c.gate * c.delta * c.value_gain / 2 * c.key_scale(n) * n * p_v * (c.r_min - sigma_k)


def _read_and_write_bounds(c: Theorem3Constants, step: int, n=None, p_v=None):
    """(read, x_sq): a bound on |<B_s, C_t>| and on |x_s|^2 (the x conv output; nonzero only at value tokens)."""
    g = c.value_gain
    if step == 1:
        return silu(c.onehot_b) * silu(c.onehot_c), silu(g) ** 2
    return c.key_scale(n) * n, p_v / 2 * (silu(g) ** 2 + silu(-g) ** 2)


def gated_output_bound(c: Theorem3Constants = DEFAULT, step: int = 1, n=None, p_v=None, seq_len=None):
    """Upper bound on |y_t * silu(z_t)| (the gated SSM output, before out_proj) at every position of every MQAR
    sequence of length <= T: y_t = sum_{s <= t} rho delta x_s <B_s, C_t> with rho in (0, 1], so
    |y_t| <= T delta max |x_s| max |<B_s, C_t>| (step 2: <B_s, C_t> = alpha_b alpha_c <k_l, k_i>, ``read_identity``,
    at most alpha_b alpha_c N), times the gate."""
    read, x_sq = _read_and_write_bounds(c, step, n, p_v)
    return c.gate * seq_len * c.delta * read * sp.sqrt(x_sq)


def _nonneg(expr) -> bool:
    return bool(sp.sympify(expr).is_nonnegative)


def lm_obligations(c: Theorem3Constants = DEFAULT, step: int = 1, n=None, p_v=None, mu_v=0, sigma_k=0):
    """The facts ``gated_output_bound`` and ``target_logit_lower_bound`` rest on, decided on ``conv_table``."""
    read, x_sq = _read_and_write_bounds(c, step, n, p_v)
    tables = [conv_table(c, step, n if n is not None else N_sym, sp.Integer(q), sp.Integer(qp))
              for q in (1, -1) for qp in (1, -1)]
    xs = [e["x[value]" if step == 1 else "x[code]"] for t in tables for e in t.values()
          if ("x[value]" if step == 1 else "x[code]") in e]
    if step == 1:
        products = [e["B[key]"] * e2["C[key]"] for t in tables for e in t.values() for e2 in t.values()
                    if "B[key]" in e and "C[key]" in e2]
        x_ok = all(_nonneg(x_sq - x**2) for x in xs)
    else:  # <B_s, C_t> = alpha_b alpha_c <k_l, k_i> (read_identity), |<k_l, k_i>| <= N for ±1 codes, alpha's > 0
        products = [c.key_scale(n) * n] if _is_true(c.key_scale(n)) else [sp.oo]
        by_sign = [t[("blank", "value")]["x[code]"] ** 2 for t in (tables[0], tables[2])]  # q = +1, q = -1
        x_ok = _nonneg(x_sq - p_v / 2 * sum(by_sign))
    margin = margin_lower_bound(c, step, n, p_v, mu_v, sigma_k)
    return [
        Obligation("|<B_s, C_t>| <= the read bound", "every B-entry times C-entry of the conv table (step 2: the "
                   "linear-attention read of codes of dimension N) is at most the bound",
                   all(_nonneg(read - abs(v)) for v in products)),
        Obligation("|x_s|^2 <= the write bound", "the x conv output's squared norm at a value token (one-hot: one "
                   "entry; codes: p_v/2 entries each of silu(g), silu(-g)) is at most the bound", x_ok),
        Obligation("decay factors in (0, 1], step delta > 0, gate > 0", "delta, budget and silu(gate_pre) > 0",
                   _is_true(c.delta) and _is_true(c.decay_budget) and _is_true(c.gate)),
        Obligation("the queried value's logit >= the margin bound",
                   "target_logit_lower_bound - margin_lower_bound >= 0",
                   _nonneg(sp.simplify(target_logit_lower_bound(c, step, n, p_v, mu_v, sigma_k) - margin))),
    ]
