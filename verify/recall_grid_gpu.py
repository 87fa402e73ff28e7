"""The designed hashing circuit in the real ``mamba_ssm.Mamba`` block over Koren et al.'s D-N grids (GPU script).

    python -m verify.recall_grid_gpu OUT_DIR [--regimes regime_0,regime_1,regime_2] [--max-minutes 9]

For every cell (D, N <= D) and code draw it builds ``constructions.hash_recall.build_mamba_block`` (expand 4, the
+/- SiLU pairing, constant gate and Delta, A_log = -100) from the *same* seeds as the CPU grid
(``verify.recall_grid``), runs the same zoology sequences through ``mamba_ssm.Mamba`` (its CUDA selective scan; the
fused path if causal_conv1d is installed), and, on the same GPU, through the reference engine's analysis model. It
records per cell: the accuracy on mamba_ssm, the accuracy of the analysis model, the largest |logit| difference
between them, the law, and (from the committed CPU grid of the same seeds) the corrected law and the CPU measurement. One JSON per regime under OUT_DIR, written atomically after every D;
a rerun resumes. ``--engine reference`` runs the same script without a GPU (slow; for testing on a small grid).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from constructions.errors import require
from constructions.hash_recall import analysis_layer, draw_codes, mamba_block_weights
from constructions.layout import Construction, LinearMambaConfig
from symbolic import recall_scaling as rs
from verify.engines import make_engine
from verify.engines.linear import linear_mamba_forward
from verify.recall_grid import PAPER_N, REGIMES, _atomic_json, _cell_seed, summarize
from verify.tasks.mqar import IGNORE, generate


def cell(regime, d: int, n: int, draws: int, seqs: int, seed: int, engine, tokens, labels, device) -> dict:
    V = regime.vocab
    tok = torch.from_numpy(tokens).view(draws, seqs, -1)
    lab = torch.from_numpy(labels).view(draws, seqs, -1)
    right_m = right_a = total = 0
    max_diff = 0.0
    cfg_a = LinearMambaConfig(d_model=d, d_state=n)
    for k in range(draws):
        E, (F,) = draw_codes(V, d, n, _cell_seed(seed, d, n, k))
        cfg, sd = mamba_block_weights(E, F)
        emb = torch.from_numpy(E)
        con = Construction("hash-recall", "", cfg, emb, sd, emb, [], None, {})
        mask = lab[k] != IGNORE
        y_m = engine.hidden(con, tok[k]).float()  # mamba_ssm (or reference) real block
        pa = {f"layers.0.{key}": v.to(device, torch.float32) for key, v in analysis_layer(F, d).items()}
        with torch.no_grad():
            y_a = linear_mamba_forward(pa, emb.to(device, torch.float32)[tok[k].to(device)], cfg_a)
        Et = emb.to(device, torch.float32)
        lm, la = y_m[mask.to(y_m.device)] @ Et.T, y_a[mask.to(device)] @ Et.T
        target = lab[k][mask].to(device)
        right_m += int((lm.argmax(-1) == target).sum())
        right_a += int((la.argmax(-1) == target).sum())
        total += int(target.numel())
        max_diff = max(max_diff, float((lm - la).abs().max()))
    return {"D": d, "N": n, "measured": right_m / total, "measured_analysis": right_a / total,
            "max_abs_logit_diff": max_diff, "queries": total}


def run(regime, out_path: Path, draws: int, seqs: int, seed: int, engine_name: str, d_values, command: str,
        log=print, cpu_dir: Path | None = None, deadline: float = float("inf")) -> dict:
    engine = make_engine(engine_name, "float32")
    device = engine.device
    settings = {"regime": regime.name, "draws": draws, "seqs": seqs, "seed": seed, "engine": engine_name,
                "d_values": list(d_values)}
    data = json.loads(out_path.read_text()) if out_path.exists() else None
    if data is None or data.get("settings") != settings:
        data = {"settings": settings, "cells": [], "done_d": []}
    data["command"] = command
    data["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    data["fused_path"] = bool(getattr(engine, "fused", False))
    tokens, labels = generate(regime.task_config(draws * seqs), seed)
    a_paper = float(rs.PAPER_A[("designed", regime.task)])
    cpu = {}  # the CPU grid of the same seeds (results/recall_scaling), for its corrected law and measurement
    cpu_file = (cpu_dir / f"{regime.name}.json") if cpu_dir is not None else None
    if cpu_file is not None and cpu_file.exists():
        cpu_data = json.loads(cpu_file.read_text())
        if cpu_data["settings"]["draws"] == draws and cpu_data["settings"]["seqs"] == seqs \
                and cpu_data["settings"]["seed"] == seed:
            cpu = {(c["D"], c["N"]): c for c in cpu_data["cells"]}
    t0 = time.time()
    for d in d_values:
        if d in data["done_d"]:
            continue
        if time.time() > deadline:
            log(f"{regime.name}: time budget reached before D={d}; rerun to resume")
            break
        for n in [n for n in PAPER_N if n <= d]:
            c = cell(regime, d, n, draws, seqs, seed, engine, tokens, labels, device)
            c["law"] = float(rs.law_num(d, n, regime.vocab, regime.facts, a_paper))
            if (d, n) in cpu:
                c.update({"corrected": cpu[(d, n)]["corrected"], "measured_cpu": cpu[(d, n)]["measured"]})
            data["cells"].append(c)
        data["done_d"].append(d)
        data["summary"] = summarize(data["cells"])
        if data["cells"]:
            data["summary"]["max_abs_logit_diff"] = max(c["max_abs_logit_diff"] for c in data["cells"])
            data["summary"]["max_accuracy_diff_vs_analysis"] = max(
                abs(c["measured"] - c["measured_analysis"]) for c in data["cells"])
            with_cpu = [c for c in data["cells"] if "measured_cpu" in c]
            if with_cpu:
                data["summary"]["max_accuracy_diff_vs_cpu_grid"] = max(
                    abs(c["measured_analysis"] - c["measured_cpu"]) for c in with_cpu)
        _atomic_json(out_path, data)
        log(f"{regime.name} D={d} {time.time() - t0:.1f}s")
    return data


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="output directory (one <regime>.json per regime)")
    ap.add_argument("--regimes", default=",".join(REGIMES))
    ap.add_argument("--draws", type=int, default=4, help="code draws per cell (the CPU grid's 4)")
    ap.add_argument("--seqs", type=int, default=64, help="sequences per draw (the CPU grid's 64)")
    ap.add_argument("--cpu-results", default="results/recall_scaling", help="CPU grid JSONs of the same seeds")
    ap.add_argument("--max-minutes", type=float, default=9.0, help="stop (resumable) after this long")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engine", default="mamba_ssm", help="mamba_ssm (GPU) or reference")
    ap.add_argument("--d-values", default="2:65:2", help="start:stop:step of D (paper: 2:65:2)")
    args = ap.parse_args(argv)
    a, b, c = (int(x) for x in args.d_values.split(":"))
    command = "python -m verify.recall_grid_gpu " + " ".join(argv if argv is not None else sys.argv[1:])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + 60 * args.max_minutes
    for name in args.regimes.split(","):
        require(name in REGIMES, f"unknown regime {name!r}; known: {', '.join(REGIMES)}")
        data = run(REGIMES[name], out / f"{name}.json", args.draws, args.seqs, args.seed, args.engine,
                   range(a, b, c), command, cpu_dir=Path(args.cpu_results), deadline=deadline)
        print(name, json.dumps(data["summary"]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
