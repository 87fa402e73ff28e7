"""Shared pieces of the paper figures: the figure registry entry, loading stored results, missing-result errors."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")  # no display: every figure is written to files
import matplotlib.pyplot as plt  # noqa: E402

# Paper column width (inches); figures are sized as multiples of it so text stays readable when printed at that width.
COLUMN = 3.4
plt.rcParams.update({"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 6.5,
                     "xtick.labelsize": 7, "ytick.labelsize": 7, "figure.dpi": 150, "savefig.dpi": 200,
                     "savefig.bbox": "tight"})


class MissingResults(Exception):
    """The stored results a figure needs are absent; ``command`` produces them."""

    def __init__(self, path: str, command: str):
        super().__init__(f"{path} missing; produce it with: {command}")
        self.path, self.command = path, command


@dataclass
class Rendered:
    """What a figure function returns: a matplotlib Figure and/or a table (LaTeX and Markdown), and a caption."""

    caption: str
    figure: object | None = None  # matplotlib.figure.Figure
    latex: str | None = None
    markdown: str | None = None


@dataclass(frozen=True)
class Entry:
    name: str
    paper: str  # "selectivity" (Huang et al. 2025) or "recall" (Koren et al. 2026)
    title: str
    make: Callable[[Path], Rendered]
    needs: tuple[str, ...] = field(default=())  # result files (relative to the results dir)
    training: bool = False  # True: drawn from training stores (results/train/*.jsonl), which a checkout may lack


def acc_text(x: float, digits: int = 4) -> str:
    """An accuracy to ``digits`` decimals, or to more where that would print an accuracy below 1 as 1: 0.99996 ->
    "0.99996", never "1.0000" for a run that is not solved (at most 12 decimals)."""
    text = f"{x:.{digits}f}"
    while x < 1 and float(text) >= 1 and digits < 12:
        digits += 1
        text = f"{x:.{digits}f}"
    return text


def load_json(results: Path, rel: str, command: str) -> dict:
    p = Path(results) / rel
    if not p.exists():
        raise MissingResults(str(p), command)
    return json.loads(p.read_text())


def load_store(results: Path, rel: str, command: str) -> list[dict]:
    """The finished runs of a training store (``verify.train.store`` JSON lines); missing or empty -> MissingResults."""
    from verify.train.store import ResultStore

    p = Path(results) / rel
    recs = ResultStore(p).records()
    if not recs:
        raise MissingResults(str(p), command)
    return recs


def table(headers: list[str], rows: list[list], caption: str = "") -> tuple[str, str]:
    """(LaTeX tabular, Markdown table) of the same rows; cells are already strings."""
    md = "| " + " | ".join(headers) + " |\n|" + "---|" * len(headers) + "\n"
    md += "".join("| " + " | ".join(str(c) for c in r) + " |\n" for r in rows)

    def esc(s):
        return str(s).replace("_", r"\_").replace("%", r"\%").replace("±", r"$\pm$").replace("|V|", r"$|V|$")

    tex = "\\begin{tabular}{" + "l" * len(headers) + "}\n\\hline\n" + " & ".join(esc(h) for h in headers) + \
        " \\\\\n\\hline\n" + "".join(" & ".join(esc(c) for c in r) + " \\\\\n" for r in rows) + "\\hline\n\\end{tabular}\n"
    if caption:
        tex = f"% {caption}\n" + tex
    return tex, md
