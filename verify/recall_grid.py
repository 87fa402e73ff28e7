"""Monte-Carlo recall of the designed hashing circuit over Koren et al.'s D-N grids, next to the law and our
corrected law (``verify.recall_law``; the derivation is ``symbolic.recall_scaling``): the measurement functions. The
grid's command line, its result files and their resumption are ``experiments.recall_grid`` (CPU) and
``experiments.recall_grid_gpu`` (``mamba_ssm``).

Every cell (D, N) draws ``draws`` independent code sets (E, F) and runs ``seqs`` zoology-style sequences per draw
through the reference engine's ``linear_mamba_forward``. Cells of one D run in one call: their parameters are
stacked along leading model dimensions, N padded to the largest N with zero rows of F (zero key/query coordinates,
so the padded model computes exactly the unpadded one). Accuracy = argmax over all V tokens equals the label, as in
the paper. Float32 (the statistics need no more).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from common.errors import require
from constructions.hash_recall import analysis_layer, draw_codes, mamba_block_weights
from constructions.layout import Construction, LinearMambaConfig
from verify import recall_law as rl
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
PAPER_D = tuple(range(2, 65, 2))
PAPER_N = tuple(range(2, 33))


def cell_seed(seed: int, d: int, n: int, draw: int) -> int:
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
                e, (F,) = draw_codes(V, d_model, n, cell_seed(seed, d_model, n, k))
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


def designed_accuracy_bytes(regime: Regime, d_model: int, draws: int, seqs: int, chunk: int = 8) -> int:
    """Peak memory of ``designed_accuracy`` at (d_model, ``chunk`` N values), fitted to its measured peak RSS: 12
    float32 copies of the (chunk, draws, seqs, L, D) input and 2 of the (chunk, draws, seqs * N_f, V) logits, plus
    the tokens. On regime_1 at 256 and 1024 sequences and regimes 0 and 2 at 1024 it is 2-27% above the measured
    peak."""
    L, q = regime.task_config(1).seq_len, regime.facts
    return draws * seqs * (chunk * 4 * (12 * L * d_model + 2 * q * regime.vocab) + 16 * L)


def mamba_block_accuracy(regime: Regime, d: int, n: int, draws: int, seqs: int, seed: int, engine, tokens, labels,
                         device) -> dict:
    """One cell through the real block: ``constructions.hash_recall.mamba_block_weights`` (expand 4, the +/- SiLU
    pairing, constant gate and Delta, A_log = -100) on ``engine`` (``mamba_ssm``'s CUDA selective scan, or the
    reference engine), from the same code seeds as ``designed_accuracy``, next to the analysis model on the same
    device: both accuracies and the largest |logit| difference between them."""
    V = regime.vocab
    tok = torch.from_numpy(tokens).view(draws, seqs, -1)
    lab = torch.from_numpy(labels).view(draws, seqs, -1)
    right_m = right_a = total = 0
    max_diff = 0.0
    cfg_a = LinearMambaConfig(d_model=d, d_state=n)
    for k in range(draws):
        E, (F,) = draw_codes(V, d, n, cell_seed(seed, d, n, k))
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


PREDICTIONS_VERSION = 2  # bump when a prediction changes: stored cells are re-predicted, measurements kept
PROFILE_SEQS = 64


def add_predictions(data: dict, regime: Regime, profile: rl.CollisionProfile) -> None:
    """Fill in (or refresh) the law, the law with a from the generator and the corrected law of every cell."""
    nf, V = regime.facts, regime.vocab
    for c in data["cells"]:
        if c.get("v") == PREDICTIONS_VERSION:
            continue
        d, n = c["D"], c["N"]
        c.update({"law": float(rl.law_num(d, n, V, nf, data["a_paper"])),
                  "law_a_generator": float(rl.law_num(d, n, V, nf, data["a_generator"])),
                  "corrected": rl.corrected_law_num(d, n, V, profile), "v": PREDICTIONS_VERSION})


def multilayer_table(d_model: int, n_values, lams, draws: int, seqs: int, seed: int = 0, on_row=None) -> dict:
    """N_eff = Lambda N: the parallel composition (``build_parallel``) and the naive residual stack
    (``build_analysis(n_layers=Lambda)``), measured on regime_0 next to the law and the corrected law at N_eff, for
    every Lambda in ``lams`` and N in ``n_values`` with Lambda N <= d_model. ``on_row(row)`` is called after each
    row (progress)."""
    from constructions.hash_recall import build_analysis, build_parallel
    from verify.checks import score_queries
    from verify.engines import make_engine

    regime = REGIMES["regime_0"]
    tokens, labels = generate(regime.task_config(seqs), seed)
    profile = rl.collision_profile(tokens, labels)
    eng = make_engine("reference", "float32")
    rows = []
    for lam in lams:
        for n in n_values:
            if lam * n > d_model:
                continue
            n_par = lam * n * d_model / (d_model + (lam - 1) * n)  # averaged_hash_moments()["N_eff"]
            row = {"D": d_model, "N": n, "Lambda": lam,
                   "law": float(rl.law_num(d_model, n, regime.vocab, regime.facts, 3.0, lam)),
                   "corrected": rl.corrected_law_num(d_model, n, regime.vocab, profile, lam),
                   "N_eff_parallel": n_par,
                   "law_parallel": float(rl.law_num(d_model, n_par, regime.vocab, regime.facts, 3.0)),
                   "corrected_parallel": rl.corrected_law_num(d_model, n_par, regime.vocab, profile)}
            for kind, build in (("parallel", build_parallel), ("residual_stack", build_analysis)):
                right = total = 0
                for k in range(draws):
                    con = build(regime.vocab, d_model, n, lam, seed=cell_seed(seed, d_model, n, 100 * lam + k)) \
                        if kind == "parallel" else build(regime.vocab, d_model, n, cell_seed(seed, d_model, n,
                                                                                               100 * lam + k), lam)
                    q, c, _ = score_queries(con, eng.hidden(con, torch.from_numpy(tokens)), torch.from_numpy(labels))
                    right, total = right + c, total + q
                row[f"measured_{kind}"] = right / total
            rows.append(row)
            if on_row:
                on_row(row)
    return {"regime": asdict(regime), "draws": draws, "seqs": seqs, "rows": rows}


MULTIHEAD_PATTERNS = ("MHA", "MQA", "MKA", "MVA")


def multihead_table(d_model: int, n_values, m_values, draws: int, seqs: int, seed: int = 0, on_row=None) -> dict:
    """The N x M grid on regime_0 (V=512, N_f=16, L=64; the paper's D=60) for the designed circuit of each head
    pattern (``MULTIHEAD_PATTERNS``), measured
    next to ``verify.recall_law.multihead_effective``'s prediction (corrected law). ``on_row(row)`` is
    called after each row (progress)."""
    from constructions.hash_recall import build_analysis, build_multihead
    from verify.checks import score_queries
    from verify.engines import make_engine

    regime = REGIMES["regime_0"]
    tokens, labels = generate(regime.task_config(seqs), seed)
    profile = rl.collision_profile(tokens, labels)
    eng = make_engine("reference", "float32")
    rows = []
    for pattern in MULTIHEAD_PATTERNS:
        for m in m_values:
            for n in n_values:
                right = total = 0
                for k in range(draws):
                    s_ = cell_seed(seed, d_model, n, 1000 * m + k)
                    con = build_analysis(regime.vocab, d_model, n, s_) if m == 1 else \
                        build_multihead(regime.vocab, d_model, n, m, pattern, s_)
                    q, c, _ = score_queries(con, eng.hidden(con, torch.from_numpy(tokens)), torch.from_numpy(labels))
                    right, total = right + c, total + q
                eff = rl.multihead_effective(pattern, d_model, n, m)
                rows.append({"pattern": pattern, "M": m, "N": n, "D": d_model, "measured": right / total, **eff,
                             "predicted": rl.corrected_law_num(d_model, n, regime.vocab, profile, **eff),
                             "law_single_head": float(rl.law_num(d_model, n, regime.vocab, regime.facts, 3.0))})
                if on_row:
                    on_row(rows[-1])
    err = np.array([r["predicted"] - r["measured"] for r in rows])
    return {"regime": asdict(regime), "draws": draws, "seqs": seqs, "rows": rows,
            "summary": {"mean_abs_error": float(np.abs(err).mean()), "max_abs_error": float(np.abs(err).max())}}


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
