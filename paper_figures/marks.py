"""How the trained-accuracy figures (Figures 2, 3, A.2-A.4) draw a cell: colour = accuracy in nines, rings = marks.

Colour is ``nines(acc) = -log10(1 - acc)``, clipped at ``NINES_TOP`` (six nines: one error in the 10^6 scored positions
of an induction-heads test set), so 0.99, 0.999 and 1.0 get colours 2, 3 and 6 of a 0-6 scale instead of the top 1%
of a linear one. On top of the accuracy marker, every cell gets at most one ring (``mark``):

* ``solved``: some run of the cell recalled every test query (100% test accuracy, the paper's criterion): solid ring;
* ``near``: not solved, best accuracy >= ``NEAR`` (99.99%): dashed ring.

Each ring collection carries the gid ``"<mark>:<tag>"`` (the tag names the mixer), so the marked cells can be read
back from a rendered figure.
"""
from __future__ import annotations

import math

from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

from paper_figures.common import plt

NINES_TOP = 6
NEAR = 0.9999
CMAP = plt.get_cmap("viridis")
NORM = Normalize(0, NINES_TOP)
MARKS = ("solved", "near")
RING = {"solved": {"linestyles": "solid", "label": "solved (100% test)"},
        "near": {"linestyles": (0, (2.0, 1.2)), "label": "≥ 99.99%, not solved"}}
TICKS = {0.0: "0", 0.9: "0.9", 0.99: "0.99", 0.999: "0.999", 0.9999: "0.9999", 0.99999: "0.99999",
         1.0: "≥ 0.999999"}


def nines(acc: float) -> float:
    """-log10(1 - acc), clipped to [0, NINES_TOP]."""
    return min(float(NINES_TOP), -math.log10(max(1.0 - acc, 10.0 ** -NINES_TOP)))


def mark(acc: float, solved: bool) -> str | None:
    """The ring of a cell: "solved" (some run at 100% test), "near" (else best accuracy >= NEAR) or None."""
    if solved:
        return "solved"
    return "near" if acc >= NEAR - 1e-12 else None  # 0.9999 as stored (999900 / 10^6) is 99.99%


def colours(accs) -> list:
    return [CMAP(NORM(nines(a))) for a in accs]


def scatter(ax, xs, ys, accs, solved, tag: str, filled: bool = True, marker: str = "o", size: float = 26):
    """Accuracy markers (filled: face coloured; outlined: ring coloured, face empty) and their solved / near rings.
    Returns the marker collection (gid ``"acc:<tag>"``; a filled one's array holds the nines)."""
    if filled:
        sc = ax.scatter(xs, ys, c=[nines(a) for a in accs], cmap=CMAP, norm=NORM, s=size, marker=marker,
                        edgecolors="none", zorder=2)
    else:
        sc = ax.scatter(xs, ys, s=size, marker=marker, facecolors="none", edgecolors=colours(accs), linewidths=1.6,
                        zorder=2)
    sc.set_gid(f"acc:{tag}")
    for kind in MARKS:
        at = [(x, y) for x, y, a, s in zip(xs, ys, accs, solved) if mark(a, s) == kind]
        ring = ax.scatter([p[0] for p in at], [p[1] for p in at], s=size * 2.9, marker=marker, facecolors="none",
                          edgecolors="k", linewidths=0.9, linestyles=RING[kind]["linestyles"], zorder=3)
        ring.set_gid(f"{kind}:{tag}")
    return sc


def legend(fig, ax, ncol: int = 5) -> None:
    """One legend below the panels: ``ax``'s labelled artists, then the two rings (empty scatters in their style)."""
    for kind in MARKS:
        ax.scatter([], [], s=60, facecolors="none", edgecolors="k", linewidths=0.9,
                   linestyles=RING[kind]["linestyles"], label=RING[kind]["label"])
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=ncol, frameon=False, fontsize=6)


def colourbar(fig, axes, **kw):
    """The nines colour bar, ticks labelled with the accuracy they stand for."""
    cb = fig.colorbar(ScalarMappable(NORM, CMAP), ax=axes, **kw)
    cb.set_ticks([nines(a) for a in TICKS], labels=list(TICKS.values()))
    cb.set_label("best test accuracy (scale: −log10(1 − acc))")
    return cb


def marked(ax, kind: str, tag: str) -> list[tuple[float, float]]:
    """The (x, y) of the cells a rendered axes rings as ``kind`` for ``tag``."""
    return [tuple(p) for c in ax.collections if c.get_gid() == f"{kind}:{tag}" for p in c.get_offsets().tolist()]
