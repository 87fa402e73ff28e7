"""Theorem 2 of Huang et al. (ICML 2025): MQAR with a one-layer Mamba (S6 mixer), exactly, in sympy.

**Theorem 2 (paper).** A one-layer Mamba block with the S6 mixer and no gate solves MQAR with kappa keys and vocabulary
V with state size N = kappa and model size d = kappa + |V| (step 1, one-hot values) or d = kappa + p with
p = O(log |V|) (step 2, Johnson-Lindenstrauss value codes). Mechanism: a size-2 convolution merges each (key, value)
pair into one token; B_t writes it into the state column of that key; at a query C_t reads that column back.

**The real block.** ``mamba_ssm.Mamba`` differs from the paper's idealised block: SiLU instead of ReLU after the conv,
a gate ``y * silu(z)`` that is always on, ``A = -exp(A_log)`` (never exactly 0) and ``Delta = softplus(...)``. Our
construction keeps the paper's mechanism and chooses its constants so that the proof is *exact* in that block:

* **Per-channel conv taps, zero bias.** The paper broadcasts one (c0, c1, b) to every channel (eqs. 56, 70) and
  relies on ReLU to cut negative pre-activations (``paper_conv_table``). Under SiLU a negative pre-activation leaks
  ``silu(-x) != 0`` into every inactive channel (``paper_silu_leak``). mamba_ssm's conv is depthwise, so we give
  key channels the taps (prev, cur) = (key_prev, key_cur) and value channels (0, value_gain), all with bias 0. Every
  conv pre-activation is then exactly 0 (and ``silu(0) = 0``) or one of three positive numbers, so every conv output
  is one of the exact values ``silu(key_prev)``, ``silu(key_cur)``, ``silu(value_gain * code)``: no SiLU-vs-ReLU
  approximation is needed at all. The paper's feasibility constraints (a key in either slot survives, a value in the
  current slot survives, a value in the previous slot is killed) hold exactly (``conv_table``).
* **Noise tokens embed at 0.** Keys, values and noise have disjoint token ids (the paper's ids overlap; §4.1 gap), so
  noise gets the zero embedding, which the conv treats exactly like the left padding. A (query, noise) pair then
  writes only key coordinates, never value coordinates, which resolves the post-query corruption gap (§4.7): a key
  may be queried any number of times.
* **Adjacent queries.** For a (key l, key i) pair the read is ``silu(key_cur) * col_i + silu(key_prev) * col_l``;
  the paper's "c0 << c1" condition becomes ``silu(key_cur) * r_min > silu(key_prev)`` (one-hot) and
  ``silu(key_cur) * r_min * (1 - mu) > silu(key_prev) * (1 + mu)`` (JL, coherence mu), proved below.
* **Gate.** ``in_proj`` has a bias (``Mamba(bias=True)``), the z rows of its weight are 0 and its z bias is
  ``gate_pre``, so the gate is the positive constant ``silu(gate_pre)``.
* **Decay.** ``dt_proj.weight = 0`` and ``dt_proj.bias = softplus^{-1}(delta)`` give a constant step ``delta``;
  ``A_log = log(decay_budget / (delta * T))`` makes any stored entry decay by at least ``r_min = exp(-decay_budget)``
  over a sequence of length at most T (``decay_obligation``).
* **JL values without the paper's shift.** Codes are balanced ±1 columns (p even, each column sums to 0). A value
  channel's pre-activation is ``value_gain * q`` with q = ±1, and on two points SiLU is affine:
  ``silu(g q) = gamma + alpha q`` with ``alpha = g/2`` and ``gamma = (g/2) tanh(g/2)`` (``jl_identities``). The
  constant gamma multiplies ``1_p``, which the balanced readout ``q_m . 1 = 0`` cancels exactly, so the paper's shift
  beta and output bias (eq. 70) are unnecessary.

Every constant and the inequality it must satisfy is an ``Obligation``; ``obligations()`` lists them and the test
suite asserts each holds exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from symbolic.blocks import ConstantStepDecay, relu, silu

kappa, vocab_size, T, p = sp.symbols("kappa vocab_size T p", positive=True, integer=True)


@dataclass(frozen=True)
class Obligation:
    """One identity or inequality the proof needs, with sympy's exact verdict."""

    name: str
    statement: str
    holds: bool


@dataclass(frozen=True)
class Theorem2Constants(ConstantStepDecay):
    """The construction's free constants (sympy numbers); each property below is an exact expression of them."""

    key_prev: sp.Expr = sp.Integer(1)  # conv pre-activation on key channel i when x_{t-1} = key i
    key_cur: sp.Expr = sp.Integer(10)  # conv pre-activation on key channel i when x_t = key i
    value_gain: sp.Expr = sp.Integer(1)  # conv tap on a value channel for the current token
    delta: sp.Expr = sp.Integer(1)  # the constant step size Delta
    gate_pre: sp.Expr = sp.Integer(1)  # z, so the gate is silu(gate_pre)
    decay_budget: sp.Expr = field(default_factory=lambda: sp.log(2))  # delta * |A| * T

    @property
    def s_prev(self):
        """Conv output on key channel i when the previous token is key i."""
        return silu(self.key_prev)

    @property
    def s_cur(self):
        """Conv output on key channel i when the current token is key i."""
        return silu(self.key_cur)

    @property
    def gate(self):
        return silu(self.gate_pre)

    # --- values ---------------------------------------------------------------------------------------------
    @property
    def onehot_value(self):
        """Conv output on value channel j when the current token is value j (one-hot step)."""
        return silu(self.value_gain)

    @property
    def jl_alpha(self):
        return self.value_gain / 2

    @property
    def jl_gamma(self):
        return self.value_gain / 2 * sp.tanh(self.value_gain / 2)


DEFAULT = Theorem2Constants()

# ----------------------------------------------------------------------------------------------------------------
# The paper's conv (broadcast constants, ReLU) and why it cannot be used verbatim under SiLU
# ----------------------------------------------------------------------------------------------------------------

PAPER_STEP1 = {"v": 1, "k": 2, "c0": 1, "c1": 2, "b": 1}  # eq. (56)
PAPER_STEP2 = {"v_min": 1, "v_max": 3, "k": 10, "c0": 1, "c1": 10, "b": 3}  # eq. (70), beta = 2


def paper_conv_table(step=1):
    """The paper's conv outputs on the channels a pair touches, ReLU(c0 x_{t-1} + c1 x_t - b).

    Returns ``{(prev, cur): {channel: output}}`` where a channel is named after the token that lives on it.
    """
    c = PAPER_STEP1 if step == 1 else {**PAPER_STEP2, "v": PAPER_STEP2["v_min"]}
    k, v, c0, c1, b = (sp.Integer(c[n]) for n in ("k", "v", "c0", "c1", "b"))
    f = lambda prev, cur: relu(c0 * prev + c1 * cur - b)  # noqa: E731
    return {
        ("key", "value"): {"key[prev]": f(k, 0), "value[cur]": f(0, v)},
        ("value", "key"): {"value[prev]": f(v, 0), "key[cur]": f(0, k)},
        ("key", "key"): {"key[prev]": f(k, 0), "key[cur]": f(0, k)},
        ("value", "value"): {"value[prev]": f(v, 0), "value[cur]": f(0, v)},
        ("pad", "key"): {"key[cur]": f(0, k)},
    }


def paper_feasibility(step=1):
    """The paper's conv constraints for step 1 (eq. 56) or step 2 (eq. 70), as exact booleans."""
    if step == 1:
        k, v, c0, c1, b = (sp.Integer(PAPER_STEP1[n]) for n in ("k", "v", "c0", "c1", "b"))
        return {"c0*k > b": c0 * k > b, "c1*v > b": c1 * v > b, "c1*k > b": c1 * k > b, "c0*v <= b": c0 * v <= b}
    c = {n: sp.Integer(x) for n, x in PAPER_STEP2.items()}
    return {
        "c0*k > b": c["c0"] * c["k"] > c["b"],
        "c1*v_min > b": c["c1"] * c["v_min"] > c["b"],
        "c0*v_max <= b": c["c0"] * c["v_max"] <= c["b"],
    }


def paper_silu_leak(step=1):
    """silu(-b): what every inactive channel outputs if the paper's broadcast bias is used with SiLU (nonzero)."""
    b = sp.Integer((PAPER_STEP1 if step == 1 else PAPER_STEP2)["b"])
    return silu(-b)


# ----------------------------------------------------------------------------------------------------------------
# Our conv, state and readout, exactly
# ----------------------------------------------------------------------------------------------------------------


def conv_table(c: Theorem2Constants = DEFAULT, value_code=sp.Integer(1)):
    """Conv outputs of our per-channel construction for every (previous, current) token kind.

    ``value_code`` is the embedding coordinate of the current value on a value channel (1 for one-hot, ±1 for JL).
    Kinds: ``blank`` is the left padding or a noise token (both embed at 0). Keys are ``key i`` (previous) and
    ``key l`` (current, l != i) or the same key; entries not listed are exactly 0.
    """
    kp, kc, g = c.key_prev, c.key_cur, c.value_gain
    val = {"value[cur]": silu(g * value_code)}
    return {
        ("blank", "blank"): {},
        ("blank", "key"): {"key[cur]": silu(kc)},
        ("blank", "value"): dict(val),
        ("key", "blank"): {"key[prev]": silu(kp)},
        ("key", "key"): {"key[prev]": silu(kp), "key[cur]": silu(kc)},
        ("key", "same key"): {"key[cur]": silu(kp + kc)},
        ("key", "value"): {"key[prev]": silu(kp), **val},
        ("value", "blank"): {},
        ("value", "key"): {"key[cur]": silu(kc)},
        ("value", "value"): dict(val),
    }


def state_column_after_kv(c: Theorem2Constants = DEFAULT, value_out=None, rho_key=1, rho_value=1):
    """Column i of the state right after key i's (key i, value j) pair and the pair before it.

    Two writes land in column i: at (x, key i) the key coordinate gets delta * silu(key_cur)^2, and at
    (key i, value j) the column gets delta * silu(key_prev) * u with u = silu(key_prev) e_i + value_out. rho_* are the
    decay factors since each write (1 when A = 0). Returns {"key i": coef, "value": coef of value_out}.
    """
    d, sp_, sc = c.delta, c.s_prev, c.s_cur
    return {
        "key i": d * (rho_key * sc**2 + rho_value * sp_**2),
        "value": d * rho_value * sp_,
    }


def query_read(c: Theorem2Constants = DEFAULT, prev="blank", rho_i=1, rho_l=1):
    """Coefficients of value_out(j(i)) and value_out(j(l)) in the gated output at a query of key i.

    prev is the token before the query: ``blank``/``value`` (C = silu(key_cur) e_i) or ``key`` l (C adds
    silu(key_prev) e_l). Includes the gate silu(gate_pre); out_proj is the identity.
    """
    col = state_column_after_kv(c)["value"]
    own = c.gate * c.s_cur * col * rho_i
    other = c.gate * c.s_prev * col * rho_l if prev == "key" else sp.Integer(0)
    return {"j(i)": own, "j(l)": other}


def margin_lower_bound(c: Theorem2Constants = DEFAULT, variant="one-hot", p_=None, mu=None, adjacent=True):
    """Proven lower bound on logit[target] - max_other logit at any query, any sequence of length <= T.

    one-hot: readout row m is e_m on the value block, value_out(j) = silu(value_gain) e_j.
    jl: readout row m is q_m (balanced ±1), value_out(j) = gamma 1 + alpha q_j, |q_m . q_j| <= mu p for m != j.
    Worst case over decay: the own column decays to r_min, the neighbour's column not at all.
    """
    read = query_read(c, "key" if adjacent else "blank", rho_i=c.r_min, rho_l=1)
    own, other = read["j(i)"], read["j(l)"]
    if variant == "one-hot":
        return c.onehot_value * (own - other)
    return c.jl_alpha * p_ * (own * (1 - mu) - other * (1 + mu))


def max_coherence(c: Theorem2Constants = DEFAULT):
    """The largest JL coherence mu for which the adjacent-query margin stays positive."""
    own = c.s_cur * c.r_min
    return (own - c.s_prev) / (own + c.s_prev)


# ----------------------------------------------------------------------------------------------------------------
# Proof obligations
# ----------------------------------------------------------------------------------------------------------------


def _is_true(expr) -> bool:
    return bool(expr) if isinstance(expr, (bool, sp.logic.boolalg.BooleanAtom)) else bool(expr.is_positive)


def decay_obligation(c: Theorem2Constants = DEFAULT) -> Obligation:
    """For all 1 <= s < t <= T: delta * |A| * (t - s) = budget * (t - s) / T < budget, so every factor > r_min."""
    m, n = sp.symbols("m n", nonnegative=True, integer=True)  # t = T - m, s = 1 + n
    excess = sp.simplify(((T - m) - (1 + n)) / T - 1)
    return Obligation("decay", "(t - s)/T - 1 < 0 for 1 <= s < t <= T", bool(excess.is_negative))


def jl_identities(c: Theorem2Constants = DEFAULT):
    g = sp.symbols("g", positive=True)
    alpha_ok = sp.simplify(silu(g) - silu(-g) - g) == 0
    gamma_ok = sp.simplify(((silu(g) + silu(-g)) / 2 - g / 2 * sp.tanh(g / 2)).rewrite(sp.exp)) == 0
    return [
        Obligation("jl alpha", "silu(g) - silu(-g) = g for all g", alpha_ok),
        Obligation("jl gamma", "(silu(g) + silu(-g))/2 = (g/2) tanh(g/2) for all g", gamma_ok),
    ]


def obligations(c: Theorem2Constants = DEFAULT, mu=None, p_=None):
    """Every identity and inequality Theorem 2's construction relies on, each decided exactly by sympy."""
    table = conv_table(c)
    obs = [
        Obligation("conv: key in previous slot survives", "silu(key_prev) > 0", _is_true(c.s_prev)),
        Obligation("conv: key in current slot survives", "silu(key_cur) > 0", _is_true(c.s_cur)),
        Obligation("conv: value in current slot survives", "silu(value_gain) > 0", _is_true(c.onehot_value)),
        Obligation(
            "conv: value in previous slot is killed, blanks write nothing",
            "conv(value, key) and conv(value, blank) have no value entry; conv(blank, blank) = 0",
            "value[cur]" not in table[("value", "key")] and table[("value", "blank")] == {} and table[("blank", "blank")] == {},
        ),
        Obligation(
            "conv: adjacent keys weigh the current key more",
            "silu(key_cur) > silu(key_prev)",
            _is_true(c.s_cur - c.s_prev),
        ),
        Obligation("gate is a positive constant", "silu(gate_pre) > 0", _is_true(c.gate)),
        decay_obligation(c),
        Obligation(
            "one-hot margin > 0 (adjacent query, worst decay)",
            "silu(value_gain) * gate * delta * silu(key_prev) * (silu(key_cur) r_min - silu(key_prev)) > 0",
            _is_true(margin_lower_bound(c, "one-hot")),
        ),
        Obligation(
            "one-hot margin does not depend on kappa, |V| or T",
            "free symbols of the bound are empty",
            not (margin_lower_bound(c, "one-hot").free_symbols & {kappa, vocab_size, T}),
        ),
        *jl_identities(c),
    ]
    if mu is not None:
        mu = sp.nsimplify(mu)
        obs.append(
            Obligation(
                "jl margin > 0 for the drawn codes",
                f"mu = {mu} < mu* = (silu(key_cur) r_min - silu(key_prev)) / (silu(key_cur) r_min + silu(key_prev))",
                _is_true(max_coherence(c) - mu) and _is_true(margin_lower_bound(c, "jl", p_ or p, mu)),
            )
        )
    return obs


# ----------------------------------------------------------------------------------------------------------------
# What the construction gives a language model around it (symbolic.language_model)
# ----------------------------------------------------------------------------------------------------------------


def target_logit_lower_bound(c: Theorem2Constants = DEFAULT, variant="one-hot", p_=None, mu=None):
    """Lower bound on the queried value's own logit at any query (not a difference): the wrapped LM gives every
    non-value token the logit 0, which this bound keeps below the target.

    one-hot: silu(value_gain) (own + [j(l) = j(i)] other) >= silu(value_gain) own, as other >= 0.
    jl: alpha (own p + other <q_j(i), q_j(l)>) >= alpha p (own - mu other) (the gamma 1_p term is cancelled by the
    balanced row). Worst case as in ``margin_lower_bound``: own decayed to r_min, other not decayed.
    """
    read = query_read(c, "key", rho_i=c.r_min, rho_l=1)
    own, other = read["j(i)"], read["j(l)"]
    if variant == "one-hot":
        return c.onehot_value * own
    return c.jl_alpha * p_ * (own - mu * other)


def _conv_bounds(c: Theorem2Constants, variant, p_):
    """(beta, c_sum, u_sq): the largest key-channel conv output, the largest sum of a conv output's key entries, and
    an upper bound on any conv output's squared norm (the value part of a balanced code: p/2 entries silu(g), p/2
    entries silu(-g))."""
    beta = silu(c.key_prev + c.key_cur)
    c_sum = sp.Max(c.s_prev + c.s_cur, beta)
    g = c.value_gain
    value_sq = c.onehot_value**2 if variant == "one-hot" else p_ / 2 * (silu(g) ** 2 + silu(-g) ** 2)
    return beta, c_sum, sp.Max(c.s_prev**2 + c.s_cur**2, beta**2) + value_sq


def mixer_output_bound(c: Theorem2Constants = DEFAULT, variant="one-hot", p_=None, seq_len=T):
    """Upper bound on |y_t| (the mixer output's 2-norm) at every position of every MQAR sequence of length <= T.

    y_t = gate * sum_n C_t[n] h_t[:, n] (out_proj the identity, D = 0), h_t[:, n] = sum_{s <= t} delta B_s[n]
    (rho_s * u_s) with decay factors rho in (0, 1] per channel; B_s and C_s are the key entries of the conv output
    u_s. So |y_t| <= gate * max_t sum_n |C_t[n]| * T * delta * max |B_s[n]| * max |u_s|.
    """
    beta, c_sum, u_sq = _conv_bounds(c, variant, p_)
    return c.gate * c_sum * seq_len * c.delta * beta * sp.sqrt(u_sq)


def _is_nonnegative(expr) -> bool:
    """True only if sympy proves expr >= 0 (an undecided sign is False)."""
    return bool(sp.sympify(expr).is_nonnegative)


def lm_obligations(c: Theorem2Constants = DEFAULT, variant="one-hot", p_=None, mu=None):
    """The facts ``mixer_output_bound`` and ``target_logit_lower_bound`` rest on, decided on ``conv_table``."""
    beta, c_sum, u_sq = _conv_bounds(c, variant, p_)
    tables = {code: conv_table(c, sp.Integer(code)) for code in (1, -1)}
    rows = [row for table in tables.values() for row in table.values()]
    keys = [[v for k, v in row.items() if k.startswith("key")] for row in rows]
    if variant == "one-hot":
        value_sq = tables[1][("blank", "value")]["value[cur]"] ** 2
    else:  # a balanced code: p/2 coordinates +1, p/2 coordinates -1
        value_sq = p_ / 2 * sum(t[("blank", "value")]["value[cur]"] ** 2 for t in tables.values())
    norms = [sum(v**2 for v in ks) + (value_sq if "value[cur]" in row else 0) for ks, row in zip(keys, rows)]
    margin = margin_lower_bound(c, variant, p_, mu)
    return [
        Obligation("B_t and C_t entries lie in [0, beta]",
                   "0 <= every key entry of the conv table <= beta = silu(key_prev + key_cur)",
                   all(_is_nonnegative(v) and _is_nonnegative(beta - v) for k in keys for v in k)),
        Obligation("sum_n |C_t[n]| <= c_sum", "every conv-table row's key entries sum to at most "
                   "c_sum = max(silu(key_prev) + silu(key_cur), beta)",
                   all(_is_nonnegative(c_sum - sum(k)) for k in keys)),
        Obligation("|u_t|^2 <= u_sq", "every conv-table row: key entries squared plus the value part's squared norm "
                   "(one-hot: one entry; jl: p/2 entries each of silu(g) and silu(-g)) <= u_sq",
                   all(_is_nonnegative(u_sq - n) for n in norms)),
        Obligation("decay factors in (0, 1], step delta > 0", "delta > 0 and delta |A| = budget / T > 0",
                   _is_true(c.delta) and _is_true(c.decay_budget) and _is_true(c.gate)),
        Obligation("the queried value's logit >= the margin bound",
                   "target_logit_lower_bound - margin_lower_bound >= 0",
                   _is_nonnegative(target_logit_lower_bound(c, variant, p_, mu) - margin)),
    ]
