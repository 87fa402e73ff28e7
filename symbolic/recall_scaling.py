"""Recall scaling laws (Koren et al. 2026): the hashing circuit's logit statistics, derived exactly in sympy.

**The law (paper, [code]).** Per-query recall of a Mamba layer that recalls by linear hashing is

    p = Phi(1/sigma - m_V),   sigma^2 = a N_f / (N_eff D) + 1/D,   N_eff = Lambda N,
    m_V = sqrt(2 ln V) - (ln ln V + ln 4 pi) / (2 sqrt(2 ln V))     (the typical maximum of V standard normals).

**Where sigma^2 comes from (derived here, not typed in).** The designed circuit (``constructions.hash_recall``)
outputs at a query t, for every token u, the logit

    logit_u(t) = sum_{tau <= t} c(x_{tau-1}, x_t) * g(u, x_tau),   c(w, q) = <F e_w, F e_q>,   g(u, x) = <e_u, e_x>,

with unit-norm random embeddings e (uniform on the sphere S^{D-1}, the JL embedding) and F = sqrt(D/N) * (first N
rows of a Haar orthogonal matrix), so F F^T = (D/N) I_N. By rotation invariance F e_w has the law of sqrt(D/N) times the
first N coordinates of a uniform unit vector, so every moment below reduces to moments of sphere coordinates, which
``sphere_moments`` derives from the Beta law of a squared coordinate (sympy.stats). From them:

* hash self-match  E c(q,q) = 1,  Var c(q,q) = 2 (D - N) / (N (D + 2))       (0 when N = D: F is orthogonal);
* hash collision   E c(w,q)^2 = 1/N  (w != q);   value cross-talk  E g(u,v)^2 = 1/D  (u != v);
* a competitor u that does not occur in the context has logit variance (``logit_moments``)
      Var = E c(q,q)^2 / D + n_w / (N D) = (N + 2) / (N (D + 2)) + n_w / (N D),
  where n_w is the number of *leaking writes* (writes tau != tau* whose key token is not the query). With n_w = a N_f
  this is the law's sigma^2 plus the self-match fluctuation 2 (D - N) / (N D (D + 2)) >= 0 (``law_is_leading_order``):
  equal at N = D, and relatively smaller than 2 / (a N_f + N) otherwise.

**a from the generator.** ``leaking_writes`` counts, for the zoology-style generator (``verify.tasks.mqar``,
layout "zoology") and a circuit, the expected n_w at a query as an exact rational function of N_f, L (and the filler
statistics), and a = E[n_w] / N_f. Designed circuit (writes at every position): MQAR a = (2 N_f + space - 2) / N_f,
space = (L - 2 N_f)/2, i.e. a = 3 - 2/N_f at L = 4 N_f (paper: 3); AR a = 2 - 1/N_f (paper: 2). The fact-selective
circuit the paper attributes to trained models (only key -> value writes leak): MQAR a = 5/4 (1 - 1/N_f) with random
fillers, (1 - 1/N_f) without (paper: 5/4 with fillers); AR a = 1 - 1/N_f (paper: 1). The paper's constants are the
N_f -> infinity limits (``paper_constants_are_limits``). [derived: the notes' counting argument, made exact]

**Several layers.** Lambda hashes averaged in one layer overlap through the shared embedding:
N_eff = Lambda N D / (D + (Lambda - 1) N) (``averaged_hash_moments``). Disjoint row blocks of one orthogonal matrix
give N_eff = Lambda N exactly (``stacked_hash_moments``): the designed residual stack. The paper's layer stacked as
it is feeds each layer the earlier retrievals, whose off-fact power is n_w / (Lambda^2 N), and its tied readout sees
the residual e_q with the fact's own weight (``naive_stack_moments``).

**Numerics.** The corrected law (in-context collisions, sphere tails), the bounds, the certificate and the
vectorised law are evaluated next to the checks and grids that use them, in ``verify.recall_law``; this module is
the exact derivation only (sympy and the standard library, nothing of the project outside ``symbolic``).
"""
from __future__ import annotations

from functools import lru_cache

import sympy as sp

from symbolic.theorem2 import Obligation

D, N, N_f, V, Lam, a, z = sp.symbols("D N N_f V Lambda a z", positive=True)
n_w, s_u, L_ = sp.symbols("n_w s_u L", positive=True)
N_eff = Lam * N


def Phi(x):
    """Standard normal CDF (sympy)."""
    return (1 + sp.erf(x / sp.sqrt(2))) / 2


def m_V(v=V):
    """Typical maximum of v iid N(0, 1) (the code's second-order form)."""
    l2 = sp.sqrt(2 * sp.log(v))
    return l2 - (sp.log(sp.log(v)) + sp.log(4 * sp.pi)) / (2 * l2)


SIGMA2_LAW = a * N_f / (N_eff * D) + 1 / D
LAW = Phi(1 / sp.sqrt(SIGMA2_LAW) - m_V(V))

# The paper's coefficients (code: calculate_scaling_coefficient); full model = linear / 2 (empirical).
PAPER_A = {("designed", "mqar"): sp.Integer(3), ("designed", "ar"): sp.Integer(2),
           ("trained-linear", "mqar"): sp.Rational(5, 4), ("trained-linear", "ar"): sp.Integer(1),
           ("trained-full", "mqar"): sp.Rational(5, 8), ("trained-full", "ar"): sp.Rational(1, 2)}


# ----------------------------------------------------------------------------------------------------------------
# Moments of the designed circuit, from the sphere
# ----------------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def sphere_moments():
    """E w_i^2, E w_i^4, E w_i^2 w_j^2 (i != j) for w uniform on S^{D-1}, as expressions of D.

    w_i^2 ~ Beta(1/2, (D-1)/2) gives the first two; sum_j w_j^2 = 1 gives E w_i^2 w_j^2 = (E w_i^2 - E w_i^4)/(D-1).
    """
    from sympy.stats import Beta, E

    X = Beta("X", sp.Rational(1, 2), (D - 1) / 2)
    e2, e4 = sp.simplify(E(X)), sp.simplify(E(X**2))
    e22 = sp.factor(sp.simplify((e2 - e4) / (D - 1)))
    return {"e2": e2, "e4": e4, "e22": e22}


@lru_cache(maxsize=None)
def hash_moments():
    """Moments of c(w,q) = <F e_w, F e_q> and g(u,v) = <e_u, e_v> (w != q, u != v), F F^T = (D/N) I_N.

    F e =d sqrt(D/N) (w_1..w_N) with w uniform on the sphere (Haar rotation), so
    c(q,q) = (D/N) sum_{i<=N} w_i^2, c(w,q) = (D/N) sum_{i<=N} w_i w'_i, g(u,v) = sum_{i<=D} w_i w'_i.
    """
    m = sphere_moments()
    scale = D / N
    self_mean = sp.simplify(scale * N * m["e2"])
    self_second = sp.factor(sp.simplify(scale**2 * (N * m["e4"] + N * (N - 1) * m["e22"])))
    self_var = sp.factor(sp.simplify(self_second - self_mean**2))
    cross_second = sp.simplify(scale**2 * N * m["e2"] ** 2)  # E (sum_i w_i w'_i)^2 = sum_i E w_i^2 E w'_i^2
    value_second = sp.simplify(D * m["e2"] ** 2)
    return {"self_mean": self_mean, "self_second": self_second, "self_var": self_var,
            "cross_second": cross_second, "value_second": value_second}


@lru_cache(maxsize=None)
def logit_moments():
    """Mean and variance of the designed circuit's logits at a query with n_w leaking writes (distinct tokens).

    The terms c(x_{tau-1}, q) g(u, x_tau) of different writes are uncorrelated when the tokens are distinct (each
    product has a vector that occurs once and has mean 0), and within a term c and g use disjoint vectors, so
    variances add and factor: Var(c g) = E c^2 E g^2.

    * signal (u = v*): c(q,q) * 1 + sum_{leaking} c g  ->  mean 1, var Var c(q,q) + n_w E c^2 E g^2;
    * out-of-context competitor: c(q,q) g(u, v*) + sum c g  ->  mean 0, var E c(q,q)^2 E g^2 + n_w E c^2 E g^2;
    * in-context competitor written s_u times (s_u = sum_w n(w,u)^2): s_u of its terms have g = 1, adding
      s_u (E c^2 - E c^2 E g^2).
    """
    h = hash_moments()
    cg = h["cross_second"] * h["value_second"]
    return {
        "signal_mean": h["self_mean"],
        "signal_var": sp.simplify(h["self_var"] + n_w * cg),
        "out_var": sp.simplify(h["self_second"] * h["value_second"] + n_w * cg),
        "in_var": sp.simplify(h["self_second"] * h["value_second"] + n_w * cg + s_u * (h["cross_second"] - cg)),
    }


@lru_cache(maxsize=None)
def averaged_hash_moments():
    """Lambda independent hashes F_l averaged, c = (1/Lambda) sum_l c_l (one embedding shared by all of them).

    Given the embeddings, E_F[(D/N) F^T F / (D/N)^2 ...]: a Haar rank-N projection P has E P = (N/D) I, so
    E[c_l | e] = <e_w, e_q> and, for l != m, E[c_l c_m] = E <e_w, e_q>^2 = 1/D: the shared embedding's overlap does
    not average out. Hence E c^2 = 1/(Lambda N) + (1 - 1/Lambda)/D and the hash term of sigma^2 sees
    N_eff = 1 / E c^2 = Lambda N D / (D + (Lambda - 1) N) <= Lambda N (equality iff Lambda = 1). The paper's
    N_eff = Lambda N is exact for the *concatenated* orthogonal hash (one layer with state Lambda N, rows orthogonal).
    """
    h = hash_moments()
    same = h["cross_second"]  # E c_l^2 = 1/N
    different = h["value_second"]  # E c_l c_m = E <e_w, e_q>^2 = 1/D
    cross = sp.simplify((Lam * same + Lam * (Lam - 1) * different) / Lam**2)
    return {"self_mean": h["self_mean"], "cross_second": cross, "N_eff": sp.simplify(1 / cross)}


@lru_cache(maxsize=None)
def stacked_hash_moments():
    """The designed residual stack (``constructions.hash_recall.build_residual_stack``): layer l hashes with
    F_l = sqrt(D/N) Q_l, the Q_l disjoint row blocks of one Haar orthogonal matrix, and writes 1/Lambda of its
    retrieval, so the summed match is c = (1/Lambda) sum_l (D/N) sum_{i in block l} w_i w'_i
    = (D/(Lambda N)) sum_{i <= Lambda N} w_i w'_i: the one-layer hash of Lambda N rows. Its moments, from the sphere:
    self-match mean 1, collision E c^2 = 1/(Lambda N), so N_eff = 1 / E c^2 = Lambda N exactly (Lambda N <= D), and
    the self-match variance is the one-layer one at N -> Lambda N (0 when Lambda N = D)."""
    m = sphere_moments()
    k, scale = Lam * N, D / (Lam * N)  # coordinates summed, and the 1/Lambda-weighted scale
    self_mean = sp.simplify(scale * k * m["e2"])
    self_second = sp.simplify(scale**2 * (k * m["e4"] + k * (k - 1) * m["e22"]))
    cross = sp.simplify(scale**2 * k * m["e2"] ** 2)
    return {"self_mean": self_mean, "self_var": sp.factor(sp.simplify(self_second - self_mean**2)),
            "cross_second": cross, "N_eff": sp.simplify(1 / cross)}


@lru_cache(maxsize=None)
def naive_stack_moments():
    """The paper's layer stacked as it is (``build_analysis(n_layers=Lambda)``: tied readout, independent F_l, each
    layer writing g = 1/Lambda of its retrieval through the residual h <- h + y_l). Layer 1's output at a position
    with n_w leaking writes is y_1 = g c(q,q) e_{v*} + g sum_{leaking} c(w, q) e_u: its off-fact part has power
    g^2 n_w E c^2 = n_w / (Lambda^2 N) (uncorrelated terms, |e_u| = 1), added to the embedding (power 1) that layer 2
    hashes and carries as its value ("pollution"). To first order (pollution ignored) the fact's logit at the readout
    has mean Lambda g E c(q,q) = 1, and the residual e_q gives the query token the logit <e_q, e_q> = 1: a tie."""
    h = hash_moments()
    g = 1 / Lam
    return {"pollution_power": sp.simplify(g**2 * n_w * h["cross_second"]),
            "fact_logit_mean": sp.simplify(Lam * g * h["self_mean"]), "query_token_logit": sp.Integer(1)}


def decayed_leak():
    """The real block's decay: with A = -exp(A_log) every write tau is read at t with weight rho^(t - tau),
    rho = exp(-Delta exp(A_log)). Dividing the logits by the fact's weight rho^(t - tau*), the signal keeps mean 1 and
    the leaking writes count as n_w(rho) = sum_{tau=1..t, tau != tau*} rho^(2 (tau* - tau)) in sigma^2 (in place of
    n_w = t - 1): later writes are amplified, earlier ones damped. Returns (expression, its rho -> 1 limit)."""
    rho, t, ts, tau = sp.symbols("rho t tau_star tau", positive=True, integer=True)
    total = sp.summation(rho ** (2 * (ts - tau)), (tau, 1, t)) - 1
    return sp.simplify(total), sp.limit(total, rho, 1)


def law_is_leading_order():
    """The exact out-of-context variance minus the law's sigma^2 (n_w = a N_f, Lambda = 1)."""
    exact = logit_moments()["out_var"].subs(n_w, a * N_f)
    return sp.factor(sp.simplify(exact - SIGMA2_LAW.subs(Lam, 1)))


# ----------------------------------------------------------------------------------------------------------------
# a from the generator: expected leaking writes at a query
# ----------------------------------------------------------------------------------------------------------------

CIRCUITS = ("designed", "fact-selective")
TASKS = ("mqar", "ar")


def leaking_writes(circuit: str = "designed", task: str = "mqar", nf=N_f, seq_len=None, random_fillers=True,
                   vocab=V):
    """E[n_w] at a query of the zoology-style generator (``verify.tasks.mqar``, layout "zoology"), exactly.

    Writes tau = 1..t (tau = 0 has the left padding as key, i.e. no write). ``designed`` writes at every position,
    so n_w = t - 1 at a query at position t. ``fact-selective`` (the trained models' circuit, [derived]) only leaks
    writes whose key token is a key and whose value token is a value: the N_f - 1 other facts, plus, in the query
    section before the query, (query, filler-value) pairs and (filler-key, filler-value) pairs. Fillers are uniform
    in [0, V): P(key) = (V/2 - 1)/V, P(value) = (V - V/2)/V (even V); without fillers every slot is token 0, neither.
    MQAR queries occupy N_f of ``space = (L - 2 N_f)/2`` slots uniformly; given the query's slot g (uniform), each
    earlier slot holds a query with probability (N_f - 1)/(space - 1).
    """
    if circuit not in CIRCUITS:
        raise ValueError(f"circuit must be one of {CIRCUITS}, got {circuit!r}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    nf, vocab = sp.sympify(nf), sp.sympify(vocab)
    if task == "ar":  # query at t = 2 N_f
        return 2 * nf - 1 if circuit == "designed" else nf - 1
    L = 4 * nf if seq_len is None else sp.sympify(seq_len)
    space = (L - 2 * nf) / 2
    g = (space - 1) / 2  # E[slot of the query]
    if circuit == "designed":
        return sp.simplify(2 * nf + 2 * g - 1)
    p_key = (vocab / 2 - 1) / vocab if random_fillers else sp.Integer(0)
    p_val = (vocab - vocab / 2) / vocab if random_fillers else sp.Integer(0)
    # P(an earlier slot holds a query | the query's slot): (N_f - 1)/(space - 1); 1 when packed (space = N_f)
    p_occ = sp.Integer(1) if seq_len is None else (nf - 1) / (space - 1)
    # slot s < g: (query-or-filler at 2s, filler at 2s+1); and for 1 <= s < g, (filler 2s-1, filler at 2s)
    pair_after_slot = (p_occ + (1 - p_occ) * p_key) * p_val
    pair_before_slot = (1 - p_occ) * p_key * p_val
    e_pairs_before = g - 1 + 1 / space  # E max(g - 1, 0), g uniform on 0..space-1
    e_query_section = g * pair_after_slot + e_pairs_before * pair_before_slot
    return sp.simplify(nf - 1 + e_query_section)


def a_coefficient(circuit: str = "designed", task: str = "mqar", nf=N_f, seq_len=None, random_fillers=True, vocab=V):
    """a = E[n_w] / N_f, computed from the generator's parameters."""
    return sp.simplify(leaking_writes(circuit, task, nf, seq_len, random_fillers, vocab) / sp.sympify(nf))


def paper_constants_are_limits():
    """The paper's a (designed 3/2, trained-linear 5/4 / 1) as N_f -> infinity limits of a_coefficient (L = 4 N_f)."""
    out = {}
    for (model, task), paper in PAPER_A.items():
        if model == "trained-full":
            continue
        circuit = "designed" if model == "designed" else "fact-selective"
        lim = sp.limit(a_coefficient(circuit, task, vocab=sp.Integer(512)), N_f, sp.oo)
        out[(model, task)] = (lim, paper, sp.simplify(lim - paper) == 0)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Required sizes, largest vocabulary
# ----------------------------------------------------------------------------------------------------------------

K = sp.Symbol("k", positive=True)  # k = (m_V + z)^2: law >= Phi(z)  <=>  1/sigma^2 >= k
TARGET_CONSTRAINT = N_eff * D / (a * N_f + N_eff) - K  # >= 0  <=>  law >= Phi(z), with k = (m_V + z)^2


def required_sizes():
    """D_min (N -> infinity), N_min(D) and the N = D point for law >= Phi(z), in terms of k = (m_V(V) + z)^2.

    1/sigma^2 = N_eff D / (a N_f + N_eff) is increasing in N and D, so the constraint 1/sigma^2 >= k gives
    D > k (the embedding alone, any N) and N >= a N_f k / (Lambda (D - k)).
    """
    n_min = sp.solve(sp.Eq(TARGET_CONSTRAINT, 0), N)[0]
    probe = {K: 9, Lam: 1, N_f: 16, a: 3}
    square = [r for r in sp.solve(sp.Eq(TARGET_CONSTRAINT.subs(N, D), 0), D) if r.subs(probe) > 0][0]
    return {"k": (m_V(V) + z) ** 2, "D_min": K, "N_min": sp.simplify(n_min), "square": square}


def fold_moment():
    """E <fold u, fold x>^2 for independent uniform unit u, x in R^D folded into P = D/k dims (k coordinates summed
    per dim): P (k E w^2)^2 = k/D = 1/P."""
    k, P_ = sp.symbols("k P", positive=True)
    e2 = sphere_moments()["e2"]
    return sp.simplify((P_ * (k * e2) ** 2).subs(D, k * P_))



# ----------------------------------------------------------------------------------------------------------------
# Obligations
# ----------------------------------------------------------------------------------------------------------------


def obligations():
    """Every identity the derivation relies on, decided exactly by sympy."""
    m, h, lm = sphere_moments(), hash_moments(), logit_moments()
    zero = lambda e: sp.simplify(e) == 0  # noqa: E731
    lim = paper_constants_are_limits()
    designed = a_coefficient("designed", "mqar")
    req = required_sizes()
    return [
        Obligation("sphere: E w_i^2 = 1/D", "Beta(1/2,(D-1)/2) mean", zero(m["e2"] - 1 / D)),
        Obligation("sphere: E w_i^4 = 3/(D(D+2))", "Beta second moment", zero(m["e4"] - 3 / (D * (D + 2)))),
        Obligation("sphere: E w_i^2 w_j^2 = 1/(D(D+2))", "from sum_j w_j^2 = 1", zero(m["e22"] - 1 / (D * (D + 2)))),
        Obligation("hash self-match mean = 1", "E c(q,q) = (D/N) N E w^2", zero(h["self_mean"] - 1)),
        Obligation("hash self-match variance", "Var c(q,q) = 2(D-N)/(N(D+2))",
                   zero(h["self_var"] - 2 * (D - N) / (N * (D + 2)))),
        Obligation("hash self-match exact when N = D", "Var c(q,q)|_{N=D} = 0", zero(h["self_var"].subs(N, D))),
        Obligation("hash collision variance = 1/N", "E c(w,q)^2 = 1/N", zero(h["cross_second"] - 1 / N)),
        Obligation("value cross-talk variance = 1/D", "E g(u,v)^2 = 1/D", zero(h["value_second"] - 1 / D)),
        Obligation("law sigma^2 is the exact competitor variance less the self-match fluctuation",
                   "Var_out - sigma^2_law = 2(D-N)/(N D (D+2))",
                   zero(law_is_leading_order() - 2 * (D - N) / (N * D * (D + 2)))),
        Obligation("in-context competitor: extra variance s_u (1/N - 1/(N D))", "Var_in - Var_out",
                   zero(lm["in_var"] - lm["out_var"] - s_u * (1 / N - 1 / (N * D)))),
        Obligation("designed MQAR a at L = 4 N_f", "a = 3 - 2/N_f", zero(designed - (3 - 2 / N_f))),
        Obligation("Lambda averaged hashes: N_eff = Lambda N D / (D + (Lambda - 1) N)",
                   "E c^2 = 1/(Lambda N) + (1 - 1/Lambda)/D",
                   zero(averaged_hash_moments()["N_eff"] - Lam * N * D / (D + (Lam - 1) * N))),
        Obligation("residual stack of orthogonal hash blocks: N_eff = Lambda N", "E c^2 = 1/(Lambda N)",
                   zero(stacked_hash_moments()["N_eff"] - Lam * N)),
        Obligation("residual stack: self-match mean 1, variance at N -> Lambda N", "E c(q,q) = 1, Var = 2(D - "
                   "Lambda N)/(Lambda N (D + 2))", zero(stacked_hash_moments()["self_mean"] - 1)
                   and zero(stacked_hash_moments()["self_var"] - h["self_var"].subs(N, Lam * N))),
        Obligation("naive stack: the residual e_q ties the fact's logit", "Lambda (1/Lambda) E c(q,q) = <e_q, e_q> = 1",
                   zero(naive_stack_moments()["fact_logit_mean"] - naive_stack_moments()["query_token_logit"])),
        Obligation("naive stack: pollution power n_w / (Lambda^2 N)", "g^2 n_w E c^2, g = 1/Lambda",
                   zero(naive_stack_moments()["pollution_power"] - n_w / (Lam**2 * N))),
        Obligation("decay: n_w(rho) -> t - 1 as rho -> 1 (the undecayed count)", "lim_{rho->1} n_w(rho) = t - 1",
                   zero(decayed_leak()[1] - (sp.Symbol("t", positive=True, integer=True) - 1))),
        Obligation("folded value: E <fold u, fold x>^2 = 1/P", "P (k/D)^2 with D = k P",
                   zero(fold_moment() - 1 / sp.Symbol("P", positive=True))),
        Obligation("Lambda averaged hashes: N_eff <= Lambda N", "Lambda N - N_eff >= 0 for N <= D",
                   zero(sp.factor(Lam * N - averaged_hash_moments()["N_eff"])
                        - Lam * N**2 * (Lam - 1) / (D + (Lam - 1) * N))),
        *[Obligation(f"paper a = {paper} ({model}, {task}) is the N_f -> oo limit", f"lim a = {limit}", ok)
          for (model, task), (limit, paper, ok) in lim.items()],
        Obligation("required N: law >= Phi(z) <=> N >= a N_f k / (Lambda (D - k))",
                   "constraint at N_min is 0 and N_min = a N_f k / (Lambda (D - k))",
                   zero(TARGET_CONSTRAINT.subs(N, req["N_min"])) and zero(req["N_min"] - a * N_f * K / (Lam * (D - K)))),
        Obligation("required sizes: the constraint is increasing in N and D", "d/dN > 0 and d/dD > 0",
                   bool(sp.simplify(sp.diff(TARGET_CONSTRAINT, N)).is_positive)
                   and bool(sp.simplify(sp.diff(TARGET_CONSTRAINT, D)).is_positive)),
    ]
