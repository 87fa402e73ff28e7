"""paper_figures.recall_trained on synthetic stores with known answers (tests/recall_trained_fixtures.py): the fitted
a comes back from accuracies drawn from the law; best of seeds and mean read back; N_eff = Lambda N; the ablation
and seed-reliability numbers; a missing store is reported, a partial set of stores is drawn and named. The new grids
load, expand to the paper's cells, and one tiny cell of each trains on the CPU; the lm wiring's norm = false."""
from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import paper_figures
import recall_trained_fixtures as fx
from common.errors import RequirementError
from paper_figures import recall_trained as rt
from paper_figures.common import MissingResults
from verify.recall_law import law_num
from verify.train.sweep import grid

ROOT = Path(__file__).resolve().parents[1]
NEW_GRIDS = [p.stem for p in sorted((ROOT / "experiments/grids").glob("recall-*.toml"))
             if p.stem.startswith(("recall-linear-regime1", "recall-linear-regime2", "recall-full-regime1",
                                   "recall-full-regime2", "recall-linear-ar-", "recall-layers", "recall-heads-",
                                   "recall-ablation-", "recall-repeats")) and not p.stem.endswith("-coarse")]


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> Path:
    r = tmp_path_factory.mktemp("results")
    (r / "recall_scaling").mkdir()
    for reg in ("regime_0", "regime_2"):
        shutil.copy(ROOT / "results/recall_scaling" / f"{reg}.json", r / "recall_scaling")
    fx.write_all(r, every=7)
    return r


@pytest.mark.parametrize("a_, lam", [(0.625, 1), (1.25, 1), (3.0, 1), (1.0, 3)])
def test_fit_a_recovers_the_coefficient_of_law_drawn_accuracies(a_, lam):
    rng = np.random.default_rng(0)
    d, n = np.meshgrid(np.arange(4, 65, 4), np.arange(2, 33, 3))
    keep = n <= d
    d, n = d[keep], n[keep]
    acc = np.clip(law_num(d, n, 512, 16, a_, lam) + 0.01 * rng.standard_normal(d.shape), 0, 1)
    got, rmse = rt.fit_a(d, n, acc, 512, 16, lam)
    assert abs(got / a_ - 1) < 0.05 and rmse < 0.015
    wrong, _ = rt.fit_a(d, n, acc, 512, 16, 1 if lam > 1 else 2)  # the wrong N_eff gives another a
    assert abs(wrong / a_ - 1) > 0.4


def _md_rows(md: str) -> dict[str, list[str]]:
    return {r.split(" | ")[0].strip("| "): [c.strip() for c in r.strip("| \n").split(" | ")]
            for r in md.splitlines()[2:]}


def test_figure1_fits_a_per_model_and_puts_the_mean_beside_the_best(stores):
    out = paper_figures.make("recall-fig1-regime_0", stores)
    rows = _md_rows(out.markdown)
    lin, full = rows["trained linear"], rows["trained full"]
    assert abs(float(lin[3]) / fx.A_TRUE["linear"] - 1) < 0.05 and abs(float(full[3]) / fx.A_TRUE["full"] - 1) < 0.05
    # mean of seed means = mean best x mean seed factor (seeds 0-2 / 0-4 of the fixture)
    for row, seeds in ((lin, 3), (full, 5)):
        factor = np.mean([fx.seed_factor(s) for s in range(seeds)])
        assert float(row[9]) == pytest.approx(float(row[8]) * factor, abs=2e-3)
    assert f"a = {float(lin[3]):.3g}" in out.caption and "best of seeds" in out.caption
    assert [ax.get_title() for ax in out.figure.axes[:4]][3].startswith("(d) trained full, best of 5")


def test_cells_read_back_best_and_mean_of_the_seeds(stores):
    g, recs = rt.grid_records(stores, "recall-full-regime0")
    agg = rt.aggregate(recs)
    cell = next(c for c in agg if c[:2] == (64, 24))  # (64 // 2 + 24) % 7 == 0: a fixture cell
    best = fx.best_value(next(s for s in g.runs() if (s.d_model, s.d_state, s.seed) == (64, 24, 0)), fx.A_TRUE["full"])
    assert agg[cell]["best"] == pytest.approx(best, abs=1e-12) and agg[cell]["seeds"] == 5
    assert agg[cell]["mean"] == pytest.approx(best * np.mean([fx.seed_factor(s) for s in range(5)]), abs=1e-12)


def test_collapse_fits_each_panel(stores):
    rows = _md_rows(paper_figures.make("recall-collapse-regime_2", stores).markdown)
    for panel, kind in (("AR, trained linear", "linear-ar"), ("MQAR, trained linear", "linear"),
                        ("MQAR, trained full", "full")):
        assert abs(float(rows[panel][3]) / fx.A_TRUE[kind] - 1) < 0.05, panel


def test_layers_collapse_uses_n_eff_and_measures_equal_state_pairs(stores):
    out = paper_figures.make("recall-layers", stores)
    g, recs = rt.grid_records(stores, "recall-layers")
    agg = rt.aggregate(recs)
    gap, deeper, pairs = rt.equal_state_gap(agg)
    best = {(c[1], rt._layers_of(c)): v["best"] for c, v in agg.items()}
    d = g.d_models[0]
    want = [best[(m, mu)] - best[(n, lam)] for (n, lam) in best for (m, mu) in best
            if lam < mu and n * lam == m * mu <= d]
    # N 2..16 x Lambda 1..5: e.g. (16, 1)-(8, 2)-(4, 4), (12, 4)-(16, 3), (12, 5)-(15, 4), ...
    assert pairs == len(want) > 16 and gap == pytest.approx(np.mean(np.abs(want)))
    assert deeper == pytest.approx(np.mean(want))
    assert "a fitted = 1.2" in out.caption and f"the {pairs} pairs" in out.caption and f"is {gap:.3f}" in out.caption
    ar = paper_figures.make("recall-layers-ar", stores)
    assert "a fitted = 1.0" in ar.caption or "a fitted = 0.99" in ar.caption


def test_repeats_reads_each_depth_against_the_guessing_bound(stores):
    """The fixture: one layer at 0.9 / N_k (never above 1/N_k), Lambda 2-4 above it at every N_k >= 2, Lambda 5 at
    0.5 / N_k (never above); the caption says so cell by cell and the table holds best (mean) per (Lambda, N_k)."""
    out = paper_figures.make("recall-repeats", stores)
    assert "one layer, at N_k >= 2: best accuracy at most 0.90 times 1/N_k, 0 cells of 4 above the bound, 0 cells " \
           "above the adjacent-repeat guess" in out.caption
    assert "Lambda = 2: above at N_k = 2, 3, 4, 5" in out.caption and "Lambda = 5: never above" in out.caption
    assert "Lambda N = 60" in out.caption and "seeds 3 of 3" in out.caption
    rows = _md_rows(out.markdown)
    assert rows["1"][1:] == [f"{0.9 / k:.3f} ({0.9 / k * 0.85:.3f})" for k in range(1, 6)]
    assert rows["5"][3] == f"{0.5 / 3:.3f} ({0.5 / 3 * 0.85:.3f})"
    lines = out.figure.axes[0].get_lines()
    assert list(lines[0].get_ydata()) == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])  # the bound, grey


def test_vocab_long_reads_the_probit_slope_and_the_fitted_a(stores, tmp_path):
    """Cells on the law at a = 1.25 (D 150, N 75, N_f = L/4): every L with two V inside [0.02, 0.98] has slope -1 and
    intercept 1/sigma(L), and the a fitted to all 31 cells is 1.25 (rms 0). A grid whose probit slope is -0.5 reads
    -0.50 and no a fits it (rms >= 0.01): the slope is measured, not assumed."""
    from verify.recall_law import sigma2_num

    out = paper_figures.make("recall-vocab-long", stores)
    for t in (1000, 2000, 3000, 4000):
        inv_sigma = 1 / np.sqrt(sigma2_num(150, 75, t // 4, 1.25))
        m = re.search(rf"L = {t}: slope (-?[\d.]+), intercept (-?[\d.]+) over (\d+) V", out.caption)
        assert m and float(m[1]) == -1.0 and float(m[2]) == pytest.approx(inv_sigma, abs=0.006) and int(m[3]) >= 2
    assert "fitted to all 31 cells = 1.250 (rms 0.000)" in out.caption and "seeds 1 of 1" in out.caption
    assert out.caption.count("V (slope's standard error 0.00)") == 4  # on the law: no scatter about the lines
    assert "the validation accuracy gained no history stored" in out.caption  # the fixture stores no history
    rows = _md_rows(out.markdown)
    assert list(rows) == ["1000", "2000", "3000", "4000"] and rows["4000"][2:6] == ["", "", "", ""]  # V <= L skipped
    assert rows["1000"][-2] == "-1.00 ± 0.00"
    got, law = map(float, re.match(r"([\d.]+) \(([\d.]+)\)", rows["4000"][6]).groups())  # V = 5696
    assert got == law
    fx.write_grid(tmp_path, "recall-vocab-long", lambda s: fx.vocab_long_value(s, slope=-0.5))
    half = paper_figures.make("recall-vocab-long", tmp_path)
    slopes = [float(x) for x in re.findall(r"L = \d+: slope (-?[\d.]+)", half.caption)]
    assert slopes and all(x == -0.5 for x in slopes)
    assert float(re.search(r"\(rms ([\d.]+)\)", half.caption)[1]) >= 0.01  # off the law: a cannot absorb it


def test_probit_fit_gives_the_slope_and_its_standard_error():
    """(0, 0), (1, 1), (2, 1): slope 1/2, intercept 1/6, residuals -1/6, 1/3, -1/6, so RSS = 1/6 and the slope's
    standard error is sqrt(RSS / (3 - 2) / S_xx) = sqrt(1/12) (S_xx = 2); two points: a line, no error; one: none."""
    from paper_figures.recall import probit_fit

    slope, intercept, n, se = probit_fit([(0.0, 0.0), (1.0, 1.0), (2.0, 1.0)])
    assert (slope, intercept, n) == (pytest.approx(0.5), pytest.approx(1 / 6), 3) and se == pytest.approx(12 ** -0.5)
    assert probit_fit([(0.0, 1.0), (2.0, 0.0)]) == (pytest.approx(-0.5), pytest.approx(1.0), 2, None)
    assert probit_fit([(0.0, 1.0)]) is None


def test_late_rises_reads_the_last_third_of_each_history():
    """Histories of 12000 steps: the rise is the last value minus the value at the last validation at or before step
    8000, per L at the smallest and the largest V; a cell with one V gives one number; of a cell's several runs, the
    one with the best validation accuracy (the run the cell reports) gives it."""
    from paper_figures.recall_trained import _late_rises

    def rec(v, t, accs):
        return {"spec": {"vocab": v, "seq_len": t},
                "result": {"history": [[500 * (i + 1), 0.0, a] for i, a in enumerate(accs)], "best_val_acc": max(accs)}}

    flat = [0.5] * 16 + [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.6]  # step 8000 is the 16th entry
    climb = [0.5] * 16 + [0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9]
    got = _late_rises([rec(1002, 1000, flat), rec(20970, 1000, climb), rec(3688, 3000, climb)], 12000)
    assert got == "L = 1000: +0.100 (V 1002) to +0.400 (V 20970); L = 3000: +0.400 (V 3688)"
    high = [0.95] * 16 + [0.95] * 7 + [0.96]  # a better seed of the V 20970 cell, nearly flat at the end
    got = _late_rises([rec(1002, 1000, flat), rec(20970, 1000, climb), rec(20970, 1000, high)], 12000)
    assert got == "L = 1000: +0.100 (V 1002) to +0.010 (V 20970)"
    assert _late_rises([{"spec": {"vocab": 5, "seq_len": 4}, "result": {"history": [], "best_val_acc": 0.0}}],
                       12000) == \
        "no history stored"


def test_seed_slopes_compare_the_seeds_on_the_cells_they_share(tmp_path):
    """recall-vocab-long on the law (slope -1) as seed 0; recall-vocab-long-seeds holding seed 1 at L = 1000 on a
    slope -1.5 grid (every V) and at L = 2000 at one V only: L = 1000 reads -1.00 / -1.50 over the 7 V both hold (6
    of seed 0's inside the probit range, V 1548 lying above 0.98), L = 2000 has no line shared by both seeds. Without
    the seeds store the L read "seed 0 only"; without any store, the grid is not trained."""
    from paper_figures.recall_trained import _seed_slopes
    from verify.train.store import ResultStore

    assert _seed_slopes(tmp_path) == "grid recall-vocab-long-seeds not trained"
    fx.write_grid(tmp_path, "recall-vocab-long", fx.vocab_long_value)
    assert _seed_slopes(tmp_path) == "L = 1000: seed 0 only; L = 2000: seed 0 only (grid recall-vocab-long-seeds)"
    seed1 = [s for s in grid("recall-vocab-long-seeds").runs()
             if s.seed == 1 and (s.seq_len == 1000 or s.vocab == 2390)]
    ResultStore(tmp_path / "train" / "recall-vocab-long-seeds.jsonl").append(
        [fx.record(s, fx.vocab_long_value(s, slope=-1.5)) for s in seed1])
    assert _seed_slopes(tmp_path) == (
        "L = 1000: -1.00 / -1.50 (seeds 0 / 1, over 6 / 7 of the 7 V they all hold); L = 2000: fewer than two V that "
        "seeds 0 / 1 all hold inside the probit range (grid recall-vocab-long-seeds)")


def test_slope_history_fits_each_step_of_the_reported_runs():
    """Histories drawn as Phi(c + k(step) m_V) with k moving from -2 at step 500 to -1 at step 4000 give back k at
    every step; a later dip does not count (the best accuracy so far is what a cell would report), a worse second
    seed of a cell is not read, and a step or an L with fewer than two cells inside the probit range has no slope.
    ``_slope_moves`` reads the slope at half the steps and at the end."""
    from statistics import NormalDist

    from paper_figures.recall_trained import _slope_history, _slope_moves
    from verify.recall_law import m_v_num

    steps = [500 * (i + 1) for i in range(8)]
    k = {step: -2 + (step - 500) / 3500 for step in steps}

    def rec(v, t, accs):
        return {"spec": {"vocab": v, "seq_len": t},
                "result": {"history": [[s, 0.0, a] for s, a in zip(steps, accs)], "best_val_acc": max(accs)}}

    def acc(v, step):
        return NormalDist().cdf(5.0 + k[step] * float(m_v_num(v)))

    runs = [rec(v, 1000, [acc(v, s) for s in steps]) for v in (3688, 8796, 20970)]
    dipped = [acc(1548, s) for s in steps[:-1]] + [0.5]  # its last validation dips: the best so far stays
    runs += [rec(1548, 1000, dipped), rec(1548, 1000, [0.1] * 8), rec(3688, 3000, [0.4] * 8)]
    got = _slope_history(runs)
    assert list(got) == [1000] and [s for s, _ in got[1000]] == steps
    held = [(float(m_v_num(v)), NormalDist().inv_cdf(acc(v, steps[-2] if v == 1548 else steps[-1])))
            for v in (1548, 3688, 8796, 20970)]  # at the last step V 1548 holds its value of the step before
    assert got[1000][-1][1] == pytest.approx(np.polyfit(*zip(*held), 1)[0], abs=1e-9) and got[1000][-1][1] > -1
    assert [fit for _, fit in got[1000][:-1]] == pytest.approx([k[s] for s in steps[:-1]], abs=1e-9)
    clean = _slope_history([r for r in runs if r["spec"]["vocab"] != 1548])
    assert [s for s, _ in clean[1000]] == steps[1:]  # at step 500 only V 3688 lies inside [0.02, 0.98]: no line
    assert [fit for _, fit in clean[1000]] == pytest.approx([k[s] for s in steps[1:]], abs=1e-9)
    assert _slope_moves(clean, 4000) == "L = 1000: -1.57 (step 2000) -> -1.00 (step 4000)"  # k(2000) = -2 + 3/7
    assert _slope_moves({}, 4000) == "no history stored"


def test_adjacent_repeat_guess():
    """One statement per key: nothing to guess (1). One key: every statement but the last is followed by the key,
    so the cue alone finds the last (1). Many keys: the cue rarely fires, so the guess sits a little above 1/N_k, and
    never below it (it rules statements out, never in)."""
    assert rt.adjacent_repeat_guess(512, 10, 128, 1, samples=500) == 1.0
    assert rt.adjacent_repeat_guess(64, 1, 12, 4, samples=200) == 1.0
    for k in (2, 3, 5):
        g = rt.adjacent_repeat_guess(512, 10, 128, k, samples=4000)
        assert 1 / k < g < 1.2 / k


def test_equal_state_gap_separates_depth_that_adds_state_from_depth_that_does_not():
    """Cells whose recall depends on Lambda N have gap 0; cells whose recall depends on N alone (depth adds no state)
    have the mean gap of their equal-state pairs, which must come out non-zero."""
    model = lambda lam: (("layers", lam), ("residual", True), ("wiring", "tied"))  # noqa: E731
    cells = [(64, n, model(lam)) for n in (2, 4, 8) for lam in (1, 2, 4)]
    by_state = {c: {"best": c[1] * rt._layers_of(c) / 32} for c in cells}
    by_n = {c: {"best": c[1] / 32} for c in cells}
    assert rt.equal_state_gap(by_state)[:2] == (0.0, 0.0)
    gap, deeper, pairs = rt.equal_state_gap(by_n)
    # equal Lambda N: (4,1)-(2,2), (8,1)-(4,2)-(2,4), (8,2)-(4,4): 5 pairs, |N - N'| / 32 each, the deeper cell (the
    # smaller N) always the lower
    assert pairs == 5 and gap == pytest.approx(np.mean([2, 4, 6, 2, 4]) / 32) and deeper == pytest.approx(-gap)


def test_law_shortfall_finds_the_cell_furthest_below_the_law():
    from verify.recall_law import law_num

    reg = {"vocab": 512, "facts": 80}
    cells = [(64, n, (("layers", 2),)) for n in (4, 8, 16)]
    law = {c: float(law_num(np.array([64.0]), np.array([float(c[1])]), 512, 80, 1.25, np.array([2.0]))[0])
           for c in cells}
    agg = {c: {"best": law[c] - (0.2 if c[1] == 8 else 0.01)} for c in cells}
    short, cell = rt.law_shortfall(agg, reg, 1.25, lam_of=rt._layers_of)
    assert cell == cells[1] and short == pytest.approx(0.2)


def test_heads_table_reads_each_pattern_and_its_trend(stores):
    out = paper_figures.make("recall-heads", stores)
    g = grid("recall-heads-mqa")
    ns, cell = sorted(g.d_states), g.runs()[0]
    def at(n, m):
        return replace(cell, d_state=n, model=tuple((k, m if k == "heads" else v) for k, v in cell.model))

    gain = {p: np.mean([fx.head_value(at(n, 6), p) - fx.head_value(at(n, 1), p) for n in ns])
            for p in ("MQA", "MVA", "MHA")}
    assert gain["MQA"] < -0.05 and gain["MHA"] > 0.05 and gain["MVA"] == 0
    for p in ("MQA", "MVA", "MHA"):
        assert f"{p} {gain[p]:+.3f} (M = 1 -> 6" in out.caption
    assert out.figure is not None


def test_head_fits_name_the_form_each_pattern_follows(stores):
    """MVA's grid is the one-head law (N_eff = N, a = 1.25 exactly), MHA's the law at N_eff = M N: each fit gives
    a = 1.25 with rms 0 for its own form only, and the caption names that form."""
    from paper_figures.recall_trained import _regime, aggregate, grid_records, head_fits

    out = paper_figures.make("recall-heads", stores)
    for p, own, other in (("MVA", "N", "MN"), ("MHA", "MN", "N")):
        g, recs = grid_records(stores, f"recall-heads-{p.lower()}")
        fits = head_fits(aggregate(recs), _regime(g))
        assert fits[own][0] == pytest.approx(1.25, rel=1e-3) and fits[own][1] < 1e-3
        assert fits[other][1] > 0.05
        assert re.search(rf"{p}: [^;]*; fits: N_eff = {'M N' if own == 'MN' else 'N'}[;.]", out.caption)
    # MQA's grid loses 5 % of the law per extra head: neither form is within FIT_RMS, and the caption says so
    assert re.search(r"MQA: [^;]*M = 1 alone a = 1\.250; fits: neither;", out.caption)


def test_head_multipliers_count_the_independent_hashes(stores):
    """lambda_M on the fixtures: MVA's grid is one head (lambda_M = 1 for every M), MHA's is M hashes (lambda_M = M),
    MQA's loses recall with heads (lambda_M < 1, falling); the caption prints them."""
    from paper_figures.recall_trained import _regime, aggregate, grid_records, head_multipliers

    lam = {}
    for p in ("MQA", "MVA", "MHA"):
        g, recs = grid_records(stores, f"recall-heads-{p.lower()}")
        lam[p] = head_multipliers(aggregate(recs), _regime(g))
        assert sorted(lam[p]) == [1, 2, 3, 4, 5, 6] and lam[p][1] == pytest.approx(1, abs=1e-3)
    assert all(v == pytest.approx(1, abs=1e-3) for v in lam["MVA"].values())
    assert all(v == pytest.approx(m, rel=1e-3) for m, v in lam["MHA"].items())
    q = [lam["MQA"][m] for m in range(2, 7)]
    assert all(v < 1 for v in q) and q == sorted(q, reverse=True)
    out = paper_figures.make("recall-heads", stores)
    assert "MHA: " in out.caption and "lambda_M (M: lambda) 1: 1.00, 2: 2.00, 3: 3.00" in out.caption


def test_ablation_table_gives_mean_and_std_of_every_row(stores):
    rows = _md_rows(paper_figures.make("recall-ablation", stores).markdown)
    for row in ("base", "a", "b", "c", "d", "e"):
        v = fx.ABLATION[row]
        assert rows[row.capitalize() if row == "base" else row.upper()][2:4] == [f"{np.mean(v):.3f} ± {np.std(v):.3f}",
                                                                                 f"{max(v):.3f}"]


@pytest.mark.parametrize("c_values, says", [(fx.ABLATION["c"], "lower"), ([0.95] * 5, "not lower")])
def test_ablation_caption_compares_base_with_row_c(tmp_path, c_values, says):
    from verify.train.store import ResultStore

    (tmp_path / "train").mkdir()
    for row in ("base", "a", "b", "c", "d", "e"):
        vals = c_values if row == "c" else fx.ABLATION[row]
        g = grid(f"recall-ablation-{row}")
        ResultStore(tmp_path / "train" / f"{g.name}.jsonl").append([fx.record(s, vals[s.seed]) for s in g.runs()])
    cap = paper_figures.make("recall-ablation", tmp_path).caption
    base = np.mean(fx.ABLATION["base"])
    assert f"Base (Mamba-1) {base:.3f} against row C (no SiLU, gate, Delta or decay) {np.mean(c_values):.3f}: " \
           f"recall {says} without them" in cap
    # the fixture's row A (0.74) lies below its Base (0.80); A differs from Base in more than Delta and decay
    assert (f"Base without Delta and decay (row A) {np.mean(fx.ABLATION['a']):.3f}: recall not higher than Base's at "
            "the same budget, but A differs from Base in more than Delta and decay (below), so this does not isolate "
            "them") in cap


@pytest.mark.parametrize("regime", ["regime_0", "regime_1", "regime_2"])
def test_seed_reliability_counts_holes_and_bins(tmp_path, regime):
    g = grid(f"recall-full-{rt.REGIMES[regime]}")
    vals = {(8, 4): [0.3, 0.0, 0.2, 0.25, 0.05], (16, 8): [0.9, 0.8, 0.85, 0.7, 0.95], (4, 2): [0.01] * 5}
    from verify.train.store import ResultStore

    ResultStore(tmp_path / f"train/{g.name}.jsonl").append(
        [fx.record(s, vals[(s.d_model, s.d_state)][s.seed]) for s in g.runs() if (s.d_model, s.d_state) in vals])
    seeds = {c[:2]: v for c, v in rt.per_seed(rt.grid_records(tmp_path, g.name)[1]).items()}
    bins = {b: (r, n) for b, r, n in rt.convergence_by_bin(seeds)}
    assert bins[(0.25, 0.5)] == (pytest.approx(0.6), 1) and bins[(0.75, 1.0)] == (1.0, 1) and bins[(0.1, 0.25)][1] == 0
    cap = paper_figures.make(f"recall-seeds-{regime}", tmp_path).caption
    assert "Of 2 cells where some seed converged, 1 has a seed that did not" in cap and f"({g.name}:" in cap
    others = [r for r in rt.REGIMES if r != regime]  # each entry reads its own regime's store only
    for other in others:
        with pytest.raises(MissingResults, match=f"recall-full-{rt.REGIMES[other]}"):
            paper_figures.make(f"recall-seeds-{other}", tmp_path)


def test_missing_stores_are_reported_and_partial_ones_named(tmp_path):
    for name in ("recall-fig1-regime_1", "recall-collapse-regime_1", "recall-layers", "recall-heads",
                 "recall-ablation", "recall-seeds-regime_0", "recall-repeats", "recall-vocab-long"):
        with pytest.raises(MissingResults, match="sweep --grid recall-"):
            paper_figures.make(name, tmp_path)
    lines = paper_figures.render(tmp_path, tmp_path / "out", "recall-fig1-regime_1")
    assert lines[0].startswith("skipped recall-fig1-regime_1") and "recall-linear-regime1" in lines[0]
    g = grid("recall-linear-regime1")
    fx.write_grid(tmp_path, g.name, lambda s: fx.best_value(s, 1.25), fx.thin(9))
    out = paper_figures.make("recall-fig1-regime_1", tmp_path)
    assert "Not trained yet (blank panels): recall-full-regime1" in out.caption
    assert "(a) missing" in out.caption and list(_md_rows(out.markdown)) == ["trained linear"]
    collapse = paper_figures.make("recall-collapse-regime_1", tmp_path).figure
    assert len(collapse.axes[1].get_yticks()) > 0  # a blank panel leaves the shared y axis its ticks
    # a store of runs of another definition holds none of the grid's: reported as missing, not drawn
    other = tmp_path / "x"
    fx.write_grid(other, "recall-smoke", lambda s: 0.5)
    (other / "train/recall-smoke.jsonl").rename(other / "train/recall-layers.jsonl")
    with pytest.raises(MissingResults, match="no run of the grid"):
        paper_figures.make("recall-layers", other)


def test_new_grids_expand_to_the_papers_cells():
    assert len(NEW_GRIDS) == 20  # linear 2, full 2, AR 3, layers 2, heads 4, ablation 6, repeats 1
    lay, heads = grid("recall-layers"), grid("recall-heads-mha")
    assert {(s.d_state, s.model_arg("layers")) for s in lay.runs()} == {(n, x) for n in range(2, 17) for x in range(1, 6)}
    assert all(s.model_arg("residual") and (s.vocab, s.kappa, s.seq_len, s.d_model) == (512, 80, 320, 64)
               for s in lay.runs())
    assert {(s.d_state, s.model_arg("heads")) for s in heads.runs()} == {(n, m) for n in range(2, 11) for m in range(1, 7)}
    ar = grid("recall-layers-ar").runs()[0]
    assert ar.arg("ar") and (ar.protocol.batch_size, ar.protocol.max_steps, ar.protocol.warmup_steps) == (750, 10_000, 250)
    for row in ("base", "a", "b", "c", "d", "e"):
        s = grid(f"recall-ablation-{row}").runs()
        assert len(s) == 5 and (s[0].vocab, s[0].d_model, s[0].d_state, s[0].protocol.weight_decay) == (128, 64, 16, 0.1)
    assert [grid(f"recall-ablation-{r}").d_conv for r in ("base", "a", "b", "c", "d", "e")] == [4, 4, 4, 4, 2, 1]
    # each row removes one more part: the gate (A -> B), the SiLU and conv bias (B -> C)
    a, b, c = (grid(f"recall-ablation-{r}").runs()[0] for r in "abc")
    assert (a.gate, a.model_arg("silu"), b.gate, b.model_arg("silu"), c.gate, c.model_arg("silu", False)) == \
        (True, True, False, True, False, False)
    for name in ("recall-linear-regime2", "recall-full-regime1", "recall-linear-ar-regime1"):
        assert len({(s.d_model, s.d_state) for s in grid(name).runs()}) == 752


@pytest.mark.parametrize("name", ["recall-linear-regime0", "recall-linear-ar-regime0", "recall-linear-regime1",
                                  "recall-linear-regime2", "recall-linear-ar-regime1",
                                  "recall-linear-ar-regime2", "recall-full-regime0", "recall-full-regime1",
                                  "recall-full-regime2"])
def test_coarse_slices_are_runs_of_their_grid(name):
    """A ``-coarse`` grid trains into its parent's store: every run of it is a run of the parent (the same run key),
    20 cells x all the parent's seeds (0-2 linear, 0-4 full)."""
    from verify.train.spec import run_key

    coarse, parent = grid(f"{name}-coarse"), grid(name)
    seeds = {s.seed for s in parent.runs()}
    assert seeds == set(range(5 if "full" in name else 3))
    keys = {run_key(s) for s in coarse.runs()}
    assert len(keys) == 20 * len(seeds) and keys <= {run_key(s) for s in parent.runs()}
    assert {s.seed for s in coarse.runs()} == seeds
    assert len({(s.d_model, s.d_state) for s in coarse.runs()}) == 20


@pytest.mark.parametrize("name", NEW_GRIDS)
def test_a_tiny_cell_of_each_new_grid_trains(name, tmp_path, one_thread):
    from verify.train.runner import run_sweep
    from verify.train.store import ResultStore

    g = grid(name)
    cut = (("max_steps", 4), ("train_samples", 4 * 8), ("batch_size", 8), ("val_samples", 16), ("test_samples", 16),
           ("eval_every", 2), ("warmup_steps", 1), ("flat_steps", 1))
    g = replace(g, d_models=(12,), d_states=(4,), seeds=(0,), models=g.models[-1:], task_args=g.task_args[-1:],
                lambda_times_n=0,  # 2 x 12 splits into 6 heads
                protocol_overrides=tuple(kv for kv in g.protocol_overrides if kv[0] not in dict(cut)) + cut)
    store = ResultStore(tmp_path / f"{name}.jsonl")
    out = run_sweep(g.runs(), store, executor="inline")
    assert out.counts()["finished_now"] == 1 and not out.failed
    (rec,) = store.records()
    assert rec["result"]["steps"] == 4 and dict(map(tuple, rec["spec"]["model"])) == dict(g.runs()[0].model)


def test_a_tiny_cell_of_the_v_x_l_grid_trains_with_its_split_held_as_int32(tmp_path, one_thread):
    """recall-vocab-long at |V| = 40000 (above int16) and L = 8 (N_f = 2): the train split is held as int32 and the
    cell trains its 4 steps through the sweep."""
    from verify.train.loop import datasets
    from verify.train.runner import run_sweep
    from verify.train.store import ResultStore

    cut = (("max_steps", 4), ("train_samples", 4 * 8), ("batch_size", 8), ("val_samples", 16), ("test_samples", 16),
           ("eval_every", 2), ("warmup_steps", 1), ("flat_steps", 1))
    g = replace(grid("recall-vocab-long"), vocabs=(40_000,), seq_lens=(8,), d_models=(12,), d_states=(4,),
                protocol_overrides=cut)
    (spec,) = g.runs()
    assert spec.kappa == 2 and datasets(spec)["train"][0].dtype == torch.int32
    store = ResultStore(tmp_path / "recall-vocab-long.jsonl")
    out = run_sweep(g.runs(), store, executor="inline")
    assert out.counts()["finished_now"] == 1 and not out.failed
    assert store.records()[0]["result"]["steps"] == 4


def test_grid_key_models_excludes_model(tmp_path):
    from verify.train import grids

    body = (ROOT / "experiments/grids/recall-heads-mqa.toml").read_text()
    p = tmp_path / "g.toml"
    p.write_text(body + 'model = {wiring = "tied"}\n')
    with pytest.raises(RequirementError, match="'model' and 'models' exclude each other"):
        grids.read(p)


def test_lm_wiring_without_norms_is_the_residual_stream_read_by_the_tied_head():
    """norm = false: logits = E^T (h + sum of the layers' mixer(h)), no RMSNorm weights in the state; the option is
    refused on the simplified linear Mamba."""
    from verify.blocks.mamba import mamba_forward
    from verify.train import recall_models as rm
    from verify.train import registry
    from verify.train.loop import initial_state
    from verify.train.spec import RunSpec, protocol

    spec = RunSpec(task="mqar-zoology", mixer="mamba", gate=True, vocab=32, kappa=4, seq_len=16, d_model=8,
                   d_state=4, d_conv=4, expand=2, seed=0, lr=1e-2, protocol=protocol("koren-smoke"),
                   model=(("layers", 2), ("norm", False), ("wiring", "lm")))
    registry.validate(spec)
    sd, _ = initial_state(spec)
    assert not [k for k in sd if "norm" in k]
    tokens = torch.randint(0, 32, (2, 16), generator=torch.Generator().manual_seed(0))
    cfg = rm.block_config(spec)
    h = sd["embedding.weight"][tokens]
    for layer in range(2):
        h = h + mamba_forward({k.split("mixer.", 1)[1]: v for k, v in sd.items() if k.startswith(f"layers.{layer}.")},
                              h, cfg)
    torch.testing.assert_close(rm.logits(spec, sd, tokens), h @ sd["embedding.weight"].T, rtol=0, atol=1e-10)
    normed = replace(spec, model=(("layers", 2), ("wiring", "lm")))
    sd_n, _ = initial_state(normed)
    assert not torch.allclose(rm.logits(normed, sd_n, tokens), h @ sd["embedding.weight"].T)
    with pytest.raises(RequirementError, match="norm is an option of the full model"):
        registry.validate(replace(spec, mixer="linear-mamba", gate=False, model=(("norm", False), ("wiring", "tied"))))
    with pytest.raises(RequirementError, match="norm must be true or false"):
        registry.validate(replace(spec, model=(("norm", 0), ("wiring", "lm"))))


def test_seed_counts_say_when_cells_hold_different_numbers_of_seeds():
    """A store part-way through its seeds: the captions' seed count is a range, not the largest count."""
    from paper_figures.recall_trained import _seeds

    def rec(d, seed):
        return {"spec": {"d_model": d, "d_state": 4, "seed": seed, "model": [["wiring", "tied"]]}}

    assert _seeds([rec(8, s) for s in (0, 1, 2)] + [rec(16, s) for s in (0, 1, 2)]) == "3"
    assert _seeds([rec(8, s) for s in (0, 1, 2)] + [rec(16, 0)]) == "1-3"


def test_heat_draws_a_coarse_slice_as_blocks_and_a_full_grid_cell_by_cell():
    """A coarse slice's cells become blocks reaching half-way to the next stored D and N (the panel's extent kept);
    a full grid is one block per cell, edges at +-1 in D (step 2) and +-0.5 in N; a missing cell stays blank."""
    import matplotlib.pyplot as plt

    ds, ns = list(range(2, 33, 2)), list(range(2, 17))
    fig, (a, b) = plt.subplots(1, 2)
    coarse = rt._heat(a, {(8, 4): 0.1, (16, 4): 0.2, (16, 8): 0.4}, ds, ns, "coarse")
    assert coarse.get_array().shape == (2, 2)
    xy = coarse.get_coordinates()
    assert xy[0, :, 0].tolist() == [1, 12, 33] and xy[:, 0, 1].tolist() == [1.5, 6, 16.5]
    assert np.ma.is_masked(coarse.get_array()[1, 0]) or np.isnan(coarse.get_array()[1, 0])  # (8, 8): not stored
    assert a.get_xlim() == (1, 33) and a.get_ylim() == (1.5, 16.5)
    full = rt._heat(b, {(d, n): 0.5 for d in ds for n in ns if n <= d}, ds, ns, "full")
    assert full.get_array().shape == (len(ns), len(ds))
    xy = full.get_coordinates()
    assert np.allclose(xy[0, :, 0], [ds[0] - 1] + [d + 1 for d in ds]) and np.allclose(xy[:, 0, 1],
                                                                                       [n - 0.5 for n in ns] + [16.5])
    plt.close(fig)
