"""The designed hashing circuit in the real ``mamba_ssm.Mamba`` block over Koren et al.'s D-N grids (GPU).

    python -m experiments.recall_grid_gpu OUT_DIR [--regimes regime_0,regime_1,regime_2] [--max-minutes 9]

For every cell (D, N <= D) and code draw, ``verify.recall_grid.mamba_block_accuracy`` builds the real block from the
*same* seeds as the CPU grid (``experiments.recall_grid``), runs the same zoology sequences through
``mamba_ssm.Mamba`` (its CUDA selective scan; the fused path if causal_conv1d is installed) and, on the same GPU,
through the reference engine's analysis model. Per cell: the accuracy on mamba_ssm, the accuracy of the analysis
model, the largest |logit| difference between them, the law, and (from the stored CPU grid of the same seeds) the
corrected law and the CPU measurement. One JSON per regime under OUT_DIR, written atomically after every D; a rerun
of the same settings resumes, a file of other settings is refused unless ``--overwrite``. ``--engine reference``
runs the same measurement without a GPU (slow; for small grids).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from common.errors import RequirementError
from symbolic import recall_scaling as rs
from verify import cli_support as cli
from verify import recall_law as rl
from verify.engines import make_engine
from verify.recall_grid import PAPER_N, REGIMES, designed_accuracy_bytes, mamba_block_accuracy, summarize
from verify.tasks.mqar import generate

MODULE = "experiments.recall_grid_gpu"


def d_values(text: str) -> range:
    """Flag type: start:stop:step of the D values, 2 <= start < stop <= 1025, step >= 1."""
    import argparse

    try:
        a, b, c = (int(x) for x in text.split(":"))
    except ValueError:
        a = b = c = 0
    if not (2 <= a < b <= 1025 and c >= 1):
        raise argparse.ArgumentTypeError(f"must be start:stop:step with 2 <= start < stop <= 1025 and step >= 1, "
                                         f"got {text!r}")
    return range(a, b, c)


def _stored_cpu_grid(cpu_dir: Path, regime, draws: int, seqs: int, seed: int) -> dict:
    """Cells of the CPU grid of the same seeds, by (D, N), for their corrected law and measurement ({} if none)."""
    path = cpu_dir / f"{regime.name}.json"
    try:
        s = json.loads(path.read_text())["settings"]
        if (s["draws"], s["seqs"], s["seed"]) == (draws, seqs, seed):
            return {(c["D"], c["N"]): c for c in json.loads(path.read_text())["cells"]}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return {}


def run(regime, out_path: Path, draws: int, seqs: int, seed: int, engine, engine_name: str, d_vals, command: str,
        resume: bool, progress: cli.Progress, cpu_dir: Path, deadline: float) -> dict:
    settings = {"regime": regime.name, "draws": draws, "seqs": seqs, "seed": seed, "engine": engine_name,
                "d_values": list(d_vals)}
    data = json.loads(out_path.read_text()) if resume else {"settings": settings, "cells": [], "done_d": []}
    data["command"] = command
    data["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    data["fused_path"] = bool(getattr(engine, "fused", False))
    tokens, labels = generate(regime.task_config(draws * seqs), seed)
    a_paper = float(rs.PAPER_A[("designed", regime.task)])
    cpu = _stored_cpu_grid(cpu_dir, regime, draws, seqs, seed)
    for d in d_vals:
        progress.update(f"{regime.name} D={d}")
        if d in data["done_d"]:
            progress.advance()
            continue
        if time.time() > deadline:
            print(f"{regime.name}: --max-minutes reached before D={d}; rerun to resume", file=sys.stderr, flush=True)
            break
        for n in [n for n in PAPER_N if n <= d]:
            c = mamba_block_accuracy(regime, d, n, draws, seqs, seed, engine, tokens, labels, engine.device)
            c["law"] = float(rl.law_num(d, n, regime.vocab, regime.facts, a_paper))
            if (d, n) in cpu:
                c.update({"corrected": cpu[(d, n)]["corrected"], "measured_cpu": cpu[(d, n)]["measured"]})
            data["cells"].append(c)
        data["done_d"].append(d)
        data["summary"] = _summary(data["cells"])
        cli.write_json(out_path, data)
        progress.advance()
    return data


def _summary(cells) -> dict:
    out = summarize(cells)
    if cells:
        out["max_abs_logit_diff"] = max(c["max_abs_logit_diff"] for c in cells)
        out["max_accuracy_diff_vs_analysis"] = max(abs(c["measured"] - c["measured_analysis"]) for c in cells)
        with_cpu = [c for c in cells if "measured_cpu" in c]
        if with_cpu:
            out["max_accuracy_diff_vs_cpu_grid"] = max(abs(c["measured_analysis"] - c["measured_cpu"])
                                                       for c in with_cpu)
    return out


def parser() -> cli.Parser:
    ap = cli.Parser(prog=f"python -m {MODULE}", description=__doc__)
    ap.add_argument("out", help="output folder (one <regime>.json per regime)")
    ap.add_argument("--regimes", type=cli.names(REGIMES), default=list(REGIMES), help="comma-separated regimes "
                    f"(default: {','.join(REGIMES)})")
    ap.add_argument("--draws", type=cli.integer(1, 10**6), default=4, help="code draws per cell (the CPU grid's 4)")
    ap.add_argument("--seqs", type=cli.integer(1, 10**9), default=64, help="sequences per draw (the CPU grid's 64)")
    ap.add_argument("--cpu-results", default="results/recall_scaling", help="CPU grid JSONs of the same seeds")
    ap.add_argument("--max-minutes", type=cli.real(0, lo_open=True), default=9.0,
                    help="stop after this long (the file resumes)")
    ap.add_argument("--seed", type=cli.integer(0, 2**63 - 1), default=0, help="seed of the sequences and codes")
    ap.add_argument("--engine", choices=("mamba_ssm", "reference"), default="mamba_ssm",
                    help="mamba_ssm (GPU) or reference (CPU)")
    ap.add_argument("--d-values", type=d_values, default=range(2, 65, 2), metavar="START:STOP:STEP",
                    help="D values (default: 2:65:2, the paper's)")
    ap.add_argument("--overwrite", action="store_true",
                    help="replace a stored result of other settings (default: refuse; same settings resume)")
    return ap


def main(argv) -> int:
    args = parser().parse_args(argv)
    out = cli.output_dir(args.out, "OUT_DIR")
    regimes = [REGIMES[name] for name in args.regimes]
    d_vals = args.d_values
    resume = {r.name: cli.resumable_file(
        out / f"{r.name}.json", {"regime": r.name, "draws": args.draws, "seqs": args.seqs, "seed": args.seed,
                                 "engine": args.engine, "d_values": list(d_vals)}, "OUT_DIR", args.overwrite)
        for r in regimes}
    cli.require_memory(max(designed_accuracy_bytes(r, max(d_vals), 1, args.seqs, chunk=4) for r in regimes),
                       "a cell of the grid", "--seqs or --d-values")
    try:
        engine = make_engine(args.engine, "float32")
    except RequirementError as e:
        raise RequirementError(f"--engine {args.engine}: {e}") from None
    out.mkdir(parents=True, exist_ok=True)
    command = cli.command_line(MODULE, argv)
    deadline = time.time() + 60 * args.max_minutes
    with cli.Progress(len(regimes) * len(d_vals), "recall grid (mamba_ssm block)", args.quiet) as progress:
        for r in regimes:
            data = run(r, out / f"{r.name}.json", args.draws, args.seqs, args.seed, engine, args.engine, d_vals,
                       command, resume[r.name], progress, Path(args.cpu_results), deadline)
            print(r.name, cli.dumps(data["summary"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
