"""Corollary 1 made measurable: best N-term L^2 error of piecewise-constant targets, S6 (Haar) vs S4D (Fourier / real
exponentials). The measurement functions; ``python -m experiments.haar_rates`` runs them into the error-vs-N curves
of ``results/corollary1_error_vs_N.json``.

* targets (``random_target``): jump positions uniform on [0, 1], piece values uniform in [-1, 1];
* ``haar_coefficients``: every nonzero Haar coefficient, exact, down to level 40 (only wavelets whose support
  contains a jump are nonzero); ``best_n_term_errors``: sqrt(sum of the squares of all but the n largest);
* ``haar_layer_errors``: the same with the coefficients *computed by Theorem 1's constructed layer* (reference
  engine, float64, every wavelet up to level 7 on a T = 256 grid) for rho sampled on that grid, error measured
  against the grid function the layer sees;
* ``fourier_coefficients``: S4D's best case, its Fourier limit (eigenvalues on the unit circle), in the real
  trigonometric basis;
* ``s4d_real_errors``: N real S4D bases exp(-lam_n (1 - s)), lam_n = n - 1, least-squares fit on 2^12 grid points
  (numerically ill-conditioned for large N: the Vandermonde problem the paper cites).
"""
from __future__ import annotations

import functools
import math

import numpy as np

J_MAX = 40


def random_target(m: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """(jumps u_1 < ... < u_m in (0, 1), values v_0..v_m)."""
    return np.sort(rng.random(m)), rng.uniform(-1, 1, m + 1)


def _edges(u):
    return np.concatenate([[0.0], u, [1.0]])


def norm2(u, v) -> float:
    return float(np.sum(v**2 * np.diff(_edges(u))))


def integral(u, v, lo: float, hi: float) -> float:
    """int_lo^hi rho, summing only the pieces that overlap [lo, hi] (no cancellation of large numbers)."""
    e = _edges(u)
    overlap = np.clip(np.minimum(e[1:], hi) - np.maximum(e[:-1], lo), 0, None)
    return float(np.sum(v * overlap))


def haar_coefficients(u, v, j_max: int = J_MAX) -> np.ndarray:
    """Every nonzero Haar coefficient of rho (phi first), down to level j_max."""
    coefs = [integral(u, v, 0.0, 1.0)]
    for j in range(j_max + 1):
        for k in sorted({int(math.floor(x * 2**j)) for x in u}):
            a, b = k / 2**j, (k + 1) / 2**j
            mid = (a + b) / 2
            coefs.append(2 ** (j / 2) * (integral(u, v, a, mid) - integral(u, v, mid, b)))
    return np.array(coefs)


def best_n_term_errors(coefs: np.ndarray, n_max: int, total: float | None = None) -> np.ndarray:
    """sqrt(energy outside the n largest coefficients), n = 1..n_max (from the discarded ones: no cancellation)."""
    sq = np.sort(coefs**2)[::-1]
    tail = np.cumsum(sq[::-1])[::-1]  # tail[n] = sum_{i >= n} sq[i]
    out = np.empty(n_max)
    for n in range(1, n_max + 1):
        rest = tail[n] if n < len(sq) else 0.0
        if total is not None:
            rest = max(rest, total - np.sum(sq[:n]))
        out[n - 1] = math.sqrt(max(rest, 0.0))
    return out


def fourier_coefficients(u, v, n_max: int = 20_000) -> np.ndarray:
    """Coefficients in {1, sqrt2 cos 2 pi n s, sqrt2 sin 2 pi n s}, n = 1..n_max."""
    e = _edges(u)
    n = np.arange(1, n_max + 1)[:, None]
    w = 2 * np.pi * n
    c = math.sqrt(2) * np.sum(v * (np.sin(w * e[1:]) - np.sin(w * e[:-1])) / w, axis=1)
    s = math.sqrt(2) * np.sum(v * (np.cos(w * e[:-1]) - np.cos(w * e[1:])) / w, axis=1)
    return np.concatenate([[integral(u, v, 0, 1)], c, s])


def s4d_real_errors(u, v, n_max: int = 30, grid: int = 2**12) -> np.ndarray:
    s = (np.arange(grid) + 0.5) / grid
    rho = np.take(v, np.searchsorted(u, s))
    out = np.empty(n_max)
    for N in range(1, n_max + 1):
        basis = np.exp(-np.arange(N)[None, :] * (1 - s[:, None]))
        coef, *_ = np.linalg.lstsq(basis, rho, rcond=None)
        out[N - 1] = math.sqrt(np.mean((rho - basis @ coef) ** 2))
    return out


@functools.lru_cache(maxsize=2)
def _layer(levels: int):
    """Theorem 1's layer on the T = 2^(levels+1) grid, built once (its bound is evaluated in sympy: ~25 s at 7)."""
    from constructions import haar

    return haar.build(levels, 2 ** (levels + 1))


def haar_layer_errors(targets, n_max: int, levels: int = 7) -> tuple[list[np.ndarray], float]:
    """Best n-term errors of each target sampled on the T = 2^(levels+1) grid, with the coefficients the constructed
    S6 layer outputs (reference engine, float64); also the largest |layer - exact| coefficient error seen."""
    from constructions import haar
    from verify.engines import make_engine
    from verify.specs.haar import outputs

    T = 2 ** (levels + 1)
    con = _layer(levels)
    s = (np.arange(T) + 0.5) / T
    signals = np.stack([np.take(v, np.searchsorted(u, s)) for u, v in targets])
    got = outputs(con, signals, make_engine("reference", "float64"))
    grid = np.stack([haar.grid_values(j, k, T) for j, k in haar.wavelets(levels)], axis=1)
    exact = signals @ grid / T
    errs = []
    for c_layer, c_exact in zip(got, exact):
        order = np.argsort(-np.abs(c_layer))  # the layer's n largest coefficients are the ones kept
        e = []
        for n in range(1, n_max + 1):
            top, rest = order[:n], order[n:]
            # ||rho_T - sum_top c~ psi||^2 = sum_top (c - c~)^2 + sum_rest c^2 (orthonormal on the grid)
            e.append(math.sqrt(np.sum((c_exact[top] - c_layer[top]) ** 2) + np.sum(c_exact[rest] ** 2)))
        errs.append(np.array(e))
    return errs, float(np.abs(got - exact).max())
