"""The accuracy figures' marks (Figures 2, 3, A.3, A.4), read back from the rendered axes of fixture stores whose
answer is known: per mixer one cell at each of 1.0 (solved), 0.999999 (one miss in 10^6), 0.99995 and 0.9999
(>= 99.99%, not solved), 0.99989, 0.999 and 0.99 (unmarked). Each panel must ring exactly the solved cell solid and
exactly the three >= 99.99% cells
dashed, for both mixers of the induction-heads figures, and colour 0.99, 0.999 and 1.0 apart."""
from __future__ import annotations

import math

import pytest

pytest.importorskip("matplotlib")

import paper_figures  # noqa: E402
from paper_figures.marks import marked  # noqa: E402
from verify.train.spec import BUDGETED, RunSpec, run_key  # noqa: E402
from verify.train.store import ResultStore  # noqa: E402

ACCS = (1.0, 0.999999, 0.99995, 0.9999, 0.99989, 0.999, 0.99)
SOLVED, NEAR = {1.0}, {0.999999, 0.99995, 0.9999}
IH = (("gamma", 0.1), ("p", 0.75))


def _rec(task, mixer, vocab, kappa, d, n, acc, task_args=()):
    """One run whose test accuracy is ``acc`` out of 10^6 scored positions, solved exactly when all are right."""
    spec = RunSpec(task=task, mixer=mixer, vocab=vocab, d_model=d, d_state=n, seed=0, lr=0.01, kappa=kappa,
                   protocol=BUDGETED, task_args=task_args)
    correct = round(acc * 10 ** 6)
    return {"key": run_key(spec), "spec": spec.as_dict(), "device": "cpu", "mamba_ssm": None,
            "result": {"test_acc": correct / 10 ** 6, "val_acc": correct / 10 ** 6, "val_loss": 0.0,
                       "test_correct": correct, "test_queries": 10 ** 6,
                       "solved": correct == 10 ** 6, "epochs": 1.0, "steps": 10, "early_stopped": False}}


def _d(i: int) -> int:
    return 4 * (i + 1)  # one d per accuracy: 4, 8, .., 28


def _points(ax, kind, tag):
    return {(round(x, 9), round(y, 9)) for x, y in marked(ax, kind, tag)}


def _at(x, accs):
    return {(round(x, 9), _d(ACCS.index(a))) for a in accs}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture
def stores(tmp_path):
    t = tmp_path / "train"
    ih = [_rec("induction-heads", m, 5, 0, _d(i), 5 * k, a, IH) for m in ("mamba", "mamba-delta-t") for k in (1, 4)
          for i, a in enumerate(ACCS)]
    ResultStore(t / "figA4.jsonl").append(ih)
    ResultStore(t / "fig3.jsonl").append([r for r in ih if r["spec"]["d_state"] == 20])
    ResultStore(t / "fig2.jsonl").append([_rec("mqar", m, 128, 4, _d(i), 8, a) for m in ("mamba", "mamba2")
                                          for i, a in enumerate(ACCS)])
    # Figure A.3, Mamba (|V| = 512): kappa = 4, N = 2 (kappa / 2) holds the seven accuracies; N = 4 (kappa) one solved
    ResultStore(t / "figA3-mamba.jsonl").append([_rec("mqar", "mamba", 512, 4, _d(i), 2, a) for i, a in enumerate(ACCS)]
                                                + [_rec("mqar", "mamba", 512, 4, 40, 4, 1.0)])
    return tmp_path


@pytest.mark.parametrize("name", ["fig3", "figA4"])
def test_induction_heads_figures_ring_both_mixers(stores, name):
    fig = paper_figures.make(name, stores).figure
    panels = [ax for ax in fig.axes if ax.get_title().startswith("N = ")]
    assert [ax.get_title() for ax in panels] == (["N = 4 |V|"] if name == "fig3" else ["N = 1 |V|", "N = 4 |V|"])
    for ax in panels:
        for mixer, x in (("mamba", 5 * 2 ** -0.12), ("mamba-delta-t", 5 * 2 ** 0.12)):
            assert _points(ax, "solved", mixer) == _at(x, SOLVED), (ax.get_title(), mixer)
            assert _points(ax, "near", mixer) == _at(x, NEAR), (ax.get_title(), mixer)
    r = paper_figures.make(name, stores)
    k = 1 if name == "fig3" else 2  # panels
    assert (f"Mamba {k} solved, {3 * k} at >= 99.99% (of {7 * k} cells); Mamba-Δ⊤ {k} solved, {3 * k} at >= 99.99% "
            f"(of {7 * k} cells)") in r.caption


def test_colour_scale_separates_099_0999_and_1(stores):
    """Filled markers hold -log10(1 - acc) clipped at 6; outlined markers are coloured by the same scale."""
    from paper_figures.marks import CMAP, NORM

    ax = [ax for ax in paper_figures.make("fig3", stores).figure.axes if ax.get_title() == "N = 4 |V|"][0]
    filled = next(c for c in ax.collections if c.get_gid() == "acc:mamba")
    by_d = dict(zip(filled.get_offsets()[:, 1].tolist(), filled.get_array().tolist()))
    want = {_d(i): min(6.0, -math.log10(1 - a)) if a < 1 else 6.0 for i, a in enumerate(ACCS)}
    assert by_d == pytest.approx(want, abs=1e-6)
    assert by_d[_d(ACCS.index(0.99))] == pytest.approx(2) and by_d[_d(ACCS.index(0.999))] == pytest.approx(3)
    outlined = next(c for c in ax.collections if c.get_gid() == "acc:mamba-delta-t")
    edges = dict(zip(outlined.get_offsets()[:, 1].tolist(), outlined.get_edgecolors().tolist()))
    for d, v in want.items():
        assert edges[d] == pytest.approx(list(CMAP(NORM(v))))
    rgb = [edges[_d(ACCS.index(a))][:3] for a in (0.99, 0.999, 1.0)]
    # apart in RGB (viridis over a linear 0-1 scale puts them within 0.03 of each other)
    assert min(math.dist(p, q) for i, p in enumerate(rgb) for q in rgb[i + 1:]) > 0.15


def test_figure2_panels_ring_per_mixer(stores):
    fig = paper_figures.make("fig2", stores).figure
    for ax in fig.axes:
        mixer = {"Mamba, |V| = 128": "mamba", "Mamba-2, |V| = 128": "mamba2"}.get(ax.get_title())
        if mixer:
            assert _points(ax, "solved", mixer) == _at(4, SOLVED)
            assert _points(ax, "near", mixer) == _at(4, NEAR)


def test_figure_a3_has_four_panels_per_mixer_titled_by_n(stores):
    fig = paper_figures.make("figA3", stores).figure
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert list(panels) == ["Mamba, N = κ/2", "Mamba, N = κ", "Mamba, N = 2κ", "Mamba, N = 4κ"]
    half, one = panels["Mamba, N = κ/2"], panels["Mamba, N = κ"]
    assert _points(half, "solved", "mamba") == _at(4, SOLVED) and _points(half, "near", "mamba") == _at(4, NEAR)
    assert _points(one, "solved", "mamba") == {(4, 40)} and _points(one, "near", "mamba") == set()
    assert [t.get_text() for t in half.get_xticklabels()] == ["4\n2"]  # kappa, then the N drawn
    assert all(t.get_fontsize() >= 6 for ax in panels.values() for t in ax.texts + ax.get_xticklabels())
