"""Johnson-Lindenstrauss value codes (Lemma 4 of Huang et al.), drawn from a seed and then *measured*.

Codes are balanced ±1 columns: each of the |V| columns has p/2 entries +1 and p/2 entries -1 (p even), uniformly
at random. Balance makes every column orthogonal to 1_p, which the Theorem 2 construction uses to cancel SiLU's
constant term without an output bias. The lemma's probability is never relied on: ``coherence`` returns the drawn
matrix's actual worst normalised inner product, and the construction checks it against what its margin needs.
"""
from __future__ import annotations

import math

import numpy as np

from common.errors import require


def jl_dim(vocab_size: int, eps: float) -> int:
    """Smallest even p with |V|^2 exp(-p eps^2 / 2) <= 1 (Hoeffding + union bound over pairs), at least 2."""
    require(0 < eps < 1, f"JL codes need 0 < eps < 1, got eps={eps}")
    p = math.ceil(4 * math.log(max(vocab_size, 2)) / eps**2)
    return max(2, p + (p % 2))


def balanced_codes(p: int, vocab_size: int, seed: int) -> np.ndarray:
    """(p, vocab_size) int matrix of ±1, every column with exactly p/2 entries equal to +1."""
    require(p >= 2 and p % 2 == 0, f"balanced JL codes need an even p >= 2, got p={p}")
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((vocab_size, p)), axis=1)
    codes = np.where(order < p // 2, 1, -1).astype(np.int64)
    return codes.T.copy()


def coherence(codes: np.ndarray) -> float:
    """max_{i != j} |q_i . q_j| / p over the columns (1.0 if two columns coincide; 0.0 for a single column)."""
    p, n = codes.shape
    if n < 2:
        return 0.0
    # float64 BLAS in blocks of columns (an int64 product has no BLAS: minutes at |V| = 8192); exact, since every
    # entry and partial sum is an integer of size <= p < 2^53
    q, worst = codes.astype(np.float64), 0.0
    for start in range(0, n, 1024):
        gram = q[:, start:start + 1024].T @ q
        gram[np.arange(gram.shape[0]), np.arange(start, start + gram.shape[0])] = 0
        worst = max(worst, float(np.abs(gram).max()))
    return worst / p


def exact_ratio(value: float, denominator: int):
    """A ratio k / denominator of integers that was computed in floats (``coherence``: max |dot| / p;
    ``key_interference``: max row sum / N), as the exact sympy Rational a proof obligation needs. ``sp.nsimplify``
    of the float may return a nearby decimal below it (162/770 -> 0.21038961038961), which could move a strict
    inequality across its boundary."""
    import sympy as sp

    k = round(value * denominator)
    require(abs(k - value * denominator) < 1e-6, f"{value!r} is not a ratio of an integer to {denominator}")
    return sp.Rational(k, denominator)


def draw_codes(p: int, n: int, seed: int, mu_max: float, what: str, draws: int = 64) -> tuple[np.ndarray, float, int]:
    """The first of ``draws`` balanced (p, n) code draws (seeds seed, seed+1, ...) with coherence < mu_max.

    Returns (codes, coherence, seed used); raises RequirementError naming ``what`` if no draw qualifies.
    """
    from common.errors import RequirementError

    for draw in range(draws):
        codes = balanced_codes(p, n, seed + draw)
        mu = coherence(codes)
        if mu < mu_max:
            return codes, mu, seed + draw
    raise RequirementError(f"{what} needs codes with coherence < {mu_max:.3f}; none of {draws} draws of p={p} "
                           f"balanced codes for {n} symbols had it (raise p)")


def hadamard_dim(n: int) -> int:
    """The Sylvester-Hadamard order 2^ceil(log2(n + 1)): the smallest that has n balanced orthogonal columns."""
    return 1 << math.ceil(math.log2(n + 1))


def hadamard_codes(n: int) -> np.ndarray:
    """(hadamard_dim(n), n) matrix of ±1: columns 1..n of the Sylvester-Hadamard matrix.

    Every column is balanced (sums to 0, as it is orthogonal to column 0 = 1) and distinct columns are orthogonal,
    so the codes' Gram matrix is exactly hadamard_dim(n) * I (coherence 0).
    """
    require(n >= 1, f"Hadamard codes need n >= 1 symbols, got n={n}")
    h = np.ones((1, 1), dtype=np.int64)
    while h.shape[0] < hadamard_dim(n):
        h = np.block([[h, h], [h, -h]])
    return h[:, 1:n + 1].copy()


def low_coherence_codes(p: int, n: int, seed: int, max_sweeps: int = 100) -> np.ndarray:
    """Balanced (p, n) codes of low coherence: a seeded draw refined by local search.

    Each move swaps a +1 and a -1 inside one column (so columns stay balanced); per column the move that most lowers
    sum_{j != c} <q_c, q_j>^4 (a smooth stand-in for the largest |<q_c, q_j>|) is taken, sweeping until no move helps.
    Deterministic in (p, n, seed). Far below the best of many random draws, e.g. p=14, n=32: coherence 3/7 vs 5/7.
    """
    q = balanced_codes(p, n, seed)
    gram = q.T @ q
    for _ in range(max_sweeps):
        improved = False
        for c in range(n):
            plus, minus = np.flatnonzero(q[:, c] == 1), np.flatnonzero(q[:, c] == -1)
            step = 2 * (q[minus][None, :, :] - q[plus][:, None, :])  # change of gram[c] per (plus, minus) swap
            step[..., c] = 0
            old = gram[c].astype(np.float64)
            gain = ((old + step) ** 4).sum(-1) - (old ** 4).sum()
            i, j = np.unravel_index(np.argmin(gain), gain.shape)
            if gain[i, j] < 0:
                q[plus[i], c], q[minus[j], c] = -1, 1
                gram[c] = gram[:, c] = gram[c] + step[i, j]
                gram[c, c] = p
                improved = True
        if not improved:
            break
    return q
