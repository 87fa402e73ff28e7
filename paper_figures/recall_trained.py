"""Koren et al. 2026's trained-side figures and tables (recall scaling laws), drawn from the trained grids' stores.

Every entry reads the stores ``results/train/<grid>.jsonl`` of the grids in ``experiments/grids/`` (only the runs
of the grid as it is defined now, by run key). A cell's value is the paper's logger value, the best validation
accuracy over the run's evaluations (``best_val_acc``); cells aggregate their seeds as the paper does, the best of
the seeds, with the mean of the seeds beside it. The law is p = Phi(1/sigma - m_V), sigma^2 = a N_f/(N_eff D) + 1/D
(``verify.recall_law``); ``fit_a`` fits its one free coefficient a to a set of cells by least squares in accuracy
(``verify.hash_operators.fit_a``).
An entry whose stores are all missing raises ``MissingResults`` naming the sweep command; an entry with some stores
missing draws the rest and says in the panel and the caption which are missing and how to produce them.
"""
from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np

from paper_figures.common import COLUMN, MissingResults, Rendered, load_json, load_store, plt, table

VALUE = "best_val_acc"  # the paper's logger value: a run's best validation accuracy over its evaluations
CONVERGED = 0.1  # the paper's seed-reliability rule: a seed converged where its accuracy is >= 0.1
REGIMES = {"regime_0": "regime0", "regime_1": "regime1", "regime_2": "regime2"}


def sweep_cmd(name: str) -> str:
    return f"python -m verify_constructions sweep --grid {name} --device cuda"


def grid_records(results: Path, name: str) -> tuple[object, list[dict]]:
    """(grid, its stored runs): the records of ``results/train/<name>.jsonl`` whose run key is one of the grid's;
    MissingResults where there is none."""
    from verify.train.spec import run_key
    from verify.train.sweep import grid

    g = grid(name)
    keys = {run_key(s) for s in g.runs()}
    recs = [r for r in load_store(results, f"train/{name}.jsonl", sweep_cmd(name)) if r.get("key") in keys]
    if not recs:
        raise MissingResults(str(Path(results) / f"train/{name}.jsonl") + " (no run of the grid)", sweep_cmd(name))
    return g, recs


def optional_records(results: Path, name: str) -> tuple[object, list[dict] | None]:
    """``grid_records``, or (grid, None) where the store is missing."""
    from verify.train.sweep import grid

    try:
        return grid_records(results, name)
    except MissingResults:
        return grid(name), None


def cell_of(spec: dict) -> tuple:
    """A run's cell: (D, N, model, task variant)."""
    return (spec["d_model"], spec["d_state"], tuple(tuple(kv) for kv in spec.get("model", ())),
            tuple(tuple(kv) for kv in spec.get("task_args", ())))


def vocab_length_of(spec: dict) -> tuple:
    """A V x L grid's cell: (V, L) (its runs share D, N and the model)."""
    return spec["vocab"], spec["seq_len"]


def per_seed(records: list[dict], value: str = VALUE, cell=cell_of) -> dict[tuple, dict[int, float]]:
    """{cell(spec): {seed: value}} (the best over learning rates where a grid has several)."""
    out: dict[tuple, dict[int, float]] = {}
    for r in records:
        s = r["spec"]
        seeds = out.setdefault(cell(s), {})
        seeds[s["seed"]] = max(seeds.get(s["seed"], -1.0), float(r["result"][value]))
    return out


def aggregate(records: list[dict], value: str = VALUE, cell=cell_of) -> dict[tuple, dict]:
    """{cell(spec): {"best", "mean", "std", "seeds"}}: the paper's best of seeds, with the mean and the (population)
    standard deviation of the seeds beside it."""
    return {c: {"best": max(v.values()), "mean": float(np.mean(list(v.values()))),
                "std": float(np.std(list(v.values()))), "seeds": len(v)}
            for c, v in per_seed(records, value, cell).items()}


def model_arg(cell: tuple, name: str, default=None):
    return dict(cell[2]).get(name, default)


def fit_a(d, n, acc, vocab, nf, lam=1) -> tuple[float, float]:
    """(a, rmse): the coefficient a of the law that fits the accuracies ``acc`` of cells (d, n, vocab, nf, lam) best
    in the least-squares sense (``verify.hash_operators.fit_a`` at N_eff = lam n), and the root-mean-square error
    there; each argument one value for every cell or one per cell."""
    from verify.hash_operators import fit_a as fit
    from verify.recall_law import law_num

    d, n, acc, vocab, nf, lam = np.broadcast_arrays(*(np.asarray(x, float) for x in (d, n, acc, vocab, nf, lam)))
    a_ = fit(zip(acc, d, lam * n, vocab, nf))
    return a_, float(np.sqrt(np.mean((law_num(d, n, vocab, nf, a_, lam) - acc) ** 2)))


def paper_a(model: str, task: str) -> float:
    from symbolic.recall_scaling import PAPER_A

    return float(PAPER_A[(model, task)])


def _edges(vals: list, lo: float, hi: float) -> np.ndarray:
    """Cell edges half-way between the sorted axis values ``vals``, with ``lo`` and ``hi`` at the ends."""
    v = np.asarray(vals, float)
    return np.concatenate([[lo], (v[1:] + v[:-1]) / 2, [hi]])


COARSE_NOTE = ("where a store holds a coarse slice of the grid, each stored cell is drawn as a block reaching half-way "
               "to the next stored D and N")


def _heat(ax, cells: dict[tuple, float], ds, ns, title: str):
    """One D-N grid (x = D, y = N; inferno, 0..1; blank where no value) over the extent of the axes ``ds`` x ``ns``.
    The blocks sit on the D and N values the cells hold (``COARSE_NOTE``): a full grid is one block per cell, a
    coarse slice fills the panel instead of leaving isolated pixels."""
    xd = sorted({d for d, _ in cells} & set(ds)) or list(ds)
    yn = sorted({n for _, n in cells} & set(ns)) or list(ns)
    di, ni = {d: i for i, d in enumerate(xd)}, {n: i for i, n in enumerate(yn)}
    z = np.full((len(yn), len(xd)), np.nan)
    for (d, n), v in cells.items():
        if d in di and n in ni:
            z[ni[n], di[d]] = v
    im = ax.pcolormesh(_edges(xd, ds[0] - 1, ds[-1] + 1), _edges(yn, ns[0] - 0.5, ns[-1] + 0.5), z,
                       cmap="inferno", vmin=0, vmax=1)
    ax.set_xlim(ds[0] - 1, ds[-1] + 1)
    ax.set_ylim(ns[0] - 0.5, ns[-1] + 0.5)
    ax.set_title(title, fontsize=7)
    ax.set_xlabel("D")
    return im


def _value_grid(ax, cells: dict[tuple, float], xs, ys):
    """A grid of values (x, y) -> value in [0, 1] (inferno; blank where none) with each value printed in its cell."""
    z = np.full((len(ys), len(xs)), np.nan)
    for (x, y), v in cells.items():
        z[ys.index(y), xs.index(x)] = v
    im = ax.imshow(z, origin="lower", aspect="auto", cmap="inferno", vmin=0, vmax=1, interpolation="nearest")
    for i, j in zip(*np.nonzero(~np.isnan(z))):
        ax.text(j, i, f"{z[i, j]:.2f}", ha="center", va="center", fontsize=4, color="w" if z[i, j] < 0.6 else "k")
    ax.set_xticks(range(len(xs)), [str(x) for x in xs], fontsize=5.5)
    ax.set_yticks(range(len(ys)), [str(y) for y in ys])
    return im


def _missing(ax, name: str):
    ax.text(0.5, 0.5, f"not trained yet:\n{name}\n({sweep_cmd(name).replace(' --grid', chr(10) + '--grid')})",
            ha="center", va="center", fontsize=5.5, transform=ax.transAxes, wrap=True)
    # per-axis: set_yticks([]) would also clear the ticks of every panel sharing this one's y axis
    ax.tick_params(which="both", bottom=False, left=False, labelbottom=False, labelleft=False)


def _regime(g) -> dict:
    return {"vocab": g.vocabs[0], "facts": g.kappas[0], "seq_len": g.seq_lens[0]}


def _dn(agg: dict, key: str = "best") -> dict[tuple, float]:
    """{(D, N): value} of a one-model grid's cells with N <= D."""
    return {(c[0], c[1]): v[key] for c, v in agg.items() if c[1] <= c[0]}


def _fit_cells(agg: dict, reg: dict, key: str = "best", lam_of=lambda c: 1, keep=lambda c: c[1] <= c[0]):
    cells = [c for c in agg if keep(c)]
    return fit_a([c[0] for c in cells], [c[1] for c in cells], [agg[c][key] for c in cells], reg["vocab"],
                 reg["facts"], [lam_of(c) for c in cells])


def _missing_note(missing: list[str]) -> str:
    return (" Not trained yet (blank panels): " + "; ".join(f"{m} ({sweep_cmd(m)})" for m in missing) + "."
            if missing else "")


def _count(n, one: str, many: str) -> str:
    """"1 cell", "3 cells", "1-3 cells": ``n`` (a number, or _seeds' text) with the word that agrees with it."""
    return f"{n} {one if str(n) == '1' else many}"


def _seeds(recs) -> str:
    """How many seeds a cell holds among the stored runs (a partial store can hold fewer than its grid names): "3",
    or "1-3" where cells hold different numbers."""
    per = {}
    for r in recs:
        per.setdefault(cell_of(r["spec"]), set()).add(r["spec"]["seed"])
    lo, hi = min(map(len, per.values())), max(map(len, per.values()))
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def _runs_note(g, recs, cell=cell_of) -> str:
    """What was run: the protocol, the seeds and the cells stored (``cell``: a run's cell, ``cell_of`` or, for grids
    whose cells differ in more than D, N, model and task variant, e.g. ``vocab_length_of``)."""
    from paper_figures.training import _meta

    p = g.runs()[0].protocol
    cells = len({cell(r["spec"]) for r in recs})
    grid_cells = len(g.runs()) // len(g.seeds)
    part = f"; {cells} of the grid's {grid_cells} cells stored" if cells < grid_cells else ""
    changed = "".join(f", {k} {v:g}" if isinstance(v, float) else f", {k} {v}" for k, v in g.protocol_overrides)
    return (f"{g.name}: protocol {p.name} ({p.max_steps} steps, batch {p.batch_size}{changed}), seeds "
            f"{_seeds(recs)} of {len(g.seeds)}{part} ({_meta(recs)})")


AMP_NOTE = {"regime_2": " The paper trains the full model at regime_2 with mixed precision (AMP); ours run in float32."}


# ---------------------------------------------------------------------------------------------------------------
# Fig. 1: designed | theory with the trained a | trained linear | trained full
# ---------------------------------------------------------------------------------------------------------------

def figure1(results: Path, regime: str) -> Rendered:
    """Koren et al.'s Fig. 1 for one regime: (a) the designed circuit (the stored Monte-Carlo grid,
    ``experiments.recall_grid``), (b) the law with the a fitted to the trained linear grid, (c) the trained linear
    grid, (d) the trained full grid, each cell the best of its seeds; a table of the best and the mean."""
    from verify.recall_law import law_num

    tag = REGIMES[regime]
    names = (f"recall-linear-{tag}", f"recall-full-{tag}")
    (gl, rl), (gf, rf) = (optional_records(results, n) for n in names)
    if rl is None and rf is None:
        raise MissingResults(str(Path(results) / f"train/{names[0]}.jsonl"),
                             f"{sweep_cmd(names[0])} and {sweep_cmd(names[1])}")
    reg = _regime(gl)
    ds, ns = sorted(gl.d_models), sorted(gl.d_states)
    fig, axes = plt.subplots(1, 4, figsize=(2 * COLUMN, 2.1), layout="constrained")
    try:
        designed = load_json(results, f"recall_scaling/{regime}.json", "python -m experiments.recall_grid")
        _heat(axes[0], {(c["D"], c["N"]): c["measured"] for c in designed["cells"]}, ds, ns,
              f"(a) designed (a = {designed['a_paper']:g})")
        designed_note = f"(a) the designed circuit's Monte-Carlo grid ({designed['command']});"
    except MissingResults as e:
        _missing(axes[0], "recall_scaling/" + regime)
        designed_note = f"(a) missing: {e};"
    a_lin_paper = paper_a("trained-linear", "mqar")
    aggs, rows = {}, []
    for ax, g, recs, model, col in ((axes[2], gl, rl, "trained-linear", "(c) trained linear"),
                                    (axes[3], gf, rf, "trained-full", "(d) trained full")):
        if recs is None:
            _missing(ax, g.name)
            continue
        agg = aggs[model] = aggregate(recs)
        a_best, rmse = _fit_cells(agg, reg)
        a_mean, _ = _fit_cells(agg, reg, "mean")
        a_p = paper_a(model, "mqar")
        im = _heat(ax, _dn(agg), ds, ns, f"{col}, best of {_seeds(recs)}")
        dn = _dn(agg)
        law_p = law_num(*np.array(list(dn), float).T, reg["vocab"], reg["facts"], a_p)
        rows.append([col[4:], len(dn), _seeds(recs), f"{a_best:.3f}", f"{a_mean:.3f}", f"{a_p:g}", f"{rmse:.3f}",
                     f"{np.mean(np.abs(np.array(list(dn.values())) - law_p)):.3f}",
                     f"{np.mean(list(dn.values())):.3f}", f"{np.mean(list(_dn(agg, 'mean').values())):.3f}",
                     _runs_note(g, recs)])
    a_theory, source = ((float(rows[0][3]), "fitted to the trained linear grid (best of seeds)")
                        if "trained-linear" in aggs else (a_lin_paper, "the paper's trained-linear value (no "
                                                                       "linear store)"))
    im_law = _heat(axes[1], {(d, n): float(law_num(d, n, reg["vocab"], reg["facts"], a_theory)) for d in ds
                             for n in ns if n <= d}, ds, ns, f"(b) law, a = {a_theory:.3g}")
    axes[0].set_ylabel("N")
    fig.colorbar(im if aggs else im_law, ax=axes[3], fraction=0.08, pad=0.02, label="recall")
    fig.suptitle(f"{regime}: MQAR, V = {reg['vocab']}, L = {reg['seq_len']}, N_f = {reg['facts']}", fontsize=8)
    a_full_paper = paper_a("trained-full", "mqar")
    ratio = (f"here full / linear = {float(rows[1][3]) / float(rows[0][3]):.2f} of the fitted a (best of seeds; "
             f"paper {a_full_paper / a_lin_paper:g})" if len(aggs) == 2 else "compare the fitted a column")
    heads = ["model", "cells (N <= D)", "seeds", "fitted a (best)", "fitted a (mean)", "paper a",
             "rmse at fitted a", "mean |best - law(paper a)|", "mean best", "mean of seed means", "runs"]
    caption = (f"Koren et al. Fig. 1 at {regime} (V = {reg['vocab']}, L = {reg['seq_len']}, N_f = {reg['facts']}): "
               f"{designed_note} (b) the law Phi(1/sigma - m_V) with a = {a_theory:.3g}, {source} (the paper draws it "
               f"with a = {a_lin_paper:g}); (c), (d) trained grids, per cell the best validation accuracy of the best "
               f"seed (the paper's aggregation); the table gives the mean of the seeds beside it and the a fitted to "
               f"each. The paper's claim: the trained boundaries have the shape of (b), the full model needs about "
               f"half the linear model's a (paper: {a_lin_paper:g} linear, {a_full_paper:g} full); {ratio} "
               f"({COARSE_NOTE})." + AMP_NOTE.get(regime, "")
               + _missing_note([g.name for g, r in ((gl, rl), (gf, rf)) if r is None]))
    tex, md = table(heads, rows, caption)
    return Rendered(caption, figure=fig, latex=tex, markdown=md)


# ---------------------------------------------------------------------------------------------------------------
# Fig. 4: collapse curves
# ---------------------------------------------------------------------------------------------------------------

def _collapse_panel(ax, agg, reg, a_fit, lam_of=lambda c: 1, keep=lambda c: c[1] <= c[0], color_of=None):
    from verify.recall_law import m_v_num, phi_num, sigma2_num

    cells = [c for c in agg if keep(c)]
    x = 1 / np.sqrt(sigma2_num(np.array([c[0] for c in cells], float), np.array([c[1] for c in cells], float),
                               reg["facts"], a_fit, np.array([lam_of(c) for c in cells], float)))
    colors = [color_of(c) for c in cells] if color_of else "C0"
    ax.scatter(x, [agg[c]["best"] for c in cells], s=5, c=colors, label="best of seeds")
    ax.scatter(x, [agg[c]["mean"] for c in cells], s=12, facecolors="none", edgecolors="0.45", lw=0.5, zorder=3,
               label="mean of seeds")  # drawn over the filled points: a ring around each where they coincide
    mv = float(m_v_num(reg["vocab"]))
    xs = np.linspace(0, max(float(x.max()), mv + 3) * 1.02, 200)
    ax.plot(xs, phi_num(xs - mv), "k-", lw=1, label=r"$\Phi(x - m_V)$")
    ax.set_xlabel(r"$x = 1/\sigma$ (fitted a)")
    ax.set_ylim(-0.03, 1.03)


def collapse(results: Path, regime: str) -> Rendered:
    """Koren et al.'s Fig. 4 (regime_2) and its appendix versions (regimes 0, 1): AR trained linear, MQAR trained
    linear, MQAR trained full; per panel the cells against x = 1/sigma with the a fitted to the panel's best-of-seeds
    cells, and the law's curve Phi(x - m_V)."""
    tag = REGIMES[regime]
    panels = ((f"recall-linear-ar-{tag}", "trained-linear", "ar", "(a) AR, trained linear"),
              (f"recall-linear-{tag}", "trained-linear", "mqar", "(b) MQAR, trained linear"),
              (f"recall-full-{tag}", "trained-full", "mqar", "(c) MQAR, trained full"))
    loaded = [optional_records(results, p[0]) for p in panels]
    if all(r is None for _, r in loaded):
        raise MissingResults(str(Path(results) / f"train/{panels[1][0]}.jsonl"),
                             " and ".join(sweep_cmd(p[0]) for p in panels))
    fig, axes = plt.subplots(1, 3, figsize=(2 * COLUMN, 2.2), layout="constrained", sharey=True)
    rows = []
    for ax, (name, model, task, title), (g, recs) in zip(axes, panels, loaded):
        if recs is None:
            _missing(ax, name)
            ax.set_title(title, fontsize=7)
            continue
        reg, agg = _regime(g), aggregate(recs)
        a_fit, rmse = _fit_cells(agg, reg)
        a_mean, _ = _fit_cells(agg, reg, "mean")
        a_p = paper_a(model, task)
        _, rmse_p = _rmse_at(agg, reg, a_p)
        _collapse_panel(ax, agg, reg, a_fit)
        ax.set_title(f"{title}\nfitted a = {a_fit:.3g} (paper {a_p:g})", fontsize=7)
        rows.append([title[4:], len(_dn(agg)), _seeds(recs), f"{a_fit:.3f}", f"{a_mean:.3f}", f"{a_p:g}",
                     f"{rmse:.3f}", f"{rmse_p:.3f}", _runs_note(g, recs)])
    axes[0].set_ylabel("recall (validation)")
    next((ax for ax in axes if ax.collections), axes[0]).legend(frameon=False, fontsize=5, loc="upper left")
    reg = _regime(loaded[1][0])
    caption = (f"Koren et al. Fig. 4 at {regime} (V = {reg['vocab']}, N_f = {reg['facts']}): every trained cell "
               f"(N <= D) at x = 1/sigma with the a fitted to the panel (least squares of the best-of-seeds "
               f"accuracies against Phi(x - m_V)), best of seeds filled, mean of seeds hollow. The paper's claim: the "
               f"cells collapse onto the curve with a = 1 (AR) and 5/4 (MQAR) for the linear model and about half "
               f"(5/8) for the full one; the table compares the fitted a and the rms error at the fitted and the "
               f"paper's a." + AMP_NOTE.get(regime, "")
               + _missing_note([p[0] for p, (_, r) in zip(panels, loaded) if r is None]))
    tex, md = table(["panel", "cells", "seeds", "fitted a (best)", "fitted a (mean)", "paper a", "rmse at fitted a",
                     "rmse at paper a", "runs"], rows, caption)
    return Rendered(caption, figure=fig, latex=tex, markdown=md)


def _law_at(cells: list, reg: dict, a_: float, lam_of=lambda c: 1) -> np.ndarray:
    """The law's recall at each cell (D, N, model) with N_eff = lam_of(cell) N."""
    from verify.recall_law import law_num

    return law_num(np.array([c[0] for c in cells], float), np.array([c[1] for c in cells], float), reg["vocab"],
                   reg["facts"], a_, np.array([lam_of(c) for c in cells], float))


def _rmse_at(agg, reg, a_, key="best", lam_of=lambda c: 1, keep=lambda c: c[1] <= c[0]):
    cells = [c for c in agg if keep(c)]
    law = _law_at(cells, reg, a_, lam_of)
    return cells, float(np.sqrt(np.mean((law - np.array([agg[c][key] for c in cells])) ** 2)))


# ---------------------------------------------------------------------------------------------------------------
# N x Lambda
# ---------------------------------------------------------------------------------------------------------------

def _layers_of(c) -> int:
    return model_arg(c, "layers", 1)


def _state_fits(c) -> bool:
    """Lambda N <= D: the cells the collapse and the equal-state pairs use (the paper's)."""
    return _layers_of(c) * c[1] <= c[0]


def equal_state_gap(agg: dict) -> tuple[float, float, int]:
    """(mean |best(Lambda, N) - best(Lambda', N')|, mean of best(deeper) - best(shallower), pairs) over the pairs of
    cells with Lambda != Lambda' and Lambda N = Lambda' N' <= D: the law's N_eff = Lambda N says equal state, equal
    recall (up to the 1/D term), for any two depths, not only against one layer; the signed mean says whether depth
    or width does better at equal state."""
    by_state: dict[int, list[tuple[int, float]]] = {}
    for c, v in agg.items():
        if _state_fits(c):
            by_state.setdefault(_layers_of(c) * c[1], []).append((_layers_of(c), v["best"]))
    diffs = [(y - x) if ly > lx else (x - y) for cells in by_state.values()
             for (lx, x), (ly, y) in combinations(cells, 2) if lx != ly]
    if not diffs:
        return float("nan"), float("nan"), 0
    return float(np.mean(np.abs(diffs))), float(np.mean(diffs)), len(diffs)


def law_shortfall(agg: dict, reg: dict, a_: float, lam_of=lambda c: 1, keep=lambda c: c[1] <= c[0]):
    """(largest law(a_) - best over the kept cells, its cell): where the trained grid falls furthest below the law."""
    cells = [c for c in agg if keep(c)]
    short = _law_at(cells, reg, a_, lam_of) - np.array([agg[c]["best"] for c in cells])
    i = int(np.argmax(short))
    return float(short[i]), cells[i]


def layers(results: Path, name: str = "recall-layers") -> Rendered:
    """The multi-layer N x Lambda grid (MQAR, or AR for ``recall-layers-ar``): the best-of-seeds grid with its values
    printed, and the collapse with N_eff = Lambda N (cells with Lambda N > D left out, as the paper's), a fitted."""
    g, recs = grid_records(results, name)
    reg, agg = _regime(g), aggregate(recs)
    task = "ar" if dict(g.task_args[0] if g.task_args else ()).get("ar") else "mqar"
    d = g.d_models[0]
    lams, ns = sorted({_layers_of(c) for c in agg}), sorted({c[1] for c in agg})
    a_fit, rmse = _fit_cells(agg, reg, lam_of=_layers_of, keep=_state_fits)
    a_p = paper_a("trained-linear", task)
    _, rmse_p = _rmse_at(agg, reg, a_p, lam_of=_layers_of, keep=_state_fits)
    gap, deeper, pairs = equal_state_gap(agg)
    short, cell_s = law_shortfall(agg, reg, a_fit, lam_of=_layers_of, keep=_state_fits)
    fig, axes = plt.subplots(1, 2, figsize=(2 * COLUMN, 2.4), layout="constrained", gridspec_kw={"width_ratios": [1.5, 1]})
    im = _value_grid(axes[0], {(c[1], _layers_of(c)): v["best"] for c, v in agg.items()}, ns, lams)
    axes[0].set_xlabel("N")
    axes[0].set_ylabel(r"$\Lambda$ (layers)")
    axes[0].set_title(f"best of {_count(_seeds(recs), 'seed', 'seeds')}", fontsize=7)
    fig.colorbar(im, ax=axes[0], fraction=0.05, pad=0.02)
    _collapse_panel(axes[1], agg, reg, a_fit, lam_of=_layers_of, keep=_state_fits,
                    color_of=lambda c: f"C{lams.index(_layers_of(c))}")
    axes[1].set_title(f"collapse, N_eff = ΛN: fitted a = {a_fit:.3g} (paper {a_p:g})", fontsize=7)
    caption = (f"Koren et al.'s N x Lambda grid ({task.upper()}, V = {reg['vocab']}, N_f = {reg['facts']}, D = {d}): "
               f"the simplified linear Mamba with Lambda layers on the residual stream, per cell the best validation "
               f"accuracy of the best seed; right, the cells with Lambda N <= D at x = 1/sigma, sigma^2 = a N_f/"
               f"(Lambda N D) + 1/D, coloured by Lambda (C0 = 1 layer), a fitted = {a_fit:.3f} (rms error "
               f"{rmse:.3f}; at the paper's a = {a_p:g}: {rmse_p:.3f}). The paper's claim N_eff = Lambda N: equal "
               f"Lambda N, equal recall; here the mean |best(Lambda, N) - best(Lambda', N')| over the {pairs} "
               f"pairs of cells with Lambda != Lambda' and Lambda N = Lambda' N' <= D "
               f"is {gap:.3f} (the deeper cell minus the shallower: {deeper:+.3f} on average); the largest "
               f"shortfall below the law at the fitted a is {short:.3f} (Lambda = {_layers_of(cell_s)}, N = "
               f"{cell_s[1]}). {_runs_note(g, recs)}.")
    rows = [[lam, *[_cell_text(agg, d, n, lam) for n in ns]] for lam in lams]
    tex, md = table(["Λ \\ N", *map(str, ns)], rows, caption)
    return Rendered(caption + " Table: best (mean) of the seeds per cell.", figure=fig, latex=tex, markdown=md)


# ---------------------------------------------------------------------------------------------------------------
# Repeated keys (Lambda x N_k)
# ---------------------------------------------------------------------------------------------------------------

def _repeats_of(c) -> int:
    return dict(c[3]).get("key_repeats", 1)


def adjacent_repeat_guess(vocab: int, facts: int, seq_len: int, repeats: int, samples: int = 20_000,
                          seed: int = 0) -> float:
    """The accuracy of guessing a key's last value uniformly among its statements that are not followed at once by
    another statement of the same key (Monte Carlo over ``samples`` sequences of the task).

    A reference beside 1/N_k, not a bound: one linear layer with a width-2 convolution and no decay reads the facts
    as a sum over windows of two tokens, so the only trace of order it keeps near a value is the token after it;
    a value followed by its own key is not the last statement. This guess uses that cue and nothing else."""
    from verify.tasks.mqar import IGNORE, MQARConfig, generate

    t, lab = generate(MQARConfig(facts, vocab, seq_len, num_examples=samples, layout="zoology",
                                 key_repeats=repeats), seed)
    keys = t[:, 0:2 * facts * repeats:2]
    followed = np.concatenate([keys[:, 1:] == keys[:, :-1], np.zeros((samples, 1), bool)], axis=1)
    rows, pos = np.nonzero(lab != IGNORE)
    left = ((keys[rows] == t[rows, pos][:, None]) & ~followed[rows]).sum(axis=1)  # >= 1: the last is never followed
    return float(np.mean(1 / left))


def repeats(results: Path, name: str = "recall-repeats") -> Rendered:
    """The appendix's repeated-keys figure: accuracy against N_k (each key stated N_k times, the query asking for the
    last value), one line per Lambda at Lambda N fixed, the best of the seeds (solid) with their mean (dashed), and
    the single-layer guessing bound 1/N_k (grey): without decay one layer sums a key's N_k statements and cannot
    tell the last apart, so it can at best pick one of them (a reference line in the paper, not a theorem). Beside it
    (grey, dash-dot) ``adjacent_repeat_guess``: the same guess ruling out the statements followed at once by their
    own key, which a width-2 convolution can see; one layer above 1/N_k but not above it is no evidence of order."""
    g, recs = grid_records(results, name)
    agg = aggregate(recs)
    by = {(_layers_of(c), _repeats_of(c)): v for c, v in agg.items()}  # (Lambda, N_k) -> the cell's values
    lams, ks = sorted({lam for lam, _ in by}), sorted({k for _, k in by})
    fig, ax = plt.subplots(figsize=(COLUMN, 2.3), layout="constrained")
    kk = np.arange(1, max(ks) + 1)
    cue = {k: adjacent_repeat_guess(g.vocabs[0], g.kappas[0], g.seq_lens[0], k) for k in kk}
    ax.plot(kk, 1 / kk, color="0.6", ls=":", lw=1.2, label="1/N_k")
    ax.plot(kk, [cue[k] for k in kk], color="0.6", ls="-.", lw=0.8, label="adjacent-repeat guess")
    for i, lam in enumerate(lams):
        x = [k for k in ks if (lam, k) in by]
        ax.plot(x, [by[lam, k]["best"] for k in x], "o-", color=f"C{i}", ms=3, lw=1,
                label=f"Λ = {lam}, N = {g.lambda_times_n // lam}")
        ax.plot(x, [by[lam, k]["mean"] for k in x], "--", color=f"C{i}", lw=0.7, alpha=0.7)
    ax.set(xlabel="N_k (statements of each key)", ylabel="validation accuracy", ylim=(0, 1.02), xticks=ks)
    ax.legend(fontsize=5, ncol=2, loc="lower left", framealpha=0.8)
    ax.set_title(f"best of {_count(_seeds(recs), 'seed', 'seeds')} (solid), mean (dashed)", fontsize=7)
    above = {lam: sorted(k for (m, k), v in by.items() if m == lam and k > 1 and v["best"] > 1 / k) for lam in lams}
    one = sorted((k, v["best"]) for (m, k), v in by.items() if m == 1 and k > 1)
    over_cue = sorted(k for k, a in one if a > cue[k])
    one_text = (f"one layer, at N_k >= 2: best accuracy at most {max(a * k for k, a in one):.2f} times 1/N_k, "
                f"{_count(len(above.get(1, [])), 'cell', 'cells')} of {len(one)} above the bound, "
                f"{_count(len(over_cue), 'cell', 'cells')} above the adjacent-repeat guess "
                f"({', '.join(f'{cue[k]:.3f}' for k, _ in one)} at N_k = {', '.join(str(k) for k, _ in one)})"
                if one else "no one-layer cell with N_k >= 2 stored")
    deep = [f"Lambda = {lam}: above at N_k = {', '.join(map(str, v))}" if v else f"Lambda = {lam}: never above"
            for lam, v in above.items() if lam > 1]
    caption = (f"Koren et al.'s repeated keys (V = {g.vocabs[0]}, L = {g.seq_lens[0]}, N_f = {g.kappas[0]}, D = "
               f"{g.d_models[0]}, Lambda N = {g.lambda_times_n}): each key stated N_k times with different values in a "
               f"random order, the query asking for the last; the simplified linear Mamba with Lambda layers on the "
               f"residual stream, per cell the best validation accuracy of the best seed (solid; dashed: the mean of "
               f"the seeds); grey, the single-layer guessing bound 1/N_k (dotted) and the guess that also rules out "
               f"a statement followed at once by its own key (dash-dot), an order cue a width-2 convolution sees. "
               f"The paper's claim: one layer (no decay) "
               f"cannot beat 1/N_k, deeper models can. Here {one_text}; {'; '.join(deep) or 'no deeper cell stored'}."
               f" {_runs_note(g, recs)}.")
    rows = [[lam, *[f"{by[lam, k]['best']:.3f} ({by[lam, k]['mean']:.3f})" if (lam, k) in by else "" for k in ks]]
            for lam in lams]
    tex, md = table(["Λ \\ N_k", *map(str, ks)], rows, caption)
    return Rendered(caption + " Table: best (mean) of the seeds per cell.", figure=fig, latex=tex, markdown=md)


# ---------------------------------------------------------------------------------------------------------------
# Large vocabulary and long context (V x L)
# ---------------------------------------------------------------------------------------------------------------

def vocab_long(results: Path, name: str = "recall-vocab-long") -> Rendered:
    """The appendix's large-vocabulary, long-context figure: accuracy against V (log x), one line per L (N_f = L/4),
    with the law at the paper's linear a = 5/4 (D and N of the grid); right, Phi^-1(accuracy) against m_V with a
    least-squares line per L (``paper_figures.recall.probit_fit``), whose slope the law puts at -1 and intercept at
    1/sigma(L). A cell's value is the best validation accuracy of the best seed (the grid has one). The caption gives
    the law's a fitted to all cells (N_f = L/4 per cell), the slopes (with the line's standard error) and intercepts
    against the law's, how much the accuracy still rose over the last third of the steps (``_late_rises``), and the
    cells stored. Third panel: the probit slope per L at every validation step (``_slope_history``): whether the
    slope was still moving toward -1 when training ended."""
    from paper_figures.recall import PROBIT_RANGE, probit_fit, probit_points
    from verify.recall_law import law_num, sigma2_num

    g, recs = grid_records(results, name)
    cells = aggregate(recs, cell=vocab_length_of)
    d, n, a_paper, per = g.d_models[0], g.d_states[0], paper_a("trained-linear", "mqar"), g.seq_len_per_kappa
    fig, axes = plt.subplots(1, 3, figsize=(2 * COLUMN, 2.3), layout="constrained",
                             gridspec_kw={"width_ratios": [1.2, 1.2, 1]})
    vs = np.geomspace(min(g.vocabs), max(g.vocabs), 200)
    max_steps = g.runs()[0].protocol.max_steps
    history = _slope_history(recs)
    fits, rows = {}, []
    for i, t in enumerate(sorted({t for _, t in cells})):
        tv = sorted(v for v, tt in cells if tt == t)
        acc = [cells[v, t]["best"] for v in tv]
        axes[0].plot(tv, acc, "o-", ms=3, lw=1, color=f"C{i}", label=f"L = {t}")
        axes[0].plot(vs[vs > t], law_num(d, n, vs[vs > t], t // per, a_paper), "--", lw=0.7, color=f"C{i}")
        pts = probit_points(tv, acc)
        fits[t] = probit_fit(pts)
        if pts:
            axes[1].plot(*zip(*pts), "o", ms=3, color=f"C{i}")
        if fits[t]:
            mv = np.array([min(p[0] for p in pts), max(p[0] for p in pts)])
            axes[1].plot(mv, fits[t][1] + fits[t][0] * mv, "-", lw=0.8, color=f"C{i}",
                         label=f"L = {t}: slope {fits[t][0]:.2f}")
        if history.get(t):
            axes[2].plot(*zip(*history[t]), "-", lw=0.8, color=f"C{i}", label=f"L = {t}")
        inv_sigma = 1 / np.sqrt(sigma2_num(d, n, t // per, a_paper))
        rows.append([t, t // per, *[f"{cells[v, t]['best']:.3f} ({float(law_num(d, n, v, t // per, a_paper)):.3f})"
                                    if (v, t) in cells else "" for v in g.vocabs],
                     _slope_text(fits[t]), f"{fits[t][1]:.2f} ({inv_sigma:.2f})" if fits[t] else ""])
    axes[0].set_xscale("log")
    axes[0].set(xlabel="V", ylabel="validation accuracy", ylim=(0, 1.02))
    axes[0].set_title(f"trained (points) and the law at a = {a_paper:g} (dashed)", fontsize=7)
    axes[0].legend(fontsize=5.5, frameon=False)
    axes[1].set(xlabel="m_V", ylabel="Phi^-1(accuracy)")
    axes[1].set_title("probit against m_V (law: slope -1)", fontsize=7)
    if axes[1].get_legend_handles_labels()[0]:
        axes[1].legend(fontsize=5.5, frameon=False)
    axes[2].axhline(-1, color="0.5", ls="--", lw=0.7)
    axes[2].set(xlabel="step", ylabel="probit slope")
    axes[2].set_title("slope during training (law: -1)", fontsize=7)
    keys = sorted(cells)
    a_fit, rms = fit_a(d, n, [cells[c]["best"] for c in keys], [v for v, _ in keys], [t // per for _, t in keys])
    slopes = "; ".join(f"L = {t}: slope {f[0]:.2f}, intercept {f[1]:.2f} over {f[2]} V"
                       + (f" (slope's standard error {f[3]:.2f})" if f and f[3] is not None else "") if f else
                       f"L = {t}: fewer than 2 V inside the probit range" for t, f in fits.items())
    rises = _late_rises(recs, max_steps)
    caption = (f"Koren et al.'s large vocabulary and long context (D = {d}, N = {n}, N_f = L/{per}, "
               f"V = {min(g.vocabs)}..{max(g.vocabs)}, cells with L >= V skipped): the simplified linear Mamba, per "
               f"cell the best validation accuracy (of the best seed), against the law Phi(1/sigma - m_V) at the "
               f"paper's a = {a_paper:g} (dashed). Middle: Phi^-1(accuracy) against m_V over the cells with accuracy in "
               f"[{PROBIT_RANGE[0]}, {PROBIT_RANGE[1]}], a least-squares line per L; the law's claim is slope -1 and "
               f"intercept 1/sigma (the standard error is the line's, from the cells' scatter about it: one seed, "
               f"so it does not see the spread between seeds). Here {slopes}; the law's a fitted to all {len(keys)} "
               f"cells = {a_fit:.3f} (rms {rms:.3f}). Still rising at the end: over the last third of the steps the "
               f"validation accuracy gained {rises}. Right: the probit slope per L at every validation step "
               f"(each cell's best validation accuracy so far, the same fit), {_slope_moves(history, max_steps)}. "
               f"Between seeds: {_seed_slopes(results)}. {_runs_note(g, recs, vocab_length_of)}; the paper's "
               f"micro-batches of 5 accumulated 4 times are one step of batch 20, and its step count is read as "
               f"optimizer steps (the configs' train split, steps x 5 sequences, also admits a quarter as many "
               f"updates).")
    tex, md = table(["L", "N_f", *map(str, g.vocabs), "probit slope (± s.e.)", "intercept (law 1/sigma)"], rows,
                    caption)
    return Rendered(caption + " Table: trained (law at the paper's a) per cell.", figure=fig, latex=tex, markdown=md)


def _slope_text(fit) -> str:
    """A probit fit's slope for a table cell: "-1.42 ± 0.09" (with its standard error where it has one)."""
    if not fit:
        return ""
    return f"{fit[0]:.2f}" + (f" ± {fit[3]:.2f}" if fit[3] is not None else "")


def _reported_runs(recs: list[dict]) -> dict[tuple[int, int], dict]:
    """Per (V, L) cell, the run the cell reports: its best (``VALUE``)."""
    best: dict[tuple, dict] = {}
    for r in recs:
        c = vocab_length_of(r["spec"])
        if c not in best or r["result"][VALUE] > best[c]["result"][VALUE]:
            best[c] = r
    return best


def _seed_slopes(results: Path, name: str = "recall-vocab-long-seeds") -> str:
    """The probit slope per L and seed of grid ``name`` (recall-vocab-long's cells at more seeds; its seed 0 is
    recall-vocab-long's run, read from either store), each over the cells that every stored seed of that L holds, so
    that the seeds are compared on the same V (each fit over those inside the probit range): "L = 1000: -1.42 / -1.40
    (seeds 0 / 1, over 7 / 7 of the 7 V they all hold)"; where an L holds one seed, that it does."""
    from paper_figures.recall import probit_fit, probit_points
    from verify.train.spec import run_key
    from verify.train.sweep import grid

    g = grid(name)
    keys = {run_key(spec) for spec in g.runs()}
    recs = {}
    for store in (*g.reuses, name):
        try:
            recs.update({r["key"]: r for r in load_store(results, f"train/{store}.jsonl", sweep_cmd(store))
                         if r.get("key") in keys})
        except MissingResults:
            pass
    acc: dict[int, dict[int, dict[int, float]]] = {}  # L -> seed -> V -> best validation accuracy
    for r in recs.values():
        v, t = vocab_length_of(r["spec"])
        acc.setdefault(t, {}).setdefault(r["spec"]["seed"], {})[v] = r["result"][VALUE]
    parts = []
    for t, by_seed in sorted(acc.items()):
        seeds = sorted(by_seed)
        vs = sorted(set.intersection(*(set(by_seed[seed]) for seed in seeds)))
        fits = [probit_fit(probit_points(vs, [by_seed[seed][v] for v in vs])) for seed in seeds]
        if len(seeds) < 2 or not all(fits):
            parts.append(f"L = {t}: seed {seeds[0]} only" if len(seeds) < 2 else
                         f"L = {t}: fewer than two V that seeds {' / '.join(map(str, seeds))} all hold inside the "
                         f"probit range")
            continue
        parts.append(f"L = {t}: {' / '.join(f'{f[0]:.2f}' for f in fits)} (seeds {' / '.join(map(str, seeds))}, "
                     f"over {' / '.join(str(f[2]) for f in fits)} of the {len(vs)} V they all hold)")
    return "; ".join(parts) + f" (grid {name})" if parts else f"grid {name} not trained"


def _slope_history(recs: list[dict]) -> dict[int, list[tuple[int, float]]]:
    """Per L, (step, probit slope) at every validation step that all of L's reported runs share: the
    ``paper_figures.recall.probit_fit`` slope of each cell's best validation accuracy up to that step (so the last
    point is the figure's slope when the best state came last), over the cells inside the probit range then; steps
    with fewer than two such cells are left out. Read beside the law's -1, it says whether training was still moving
    the slope toward the law when the steps ran out, which the accuracies' rises alone do not (the probit stretches a
    small rise near 1 more than a large one near 0.8)."""
    from paper_figures.recall import probit_fit, probit_points

    by_length: dict[int, dict[int, dict[int, float]]] = {}
    for (v, t), r in _reported_runs(recs).items():
        so_far, best = {}, -1.0
        for step, _, acc in r["result"].get("history", []):
            best = max(best, acc)
            so_far[step] = best
        by_length.setdefault(t, {})[v] = so_far
    out: dict[int, list[tuple[int, float]]] = {}
    for t, runs in sorted(by_length.items()):
        steps = sorted(set.intersection(*(set(h) for h in runs.values())))
        for step in steps:
            fit = probit_fit(probit_points(sorted(runs), [runs[v][step] for v in sorted(runs)]))
            if fit:
                out.setdefault(t, []).append((step, fit[0]))
    return out


def _slope_moves(history: dict[int, list[tuple[int, float]]], max_steps: int) -> str:
    """The slope per L at the last validation at or before half of ``max_steps`` and at the last step:
    "L = 1000: -1.35 (step 6000) -> -1.42 (step 12000); ..."."""
    parts = []
    for t, h in history.items():
        mid = [(step, x) for step, x in h if step <= max_steps // 2]
        if mid:
            parts.append(f"L = {t}: {mid[-1][1]:.2f} (step {mid[-1][0]}) -> {h[-1][1]:.2f} (step {h[-1][0]})")
    return "; ".join(parts) or "no history stored"


def _late_rises(recs: list[dict], max_steps: int) -> str:
    """Per L, how much the validation accuracy rose over the last third of the steps (the history's last value minus
    its last value at or before 2/3 of ``max_steps``) in the run a cell reports (its best, ``VALUE``), at the smallest
    and the largest V stored: "L = 1000: +0.004 (V 1002) to +0.018 (V 20970); ...". A rise that grows with V says the
    larger vocabularies were further from converged at the budget."""
    rise: dict[int, dict[int, float]] = {}
    for (v, t), r in _reported_runs(recs).items():
        h = [(step, acc) for step, _, acc in r["result"].get("history", [])]
        before = [acc for step, acc in h if step <= 2 * max_steps // 3]
        if h and before:
            rise.setdefault(t, {})[v] = h[-1][1] - before[-1]
    parts = []
    for t, by_v in sorted(rise.items()):
        lo, hi = min(by_v), max(by_v)
        parts.append(f"L = {t}: {by_v[lo]:+.3f} (V {lo})" + (f" to {by_v[hi]:+.3f} (V {hi})" if hi != lo else ""))
    return "; ".join(parts) or "no history stored"


def _cell_text(agg, d, n, lam=None, heads=None) -> str:
    for c, v in agg.items():
        if c[0] == d and c[1] == n and (lam is None or _layers_of(c) == lam) and \
                (heads is None or model_arg(c, "heads", 1) == heads):
            return f"{v['best']:.3f} ({v['mean']:.3f})"
    return ""


# ---------------------------------------------------------------------------------------------------------------
# N x M heads
# ---------------------------------------------------------------------------------------------------------------

HEAD_PATTERNS = ("MQA", "MKA", "MVA", "MHA")
FIT_RMS = 0.05  # a form of the law "fits" a head grid where its rms error at the fitted a is at most this (the
                # one-head collapses of the D-N grids sit at 0.04-0.05)


def _heads_of(c) -> int:
    return model_arg(c, "heads", 1)


def head_fits(agg: dict, reg: dict) -> dict[str, tuple[float, float]]:
    """The law fitted to a head grid's cells (best of seeds) two ways: {"N": (a, rmse)} with N_eff = N (the heads add
    nothing: MVA's shared B and C make it one head) and {"MN": (a, rmse)} with N_eff = M N (M independent N-dim
    hashes, as Lambda layers give in the law's multi-layer form). The one with the smaller rms error at its fitted a
    is the form the grid follows where that error is at most ``FIT_RMS``."""
    return {"N": _fit_cells(agg, reg), "MN": _fit_cells(agg, reg, lam_of=_heads_of)}  # every cell: N <= 10 < D = 60


def _a_per_heads(agg: dict, reg: dict) -> dict[int, float]:
    """{M: the law's a fitted to the cells of M heads alone at N_eff = N (best of seeds)}."""
    ms = sorted({_heads_of(c) for c in agg})
    return {m: _fit_cells({c: v for c, v in agg.items() if _heads_of(c) == m}, reg)[0] for m in ms}


def _lambdas(a_per: dict[int, float]) -> dict[int, float]:
    return {m: a_per[1] / a for m, a in a_per.items()} if 1 in a_per else {}


def head_multipliers(agg: dict, reg: dict) -> dict[int, float]:
    """{M: lambda_M}: how many independent N-dim hashes M heads act as, i.e. the lambda whose law at N_eff = lambda N,
    with the a of M = 1, fits that M's cells (best of seeds) in least squares. The law depends on a and lambda only
    through a / lambda (sigma^2 = a N_f / (lambda N D) + 1 / D), so lambda_M = a_1 / a_M with a_M fitted to the cells
    of M heads alone. lambda_M = 1 for every M is one head (MVA by construction), lambda_M = M is M independent
    hashes; a lambda below 1 is a grid that loses recall with heads. A measurement: the paper gives no multi-head
    law."""
    return _lambdas(_a_per_heads(agg, reg))


def _head_summary(p: str, agg: dict, by: dict[tuple, float], reg: dict) -> tuple[str, str, str]:
    """(trend, fit, panel title) of one head grid: the mean over N of best(M max) - best(M min), the law fitted with
    N_eff = N and N_eff = M N (``head_fits``) and the form that fits, beside the a of M = 1 alone."""
    ns = sorted({n for n, _ in by})
    m_lo, m_hi = min(m for _, m in by), max(m for _, m in by)
    diff = [by[(n, m_hi)] - by[(n, m_lo)] for n in ns if (n, m_lo) in by and (n, m_hi) in by]
    trend = f"{p} {np.mean(diff):+.3f} (M = {m_lo} -> {m_hi}, {len(diff)} N)" if diff else f"{p} n/a"
    (a_n, r_n), (a_mn, r_mn) = head_fits(agg, reg).values()
    a_per = _a_per_heads(agg, reg)
    a_one = f"{a_per[1]:.3f}" if 1 in a_per else "n/a"
    form = ("N_eff = M N" if r_mn < r_n else "N_eff = N") if min(r_n, r_mn) <= FIT_RMS else "neither"
    lams = _lambdas(a_per)
    lam = ", ".join(f"{m}: {v:.2f}" for m, v in lams.items())
    fit = (f"{p}: N_eff = N a = {a_n:.3f} (rms {r_n:.3f}), N_eff = M N a = {a_mn:.3f} (rms {r_mn:.3f}), M = 1 alone "
           f"a = {a_one}; fits: {form}; lambda_M (M: lambda) {lam}")
    lam_hi = lams.get(m_hi)
    title = (f"{p}: {form} (rms {min(r_n, r_mn):.3f})" if form != "neither" else
             f"{p}: neither N_eff fits\n(rms {r_n:.3f} at N, {r_mn:.3f} at M N)")
    title += f"\nlambda_{m_hi} = {lam_hi:.2f}" if lam_hi is not None else ""
    return trend, fit, title


def heads(results: Path) -> Rendered:
    """The four multi-head grids (N x M per pattern, the paper's figure: values printed): best (mean) of the seeds
    per cell; per pattern the mean over N of best(M = max) - best(M = 1) and the law fitted with N_eff = N and with
    N_eff = M N (``head_fits``)."""
    loaded = {p: optional_records(results, f"recall-heads-{p.lower()}") for p in HEAD_PATTERNS}
    if all(r is None for _, r in loaded.values()):
        raise MissingResults(str(Path(results) / "train/recall-heads-mqa.jsonl"),
                             " and ".join(sweep_cmd(f"recall-heads-{p.lower()}") for p in HEAD_PATTERNS))
    g0 = next(iter(loaded.values()))[0]
    reg, d = _regime(g0), g0.d_models[0]
    ms_all = sorted({m for g, _ in loaded.values() for m in (dict(x).get("heads", 1) for x in g.models)})
    ns_all = sorted(g0.d_states)
    fig, axes = plt.subplots(1, len(HEAD_PATTERNS), figsize=(2 * COLUMN, 1.9), layout="constrained", sharey=True)
    rows, trends, fits, runs = [], [], [], []
    for ax, (p, (g, recs)) in zip(axes, loaded.items()):
        ax.set_xlabel("N (per head)")
        if recs is None:
            _missing(ax, g.name)
            ax.set_title(p, fontsize=7)
            continue
        agg = aggregate(recs)
        ns = sorted({c[1] for c in agg})
        rows += [[p, n, *[_cell_text(agg, d, n, heads=m) for m in ms_all]] for n in ns]
        by = {(c[1], _heads_of(c)): v["best"] for c, v in agg.items()}
        im = _value_grid(ax, by, ns_all, ms_all)
        trend, fit, title = _head_summary(p, agg, by, reg)
        trends.append(trend)
        fits.append(fit)
        ax.set_title(title, fontsize=6.5)
        runs.append(_runs_note(g, recs))
    axes[0].set_ylabel("M (heads)")
    if runs:
        fig.colorbar(im, ax=axes[-1], fraction=0.08, pad=0.02, label="recall")
    caption = (f"Koren et al.'s multi-head grids (V = {reg['vocab']}, N_f = {reg['facts']}, L = {reg['seq_len']}, "
               f"D = {d}): one layer of the simplified linear Mamba with M heads of pattern MQA / MKA / "
               f"MVA / MHA (N per head, total state N x 2D whatever M), per cell the best validation accuracy of the "
               f"best seed (table: best (mean) of the seeds). The paper gives no closed form for heads; the designed "
               f"circuit's prediction (recall-multihead: MVA is one head exactly, MHA gains a little, MQA and MKA "
               f"lose as M grows) is what to compare with. Mean over N of best(M max) - best(M = 1): "
               f"{'; '.join(trends)}. The law fitted per pattern (least squares of the best-of-seeds accuracies) with "
               f"the heads adding nothing (N_eff = N) and with each head a hash of its own (N_eff = M N, as layers "
               f"in the law's multi-layer form; a form fits where its rms error is at most {FIT_RMS}), and, at the a "
               f"of M = 1, the lambda_M per M with N_eff = lambda_M N (how many independent hashes M heads act as: "
               f"1 is one head, M is M hashes): {'; '.join(fits)}. " + "; ".join(runs) + "."
               + _missing_note([f"recall-heads-{p.lower()}" for p, (_, r) in loaded.items() if r is None]))
    tex, md = table(["pattern", "N", *[f"M = {m}" for m in ms_all]], rows, caption)
    return Rendered(caption, figure=fig, latex=tex, markdown=md)


# ---------------------------------------------------------------------------------------------------------------
# Circuit-minimality ablation
# ---------------------------------------------------------------------------------------------------------------

ABLATION = (  # row, change, grid
    ("Base", "Mamba-1: SiLU, gate, conv bias, learned Delta and decaying A, conv width 4 (residual, no norms)",
     "recall-ablation-base"),
    ("A", "no discretisation / decay (Delta = 1, A = 1): the linear Mamba with SiLU, conv bias and gate",
     "recall-ablation-a"),
    ("B", "no gating", "recall-ablation-b"),
    ("C", "no SiLU: the simplified linear Mamba, conv width 4", "recall-ablation-c"),
    ("D", "conv width 4 -> 2: the minimal circuit", "recall-ablation-d"),
    ("E", "conv width 2 -> 1: no shift", "recall-ablation-e"),
)


def ablation(results: Path) -> Rendered:
    """The circuit-minimality ablation (§4.4): per row the mean +- std of the seeds (the paper's table), the best
    and the seeds."""
    loaded = {row: optional_records(results, name) for row, _, name in ABLATION}
    if all(v[1] is None for v in loaded.values()):
        raise MissingResults(str(Path(results) / "train/recall-ablation-d.jsonl"),
                             " and ".join(sweep_cmd(n) for _, _, n in ABLATION))
    rows, means, runs, missing = [], {}, [], []
    for row, change, name in ABLATION:
        g, recs = loaded[row]
        if recs is None:
            rows.append([row, change, f"not trained yet ({sweep_cmd(name)})", "", "", name])
            missing.append(name)
            continue
        (v,) = aggregate(recs).values()
        means[row] = v["mean"]
        rows.append([row, change, f"{v['mean']:.3f} ± {v['std']:.3f}", f"{v['best']:.3f}", v["seeds"], name])
        runs.append(_runs_note(g, recs))
    verdict = (f"row D (the minimal circuit) {means['D']:.3f} against row E (no shift) {means['E']:.3f}"
               if {"D", "E"} <= set(means) else "rows D and E not both stored")
    if {"Base", "C"} <= set(means):
        verdict += (f"; Base (Mamba-1) {means['Base']:.3f} against row C (no SiLU, gate, Delta or decay) "
                    f"{means['C']:.3f}: recall {'not lower' if means['C'] >= means['Base'] else 'lower'} without them")
    if {"Base", "A"} <= set(means):
        verdict += (f"; Base without Delta and decay (row A) {means['A']:.3f}: recall "
                    f"{'higher' if means['A'] > means['Base'] else 'not higher'} than Base's at the same budget, "
                    f"but A differs from Base in more than Delta and decay (below), so this does not isolate them")
    caption = ("Koren et al.'s circuit-minimality ablation (V = 128, L = 64, N_f = 16, D = 64, N = 16; residual, no "
               "norms, weight decay 0.1; each row removes one more part): mean ± std of the seeds' best validation "
               "accuracy (the paper's table), with the best seed beside it. The paper's claim: the minimal circuit "
               f"(row D) still recalls, and without the width-2 shift (row E) recall fails; here {verdict}. "
               "Base approximates the paper's (Mamba-1's low-rank Delta projection instead of a full-rank one); "
               "rows A and B are the simplified linear Mamba with Mamba-1's conv bias and SiLU (and, in A, its gate "
               "y * silu(z)), its D skip frozen at 0 and its embedding drawn N(0, 1) as in rows C-E, so that A differs "
               "from Base also in those two (Base: Mamba-1's D = 1, trained, and MambaLMHeadModel's N(0, 0.02^2)); "
               "weight decay 0.1 acts on every trained parameter, Base's A_log, D and Delta bias included (mamba_ssm "
               "exempts A_log and D; the paper does not say whether its trainer did). "
               + "; ".join(runs) + "." + _missing_note(missing))
    tex, md = table(["row", "change", "mean ± std", "best", "seeds", "grid"], rows, caption)
    return Rendered(caption, latex=tex, markdown=md)


# ---------------------------------------------------------------------------------------------------------------
# Seed reliability (§6.8)
# ---------------------------------------------------------------------------------------------------------------

BINS = ((0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))


def convergence_by_bin(seeds: dict[tuple, dict[int, float]]) -> list[tuple[tuple, float, int]]:
    """Per bin (lo, hi] of the best-of-seeds accuracy: (bin, the mean per-seed convergence rate (seeds >= CONVERGED)
    of its cells, cells)."""
    out = []
    for lo, hi in BINS:
        rates = [np.mean([v >= CONVERGED for v in s.values()]) for s in seeds.values() if lo < max(s.values()) <= hi]
        out.append(((lo, hi), float(np.mean(rates)) if rates else float("nan"), len(rates)))
    return out


def seed_reliability(results: Path, regime: str = "regime_0") -> Rendered:
    """The paper's seed-reliability appendix (full model, 5 seeds; the paper shows regime_0, the same figure is drawn
    for every regime): per-seed grids, the best of seeds, the per-cell convergence rate (a seed converged where its
    accuracy >= 0.1) and the convergence rate binned by the best-of-seeds accuracy."""
    g, recs = grid_records(results, f"recall-full-{REGIMES[regime]}")
    seeds = {c[:2]: v for c, v in per_seed(recs).items() if c[1] <= c[0]}
    ds, ns, seed_ids = sorted(g.d_models), sorted(g.d_states), sorted(g.seeds)
    fig, axes = plt.subplots(2, max(4, len(seed_ids)), figsize=(2 * COLUMN, 3.4), layout="constrained")
    for ax, s in zip(axes[0], seed_ids):
        _heat(ax, {c: v[s] for c, v in seeds.items() if s in v}, ds, ns, f"seed {s}")
    for ax in axes[0][len(seed_ids):]:
        ax.axis("off")
    im = _heat(axes[1][0], {c: max(v.values()) for c, v in seeds.items()}, ds, ns, "best of seeds")
    rate = {c: float(np.mean([x >= CONVERGED for x in v.values()])) for c, v in seeds.items()}
    z = _heat(axes[1][1], rate, ds, ns, f"seeds >= {CONVERGED}")
    z.set_cmap("viridis")
    for row in axes:
        row[0].set_ylabel("N")
    fig.colorbar(im, ax=list(axes[0]), shrink=0.9, pad=0.01, label="recall")
    fig.colorbar(z, cax=axes[1][2].inset_axes([0, 0, 0.08, 1]), label="share converged")
    axes[1][2].axis("off")  # the third column holds the share's colour bar, the fourth the bar chart
    fig.suptitle(f"{regime}: the trained full model, {len(seed_ids)} seeds", fontsize=8)
    bins = convergence_by_bin(seeds)
    axes[1][3].bar(range(len(bins)), [b[1] for b in bins], color="C2")
    axes[1][3].set_xticks(range(len(bins)), [f"({lo:g}, {hi:g}]" for (lo, hi), _, _ in bins], fontsize=5,
                          rotation=35)
    axes[1][3].set_ylim(0, 1.05)
    axes[1][3].set_title("converged, by best of seeds", fontsize=7)
    for ax in axes[1][4:]:
        ax.axis("off")
    good = [c for c, v in seeds.items() if max(v.values()) >= CONVERGED]
    holes = sum(1 for c in good if min(seeds[c].values()) < CONVERGED)
    gaps = [max(v.values()) - np.mean(list(v.values())) for v in seeds.values()]
    caption = (f"Seed reliability ({g.name}: {g.note}): per-seed grids of the best validation accuracy, the best of "
               f"the seeds, the per-cell share of seeds that converged (accuracy >= {CONVERGED}) and that share "
               f"binned by the best-of-seeds accuracy ("
               + ", ".join(f"({lo:g}, {hi:g}]: {r:.2f} over {_count(n, 'cell', 'cells')}"
                           for (lo, hi), r, n in bins) + "). "
               f"Of {len(good)} cells where some seed converged, {_count(holes, 'has', 'have')} a seed "
               f"that did not (the paper's 'holes'); best minus mean of seeds: mean {np.mean(gaps):.3f}, max "
               f"{np.max(gaps):.3f}. The paper's claim (shown at regime_0): the full model sometimes fails to train, so the best-of-seeds grids show "
               f"attainable capacity. {_runs_note(g, recs)}; {COARSE_NOTE}.")
    return Rendered(caption, figure=fig)


# ---------------------------------------------------------------------------------------------------------------
# The mechanism in trained models (§4.2): experiments.mechanism's numbers, designed circuit beside trained model
# ---------------------------------------------------------------------------------------------------------------

MECHANISM_DIR = "recall_scaling/mechanism"  # <circuit>-D<D>-N<N>.json, written by python -m experiments.mechanism
MECHANISM_CELLS = ((64, 32, 13), (48, 32, 26), (64, 24, 14), (48, 24, 0))  # (D, N, the sequences' seed): the paper's
# three mech-interp cells with their sampling seeds, and (48, 24) with them
PAPER_A = {"designed": 3.0, "trained": 1.25}  # the law's a for MQAR: designed circuit 3, trained linear model 5/4


def mechanism_cmd(circuit: str, d: int, n: int, seed: int) -> str:
    """The commands that write ``<circuit>-D<d>-N<n>.json``: the trained run's kept weights (grid recall-mechinterp,
    ``experiments/grids/recall-mechinterp-cells.toml``), or the designed circuit exported at the same sizes."""
    out = f"results/{MECHANISM_DIR}/{circuit}-D{d}-N{n}"
    measure = f"python -m experiments.mechanism {{}} --facts 16 --seq-len 64 --samples 64 --seed {seed} --out {out}.json"
    if circuit == "designed":
        return (f"verify-constructions export hash-recall --vocab 256 --facts 16 --d-model {d} --d-state {n} --out "
                f"{out} && " + measure.format(out))
    return ("verify-constructions sweep --grid experiments/grids/recall-mechinterp-cells.toml --store "
            "results/train/recall-mechinterp.jsonl --device cpu --no-ray && "
            + measure.format("results/train/recall-mechinterp.jsonl.weights/<run key>.safetensors"))


def welch_dim(vectors: int, dim: int) -> float:
    """The largest effective dimension 1 / mean squared off-diagonal that ``vectors`` unit vectors in R^dim can have
    (Welch's bound: the mean of <x_i, x_j>^2 over i != j is at least (n - m) / (m (n - 1)); equality for a tight
    frame with equal inner products); n where n <= m (orthonormal vectors)."""
    return float("inf") if vectors <= dim else dim * (vectors - 1) / (vectors - dim)


def _block(b: dict, vectors: int, dim: int) -> str:
    return (f"{b['relative_frobenius_distance']:.2f} / {b['effective_dim']:.1f} ({welch_dim(vectors, dim):.1f}) / "
            f"{b['diagonal_is_column_max']:.3f}")


def _mechanism_row(circuit: str, d: int, n: int, rep: dict, vocab: int = 256) -> list:
    k, v, att = rep["key_block"], rep["value_block"], rep["attention"]
    return [circuit, f"({d}, {n})", f"{rep['recall']:.3f}", _block(k, vocab // 2 - 1, n), _block(v, vocab // 2, d),
            f"{rep['decoded_state']['facts_decoded']:.3f}", f"{att['argmax_at_ideal']:.3f}",
            f"{rep['a_logits']['sigma2']:.4f} ({1 / d:.4f})", f"{rep['a_logits']['a']:.2f}",
            "n/a" if rep["a_recall"] is None else f"{rep['a_recall']:.2f}"]


def _span(values) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.3g}" if f"{lo:.3g}" == f"{hi:.3g}" else f"{lo:.3g} to {hi:.3g}"


def mechanism(results: Path) -> Rendered:
    """Koren et al.'s §4.2 turned into numbers: for each mech-interp cell (V = 256, L = 64, N_f = 16), the designed
    circuit (JL embedding + hash, ``constructions.hash_recall``) and the trained simplified linear Mamba (the cell's
    best-validation state) measured by ``experiments.mechanism`` on the same sequences: G_kq's key block and G_vv's
    value block against the identity, the decoded state H'' against the fact table H, the alpha map's argmax at the
    ideal write position, and the law's effective a from the logits' noise and from the recall."""
    root = Path(results) / MECHANISM_DIR
    rows, found, missing = [], {"designed": [], "trained": []}, []
    for d, n, seed in MECHANISM_CELLS:
        for circuit in ("designed", "trained"):
            p = root / f"{circuit}-D{d}-N{n}.json"
            if not p.exists():
                missing.append(f"{circuit} ({d}, {n}): {mechanism_cmd(circuit, d, n, seed)}")
                continue
            rep = json.loads(p.read_text())
            found[circuit].append(rep)
            rows.append(_mechanism_row(circuit, d, n, rep))
    if not found["trained"]:
        raise MissingResults(str(root / "trained-D64-N32.json"), mechanism_cmd("trained", 64, 32, 13))
    said = []
    for circuit, reps in found.items():
        if reps:
            said.append(f"{circuit}: key-hash effective dimension {_span([r['key_block']['effective_dim'] for r in reps])}"
                        f", key-block diagonal the column maximum in "
                        f"{_span([r['key_block']['diagonal_is_column_max'] for r in reps])} of the keys, facts decoded "
                        f"{_span([r['decoded_state']['facts_decoded'] for r in reps])}, a from the logits "
                        f"{_span([r['a_logits']['a'] for r in reps])} (the paper's {PAPER_A[circuit]:g})")
    caption = ("The hashing mechanism measured (Koren et al. §4.2; V = 256, L = 64, N_f = 16, 64 sequences of the "
               "zoology layout per cell, the paper's sampling seeds 13, 26, 14 for its three cells): the designed "
               "circuit and the trained simplified linear Mamba (grid recall-mechinterp, one seed, its "
               "best-validation state) at the same (D, N). Blocks: relative Frobenius distance to I (after dividing "
               "by the mean diagonal) / effective dimension (1 / mean squared off-diagonal; about N for the designed "
               "circuit's random key hash and D for its value code; in brackets Welch's bound, the most that 127 keys "
               "in N or 128 values in D dimensions allow as unit vectors) / fraction of columns whose diagonal is the "
               "maximum. The "
               "paper's claims are visual (G_kq's key block and G_vv's value block near the identity, H'' near H) "
               "and that the trained model is better than the designed one (a = 5/4 against 3). sigma^2: the logits' "
               "noise (variance over the tokens not in the context) over the squared signal, beside the law's floor "
               "1/D; a (logits) = (sigma^2 - 1/D) N D / N_f, negative where the measured noise is below that floor "
               "(a term the law takes from random embeddings, which a trained embedding can beat); a (recall): the "
               "law inverted at the measured recall (n/a at recall 1): "
               + "; ".join(said) + "." + (" Not measured yet: " + "; ".join(missing) + "." if missing else ""))
    tex, md = table(["circuit", "(D, N)", "recall", "G_kq keys: dist / dim (Welch) / diag max",
                     "G_vv values: dist / dim (Welch) / diag max", "facts decoded (H'')", "alpha argmax at ideal",
                     "sigma^2 (1/D)", "a (logits)", "a (recall)"], rows, caption)
    return Rendered(caption, latex=tex, markdown=md)


MECHANISM_GRID = f"{MECHANISM_DIR}/grid.jsonl"  # python -m experiments.mechanism_grid: one line per measured run


def _grid_lines(results: Path) -> list[dict]:
    p = Path(results) / MECHANISM_GRID
    cmd = "python -m experiments.mechanism_grid"
    if not p.exists():
        raise MissingResults(str(p), cmd)
    lines = [json.loads(x) for x in p.read_text().splitlines() if x.strip()]
    if not lines:
        raise MissingResults(str(p) + " (empty)", cmd)
    return lines


def welch_fraction(line: dict) -> float:
    """The key hash's effective dimension over Welch's bound for the V/2 - 1 keys in N dimensions (1: a tight frame
    with equal inner products, the most spread a hash of N dimensions can give the keys)."""
    V = line["report"]["model"]["vocab"]
    return line["report"]["key_block"]["effective_dim"] / welch_dim(V // 2 - 1, line["d_state"])


def mechanism_grid(results: Path) -> Rendered:
    """The mechanism across the paper's mech-interp grid (V = 256, L = 64, N_f = 16, the simplified linear Mamba, one
    seed; ``experiments.mechanism_grid``): per cell the trained recall, the key hash's effective dimension against
    Welch's bound (the most that V/2 - 1 keys in N dimensions allow) and against N (a random hash's), and the law's a
    inverted at each cell's recall, with a fitted to the grid's recall beside the paper's 5/4."""
    from verify.recall_law import law_num
    from verify.train.sweep import grid

    lines = [x for x in _grid_lines(results) if x["d_state"] <= x["d_model"]]
    g = grid("recall-mechinterp")
    V, nf = g.vocabs[0], g.kappas[0]
    ds, ns = sorted(g.d_models), sorted(g.d_states)
    cell = {(x["d_model"], x["d_state"]): x for x in lines}
    frac = {c: welch_fraction(x) for c, x in cell.items()}
    fig, axes = plt.subplots(1, 4, figsize=(2 * COLUMN, 1.9), layout="constrained")
    im = _heat(axes[0], {c: x["best_val_acc"] for c, x in cell.items()}, ds, ns, "(a) trained recall")
    axes[0].set_ylabel("N")
    _heat(axes[1], frac, ds, ns, "(b) key hash: eff. dim / Welch")
    fig.colorbar(im, ax=axes[:2], shrink=0.8)
    norm = plt.Normalize(min(ds), max(ds))
    n_line = np.arange(min(ns), max(ns) + 1)
    axes[2].plot(n_line, [welch_dim(V // 2 - 1, n) for n in n_line], "k-", lw=0.8, label="Welch bound")
    axes[2].plot(n_line, n_line, "k:", lw=0.8, label="N (random hash)")
    learned = {c: x for c, x in cell.items() if x["best_val_acc"] >= CONVERGED}
    axes[2].scatter([c[1] for c in learned], [x["report"]["key_block"]["effective_dim"] for x in learned.values()],
                    s=4, c=[c[0] for c in learned], cmap="viridis", norm=norm)
    axes[2].set(xlabel="N", ylabel="key-hash effective dim.")
    axes[2].set_title("(c) key hash vs N (colour: D)", fontsize=7)
    axes[2].legend(fontsize=5, frameon=False)
    pts = [(c, x["report"]["a_recall"]) for c, x in learned.items() if x["report"]["a_recall"] is not None]
    a_fit, rmse = fit_a([c[0] for c in learned], [c[1] for c in learned], [x["best_val_acc"] for x in learned.values()],
                        V, nf)
    sc = axes[3].scatter([c[1] for c, _ in pts], [a for _, a in pts], s=4, c=[c[0] for c, _ in pts], cmap="viridis",
                         norm=norm)
    axes[3].axhline(PAPER_A["trained"], color="C3", lw=0.8, label=f"paper {PAPER_A['trained']:g}")
    axes[3].axhline(a_fit, color="k", lw=0.8, ls="--", label=f"fit to the grid {a_fit:.2f}")
    axes[3].set(xlabel="N", ylabel="a at the cell's recall")
    axes[3].set_title("(d) the law's a per cell", fontsize=7)
    axes[3].legend(fontsize=5, frameon=False)
    fig.colorbar(sc, ax=axes[2:], shrink=0.8, label="D")
    by_n = {n: _numbers(learned, frac, [c for c in cell if c[1] == n]) for n in sorted({c[1] for c in cell})}
    total = _numbers(learned, frac, list(cell))
    f, diag, decoded = np.array(total["frac"]), total["diag"], total["decoded"]
    wide = [frac[c] for c in learned if c[0] >= 2 * c[1]]
    narrow = [frac[c] for c in learned if c[0] < 2 * c[1]]
    grid_cells = sum(1 for s in g.runs() if s.d_state <= s.d_model)
    failed = sorted(set(cell) - set(learned))
    caption = (
        f"The hashing mechanism across the mech-interp grid (Koren et al. §4.2; grid recall-mechinterp: V = {V}, "
        f"L = {g.seq_lens[0]}, N_f = {nf}, the simplified linear Mamba trained by the paper's recipe, one seed, the "
        f"best-validation state; {len(cell)} of the grid's {grid_cells} cells with N <= D measured by "
        f"python -m experiments.mechanism_grid on 64 sequences each). (a) the trained recall (best validation "
        f"accuracy); (b) the key hash's effective dimension (1 / mean squared off-diagonal of G_kq's key block) over "
        f"Welch's bound, the most that {V // 2 - 1} keys in N dimensions allow (a tight frame with equal inner "
        f"products); (c) the same against N, with the bound and N (a random hash's effective dimension, the "
        f"designed circuit's); (c) and (d) over the cells that learned; (d) the law's a inverted at each cell's "
        f"measured recall (none at recall 1), the paper's 5/4 and a fitted to the grid's recall (least squares, rms "
        f"{rmse:.3f}). "
        f"{len(failed)} cells did not learn (recall below {CONVERGED}, the paper's convergence rule; (D, N): "
        f"recall, the law's at a = 5/4: "
        + (", ".join(f"({d}, {n}): {cell[d, n]['best_val_acc']:.2f}, "
                     f"{float(law_num(d, n, V, nf, PAPER_A['trained'])):.2f}" for d, n in failed) or "none")
        + "); the numbers below are over the other "
        f"{len(learned)}. Measured: the key hash reaches {np.median(f):.3f} of Welch's bound at the median cell "
        f"({_span(f)}), "
        + (f"{_span(wide)} where D >= 2N ({len(wide)} cells)" if wide else "no cell with D >= 2N")
        + (f" and {_span(narrow)} where D < 2N ({len(narrow)} cells)" if narrow else "")
        + f": the trained model spreads its keys as far apart as N dimensions allow, beyond a random hash's N, where "
        f"D leaves room; the key block's diagonal is the column maximum for at least 98% of the keys in {diag} of "
        f"{len(learned)} cells and H'' decodes every fact in {decoded}; a fitted to the grid = {a_fit:.3f} (the "
        f"paper's 5/4 for the trained linear model), per cell {_span([a for _, a in pts])} (median "
        f"{np.median([a for _, a in pts]):.2f}; by N in the table: {_a_trend(by_n)}): the law's single a is a fit "
        f"across cells, not a per-model constant.")
    tex, md = table(*_mechanism_grid_rows(by_n, total), caption)
    return Rendered(caption, figure=fig, latex=tex, markdown=md)


def _numbers(learned: dict, frac: dict, cells: list) -> dict:
    """Over ``cells``: how many, the ones that learned, and over those the key hash's fraction of Welch's bound, the
    count whose key diagonal is the column maximum for >= 98% of the keys, the count whose H'' decodes every fact, and
    the a at each cell's recall (where the law inverts)."""
    ok = [learned[c] for c in cells if c in learned]
    return {"cells": len(cells), "learned": len(ok), "frac": [frac[c] for c in cells if c in learned],
            "diag": sum(x["report"]["key_block"]["diagonal_is_column_max"] >= 0.98 for x in ok),
            "decoded": sum(x["report"]["decoded_state"]["facts_decoded"] == 1 for x in ok),
            "a": [x["report"]["a_recall"] for x in ok if x["report"]["a_recall"] is not None]}


def _a_trend(by_n: dict) -> str:
    """The median a at the cell's recall at the smallest and at the largest N that has one."""
    ns = [n for n, v in by_n.items() if v["a"]]
    lo, hi = min(ns), max(ns)
    return f"median {np.median(by_n[lo]['a']):.2f} at N = {lo}, {np.median(by_n[hi]['a']):.2f} at N = {hi}"


def _mechanism_grid_rows(by_n: dict, total: dict) -> tuple[list[str], list[list]]:
    """The grid figure's numbers (``_numbers``) per N and over all cells, as table rows."""
    headers = ["N", "cells (N <= D)", "learned (recall >= 0.1)", "key hash / Welch: median (least)",
               "key diag. column max >= 98%", "H'' decodes every fact", "a at the cell's recall: median"]

    def row(label, v):
        f = v["frac"]
        return [label, str(v["cells"]), str(v["learned"]), f"{np.median(f):.3f} ({min(f):.3f})" if f else "-",
                str(v["diag"]), str(v["decoded"]), f"{np.median(v['a']):.2f}" if v["a"] else "-"]

    return headers, [row(str(n), v) for n, v in by_n.items()] + [row("all", total)]
