"""Synthetic stores of Koren et al.'s trained grids with known answers (for tests of paper_figures.recall_trained).

A cell's best seed (seed 0) is the law Phi(1/sigma - m_V) at a known coefficient ``A_TRUE`` plus a small
deterministic noise (sd ``NOISE``); seed s > 0 holds that value times (1 - 0.15 s), so the mean of the seeds is known
in closed form. Head grids scale the law (N_eff = N) by a known factor per pattern and M, except MHA, which follows
the law at N_eff = M N. Ablation rows hold listed values.
"""
from __future__ import annotations

import numpy as np

from paper_figures.recall_trained import welch_dim
from verify.recall_law import law_num
from verify.train.spec import run_key
from verify.train.store import ResultStore
from verify.train.sweep import grid

NOISE = 0.01
A_TRUE = {"linear": 1.25, "full": 0.625, "linear-ar": 1.0, "layers": 1.25, "layers-ar": 1.0}
HEAD_FACTOR = {"MQA": lambda m: 1 - 0.05 * (m - 1), "MKA": lambda m: 1 - 0.04 * (m - 1), "MVA": lambda m: 1.0}
ABLATION = {"base": [0.9, 0.8, 1.0, 0.7, 0.6], "a": [0.8, 0.7, 0.9, 0.6, 0.7], "b": [0.6, 0.7, 0.5, 0.6, 0.4],
            "c": [0.5, 0.4, 0.6, 0.5, 0.5], "d": [0.9, 0.95, 1.0, 0.85, 0.9], "e": [0.05, 0.06, 0.04, 0.05, 0.05]}


def seed_factor(seed: int) -> float:
    return 1 - 0.15 * seed


def record(spec, acc: float) -> dict:
    return {"key": run_key(spec), "spec": spec.as_dict(), "device": "cuda", "mamba_ssm": "2.3.2",
            "result": {"best_val_acc": float(acc), "test_acc": float(acc), "solved": acc == 1.0, "steps": 10}}


def best_value(spec, a_: float, noise: float = NOISE) -> float:
    """The best seed's value of a cell: the law at a_ (N_eff = layers N) plus the cell's fixed noise."""
    lam = spec.model_arg("layers", 1)
    law = float(law_num(spec.d_model, spec.d_state, spec.vocab, spec.kappa, a_, lam))
    rng = np.random.default_rng(spec.d_model * 10_007 + spec.d_state * 101 + lam)
    return float(np.clip(law + noise * rng.standard_normal(), 0, 1))


def write_grid(results, name: str, value, keep=lambda s: True) -> int:
    """Records of every run of grid ``name`` whose spec ``keep`` accepts: value(spec) at seed 0, times
    ``seed_factor`` at the other seeds."""
    recs = [record(s, value(s) * seed_factor(s.seed)) for s in grid(name).runs() if keep(s)]
    return ResultStore(results / "train" / f"{name}.jsonl").append(recs)


def thin(every: int):
    return lambda s: (s.d_model // 2 + s.d_state) % every == 0


def write_all(results, every: int = 5) -> None:
    """Stores of every trained Koren grid under ``results/train`` (the D-N grids thinned to one cell in ``every``)."""
    for tag in ("regime0", "regime1", "regime2"):
        for kind, name in (("linear", f"recall-linear-{tag}"), ("full", f"recall-full-{tag}"),
                           ("linear-ar", f"recall-linear-ar-{tag}")):
            write_grid(results, name, lambda s, a_=A_TRUE[kind]: best_value(s, a_), thin(every))
    write_grid(results, "recall-layers", lambda s: best_value(s, A_TRUE["layers"]))
    write_grid(results, "recall-layers-ar", lambda s: best_value(s, A_TRUE["layers-ar"]))
    for p in ("MQA", "MKA", "MVA", "MHA"):
        write_grid(results, f"recall-heads-{p.lower()}", lambda s, p=p: head_value(s, p))
    write_grid(results, "recall-repeats", repeats_value)
    write_grid(results, "recall-vocab-long", vocab_long_value)
    for row, vals in ABLATION.items():
        g = grid(f"recall-ablation-{row}")
        ResultStore(results / "train" / f"{g.name}.jsonl").append([record(s, vals[s.seed]) for s in g.runs()])


def repeats_value(spec) -> float:
    """The best seed's value of a repeated-keys cell: 0.9 / N_k at one layer (under the guessing bound 1/N_k), above
    the bound at Lambda 2-4, 0.5 / N_k at Lambda 5 (under it)."""
    lam, k = spec.model_arg("layers", 1), spec.arg("key_repeats", 1)
    return 0.9 / k if lam == 1 else 0.5 / k if lam == 5 else min(0.99, 0.9 * (1 + 0.4 * (lam - 1)) / k)


def vocab_long_value(spec, slope: float = -1.0) -> float:
    """A V x L cell: Phi(1/sigma - m_V) at a = 1.25 (the law; slope -1 in m_V), or with m_V scaled by -``slope``:
    Phi(1/sigma + slope m_V), a grid whose probit slope is ``slope``."""
    from verify.recall_law import m_v_num, phi_num, sigma2_num

    inv_sigma = 1 / np.sqrt(sigma2_num(spec.d_model, spec.d_state, spec.kappa, 1.25))
    return float(phi_num(inv_sigma + slope * m_v_num(spec.vocab)))


def head_value(spec, pattern: str) -> float:
    """The best seed's value of a head-grid cell: the law at a = 1.25 times HEAD_FACTOR[pattern](M); MHA's the law
    at N_eff = M N."""
    m = spec.model_arg("heads", 1)
    if pattern == "MHA":
        return float(law_num(spec.d_model, spec.d_state, spec.vocab, spec.kappa, 1.25, m))
    return min(1.0, best_value(spec, 1.25, noise=0.0) * HEAD_FACTOR[pattern](m))


def mechanism_grid_lines(a_true: float) -> list[dict]:
    """Lines of the mech-interp grid's cells D in {16, 32, 48, 64} x N in {4, 8, 16, 32}, N <= D: recall from the law at
    a_true; the key hash at Welch's bound where D >= 2N, at N (a random hash's) elsewhere."""
    out = []
    for d in (16, 32, 48, 64):
        for n in (4, 8, 16, 32):
            if n <= d:
                acc = float(law_num(d, n, 256, 16, a_true))
                dim = welch_dim(127, n) if d >= 2 * n else float(n)
                out.append({"key": f"{d}-{n}", "d_model": d, "d_state": n, "best_val_acc": acc,
                            "report": {"model": {"vocab": 256}, "recall": acc, "a_recall": a_true if acc < 1 else None,
                                       "key_block": {"effective_dim": dim, "diagonal_is_column_max": 1.0},
                                       "decoded_state": {"facts_decoded": 1.0 if d >= 2 * n else 0.9}}})
    return out
