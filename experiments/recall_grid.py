"""Designed-circuit recall over Koren et al.'s D-N grids (CPU, resumable), and the N_eff tables.

    python -m experiments.recall_grid --out results/recall_scaling            # 3 regimes x 752 cells
    python -m experiments.recall_grid --multilayer | --multihead               # multilayer.json / multihead.json

One JSON per regime (``<out>/<regime>.json``), written atomically after every D with its settings and the command
that produced it. A rerun with the same settings resumes at the first missing D (and leaves a finished file as it
is); a file of other settings is refused unless ``--overwrite``. The measurement is ``verify.recall_grid``.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from common.errors import RequirementError
from symbolic import recall_scaling as rs
from verify import cli_support as cli
from verify import recall_law as rl
from verify.recall_grid import (MULTIHEAD_PATTERNS, PAPER_N, PREDICTIONS_VERSION, PROFILE_SEQS, REGIMES,
                                add_predictions, designed_accuracy, designed_accuracy_bytes, multihead_table,
                                multilayer_table, summarize)
from verify.tasks.mqar import IGNORE, generate

MODULE = "experiments.recall_grid"
DRAWS = {"grid": 4, "multilayer": 3, "multihead": 2}  # code draws per cell
MULTILAYER = {"d_model": 64, "n_values": (4, 8, 16), "lams": (1, 2, 4)}
MULTIHEAD = {"d_model": 60, "n_values": (2, 4, 6, 8, 10), "m_values": (1, 2, 3, 4, 5, 6)}  # Koren et al.'s N x M


def grid_settings(regime, d_values, n_values, draws: int, seqs: int, seed: int) -> dict:
    return {"regime": asdict(regime), "d_values": list(d_values), "n_values": list(n_values), "draws": draws,
            "seqs": seqs, "seed": seed}


def run_grid(regime, out_path: Path, d_values, draws: int, seqs: int, seed: int, command: str, resume: bool,
             progress: cli.Progress) -> dict:
    """Measure every cell with N <= D, add the law (paper a, and a from the generator) and the corrected law; the
    file is written after every D, and not at all when a resumed file has nothing left to do."""
    settings = grid_settings(regime, d_values, PAPER_N, draws, seqs, seed)
    data = json.loads(out_path.read_text()) if resume else {"settings": settings, "command": command, "cells": [],
                                                              "done_d": []}
    tokens, labels = generate(regime.task_config(draws * seqs), seed)
    profile = rl.collision_profile(tokens[:PROFILE_SEQS], labels[:PROFILE_SEQS])
    nf = regime.facts
    header = {"a_paper": float(rs.PAPER_A[("designed", regime.task)]),
              "a_generator": float(rs.a_coefficient("designed", regime.task, nf=nf, seq_len=None if regime.task == "ar"
                                                    or regime.seq_len == 4 * nf else regime.seq_len)),
              "a_measured": float(profile.n_w.mean()) / nf, "profile_sequences": PROFILE_SEQS,
              "predictions_version": PREDICTIONS_VERSION}
    dirty = not resume or any(data.get(k) != v for k, v in header.items()) or \
        any(c.get("v") != PREDICTIONS_VERSION for c in data["cells"])
    data.update(header)
    for d in d_values:
        progress.update(f"{regime.name} D={d}")
        if d not in data["done_d"]:
            ns = [n for n in PAPER_N if n <= d]
            if ns:
                acc = designed_accuracy(regime, d, ns, draws, seqs, seed, tokens=tokens, labels=labels)
                data["cells"].extend({"D": d, "N": n, "measured": acc[n], "queries": int((labels != IGNORE).sum())}
                                     for n in ns)
            add_predictions(data, regime, profile)
            data["done_d"].append(d)
            data["summary"] = summarize(data["cells"])
            cli.write_json(out_path, data)
            dirty = False
        progress.advance()
    if dirty:
        add_predictions(data, regime, profile)
        data["summary"] = summarize(data["cells"])
        cli.write_json(out_path, data)
    return data


def parser() -> cli.Parser:
    ap = cli.Parser(prog=f"python -m {MODULE}", description=__doc__)
    ap.add_argument("--out", default="results/recall_scaling", help="folder for <regime>.json (or the table)")
    ap.add_argument("--regimes", type=cli.names(REGIMES), default=None,
                    help=f"comma-separated regimes of the grid (default: all: {','.join(REGIMES)})")
    ap.add_argument("--draws", type=cli.integer(1, 10**6), default=None,
                    help="code draws per cell (default: {grid} for the grid, {multilayer} for --multilayer, "
                         "{multihead} for --multihead)".format(**DRAWS))
    ap.add_argument("--seqs", type=cli.integer(1, 10**9), default=64, help="sequences per draw")
    ap.add_argument("--seed", type=cli.integer(0, 2**63 - 1), default=0, help="seed of the sequences and codes")
    ap.add_argument("--d-step", type=cli.integer(1, 62), default=None,
                    help="step of the grid's D values 2, 2 + step, ... <= 64 (default: 2, the paper's)")
    table = ap.add_mutually_exclusive_group()
    table.add_argument("--multilayer", action="store_true", help="only the N_eff = Lambda N table (multilayer.json)")
    table.add_argument("--multihead", action="store_true", help="only the N x M head-pattern table (multihead.json)")
    ap.add_argument("--overwrite", action="store_true",
                    help="replace a stored result of other settings (default: refuse; same settings resume)")
    return ap


def main(argv) -> int:
    args = parser().parse_args(argv)
    command = cli.command_line(MODULE, argv)
    out = cli.output_dir(args.out)
    if args.multilayer or args.multihead:
        kind = "multilayer" if args.multilayer else "multihead"
        for flag, value in (("--regimes", args.regimes), ("--d-step", args.d_step)):
            if value is not None:
                raise RequirementError(f"{flag} applies to the grid, not to --{kind} (regime_0, its own sizes)")
        return _table(kind, out, args, command)
    regimes = [REGIMES[name] for name in (args.regimes or REGIMES)]
    draws, d_values = args.draws or DRAWS["grid"], tuple(range(2, 65, args.d_step or 2))
    cli.require_memory(max(designed_accuracy_bytes(r, max(d_values), draws, args.seqs) for r in regimes),
                       "the grid", "--draws or --seqs")
    resume = {r.name: cli.resumable_file(out / f"{r.name}.json",
                                         grid_settings(r, d_values, PAPER_N, draws, args.seqs, args.seed),
                                         "--out", args.overwrite) for r in regimes}
    torch.set_num_threads(1)  # small special-function kernels: threads only contend on a shared CPU
    with cli.Progress(len(regimes) * len(d_values), "recall grid", args.quiet) as progress:
        for r in regimes:
            data = run_grid(r, out / f"{r.name}.json", d_values, draws, args.seqs, args.seed, command,
                            resume[r.name], progress)
            print(r.name, cli.dumps(data["summary"]), flush=True)
    return 0


def _table(kind: str, out: Path, args, command: str) -> int:
    path = cli.output_file(str(out / f"{kind}.json"), "--out", args.overwrite)
    draws = args.draws or DRAWS[kind]
    cli.require_memory(designed_accuracy_bytes(REGIMES["regime_0"], 64, 1, args.seqs, chunk=4), f"--{kind}",
                       "--seqs")
    if kind == "multilayer":
        sizes, build = MULTILAYER, multilayer_table
        rows = sum(lam * n <= sizes["d_model"] for lam in sizes["lams"] for n in sizes["n_values"])
    else:
        sizes, build = MULTIHEAD, multihead_table
        rows = len(MULTIHEAD_PATTERNS) * len(sizes["m_values"]) * len(sizes["n_values"])
    with cli.Progress(rows, kind, args.quiet) as progress:
        table = build(**sizes, draws=draws, seqs=args.seqs, seed=args.seed, on_row=lambda row: progress.advance())
    cli.write_json(path, {"command": command, **table})
    for line in table["rows"] if kind == "multilayer" else [table["summary"]]:
        print(cli.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
