"""Johnson-Lindenstrauss value codes (Lemma 4 of Huang et al.), drawn from a seed and then *measured*.

Codes are balanced ±1 columns: each of the |V| columns has p/2 entries +1 and p/2 entries -1 (p even), uniformly
at random. Balance makes every column orthogonal to 1_p, which the Theorem 2 construction uses to cancel SiLU's
constant term without an output bias. The lemma's probability is never relied on: ``coherence`` returns the drawn
matrix's actual worst normalised inner product, and the construction checks it against what its margin needs.
"""
from __future__ import annotations

import math

import numpy as np

from constructions.errors import require


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
    gram = codes.T @ codes
    np.fill_diagonal(gram, 0)
    return float(np.abs(gram).max()) / p
