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

**Corrected law (ours).** The law counts V competitors of variance sigma^2. A token that *does* occur in the context
(N_f - 1 other values, the keys, the fillers) carries a direct hash collision c(w, q) * 1, variance s_u / N_eff with
s_u = sum_w n(w, u)^2 (n(w, u) = writes with key token w and value token u), not multiplied by 1/D: when N << D this
dominates (the notes' small-N over-prediction). ``corrected_law``: keep the law's form P(signal > typical maximum),
signal ~ N(1, sigma^2), and replace sigma * m_V by the typical maximum M of the *mixed* competitor set, defined as the
law defines m_V (V Q(m_V) is the expected number of exceedances at the typical maximum):

    (V - 1 - n_in) Q(M / sigma) + sum_{u in context} Q(M / sigma_u) = V Q(m_V),   sigma_u^2 = sigma^2 + s_u / N_eff,
    p_corr = E_query[ Phi((1 - M) / sigma) / (1 + k) ],

with per-query sigma^2 = n_w' / (N_eff D) + 1/D (n_w' = sum_{w,u} n(w,u)^2, = n_w for distinct pairs) and k the
number of exact collisions (the query token occurring as a key token elsewhere, a tie in expectation). Second
correction: an out-of-context competitor's logit is exactly |y| <e_u, y/|y|> with e_u uniform on the sphere and
independent of the retrieved vector y (|y|^2 ~ D sigma^2), i.e. |y| times a sphere coordinate, whose tail
(``sphere_tail``) is lighter than the Gaussian the law assumes; the term (V - 1 - n_in) Q(M / sigma) therefore uses
``sphere_tail(M / |y|, D)`` (this matters at small D). With no in-context competitors and Gaussian tails it is
exactly the law. The per-query counts come from the generator's own sequences
(``collision_profile``), so fillers on/off, AR/MQAR and L change it correctly.

**Several layers.** Lambda hashes averaged in one layer overlap through the shared embedding:
N_eff = Lambda N D / (D + (Lambda - 1) N) (``averaged_hash_moments``). Disjoint row blocks of one orthogonal matrix
give N_eff = Lambda N exactly (``stacked_hash_moments``): the designed residual stack. The paper's layer stacked as
it is feeds each layer the earlier retrievals, whose off-fact power is n_w / (Lambda^2 N), and its tied readout sees
the residual e_q with the fact's own weight (``naive_stack_moments``).

**Bounds.** ``gaussian_union_bound``: P(fail) <= min_theta V exp(-theta^2/(2 sigma^2)) + exp(-(1-theta)^2/(2
sigma_s^2)) (the notes' union bound with Gaussian tails; rigorous only if the logits were Gaussian).
``rigorous_failure_bound`` (ours, rigorous for the designed circuit's random codes): a union bound over three events
with exact or sub-Gaussian sphere tails (self-match within 1 +- eta: exact Beta tail; |c(w,q)| <= eps' for the key
tokens: 2 exp(-N eps'^2 / (2 (1+eta))); |g| <= eps for every (token, context token) pair: 2 exp(-D eps^2 / 2)), on
which the margin is at least (1-eta) - (1+eta) eps - eps' (m + 2 n_w eps) > 0. ``certificate_margin``: the same
margin with eta, eps, eps' measured on drawn codes, a deterministic guarantee for every sequence.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import sympy as sp

from constructions.errors import require
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
    require(circuit in CIRCUITS, f"circuit must be one of {CIRCUITS}, got {circuit!r}")
    require(task in TASKS, f"task must be one of {TASKS}, got {task!r}")
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


# ----------------------------------------------------------------------------------------------------------------
# Numeric evaluation (vectorised; these are what the checks and the grid use)
# ----------------------------------------------------------------------------------------------------------------

_SQRT2 = math.sqrt(2.0)


def _erfc(x: np.ndarray) -> np.ndarray:
    """erfc in numpy (Numerical Recipes' Chebyshev fit, fractional error < 1.2e-7 everywhere)."""
    z = np.abs(x)
    t = 1 / (1 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))))
    r = t * np.exp(poly)
    return np.where(x >= 0, r, 2 - r)


def phi_num(x):
    """Standard normal CDF (numpy; relative error < 1.2e-7)."""
    return 0.5 * _erfc(-np.asarray(x, dtype=float) / _SQRT2)


def qfun(x):
    """Q(x) = 1 - Phi(x), with small relative error in the tail."""
    return 0.5 * _erfc(np.asarray(x, dtype=float) / _SQRT2)


def m_v_num(v):
    v = np.asarray(v, dtype=float)
    l2 = np.sqrt(2 * np.log(v))
    return l2 - (np.log(np.log(v)) + np.log(4 * np.pi)) / (2 * l2)


def sigma2_num(d, n, nf, a_, lam=1):
    d, n = np.asarray(d, dtype=float), np.asarray(n, dtype=float)
    return a_ * nf / (lam * n * d) + 1 / d


def law_num(d, n, v, nf, a_, lam=1):
    """p = Phi(1/sigma - m_V), vectorised over d, n."""
    return phi_num(1 / np.sqrt(sigma2_num(d, n, nf, a_, lam)) - m_v_num(v))


def z_of(p: float) -> float:
    from statistics import NormalDist

    require(0 < p < 1, f"target accuracy must be in (0, 1), got {p}")
    return NormalDist().inv_cdf(p)


def required_sizes_num(v: int, nf: int, a_: float, p: float = 0.99, lam: int = 1) -> dict:
    """D_min = (m_V + z)^2 and, for D > D_min, N_min(D) = a N_f k / (Lambda (D - k)); the N = D point."""
    require(v >= 3, f"the law needs V >= 3 (m_V uses ln ln V), got V={v}")
    require(nf >= 1 and lam >= 1, f"need N_f >= 1 and Lambda >= 1, got N_f={nf}, Lambda={lam}")
    k = (float(m_v_num(v)) + z_of(p)) ** 2
    square = (k * lam + math.sqrt((k * lam) ** 2 + 4 * lam * k * a_ * nf)) / (2 * lam)
    return {"k": k, "D_min": k, "D_square": square, "N_min": lambda d: a_ * nf * k / (lam * (d - k)) if d > k else math.inf}


def largest_vocab_num(d: int, n: int, nf: int, a_: float, p: float = 0.5, lam: int = 1) -> float:
    """Largest V with law(V) >= p: solve m_V = 1/sigma - z by bisection on ln V (m_V increases for V >= 3)."""
    target = 1 / math.sqrt(float(sigma2_num(d, n, nf, a_, lam))) - z_of(p)
    if target <= float(m_v_num(3)):
        return 0.0
    lo, hi = math.log(3), 2.0
    while float(m_v_num(math.exp(hi))) < target:
        hi *= 2
        if hi > 700:
            return math.inf
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if float(m_v_num(math.exp(mid))) < target else (lo, mid)
    return math.exp(lo)


def gaussian_union_bound(d, n, v, n_writes, lam=1):
    """min_theta V exp(-theta^2/(2 s_o^2)) + exp(-(1-theta)^2/(2 s_s^2)), with the exact variances (Gaussian tails)."""
    h = _num_moments(d, n * lam)
    s_o2 = h["self_second"] / d + n_writes / (lam * n * d)
    s_s2 = h["self_var"] + n_writes / (lam * n * d)
    th = np.linspace(1e-3, 1 - 1e-3, 999)
    vals = v * np.exp(-th**2 / (2 * s_o2)) + (np.exp(-(1 - th) ** 2 / (2 * s_s2)) if s_s2 > 0 else 0.0)
    return float(min(1.0, vals.min()))


def _num_moments(d, n):
    d, n = float(d), float(n)
    return {"self_second": d * (n + 2) / (n * (d + 2)), "self_var": 2 * (d - n) / (n * (d + 2))}


def _beta_outside(n: int, d: int, eta: float) -> float:
    """P(|(D/N) B - 1| > eta), B ~ Beta(N/2, (D-N)/2): the self-match outside 1 +- eta (exact, mpmath)."""
    if n >= d:
        return 0.0
    import mpmath

    lo, hi = (1 - eta) * n / d, min(1.0, (1 + eta) * n / d)
    a_, b_ = mpmath.mpf(n) / 2, mpmath.mpf(d - n) / 2
    inside = mpmath.betainc(a_, b_, max(lo, 0), hi, regularized=True)
    return float(max(0, 1 - inside))


def rigorous_failure_bound(d: int, n: int, v: int, n_writes: int, context: int, multiplicity: int = 2) -> dict:
    """A rigorous upper bound on P(a query is wrong) for the designed circuit's random codes (ours).

    Preconditions on the query (true for the zoology generator up to filler collisions): the query token occurs as a
    key token only at its fact, at most ``n_writes`` other writes, at most ``context`` distinct tokens up to the query,
    and no token is the value token of more than ``multiplicity`` leaking writes (counting repeats of the answer).
    On the events |c(q,q) - 1| <= eta, |c(w,q)| <= eps' (w != q), |g(u,x)| <= eps (u != x, x in the context), the
    margin is >= (1 - eta) - (1 + eta) eps - eps' (multiplicity + 2 n_w eps); the bound is the union of the three
    failure probabilities, minimised over a grid of (eta, eps, eps') with positive margin.
    """
    best = {"bound": 1.0, "eta": None, "eps": None, "eps_key": None}
    for eta in (0.0,) if n >= d else (0.05, 0.1, 0.2, 0.3, 0.5):
        p_self = _beta_outside(n, d, eta)
        for eps in np.linspace(0.01, 0.6, 60):
            room = (1 - eta) - (1 + eta) * eps
            if room <= 0:
                continue
            eps_key = room / (multiplicity + 2 * n_writes * eps) * (1 - 1e-9)
            p_key = 2 * n_writes * math.exp(-n * eps_key**2 / (2 * (1 + eta))) if n < d else \
                2 * n_writes * math.exp(-d * eps_key**2 / 2)
            p_val = 2 * v * context * math.exp(-d * eps**2 / 2)
            total = min(1.0, p_self + p_key + p_val)
            if total < best["bound"]:
                best = {"bound": total, "eta": eta, "eps": float(eps), "eps_key": eps_key}
    return best


def certificate_margin(embedding: np.ndarray, hashes: np.ndarray, n_writes: int, multiplicity: int) -> float:
    """Deterministic margin lower bound for given codes: every query of every sequence meeting the preconditions.

    embedding (V, D) unit rows; hashes (V, N) = rows F e_x. Uses the measured eta = max |c(q,q) - 1|, eps = max
    |g(u,x)| (u != x), eps' = max |c(w,q)| (w != q).
    """
    g = embedding @ embedding.T
    c = hashes @ hashes.T
    eta = float(np.abs(np.diag(c) - 1).max())
    np.fill_diagonal(g, 0)
    np.fill_diagonal(c, 0)
    eps, eps_key = float(np.abs(g).max()), float(np.abs(c).max())
    return (1 - eta) - (1 + eta) * eps - eps_key * (multiplicity + 2 * n_writes * eps)


# ----------------------------------------------------------------------------------------------------------------
# The corrected law: per-query collision profiles from the generator
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CollisionProfile:
    """Per-query write statistics of a generator's sequences (independent of D, N and the codes).

    n_w: leaking writes; n_sq: sum over (key token, value token) pairs of n(w,u)^2 (= n_w if all distinct);
    s_in: for each in-context competitor u != answer, s_u = sum_w n(w,u)^2 (a ragged list per query);
    exact: number of writes whose key token is the query token, other than its fact (exact collisions);
    multiplicity, context: the preconditions of the rigorous bound and the certificate.
    """

    n_w: np.ndarray
    n_sq: np.ndarray
    s_in: tuple
    exact: np.ndarray
    multiplicity: np.ndarray  # max over tokens u of the leaking writes whose value token is u (answer repeats too)
    context: np.ndarray  # distinct tokens up to and including the query


def collision_profile(tokens: np.ndarray, labels: np.ndarray, ignore: int = -100,
                      circuit: str = "designed", key_range=None, value_range=None) -> CollisionProfile:
    """Count, at every labelled query, the writes that leak into it (designed: every write tau >= 1;
    fact-selective: writes whose key token is in ``key_range`` and value token in ``value_range``)."""
    require(circuit in CIRCUITS, f"circuit must be one of {CIRCUITS}, got {circuit!r}")
    require(circuit == "designed" or (key_range is not None and value_range is not None),
            "the fact-selective circuit needs key_range and value_range (token id ranges)")
    n_ws, n_sqs, s_ins, exacts, mults, contexts = [], [], [], [], [], []
    for s in range(tokens.shape[0]):
        seq = tokens[s]
        for t in np.nonzero(labels[s] != ignore)[0]:
            q, ans = seq[t], labels[s, t]
            pairs: dict = {}
            matched = False
            exact = 0
            for tau in range(1, t + 1):
                w, u = int(seq[tau - 1]), int(seq[tau])
                if circuit == "fact-selective" and not (key_range[0] <= w < key_range[1]
                                                         and value_range[0] <= u < value_range[1]):
                    continue
                if w == q:
                    if u == ans and not matched:
                        matched = True
                    else:
                        exact += u != ans
                    continue
                pairs[(w, u)] = pairs.get((w, u), 0) + 1
            per_u: dict = {}
            mult: dict = {}
            for (w, u), c in pairs.items():
                per_u[u] = per_u.get(u, 0) + c * c
                mult[u] = mult.get(u, 0) + c
            per_u.pop(int(ans), None)
            n_ws.append(sum(pairs.values()))
            n_sqs.append(sum(c * c for c in pairs.values()))
            s_ins.append(np.array(sorted(per_u.values()), dtype=float))
            exacts.append(exact)
            mults.append(max(mult.values(), default=0))
            contexts.append(len(set(seq[:t + 1].tolist())))
    return CollisionProfile(np.array(n_ws, float), np.array(n_sqs, float), tuple(s_ins), np.array(exacts, float),
                            np.array(mults, float), np.array(contexts, float))


def _grouped_profile(profile: CollisionProfile):
    """(n_sq, distinct s values (U,), counts (Q, U), exact, n_in) as float64 tensors: in-context competitors grouped
    by their s_u, which takes few distinct values."""
    import torch

    values = sorted({float(x) for row in profile.s_in for x in row}) or [1.0]
    index = {v: i for i, v in enumerate(values)}
    counts = np.zeros((len(profile.s_in), len(values)))
    for i, row in enumerate(profile.s_in):
        for x in row:
            counts[i, index[float(x)]] += 1
    counts = torch.from_numpy(counts)
    return (torch.from_numpy(profile.n_sq), torch.tensor(values, dtype=torch.float64), counts,
            torch.from_numpy(profile.exact), counts.sum(1))


@lru_cache(maxsize=None)
def _sphere_tail_table(d: int, points: int = 8001):
    """theta grid and P(x > sin theta) for x a coordinate of a uniform unit vector in R^d.

    The density of x is proportional to (1 - x^2)^((d-3)/2); with x = sin(theta) the tail is
    int_theta^{pi/2} cos^{d-2} / int_{-pi/2}^{pi/2} cos^{d-2}, a smooth integrand (trapezoid, summed from the top
    so that small tails keep their relative accuracy).
    """
    th = np.linspace(-np.pi / 2, np.pi / 2, points)
    f = np.cos(th) ** (d - 2) if d > 2 else np.ones_like(th)
    seg = (f[1:] + f[:-1]) / 2 * (th[1] - th[0])
    tail = np.concatenate([np.cumsum(seg[::-1])[::-1], [0.0]])
    return th, tail / tail[0]


def sphere_tail(t, d: int):
    """P(<e, w> > t) for e uniform on S^{d-1} and a unit vector w (exact up to quadrature)."""
    th, tail = _sphere_tail_table(int(d))
    return np.interp(np.arcsin(np.clip(np.asarray(t, dtype=float), -1, 1)), th, tail)


def corrected_law_num(d: int, n: int, v: int, profile: CollisionProfile, lam: int = 1, n_in: float | None = None,
                      d_value: float | None = None) -> float:
    """The corrected law (see the module docstring), averaged over the profile's queries (vectorised bisection).

    ``n_in``: effective state of the in-context collision term (default Lambda N); ``d_value``: dimension of the value
    code (default D; the multi-head patterns with a folded shared value use min(D, P))."""

    cache = getattr(profile, "_grouped", None)
    if cache is None:
        cache = _grouped_profile(profile)
        object.__setattr__(profile, "_grouped", cache)
    n_sq, s_values, counts, exact, n_ctx = (x.numpy() for x in cache)
    n_eff = lam * n
    n_in = n_eff if n_in is None else n_in
    d = d if d_value is None else d_value
    target = v * float(qfun(m_v_num(v)))
    s2 = n_sq / (n_eff * d) + 1.0 / d
    sig, y_norm = np.sqrt(s2), np.sqrt(d * s2)
    sig_in = np.sqrt(s2[:, None] + s_values[None, :] / n_in)
    n_out = v - 1 - n_ctx

    def excess(m):  # expected number of competitors above m, minus the law's V Q(m_V)
        return n_out * sphere_tail(m / y_norm, max(int(round(d)), 2)) + (counts * qfun(m[:, None] / sig_in)).sum(1) - target

    lo, hi = np.zeros_like(sig), np.maximum(y_norm, sig_in.max(1) * 10)
    for _ in range(50):
        mid = (lo + hi) / 2
        up = excess(mid) > 0
        lo, hi = np.where(up, mid, lo), np.where(up, hi, mid)
    p = phi_num((1 - (lo + hi) / 2) / sig) / (1 + exact)
    return float(p.mean())


def multihead_effective(pattern: str, d: int, n: int, m: int) -> dict:
    """What each head pattern's designed circuit (``constructions.hash_recall.build_multihead``) changes, at fixed
    total state (derived, ours):

    * MVA: one shared score matrix: the one-head circuit exactly (n_in = N, d_value = D).
    * MHA: M independent hashes, head h carrying block h of the value: a competitor's out-of-context noise is
      sum_h sum_tau c_h g_h with g_h over disjoint blocks (E g_h^2 = 1/(D M)): variance n_w / (N D), unchanged; an
      in-context competitor's collision is sum_h c_h |e_u[h]|^2 ~ (1/M) sum_h c_h: the average of M hashes sharing one
      embedding, n_in = M N D / (D + (M - 1) N) (``averaged_hash_moments``).
    * MQA, MKA: one hash, and the value folded into P = 2D/M dims: <fold u, fold x> has second moment 1/min(D, P)
      (``fold_moment``), so D -> d_value = min(D, P) in the value terms.
    """
    if pattern == "MVA" or m == 1:
        return {"n_in": float(n), "d_value": float(d)}
    if pattern == "MHA":
        return {"n_in": m * n * d / (d + (m - 1) * n), "d_value": float(d)}
    return {"n_in": float(n), "d_value": float(min(d, 2 * d / m))}


def fold_moment():
    """E <fold u, fold x>^2 for independent uniform unit u, x in R^D folded into P = D/k dims (k coordinates summed
    per dim): P (k E w^2)^2 = k/D = 1/P."""
    k, P_ = sp.symbols("k P", positive=True)
    e2 = sphere_moments()["e2"]
    return sp.simplify((P_ * (k * e2) ** 2).subs(D, k * P_))


def law_with_profile_num(d, n, v, nf, profile: CollisionProfile, lam=1):
    """The paper's law with a = mean(n_w)/N_f measured on the profile (for comparison with the corrected law)."""
    return law_num(d, n, v, nf, float(profile.n_w.mean()) / nf, lam)


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
