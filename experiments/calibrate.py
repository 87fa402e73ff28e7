"""Calibrate the budgeted protocols against the reference one on a few MQAR cells (run on a GPU, resumable).

Cells: Mamba (gate off), |V| = 128, T = 100, kappa in {4, 8}, N = 2 kappa (Fig. 2), d at half, once and twice the
bound kappa + ceil(log2 |V|); 7 seeds. The reference protocol (lr 0.03, batch 16, cosine over 600 epochs, stop at val
loss < 1e-6) is truncated after ``--epochs`` epochs (``Protocol.cap_steps``; the schedule still spans 600 epochs, so
the run is the reference run's prefix); the budgeted ones (``budgeted``: stop at 100% validation accuracy;
``budgeted-loss``: stop at validation loss < 1e-6, the reference's rule) run in full (3 lrs x 7 seeds). All go to one
store; every run trains what is missing (within ``--minutes`` where given) and then prints and writes the verdict table
(``calibration.json``): per cell, solved (best of seeds [x lrs], 100% test accuracy) under each protocol, and
whether they agree. A truncated reference that solves is a valid verdict; one that fails only says "not within E
epochs" (``reference.truncated`` in the table), so widen ``--epochs`` on the disagreeing cells before concluding.

    python -m experiments.calibrate --device cuda --out results/train

Packs run on Ray as in ``verify-constructions sweep`` (``--no-ray``: one after another in this process); runs of
another device type than the store's need ``--allow-mixed-devices``.
"""
from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import torch

from common.io import write_json_atomic
from common.errors import RequirementError
from verify.train.cli import HelpWithDefaults, OneLineParser, csv_of, device_arg, finite, int_at_least, require_device
from verify.train.runner import _ray, run_sweep
from verify.train.spec import run_key
from verify.train.store import ResultStore, check_target
from verify.train.sweep import Grid, adopt, calibration_reference


MODULE = "experiments.calibrate"
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
    ap = OneLineParser(description=__doc__.split("\n")[0], formatter_class=HelpWithDefaults,
                       allow_abbrev=False)
    ap.add_argument("--device", type=device_arg, default="cuda" if torch.cuda.is_available() else "cpu",
                    help="cpu, cuda or cuda:N")
    ap.add_argument("--epochs", type=int_at_least(1), default=8,
                    help="reference protocol truncated after this many epochs")
    ap.add_argument("--minutes", type=finite(0, False), default=None,
                    help="time budget: checkpoint the packs in flight after this many minutes (default: none)")
    ap.add_argument("--only", choices=("reference", *BUDGETED_ARMS), default=None, help="train one arm only")
    ap.add_argument("--kappas", type=csv_of(int, 1), default=(4, 8), help="comma-separated subset of the cells' kappas")
    ap.add_argument("--d-multipliers", type=csv_of(float, 0), default=(0.5, 1, 2),
                    help="comma-separated subset of the cells' d / bound")
    ap.add_argument("--pack-size", type=int_at_least(1), default=64, help="at most this many runs trained as one pack")
    ap.add_argument("--out", default="results/train", help="directory of calibration.jsonl / calibration.json")
    ap.add_argument("--no-ray", action="store_true", help="train the packs one after another in this process")
    ap.add_argument("--allow-mixed-devices", action="store_true",
                    help="let runs of this device type go into a store that holds runs of another")
    args = ap.parse_args(argv)
    try:
        return _calibrate(args, argv)
    except RequirementError as e:
        ap.error(str(e))


def _calibrate(args, argv) -> int:
    out = Path(args.out)
    store = ResultStore(out / "calibration.jsonl")
    specs = [s for name, g in grids(args.epochs, args.kappas, args.d_multipliers).items() if args.only in (None, name)
             for s in g.runs()]
    want = {run_key(s) for s in specs}
    training = args.minutes != 0 and bool(want - store.keys())
    if training:
        require_device(args.device)
        if not args.no_ray:
            _ray()
    check_target(store.path, args.device if training else None, "--out", args.allow_mixed_devices)
    adopt(specs, store, [out / "fig2.jsonl"], device=args.device)  # the budgeted cells are fig2 cells
    res = run_sweep(specs, store, device=args.device, pack_size=args.pack_size, minutes=args.minutes,
                    executor="inline" if args.no_ray else "ray", report=lambda m: print(m, flush=True))
    if res.interrupted:
        print("calibrate: interrupted; run the same command again to resume", file=sys.stderr)
        return 128 + res.interrupted
    counts = res.counts()
    rows = verdicts([r for r in store.records() if r["key"] in want])  # this --epochs's reference, not another's
    for r in rows:
        print(r, flush=True)
    write_json_atomic(out / "calibration.json", {
        "command": f"python -m {MODULE} " + " ".join(argv if argv is not None else sys.argv[1:]),
        "counts": counts, "rows": rows,
        "agreement": {name: {"cells_compared": sum(name in r.get("agree", {}) for r in rows),
                             "cells_agreeing": sum(r.get("agree", {}).get(name, False) for r in rows)}
                      for name in BUDGETED_ARMS}})
    print(counts, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
