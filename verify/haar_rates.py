"""Corollary 1 made measurable: best N-term L^2 error of piecewise-constant targets, S6 (Haar) vs S4D (Fourier / real
exponentials), as error-vs-N curves for a figure.

``python -m verify.haar_rates --out results/corollary1_error_vs_N.json`` writes (atomically):

* targets: ``targets`` random rho on [0, 1] per jump count m in {1, 2, 4}: jump positions uniform, piece values
  uniform in [-1, 1];
* ``haar_exact``: N = 3 n Mamba basis functions = n Haar terms (Theorem 1: three bases per wavelet; phi counts as a
  term); the best n-term error sqrt(sum of the squares of all but the n largest coefficients), exact coefficients
  (every nonzero one down to level 40: only wavelets whose support contains a jump are nonzero);
* ``haar_s6_layer``: the same with the coefficients *computed by Theorem 1's constructed layer* (reference engine,
  float64, every wavelet up to level 7 on a T = 256 grid) for rho sampled on that grid, error measured against the
  grid function the layer sees;
* ``s4d_fourier``: S4D's best case, its Fourier limit (eigenvalues on the unit circle): best N-term error in the
  real trigonometric basis (N real basis functions, adaptive, from the first 20000 frequencies);
* ``s4d_real_lstsq``: N real S4D bases exp(-lam_n (1 - s)), lam_n = n - 1, least-squares fit on 2^12 grid points
  (numerically ill-conditioned for large N: the Vandermonde problem the paper cites);
* fitted rates: log2 error slope per N (Haar; theory 2^{-N/(6m)} in L^2, paper 2^{-N/(3m)}) and log-log slope
  (Fourier; theory N^{-1/2} in L^2, paper N^{-1}).
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

from constructions.export import write_json_atomic

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


def haar_layer_errors(targets, n_max: int, levels: int = 7) -> tuple[list[np.ndarray], float]:
    """Best n-term errors of each target sampled on the T = 2^(levels+1) grid, with the coefficients the constructed
    S6 layer outputs (reference engine, float64); also the largest |layer - exact| coefficient error seen."""
    from constructions import haar
    from verify.engines import make_engine
    from verify.specs.haar import outputs

    T = 2 ** (levels + 1)
    con = haar.build(levels, T)
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


def _summary(curves: list[np.ndarray]) -> dict:
    a = np.stack(curves)
    return {"mean": a.mean(0).tolist(), "min": a.min(0).tolist(), "max": a.max(0).tolist(),
            "geomean": np.exp(np.log(np.maximum(a, 1e-300)).mean(0)).tolist()}


def measure(ms=(1, 2, 4), targets: int = 20, n_haar: int = 40, n_fourier: int = 120, n_s4d: int = 30,
            seed: int = 0) -> dict:
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    res = {"command": "python -m verify.haar_rates --out results/corollary1_error_vs_N.json",
           "seed": seed, "targets_per_m": targets, "by_m": {}}
    for m in ms:
        tg = [random_target(m, rng) for _ in range(targets)]
        haar_c = [best_n_term_errors(haar_coefficients(u, v), n_haar) for u, v in tg]
        layer_c, layer_coef_err = haar_layer_errors(tg, n_haar)
        four_c = [best_n_term_errors(fourier_coefficients(u, v), n_fourier, total=norm2(u, v)) for u, v in tg]
        s4d_c = [s4d_real_errors(u, v, n_s4d) for u, v in tg]
        n = np.arange(1, n_haar + 1)
        g = np.exp(np.log(np.stack(haar_c)).mean(0))
        fit = slice(2 * m, n_haar)
        haar_slope = float(np.polyfit(3 * n[fit], np.log2(g[fit]), 1)[0])
        N4 = np.arange(1, n_fourier + 1)
        g4 = np.exp(np.log(np.stack(four_c)).mean(0))
        four_slope = float(np.polyfit(np.log(N4[9:]), np.log(g4[9:]), 1)[0])
        res["by_m"][str(m)] = {
            "targets": [{"jumps": u.tolist(), "values": v.tolist()} for u, v in tg],
            "haar_exact": {"N": (3 * n).tolist(), "terms": n.tolist(), **_summary(haar_c)},
            "haar_s6_layer": {"N": (3 * n).tolist(), "terms": n.tolist(), "grid": 256, **_summary(layer_c),
                              "max_coefficient_error_vs_exact": layer_coef_err},
            "s4d_fourier": {"N": N4.tolist(), **_summary(four_c)},
            "s4d_real_lstsq": {"N": list(range(1, n_s4d + 1)), "lam": "lam_n = n - 1", **_summary(s4d_c)},
            "rates": {"haar_log2_error_per_N_fitted": haar_slope, "haar_theory_L2": -1 / (6 * m),
                      "haar_paper": -1 / (3 * m), "fourier_loglog_slope_fitted": four_slope,
                      "fourier_theory_L2": -0.5, "fourier_paper": -1.0},
        }
    res["seconds"] = time.perf_counter() - start
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m verify.haar_rates", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="results/corollary1_error_vs_N.json")
    ap.add_argument("--targets", type=int, default=20)
    args = ap.parse_args(argv)
    res = measure(targets=args.targets)
    out = write_json_atomic(args.out, res, indent=1)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
