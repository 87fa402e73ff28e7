"""Corollary 1's error-vs-N curves: best N-term L^2 error of piecewise-constant targets, S6 (Haar) vs S4D.

    python -m experiments.haar_rates --out results/corollary1_error_vs_N.json

writes (atomically; an existing file only with ``--overwrite``), per jump count m in {1, 2, 4} and ``--targets``
random targets each (``verify.haar_rates``):

* ``haar_exact``: N = 3 n Mamba basis functions = n Haar terms (Theorem 1: three bases per wavelet; phi counts as a
  term), exact coefficients;
* ``haar_s6_layer``: the coefficients computed by Theorem 1's constructed layer on a T = 256 grid;
* ``s4d_fourier``: N real basis functions of the trigonometric basis, adaptive, from the first 20000 frequencies;
* ``s4d_real_lstsq``: N real S4D bases, least squares;
* fitted rates: log2 error slope per N (Haar; theory 2^{-N/(6m)} in L^2, paper 2^{-N/(3m)}) and log-log slope
  (Fourier; theory N^{-1/2} in L^2, paper N^{-1}).
"""
from __future__ import annotations

import sys
import time

import numpy as np

from verify import cli_support as cli
from verify.haar_rates import (best_n_term_errors, fourier_coefficients, haar_coefficients, haar_layer_errors, norm2,
                               random_target, s4d_real_errors)

MODULE = "experiments.haar_rates"
JUMPS = (1, 2, 4)
N_HAAR, N_FOURIER, N_S4D = 40, 120, 30  # Haar terms, Fourier basis functions, S4D-Real bases
# peak memory of haar_layer_errors: 1.16 GB at 200 targets and 2.12 GB at 2000 (0.54 MB a target), bounded above by
LAYER_BYTES, LAYER_BYTES_PER_TARGET = 5 << 28, 5 << 17  # 1.25 GiB + 0.625 MiB a target


def _summary(curves: list[np.ndarray]) -> dict:
    a = np.stack(curves)
    return {"mean": a.mean(0).tolist(), "min": a.min(0).tolist(), "max": a.max(0).tolist(),
            "geomean": np.exp(np.log(np.maximum(a, 1e-300)).mean(0)).tolist()}


def measure(targets: int, seed: int, command: str, progress: cli.Progress) -> dict:
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    res = {"command": command, "seed": seed, "targets_per_m": targets, "by_m": {}}
    for m in JUMPS:
        tg = [random_target(m, rng) for _ in range(targets)]
        haar_c, four_c, s4d_c = [], [], []
        for i, (u, v) in enumerate(tg):
            progress.update(f"m={m}: target {i + 1}, exact Haar, Fourier and S4D-Real errors")
            haar_c.append(best_n_term_errors(haar_coefficients(u, v), N_HAAR))
            four_c.append(best_n_term_errors(fourier_coefficients(u, v), N_FOURIER, total=norm2(u, v)))
            s4d_c.append(s4d_real_errors(u, v, N_S4D))
            progress.advance()
        progress.update(f"m={m}: coefficients of Theorem 1's layer (reference engine, float64)")
        layer_c, layer_coef_err = haar_layer_errors(tg, N_HAAR)
        progress.advance()
        n = np.arange(1, N_HAAR + 1)
        g = np.exp(np.log(np.stack(haar_c)).mean(0))
        fit = slice(2 * m, N_HAAR)
        haar_slope = float(np.polyfit(3 * n[fit], np.log2(g[fit]), 1)[0])
        N4 = np.arange(1, N_FOURIER + 1)
        g4 = np.exp(np.log(np.stack(four_c)).mean(0))
        four_slope = float(np.polyfit(np.log(N4[9:]), np.log(g4[9:]), 1)[0])
        res["by_m"][str(m)] = {
            "targets": [{"jumps": u.tolist(), "values": v.tolist()} for u, v in tg],
            "haar_exact": {"N": (3 * n).tolist(), "terms": n.tolist(), **_summary(haar_c)},
            "haar_s6_layer": {"N": (3 * n).tolist(), "terms": n.tolist(), "grid": 256, **_summary(layer_c),
                              "max_coefficient_error_vs_exact": layer_coef_err},
            "s4d_fourier": {"N": N4.tolist(), **_summary(four_c)},
            "s4d_real_lstsq": {"N": list(range(1, N_S4D + 1)), "lam": "lam_n = n - 1", **_summary(s4d_c)},
            "rates": {"haar_log2_error_per_N_fitted": haar_slope, "haar_theory_L2": -1 / (6 * m),
                      "haar_paper": -1 / (3 * m), "fourier_loglog_slope_fitted": four_slope,
                      "fourier_theory_L2": -0.5, "fourier_paper": -1.0},
        }
    res["seconds"] = time.perf_counter() - start
    return res


def parser() -> cli.Parser:
    ap = cli.Parser(prog=f"python -m {MODULE}", description=__doc__)
    ap.add_argument("--out", default="results/corollary1_error_vs_N.json", help="result file (JSON)")
    ap.add_argument("--targets", type=cli.integer(1, 10**6), default=20, help="random targets per jump count m")
    ap.add_argument("--seed", type=cli.integer(0, 2**63 - 1), default=0, help="seed of the targets")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing result file (default: refuse)")
    return ap


def main(argv) -> int:
    args = parser().parse_args(argv)
    out = cli.output_file(args.out, "--out", args.overwrite)
    cli.require_memory(LAYER_BYTES + args.targets * LAYER_BYTES_PER_TARGET, f"--targets {args.targets}", "--targets")
    with cli.Progress(len(JUMPS) * (args.targets + 1), "haar rates", args.quiet) as progress:
        res = measure(args.targets, args.seed, cli.command_line(MODULE, argv), progress)
    print(f"wrote {cli.write_json(out, res)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
