"""Monte-Carlo recall of the designed hashing circuit over Koren et al.'s D-N grids, next to the law and our
corrected law (``symbolic.recall_scaling``).

Every cell (D, N) draws ``draws`` independent code sets (E, F) and runs ``seqs`` zoology-style sequences per draw
through the reference engine's ``linear_mamba_forward``. Cells of one D run in one call: their parameters are
stacked along leading model dimensions, N padded to the largest N with zero rows of F (zero key/query coordinates,
so the padded model computes exactly the unpadded one). Accuracy = argmax over all V tokens equals the label, as in
the paper. Float32 (the statistics need no more).

Results are one JSON file per regime, written atomically after every D, with the command that produced them; a rerun
with the same settings resumes at the first missing D.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from constructions.export import write_json_atomic
from constructions.errors import require
from constructions.hash_recall import analysis_layer, draw_codes
from constructions.layout import LinearMambaConfig
from symbolic import recall_scaling as rs
from verify.engines.linear import linear_mamba_forward
from verify.tasks.mqar import IGNORE, MQARConfig, generate


@dataclass(frozen=True)
class Regime:
    name: str
    vocab: int
    seq_len: int
    facts: int
    task: str = "mqar"  # or "ar"
    random_fillers: bool = True

    def task_config(self, num_examples: int) -> MQARConfig:
        ar = self.task == "ar"
        return MQARConfig(self.facts, self.vocab, 2 * self.facts + 1 if ar else self.seq_len,
                          num_examples=num_examples, layout="zoology", random_fillers=self.random_fillers,
                          reduce_to_ar=ar)


REGIMES = {
    "regime_0": Regime("regime_0", 512, 64, 16),
    "regime_1": Regime("regime_1", 512, 128, 32),
    "regime_2": Regime("regime_2", 1024, 64, 16),
}
_atomic_json = write_json_atomic  # results are written atomically (name kept for callers)
PAPER_D = tuple(range(2, 65, 2))
PAPER_N = tuple(range(2, 33))


def _cell_seed(seed: int, d: int, n: int, draw: int) -> int:
    return (seed * 1_000_003 + d * 10_007 + n * 101 + draw) % (2**63)


def designed_accuracy(regime: Regime, d_model: int, n_values, draws: int = 4, seqs: int = 64, seed: int = 0,
                      chunk: int = 8, tokens=None, labels=None) -> dict[int, float]:
    """Measured per-query accuracy of the designed circuit at (d_model, N) for every N in ``n_values``."""
    require(all(1 <= n <= d_model for n in n_values), f"grid cells need 1 <= N <= D, got D={d_model}, N={n_values}")
    if tokens is None:
        tokens, labels = generate(regime.task_config(draws * seqs), seed)
    tok = torch.from_numpy(tokens).view(draws, seqs, -1)
    lab = torch.from_numpy(labels).view(draws, seqs, -1)
    mask = lab != IGNORE
    out: dict[int, float] = {}
    V = regime.vocab
    for start in range(0, len(n_values), chunk):
        ns = list(n_values)[start:start + chunk]
        n_max = max(ns)
        cfg = LinearMambaConfig(d_model=d_model, d_state=n_max)
        E = np.empty((len(ns), draws, V, d_model))
        xp = np.zeros((len(ns), draws, 2 * n_max, 2 * d_model))
        for i, n in enumerate(ns):
            for k in range(draws):
                e, (F,) = draw_codes(V, d_model, n, _cell_seed(seed, d_model, n, k))
                E[i, k] = e
                xp[i, k, :n, :d_model] = F
                xp[i, k, n_max:n_max + n, d_model:] = F
        base = analysis_layer(np.zeros((n_max, d_model)), d_model)
        params = {f"layers.0.{k}": v.float() for k, v in base.items()}
        params["layers.0.x_proj.weight"] = torch.from_numpy(xp).float()
        Et = torch.from_numpy(E).float()
        hidden = Et[:, torch.arange(draws)[:, None, None], tok]  # (nN, draws, S, L, D)
        with torch.no_grad():
            y = linear_mamba_forward(params, hidden, cfg)
        lab_q = lab[mask].view(draws, -1)  # (draws, S*Q)
        y_q = torch.stack([y[:, k][:, mask[k]] for k in range(draws)], dim=1)  # (nN, draws, S*Q, D)
        logits = y_q @ Et.transpose(-1, -2)  # (nN, draws, S*Q, V)
        correct = (logits.argmax(-1) == lab_q[None]).double().mean(dim=(1, 2))
        for i, n in enumerate(ns):
            out[n] = float(correct[i])
    return out


def run_grid(regime: Regime, out_path: Path | None = None, d_values=PAPER_D, n_values=PAPER_N, draws: int = 4,
             seqs: int = 64, seed: int = 0, command: str | None = None, log=None) -> dict:
    """Measure every cell with N <= D, add the law (paper a, and a from the generator) and the corrected law."""
    settings = {"regime": asdict(regime), "d_values": list(d_values), "n_values": list(n_values), "draws": draws,
                "seqs": seqs, "seed": seed}
    data = None
    if out_path is not None and out_path.exists():
        data = json.loads(out_path.read_text())
        if data.get("settings") != settings:
            data = None  # different settings: start over
    tokens, labels = generate(regime.task_config(draws * seqs), seed)
    profile = rs.collision_profile(tokens[:PROFILE_SEQS], labels[:PROFILE_SEQS])
    nf, V = regime.facts, regime.vocab
    a_paper = float(rs.PAPER_A[("designed", regime.task)])
    a_gen = float(rs.a_coefficient("designed", regime.task, nf=nf,
                                   seq_len=None if regime.task == "ar" or regime.seq_len == 4 * nf else regime.seq_len))
    if data is None:
        data = {"settings": settings, "cells": [], "done_d": []}
    data.update({"command": command or " ".join(sys.argv), "a_paper": a_paper, "a_generator": a_gen,
                 "a_measured": float(profile.n_w.mean()) / nf, "profile_sequences": PROFILE_SEQS,
                 "predictions_version": PREDICTIONS_VERSION})
    t0 = time.time()
    for d in d_values:
        if d in data["done_d"]:
            continue
        ns = [n for n in n_values if n <= d]
        if ns:
            acc = designed_accuracy(regime, d, ns, draws, seqs, seed, tokens=tokens, labels=labels)
            data["cells"].extend({"D": d, "N": n, "measured": acc[n], "queries": int((labels != IGNORE).sum())}
                                 for n in ns)
        add_predictions(data, regime, profile)
        data["done_d"].append(d)
        data["summary"] = summarize(data["cells"])
        if out_path is not None:
            _atomic_json(out_path, data)
        if log:
            log(f"{regime.name} D={d}: {len(ns)} cells, {time.time() - t0:.1f}s")
    add_predictions(data, regime, profile)
    data["summary"] = summarize(data["cells"])
    if out_path is not None:
        _atomic_json(out_path, data)
    return data


PREDICTIONS_VERSION = 2  # bump when a prediction changes: stored cells are re-predicted, measurements kept
PROFILE_SEQS = 64


def add_predictions(data: dict, regime: Regime, profile: rs.CollisionProfile) -> None:
    """Fill in (or refresh) the law, the law with a from the generator and the corrected law of every cell."""
    nf, V = regime.facts, regime.vocab
    for c in data["cells"]:
        if c.get("v") == PREDICTIONS_VERSION:
            continue
        d, n = c["D"], c["N"]
        c.update({"law": float(rs.law_num(d, n, V, nf, data["a_paper"])),
                  "law_a_generator": float(rs.law_num(d, n, V, nf, data["a_generator"])),
                  "corrected": rs.corrected_law_num(d, n, V, profile), "v": PREDICTIONS_VERSION})


def multilayer_table(out_path: Path | None = None, d_model: int = 64, n_values=(4, 8, 16), lams=(1, 2, 4),
                     draws: int = 3, seqs: int = 64, seed: int = 0, command: str | None = None) -> dict:
    """N_eff = Lambda N: the parallel composition (``build_parallel``) and the naive residual stack
    (``build_analysis(n_layers=Lambda)``), measured on regime_0 next to the law and the corrected law at N_eff."""
    from constructions.hash_recall import build_analysis, build_parallel
    from verify.checks import score_queries
    from verify.engines import make_engine

    regime = REGIMES["regime_0"]
    tokens, labels = generate(regime.task_config(seqs), seed)
    profile = rs.collision_profile(tokens, labels)
    eng = make_engine("reference", "float32")
    rows = []
    for lam in lams:
        for n in n_values:
            if lam * n > d_model:
                continue
            n_par = lam * n * d_model / (d_model + (lam - 1) * n)  # averaged_hash_moments()["N_eff"]
            row = {"D": d_model, "N": n, "Lambda": lam,
                   "law": float(rs.law_num(d_model, n, regime.vocab, regime.facts, 3.0, lam)),
                   "corrected": rs.corrected_law_num(d_model, n, regime.vocab, profile, lam),
                   "N_eff_parallel": n_par,
                   "law_parallel": float(rs.law_num(d_model, n_par, regime.vocab, regime.facts, 3.0)),
                   "corrected_parallel": rs.corrected_law_num(d_model, n_par, regime.vocab, profile)}
            for kind, build in (("parallel", build_parallel), ("residual_stack", build_analysis)):
                right = total = 0
                for k in range(draws):
                    con = build(regime.vocab, d_model, n, lam, seed=_cell_seed(seed, d_model, n, 100 * lam + k)) \
                        if kind == "parallel" else build(regime.vocab, d_model, n, _cell_seed(seed, d_model, n,
                                                                                               100 * lam + k), lam)
                    q, c, _ = score_queries(con, eng.hidden(con, torch.from_numpy(tokens)), torch.from_numpy(labels))
                    right, total = right + c, total + q
                row[f"measured_{kind}"] = right / total
            rows.append(row)
    data = {"command": command or " ".join(sys.argv), "regime": asdict(regime), "draws": draws, "seqs": seqs,
            "rows": rows}
    if out_path is not None:
        _atomic_json(out_path, data)
    return data


def multihead_table(out_path: Path | None = None, d_model: int = 60, n_values=tuple(range(2, 11, 2)),
                    m_values=(1, 2, 3, 4, 5, 6), draws: int = 2, seqs: int = 64, seed: int = 0,
                    command: str | None = None) -> dict:
    """The paper's N x M grid (V=512, N_f=16, L=64, D=60) for the designed circuit of each head pattern, measured
    next to ``symbolic.recall_scaling.multihead_effective``'s prediction (corrected law)."""
    from constructions.hash_recall import build_analysis, build_multihead
    from verify.checks import score_queries
    from verify.engines import make_engine

    regime = REGIMES["regime_0"]
    tokens, labels = generate(regime.task_config(seqs), seed)
    profile = rs.collision_profile(tokens, labels)
    eng = make_engine("reference", "float32")
    rows = []
    for pattern in ("MHA", "MQA", "MKA", "MVA"):
        for m in m_values:
            for n in n_values:
                right = total = 0
                for k in range(draws):
                    s_ = _cell_seed(seed, d_model, n, 1000 * m + k)
                    con = build_analysis(regime.vocab, d_model, n, s_) if m == 1 else \
                        build_multihead(regime.vocab, d_model, n, m, pattern, s_)
                    q, c, _ = score_queries(con, eng.hidden(con, torch.from_numpy(tokens)), torch.from_numpy(labels))
                    right, total = right + c, total + q
                eff = rs.multihead_effective(pattern, d_model, n, m)
                rows.append({"pattern": pattern, "M": m, "N": n, "D": d_model, "measured": right / total, **eff,
                             "predicted": rs.corrected_law_num(d_model, n, regime.vocab, profile, **eff),
                             "law_single_head": float(rs.law_num(d_model, n, regime.vocab, regime.facts, 3.0))})
    err = np.array([r["predicted"] - r["measured"] for r in rows])
    data = {"command": command or " ".join(sys.argv), "regime": asdict(regime), "draws": draws, "seqs": seqs,
            "rows": rows, "summary": {"mean_abs_error": float(np.abs(err).mean()),
                                      "max_abs_error": float(np.abs(err).max())}}
    if out_path is not None:
        _atomic_json(out_path, data)
    return data


def summarize(cells) -> dict:
    if not cells:
        return {}
    m = np.array([c["measured"] for c in cells])
    out = {"cells": len(cells)}
    for key in ("law", "law_a_generator", "corrected"):
        if key not in cells[0]:
            continue
        err = np.array([c[key] for c in cells]) - m
        out[key] = {"mean_abs_error": float(np.abs(err).mean()), "max_abs_error": float(np.abs(err).max()),
                    "mean_signed_error": float(err.mean()), "rmse": float(math.sqrt((err**2).mean()))}
        d = np.array([c["D"] for c in cells])
        out[key]["mean_abs_error_by_D"] = {f"{lo}-{hi}": float(np.abs(err[(d >= lo) & (d <= hi)]).mean())
                                           for lo, hi in ((2, 16), (18, 32), (34, 48), (50, 64))
                                           if ((d >= lo) & (d <= hi)).any()}
    return out


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="designed-circuit recall over the paper's D-N grids (CPU, resumable)")
    ap.add_argument("--out", default="results/recall_scaling", help="directory for <regime>.json")
    ap.add_argument("--regimes", default=",".join(REGIMES), help="comma-separated, from " + ", ".join(REGIMES))
    ap.add_argument("--draws", type=int, default=4, help="code draws per cell")
    ap.add_argument("--seqs", type=int, default=64, help="sequences per draw")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--d-step", type=int, default=2, help="D grid step (paper: 2)")
    ap.add_argument("--multilayer", action="store_true", help="only the N_eff = Lambda N table (multilayer.json)")
    ap.add_argument("--multihead", action="store_true", help="only the N x M head-pattern table (multihead.json)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # small special-function kernels: threads only contend on a shared CPU
    out = Path(args.out)
    command = "python -m verify.recall_grid " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.multilayer:
        data = multilayer_table(out / "multilayer.json", command=command)
        for r in data["rows"]:
            print(json.dumps(r), flush=True)
        return 0
    if args.multihead:
        data = multihead_table(out / "multihead.json", command=command)
        print(json.dumps(data["summary"]), flush=True)
        return 0
    for name in args.regimes.split(","):
        require(name in REGIMES, f"unknown regime {name!r}; known: {', '.join(REGIMES)}")
        data = run_grid(REGIMES[name], out / f"{name}.json", tuple(range(2, 65, args.d_step)), PAPER_N,
                        args.draws, args.seqs, args.seed, command=command, log=lambda m: print(m, flush=True))
        print(name, json.dumps(data["summary"]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
