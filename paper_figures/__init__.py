"""Regenerate the figures and tables of both papers from stored results or from the constructions.

``FIGURES`` names every figure/table; ``render(results, out, only)`` writes PNG + PDF (figures), .tex + .md (tables)
and a caption .txt per entry, and returns one status line per entry (a missing result names its command).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

from common.errors import RequirementError
from paper_figures import recall, recall_trained, selectivity, training
from paper_figures.common import Entry, MissingResults, Rendered

FIGURES: dict[str, Entry] = {e.name: e for e in (
    Entry("figA1-haar", "selectivity", "Figure A.1: Haar wavelets and S6 step bases", selectivity.figure_a1),
    Entry("corollary1", "selectivity", "Corollary 1: error vs N, S6/Haar vs S4D", selectivity.corollary1),
    Entry("keep-nth-memory", "selectivity", "KEEP n-TH: S6 keeps x_n, S4D forgets", selectivity.keep_nth),
    Entry("mqar-sizes", "selectivity", "MQAR construction sizes vs kappa", selectivity.mqar_sizes),
    Entry("fig1", "selectivity", "Figure 1: e^(-lambda Delta) histograms", training.figure1, training=True),
    Entry("fig2", "selectivity", "Figure 2: MQAR accuracy vs kappa and d", training.figure2, training=True),
    Entry("figA2", "selectivity", "Figure A.2: as Fig. 2 at |V| = 256, 512", training.figure_a2, training=True),
    Entry("fig2-s4d-complex", "selectivity", "Figure 2's Mamba-S4D panel with the complex S4D mixer",
          training.figure2_complex, training=True),
    Entry("figA2-s4d-complex", "selectivity", "Figure A.2's Mamba-S4D panels with the complex S4D mixer",
          training.figure_a2_complex, training=True),
    Entry("figA3", "selectivity", "Figure A.3: MQAR with N swept", training.figure_a3, training=True),
    Entry("fig3", "selectivity", "Figure 3: induction heads", training.figure3, training=True),
    Entry("figA4", "selectivity", "Figure A.4: induction heads, N swept", training.figure_a4, training=True),
    Entry("ih-mixers", "selectivity", "Figures 3 / A.4: Mamba-Δ⊤ against Mamba per cell", training.ih_mixers_table,
          training=True),
    Entry("tightness", "selectivity", "Tightness: smallest solved d vs the bound", training.tightness_table,
          training=True),
    Entry("train-replicates", "selectivity", "Runs trained twice: how far identical specs land apart",
          training.replicates_table, training=True),
    Entry("table1", "selectivity", "Table 1: KEEP FIFTH", training.table1, training=True),
    Entry("tableA1", "selectivity", "Table A.1: Mamba+PE", training.table_a1, training=True),
    Entry("tableA2", "selectivity", "Table A.2: S4D+PE", training.table_a2, training=True),
    Entry("tableA3", "selectivity", "Table A.3: Mamba, no PE", training.table_a3, training=True),
    Entry("tableA4", "selectivity", "Table A.4: S4D, no PE", training.table_a4, training=True),
    Entry("tableA2-s4d-complex", "selectivity", "Table A.2: S4D+PE, complex S4D", training.table_a2_complex,
          training=True),
    Entry("tableA4-s4d-complex", "selectivity", "Table A.4: S4D, no PE, complex S4D", training.table_a4_complex,
          training=True),
    Entry("tableA12-transformer", "selectivity", "Tables A.1/A.2: the Transformer rows", training.transformer_table,
          training=True),
    *(Entry(f"recall-{r}", "recall", f"Recall grid {r}: law vs corrected vs measured", partial(recall.recall_grid, regime=r))
      for r in ("regime_0", "regime_1", "regime_2")),
    Entry("recall-trained-regime_0", "recall", "Trained recall on the D-N grid vs the law (a = 5/8)",
          recall.recall_trained, training=True),
    Entry("recall-vocab", "recall", "Trained recall vs the vocabulary size, and the largest perfectly recalled V",
          recall.recall_vocab, training=True),
    *(Entry(f"recall-fig1-{r}", "recall", f"Figure 1 at {r}: designed, law with the trained a, trained linear, "
            f"trained full", partial(recall_trained.figure1, regime=r), training=True)
      for r in ("regime_0", "regime_1", "regime_2")),
    *(Entry(f"recall-collapse-{r}", "recall", f"Figure 4 at {r}: trained collapse curves (AR / MQAR, linear / full), "
            f"a fitted per panel", partial(recall_trained.collapse, regime=r), training=True)
      for r in ("regime_0", "regime_1", "regime_2")),
    Entry("recall-layers", "recall", "Trained N x Lambda grid (MQAR) and its collapse with N_eff = Lambda N",
          recall_trained.layers, training=True),
    Entry("recall-layers-ar", "recall", "Trained N x Lambda grid (AR) and its collapse with N_eff = Lambda N",
          partial(recall_trained.layers, name="recall-layers-ar"), training=True),
    Entry("recall-repeats", "recall", "Trained repeated keys (Lambda x N_k): recall of the last value against the "
          "guessing bound 1/N_k", recall_trained.repeats, training=True),
    Entry("recall-vocab-long", "recall", "Trained large vocabulary and long context (V x L): accuracy against V, "
          "the probit slope against m_V", recall_trained.vocab_long, training=True),
    Entry("recall-heads", "recall", "Trained multi-head grids (MQA, MKA, MVA, MHA)", recall_trained.heads,
          training=True),
    Entry("recall-ablation", "recall", "Circuit-minimality ablation (Base, rows A-E)", recall_trained.ablation,
          training=True),
    Entry("recall-mechanism", "recall", "The hashing mechanism in trained models: designed vs trained, per cell",
          recall_trained.mechanism, training=True),
    Entry("recall-mechanism-grid", "recall", "The hashing mechanism across the mech-interp grid: key hash vs Welch's "
          "bound, the law's a per cell", recall_trained.mechanism_grid, training=True),
    *(Entry(f"recall-seeds-{r}", "recall", f"Seed reliability of the trained full model at {r}",
            partial(recall_trained.seed_reliability, regime=r), training=True)
      for r in ("regime_0", "regime_1", "regime_2")),
    Entry("recall-required-sizes", "recall", "Required D and N vs |V| and N_f", recall.required_sizes),
    Entry("recall-multilayer", "recall", "Multi-layer table", recall.multilayer),
    Entry("recall-multihead", "recall", "Multi-head table", recall.multihead),
)}


def make(name: str, results: str | Path = "results") -> Rendered:
    if name not in FIGURES:
        raise RequirementError(f"unknown figure {name!r}; known: {', '.join(FIGURES)}")
    return FIGURES[name].make(Path(results))


def render(results: str | Path = "results", out: str | Path = "figures", only: str | None = None) -> list[str]:
    """Render every entry (or ``only``) into ``out``; one status line per entry."""
    import matplotlib.pyplot as plt

    if only is not None and only not in FIGURES:
        raise RequirementError(f"unknown figure {only!r}; known: {', '.join(FIGURES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for name in ([only] if only else FIGURES):
        try:
            r = FIGURES[name].make(Path(results))
        except MissingResults as e:
            lines.append(f"skipped {name}: {e}")
            continue
        written = []
        if r.figure is not None:
            for ext, metadata in (("png", {}), ("pdf", {"CreationDate": None})):  # no date: unchanged figures
                r.figure.savefig(out / f"{name}.{ext}", metadata=metadata)     # give unchanged files
                written.append(f"{name}.{ext}")
            plt.close(r.figure)
        if r.latex is not None:
            (out / f"{name}.tex").write_text(r.latex)
            (out / f"{name}.md").write_text(r.markdown)
            written += [f"{name}.tex", f"{name}.md"]
        (out / f"{name}.caption.txt").write_text(r.caption + "\n")
        lines.append(f"wrote {name}: {', '.join(written)} (+ caption)")
    return lines
