"""GPU-hours of the paper's full training protocol, table by table, at the training rates a bench measured.

    python -m experiments.protocol_cost --rate results/train/bench_keepnth.json [--rate MORE.json] \
        [--out results/train/protocol_cost.json] [--results results/train] [--overwrite]

writes the JSON and a markdown table beside it (``protocol_cost.md``).

**The protocol** (Huang et al., App. D.1; ``verify.train.spec.REFERENCE``): Adam at lr 0.03 (one rate) cosine to
1e-6, 10^5 training sequences in batches of 16 (6250 steps an epoch), up to 600 epochs, early stop at validation
loss < 1e-6; 3 seeds per KEEP n-TH cell (their mean), 7 per MQAR cell (their best). A cell's seeds share one run
shape, so they train as one pack (``verify.train.sweep.plan``), and a pack trains until its last model stops (a
stopped model's learning rate is 0, its steps still run). Per cell

    GPU-seconds = seeds x epochs x 6250 / rate        (model-steps / model-steps per second)

and a table is the sum of its cells.

**Tables** (``TABLES``; each one's cells are the run shapes of a grid file): Tables A.1-A.4 (KEEP FIFTH, T = 10-50,
d and N in {8, 32, 64}; the S4D tables with S4D as the S4D paper defines it, ``mamba-s4d-complex``), Figure 2's and
Figure A.2's Mamba-S4D panels (MQAR, N = 4), and Figure 2's Mamba at kappa >= 16.

**Rates** (``experiments.train_bench`` rows at batch 16, ``--protocol reference``), two per cell:

* ``pack``: one pack of the cell's seeds at a time, at the rate of the largest measured pack size not above the
  seeds (a smaller pack runs no faster, so this rate is at most the true one and the hours at least the true ones);
* ``best``: the cell's best rate over every measured pack size: what packs trained side by side (a sweep's several
  packs on one GPU) approach if they share it as well as one large pack does; an estimate, not a bound.

A cell the bench did not measure takes the rate of the measured cell of its task and mixer that is at least as
large in every size (|V|, kappa, T, d, N) and smallest in T d (d + N) (``verify.train.sweep.pack_cost``'s proxy of
work per model): a larger model steps no faster, so the hours stay an upper bound on those of the cell's own rate.
A cell with neither is reported missing, and its table gets no total. A +PE cell and its no-PE twin share a rate:
the position replaces an embedding coordinate, the work is the same.

**Epochs**, as a range: ``upper``, every pack at the cap of 600 epochs; ``estimate``, per cell, the epochs the
paper prints for it (Table A.1's early stops; Tables A.2-A.4 state 600 for every run), else, where the grid's store
holds runs of the cell at lr 0.03 whose validation loss fell below 1e-6, the epochs (10^5 sequences each) the
slowest of them had seen when it fell, else 600. A stored run trains far fewer epochs than 600, so a cell where a
stored run's loss never fell counts at 600.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from common.errors import RequirementError, require
from common.io import write_json_atomic, write_text_atomic
from paper_figures.paper_values import KEEP_PE
from verify import cli_support as cli
from verify.train.spec import REFERENCE
from verify.train.store import ResultStore
from verify.train.sweep import grid

MODULE = "experiments.protocol_cost"
EPOCHS = 600  # the paper's cap
STEPS_PER_EPOCH = REFERENCE.steps_per_epoch  # 10^5 / 16 = 6250
BATCH = REFERENCE.batch_size
LR = 0.03
STOP_LOSS = REFERENCE.stop_value  # 1e-6
SIZES = ("vocab", "kappa", "seq_len", "d_model", "d_state")


@dataclass(frozen=True)
class Table:
    name: str
    what: str
    grid: str  # the grid file whose run shapes are the table's cells
    mixer: str
    seeds: int  # the paper's seeds per cell
    min_kappa: int = 0
    stated: str = ""  # "a1": Table A.1's printed epochs per cell; "600": the paper states 600 for every run


TABLES = (
    Table("A.1", "Mamba+PE, KEEP FIFTH", "keepnth-pe-bare", "mamba", 3, stated="a1"),
    Table("A.2", "S4D+PE, KEEP FIFTH", "keepnth-pe-bare-complex", "mamba-s4d-complex", 3, stated="600"),
    Table("A.3", "Mamba, KEEP FIFTH", "keepnth-nope-bare", "mamba", 3, stated="600"),
    Table("A.4", "S4D, KEEP FIFTH", "keepnth-nope-bare-complex", "mamba-s4d-complex", 3, stated="600"),
    Table("Fig. 2 S4D", "Mamba-S4D, MQAR |V| = 128", "fig2-s4d-complex", "mamba-s4d-complex", 7),
    Table("Fig. A.2 S4D", "Mamba-S4D, MQAR |V| = 256, 512", "figA2-s4d-complex", "mamba-s4d-complex", 7),
    Table("Fig. 2 Mamba kappa >= 16", "Mamba, MQAR |V| = 128, kappa 16 and 32", "fig2-loss", "mamba", 7,
          min_kappa=16),
)


def gpu_hours(models: int, epochs: float, rate: float) -> float:
    """Hours of ``models`` models trained ``epochs`` epochs of ``STEPS_PER_EPOCH`` steps at ``rate`` model-steps/s."""
    return models * epochs * STEPS_PER_EPOCH / rate / 3600


def cell_key(spec: dict) -> tuple:
    return (spec["task"], spec["mixer"], *(int(spec[f]) for f in SIZES))


def table_cells(t: Table) -> list[dict]:
    """The table's cells: one spec dict per run shape of its grid (its mixer, kappa >= ``min_kappa``)."""
    seen = {}
    for s in grid(t.grid).runs():
        if s.mixer == t.mixer and s.kappa >= t.min_kappa:
            d = s.as_dict()
            seen.setdefault(cell_key(d), d)
    return list(seen.values())


# --- rates ------------------------------------------------------------------------------------------------------------


def load_rates(paths: list[str]) -> tuple[list[dict], str]:
    """The bench rows of the files (one device, batch 16) and the device's name."""
    rows, devices = [], set()
    for p in paths:
        try:
            data = json.loads(Path(p).read_text())
            file_rows = data["rows"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RequirementError(f"--rate {p}: not an experiments.train_bench result "
                                   f"({' '.join(str(e).split())})") from None
        for r in file_rows:
            require("spec" in r and "sweep" in r, f"--rate {p}: row {r.get('cell')!r} has no spec and pack-size "
                                                  "sweep (a bench of this code writes them)")
            require(r["batch"] == BATCH, f"--rate {p}: cell {r['cell']} was timed at batch {r['batch']}; the paper's "
                                         f"protocol trains batch {BATCH} (bench --protocol reference)")
        devices.add(data.get("device_name"))
        rows += file_rows
    require(len(devices) == 1, f"--rate: the files were measured on different devices ({sorted(map(str, devices))}); "
                               "give rates of one device")
    return rows, devices.pop()


def point_rate(point: dict) -> float:
    return max(point[p]["model_steps_per_s"] for p in ("packed", "packed_graph") if p in point)


def rate_for(cell: dict, rows: list[dict], seeds: int) -> dict | None:
    """The cell's pack and best rates and where they come from (module docstring), or None (no measured cell)."""
    key = cell_key(cell)
    exact = [r for r in rows if cell_key(r["spec"]) == key]
    if exact:
        row, how = exact[0], "measured"
    else:
        larger = [r for r in rows if cell_key(r["spec"])[:2] == key[:2]
                  and all(a >= b for a, b in zip(cell_key(r["spec"])[2:], key[2:]))]
        if not larger:
            return None
        row = min(larger, key=lambda r: (work(r["spec"]), cell_key(r["spec"])))
        how = f"from {row['cell']} (every size >=)"
    fits = [p for p in row["sweep"] if p["models"] <= seeds]
    pack = point_rate(max(fits, key=lambda p: p["models"])) if fits else None
    return {"pack": pack, "pack_models": max(p["models"] for p in fits) if fits else None,
            "best": row["best"]["model_steps_per_s"], "best_models": row["best"]["models"], "source": how}


def work(spec: dict) -> int:
    return spec["seq_len"] * spec["d_model"] * (spec["d_model"] + spec["d_state"])


# --- epochs -----------------------------------------------------------------------------------------------------------


def stated_epochs(t: Table, cell: dict) -> float | None:
    if t.stated == "600":
        return float(EPOCHS)
    if t.stated == "a1":
        return float(KEEP_PE["mamba"][(cell["d_model"], cell["d_state"])][cell["seq_len"]][2])
    return None


def stop_epochs(records: list[dict]) -> dict[tuple, float]:
    """Per cell: the epochs the slowest of its stored runs at lr 0.03 had seen when its validation loss fell below
    1e-6; cells with such a run that never fell are left out."""
    fell: dict[tuple, list] = {}
    for r in records:
        s = r["spec"]
        if not math.isclose(s["lr"], LR):
            continue
        step = next((h[0] for h in r["result"].get("history") or [] if h[1] < STOP_LOSS), None)
        epochs = None if step is None else step * s["protocol"]["batch_size"] / s["protocol"]["train_samples"]
        fell.setdefault(cell_key(s), []).append(epochs)
    return {k: max(v) for k, v in fell.items() if all(e is not None for e in v)}


def cell_epochs(t: Table, cell: dict, fell: dict) -> tuple[float, str]:
    stated = stated_epochs(t, cell)
    if stated is not None:
        return stated, "stated by the paper"
    if cell_key(cell) in fell:
        return fell[cell_key(cell)], "stored runs' loss fell"
    return float(EPOCHS), "cap (no stored run's loss fell)"


# --- tables -----------------------------------------------------------------------------------------------------------


def cost(t: Table, rows: list[dict], results: Path) -> dict:
    cells = table_cells(t)
    store = results / f"{t.grid}.jsonl"
    fell = stop_epochs(ResultStore(store).records()) if store.exists() else {}
    detail, missing = [], []
    sums = {"upper": {"pack": 0.0, "best": 0.0}, "estimate": {"pack": 0.0, "best": 0.0}}
    for c in cells:
        r = rate_for(c, rows, t.seeds)
        epochs, basis = cell_epochs(t, c, fell)
        label = ":".join(str(x) for x in cell_key(c))
        detail.append({"cell": label, "epochs_estimate": epochs, "epochs_basis": basis, **(r or {"source": None})})
        if r is None:
            missing.append(label)
            continue
        for bound, e in (("upper", EPOCHS), ("estimate", epochs)):
            for which in ("pack", "best"):
                if sums[bound][which] is not None:
                    sums[bound][which] = None if r[which] is None else sums[bound][which] + gpu_hours(
                        t.seeds, e, r[which])
    if missing:
        sums = {b: {w: None for w in v} for b, v in sums.items()}
    bases = sorted({d["epochs_basis"] for d in detail})
    return {"table": t.name, "what": t.what, "grid": t.grid, "mixer": t.mixer, "cells": len(cells),
            "seeds": t.seeds, "model_steps_upper": len(cells) * t.seeds * EPOCHS * STEPS_PER_EPOCH,
            "gpu_hours": sums, "epochs_estimate_bases": {b: sum(d["epochs_basis"] == b for d in detail)
                                                         for b in bases},
            "epochs_estimate_mean": sum(d["epochs_estimate"] for d in detail) / len(detail),
            "rates": {"measured": sum(d["source"] == "measured" for d in detail),
                      "from_larger_cell": sum(bool(d["source"]) and d["source"] != "measured" for d in detail),
                      "missing": missing},
            "cell_detail": detail}


def _h(x: float | None) -> str:
    return "—" if x is None else f"{x:,.1f}"


def markdown(out: dict) -> str:
    lines = [f"GPU-hours of the paper's full protocol (batch {BATCH}, {STEPS_PER_EPOCH} steps an epoch, up to "
             f"{EPOCHS} epochs, stop at validation loss < {STOP_LOSS:g}) at the rates measured on "
             f"{out['device_name']} (`{' '.join(out['rate_files'])}`). `pack`: one pack of the cell's seeds at a "
             "time; `best`: at the cell's best pack rate (packs side by side). `experiments/protocol_cost.py` "
             "states the rules.", "",
             "| table | cells x seeds | model-steps at 600 epochs | GPU-h at 600 epochs (pack / best) | "
             "epochs estimate (mean; basis) | GPU-h estimate (pack / best) | rates (measured / from a larger cell / "
             "missing) |", "|---|---|---|---|---|---|---|"]
    for t in out["tables"]:
        g, r = t["gpu_hours"], t["rates"]
        basis = ", ".join(f"{n} {b}" for b, n in t["epochs_estimate_bases"].items())
        what = t["what"].replace("|", "\\|")  # |V| inside a markdown cell
        lines.append(f"| {t['table']} ({what}) | {t['cells']} x {t['seeds']} | {t['model_steps_upper']:.3g} | "
                     f"{_h(g['upper']['pack'])} / {_h(g['upper']['best'])} | {t['epochs_estimate_mean']:.0f}; "
                     f"{basis} | {_h(g['estimate']['pack'])} / {_h(g['estimate']['best'])} | {r['measured']} / "
                     f"{r['from_larger_cell']} / {len(r['missing'])} |")
    return "\n".join(lines) + "\n"


def parser() -> cli.Parser:
    ap = cli.Parser(prog=f"python -m {MODULE}", description=__doc__, progress=False)
    ap.add_argument("--rate", action="append", required=True, help="an experiments.train_bench JSON at batch 16 "
                                                                   "(repeatable)")
    ap.add_argument("--results", default="results/train", help="folder of the grids' stores (the stored-run "
                                                                "estimate of the epochs)")
    ap.add_argument("--out", default="results/train/protocol_cost.json",
                    help="JSON to write; the markdown table goes beside it (.md)")
    ap.add_argument("--overwrite", action="store_true", help="replace stored results")
    return ap


def main(argv) -> int:
    args = parser().parse_args(argv)
    out = cli.output_file(args.out, "--out", args.overwrite)
    md = cli.output_file(str(out.with_suffix(".md")), "--out", args.overwrite)
    rows, device = load_rates(args.rate)
    result = {"command": f"python -m {MODULE} " + " ".join(argv), "device_name": device, "rate_files": args.rate,
              "protocol": {"batch": BATCH, "steps_per_epoch": STEPS_PER_EPOCH, "epochs_cap": EPOCHS, "lr": LR,
                           "stop_val_loss": STOP_LOSS},
              "tables": [cost(t, rows, Path(args.results)) for t in TABLES]}
    write_json_atomic(out, result)
    write_text_atomic(md, markdown(result))
    print(markdown(result), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run_main(main))
