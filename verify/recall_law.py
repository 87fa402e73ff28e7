"""The recall scaling law (Koren et al. 2026) evaluated in floating point: the vectorised law, the corrected law on
the generator's own sequences, required sizes, the largest vocabulary, the bounds and the certificate. The exact
derivation (sphere moments, logit variances, a from the generator, the obligations) is ``symbolic.recall_scaling``;
this module evaluates it over data and grids for the check (``verify.specs.hash_recall``), the grid
(``verify.recall_grid``), the ``scaling-law`` calculator, the experiments and the figures.

**Corrected law (ours).** The law counts V competitors of variance sigma^2. A token that *does* occur in the context
(N_f - 1 other values, the keys, the fillers) carries a direct hash collision c(w, q) * 1, variance s_u / N_eff with
s_u = sum_w n(w, u)^2 (n(w, u) = writes with key token w and value token u), not multiplied by 1/D: when N << D this
dominates (the notes' small-N over-prediction). ``corrected_law_num``: keep the law's form P(signal > typical maximum),
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

from common.errors import require
from symbolic.recall_scaling import CIRCUITS



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
    and the answer together with any one other token are the value tokens of at most ``multiplicity`` leaking writes
    (``CollisionProfile.multiplicity``).
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

    embedding (V, D), any row norms; hashes (V, N) = rows F e_x. The readout of a query q whose fact is (q, a) is
    logit(x) = sum_writes c(w, q) g(x, v_w), with g = E E^T and c = hashes hashes^T, so for every x != a

        logit(a) - logit(x) = c(q,q) (g(a,a) - g(x,a)) + sum_{leaking w != q} c(w,q) (g(a,v_w) - g(x,v_w))
                           >= min(c_lo g_lo, c_lo g_hi) - c_abs eps - eps' (m (g_hi + eps) + 2 (n_w - m) eps),

    where [c_lo, c_hi] and [g_lo, g_hi] are the ranges of the diagonals of c and g, c_abs = max(|c_lo|, |c_hi|),
    eps = max |g(u,x)| and eps' = max |c(w,q)| off the diagonal, n_w the leaking writes and m (``multiplicity``, at
    most n_w) those whose value token is a or x. Each measured quantity is widened by a bound on its float64
    rounding, so the margin holds for the exact products. With unit rows (g_lo = g_hi = 1, c within 1 +- eta) and
    eps <= 1 it is at least the rigorous bound's (1 - eta) - (1 + eta) eps - eps' (m + 2 n_w eps).
    """
    E = np.asarray(embedding, dtype=np.float64)
    H = np.asarray(hashes, dtype=np.float64)
    g, c = E @ E.T, H @ H.T
    # |fl(<u, v>) - <u, v>| <= k u_mach |u| |v| for a k-term dot product (u_mach = 2^-53), doubled for slack
    g_diag, c_diag = np.diag(g).copy(), np.diag(c).copy()
    g_err = 2 * E.shape[1] * 2.0**-53 * float(g_diag.max())
    c_err = 2 * (H.shape[1] + E.shape[1]) * 2.0**-53 * float(c_diag.max())  # the hashes' own rounding too
    g_lo, g_hi = float(g_diag.min()) - g_err, float(g_diag.max()) + g_err
    c_lo, c_hi = float(c_diag.min()) - c_err, float(c_diag.max()) + c_err
    np.fill_diagonal(g, 0)
    np.fill_diagonal(c, 0)
    eps, eps_key = float(np.abs(g).max()) + g_err, float(np.abs(c).max()) + c_err
    m = min(multiplicity, n_writes)
    signal = min(c_lo * g_lo, c_lo * g_hi) - max(abs(c_lo), abs(c_hi)) * eps
    return signal - eps_key * (m * (g_hi + eps) + 2 * (n_writes - m) * eps)


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
    multiplicity: np.ndarray  # max over tokens x != answer of the leaking writes whose value token is the answer or x
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
            answer_writes = mult.pop(int(ans), 0)
            mults.append(answer_writes + max(mult.values(), default=0))
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
