"""Calibrate the budgeted protocols against the reference one on a few MQAR cells (run on a GPU, resumable).

Cells: Mamba (gate off), |V| = 128, T = 100, kappa in {4, 8}, N = 2 kappa (Fig. 2), d at half, once and twice the
bound kappa + ceil(log2 |V|); 7 seeds. The reference protocol (lr 0.03, batch 16, cosine over 600 epochs, stop at val
loss < 1e-6) is truncated after ``--epochs`` epochs (``Protocol.cap_steps``; the schedule still spans 600 epochs, so
the run is the reference run's prefix); the budgeted ones (``budgeted``: stop at 100% validation accuracy;
``budgeted-loss``: stop at validation loss < 1e-6, the reference's rule) run in full (3 lrs x 7 seeds). All go to one
store; every call trains what is missing until ``--minutes`` and then prints and writes the verdict table
(``calibration.json``): per cell, solved (best of seeds [x lrs], 100% test accuracy) under each protocol, and
whether they agree. A truncated reference that solves is a valid verdict; one that fails only says "not within E
epochs" (``reference.truncated`` in the table), so widen ``--epochs`` on the disagreeing cells before concluding.

    python -m verify.train.calibrate --device cuda --minutes 7 --out results/train
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import torch

from constructions.export import write_json_atomic
from verify.train.cli import csv_of
from verify.train.spec import run_key
from verify.train.store import ResultStore
from verify.train.sweep import Grid, adopt, calibration_reference, run_local


BUDGETED_ARMS = ("budgeted", "budgeted-loss")  # the protocols compared with the (truncated) reference


def grids(epochs: int, kappas=(4, 8), d_multipliers=(0.5, 1, 2)) -> dict[str, Grid]:
    """The reference arm and, on the same cells, each budgeted arm (untruncated)."""
    ref = calibration_reference(epochs, kappas, d_multipliers)
    return {"reference": ref, **{name: replace(ref, name=f"calib-{name}", protocol=name, protocol_overrides=(),
                                                 note=f"the calibration's {name} arm")
                                 for name in BUDGETED_ARMS}}


def verdicts(records: list[dict]) -> list[dict]:
    cells: dict = defaultdict(lambda: defaultdict(list))
    for r in records:
        s = r["spec"]
        cells[(s["mixer"], s["vocab"], s["kappa"], s["d_model"], s["d_state"])][s["protocol"]["name"]].append(r)
    rows = []
    for (mixer, vocab, kappa, d, n), by in sorted(cells.items()):
        row = {"mixer": mixer, "vocab": vocab, "kappa": kappa, "d_model": d, "d_state": n}
        for name, rs in by.items():
            best = max(rs, key=lambda r: r["result"]["test_acc"])
            row[name] = {"solved": any(r["result"]["solved"] for r in rs), "best_test_acc": best["result"]["test_acc"],
                         "runs": len(rs), "median_steps_to_stop": sorted(r["result"]["steps"] for r in rs)[len(rs) // 2],
                         "epochs_max": max(r["result"]["epochs"] for r in rs),
                         "truncated": any(r["spec"]["protocol"].get("cap_steps") and not r["result"]["early_stopped"]
                                          for r in rs),
                         "stopped_unsolved": sum(r["result"]["early_stopped"] and not r["result"]["solved"] for r in rs)}
        if "reference" in row:  # each budgeted variant's verdict against the reference's
            row["agree"] = {name: row[name]["solved"] == row["reference"]["solved"] for name in by if name != "reference"}
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--epochs", type=int, default=8, help="reference protocol truncated after this many epochs")
    ap.add_argument("--minutes", type=float, default=7.0, help="stop (checkpointing) after this long")
    ap.add_argument("--only", choices=("reference", *BUDGETED_ARMS), default=None)
    ap.add_argument("--kappas", type=csv_of(int), default=(4, 8), help="comma-separated subset of the cells' kappas")
    ap.add_argument("--d-multipliers", type=csv_of(float), default=(0.5, 1, 2),
                    help="comma-separated subset of the cells' d / bound")
    ap.add_argument("--pack-size", type=int, default=64)
    ap.add_argument("--out", default="results/train", help="directory of calibration.jsonl / calibration.json")
    args = ap.parse_args(argv)
    out = Path(args.out)
    store = ResultStore(out / "calibration.jsonl")
    specs = [s for name, g in grids(args.epochs, args.kappas, args.d_multipliers).items() if args.only in (None, name)
             for s in g.runs()]
    adopt(specs, store, [out / "fig2.jsonl"])  # the budgeted cells are fig2 cells: the runs fig2 already finished
    want = {run_key(s) for s in specs}
    # the budgeted variants first: they are cheap and give the first half of every comparison
    specs.sort(key=lambda s: s.protocol.name == "reference")
    counts = run_local(specs, store, device=args.device, pack_size=args.pack_size, minutes=args.minutes,
                       log=lambda m: print(m, flush=True))
    rows = verdicts([r for r in store.records() if r["key"] in want])  # this --epochs's reference, not another's
    for r in rows:
        print(r, flush=True)
    write_json_atomic(out / "calibration.json", {
        "command": "python -m verify.train.calibrate " + " ".join(argv if argv is not None else sys.argv[1:]),
        "counts": counts, "rows": rows,
        "agreement": {name: {"cells_compared": sum(name in r.get("agree", {}) for r in rows),
                             "cells_agreeing": sum(r.get("agree", {}).get(name, False) for r in rows)}
                      for name in BUDGETED_ARMS}})
    print(counts, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
