"""Packed vs one-at-a-time training throughput, side by side in one process: models x steps per second.

Per cell, model-steps per second of the packed paths (eager, and on CUDA a replayed CUDA graph) over a sweep of pack
sizes, and of ``--single-models`` models trained one after another (``verify.train.throughput`` times them and
describes the paths). ``--steps`` Adam steps are timed after ``--warmup`` untimed ones.

**Pack size sweep.** ``--models`` lists the pack sizes K to time, and ``auto`` adds 1, 2, 4, ... doubling while the
rate grows: the doubling stops at the first K whose best rate (graph on CUDA) is less than ``1 + --plateau`` times
the rate at K / 2, at ``--max-models``, or where the pack no longer fits the device's memory (CUDA out of memory:
recorded, and the sweep of that cell ends there). Each cell's ``best`` is its highest rate over every K and path.

**Cells.** ``--cells`` takes ``mixer:kappa:|V|:d:N`` (MQAR, T = 100) and ``keep-nth:mixer:T:d:N`` (KEEP FIFTH, |V| =
128, +PE, the paper's architecture: conv, gate and in/out projections off, as the grid ``keepnth-pe-bare``);
``--grid NAME`` (repeatable) adds one cell per run shape of a grid file (its runs with seed and lr dropped), which
``--where FIELD=V1,V2`` (repeatable, on RunSpec fields such as seq_len, d_model, d_state, mixer, kappa, vocab)
narrows. A cell's shape is its grid's; the protocol is ``--protocol``'s (its batch size; 4096 training sequences,
the rate does not depend on their number). The paper's protocol is ``--protocol reference`` (batch 16).

Writes one JSON file (atomically) after every cell; a rerun with the same settings skips the cells the file holds
(a file of other settings is refused unless ``--overwrite``), so a cut run resumes. ``--minutes M`` starts no cell
after M minutes (a cell begun runs to its end).

    python -m experiments.train_bench --device cuda --protocol reference --models 3,7,auto --grid keepnth-pe-bare \\
        --where seq_len=10,30,50 --out results/train/bench_keepnth.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from common.errors import RequirementError, require
from common.io import write_json_atomic
from verify import cli_support as cli
from verify.train import registry
from verify.train.spec import PROTOCOLS, RunSpec, pack_key, protocol
from verify.train.sweep import grid
from verify.train.throughput import bench_cell, describe

MODULE = "experiments.train_bench"
DEFAULT_CELLS = ("mamba:4:128:11:8", "mamba:16:128:23:32", "mamba:32:128:39:64")
BENCH_TRAIN_SAMPLES = 4096


# --- cells ------------------------------------------------------------------------------------------------------------


def parse_cell(text: str, proto) -> RunSpec:
    """The run shape of ``mixer:kappa:|V|:d:N`` (MQAR) or ``keep-nth:mixer:T:d:N`` (KEEP FIFTH, paper's model)."""
    parts = text.split(":")
    require(len(parts) == 5, f"--cells {text!r}: a cell is mixer:kappa:|V|:d:N or keep-nth:mixer:T:d:N")
    try:
        if parts[0] == "keep-nth":
            mixer, (T, d, n) = parts[1], map(int, parts[2:])
            spec = RunSpec(task="keep-nth", mixer=mixer, vocab=128, seq_len=T, d_model=d, d_state=n, seed=0,
                           lr=proto.lrs[0], protocol=proto, gate=False, conv=False, proj=False,
                           task_args=(("n", 5), ("pe", True)))
        else:
            mixer, (kappa, vocab, d, n) = parts[0], map(int, parts[1:])
            spec = RunSpec(task="mqar", mixer=mixer, kappa=kappa, vocab=vocab, d_model=d, d_state=n, seed=0,
                           lr=proto.lrs[0], protocol=proto, gate=registry.mixer(mixer).gate_default)
    except ValueError:
        raise RequirementError(f"--cells {text!r}: kappa, |V|, T, d and N must be integers") from None
    try:
        registry.validate(spec)
    except RequirementError as e:
        raise RequirementError(f"--cells {text!r}: {e}") from None
    return spec


def grid_cells(name: str, where: dict[str, set[str]], proto) -> list[RunSpec]:
    """One spec per run shape of grid ``name`` (seed and lr dropped) whose fields match ``where`` (field -> the
    accepted values as typed), in grid order, under protocol ``proto``."""
    for f in where:
        require(f in RunSpec.__dataclass_fields__ and f not in ("seed", "lr", "protocol"),
                f"--where {f}=...: not a RunSpec field of a cell (e.g. seq_len, d_model, d_state, mixer, kappa)")
    seen: dict[str, RunSpec] = {}
    for s in grid(name).runs():
        if all(str(getattr(s, f)) in vals for f, vals in where.items()):
            s = replace(s, seed=0, lr=proto.lrs[0], protocol=proto)
            seen.setdefault(pack_key(s), s)
    require(bool(seen), f"--grid {name}: no run shape matches --where {where}")
    return list(seen.values())


# --- command line -----------------------------------------------------------------------------------------------------


def _models(text: str) -> list:
    items = text.split(",")
    out = []
    for item in items:
        if item == "auto":
            out.append("auto")
            continue
        try:
            out.append(cli.integer(1)(item))
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"must be comma-separated pack sizes >= 1 and/or auto, got {text!r}") \
                from None
    return out


def _where(text: str) -> tuple[str, set[str]]:
    field, eq, values = text.partition("=")
    if not eq or not field or not values:
        raise argparse.ArgumentTypeError(f"must be FIELD=V1,V2,..., got {text!r}")
    return field, set(values.split(","))


def cells(args, proto) -> list[RunSpec]:
    """The ``--cells`` cells, then the ``--grid`` cells (narrowed by ``--where``)."""
    require(not args.where or args.grid, "--where narrows the cells of --grid; give a --grid")
    specs = [parse_cell(c, proto) for c in args.cells.split(",")] if args.cells else []
    where = dict(args.where or [])
    return specs + [s for name in args.grid or () for s in grid_cells(name, where, proto)]


def main(argv=None) -> int:
    ap = cli.Parser(prog=f"python -m {MODULE}", description=__doc__.split("\n")[0], progress=False)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--protocol", default="budgeted", choices=sorted(PROTOCOLS),
                    help="whose batch size the steps use (reference: the paper's, batch 16)")
    ap.add_argument("--models", type=_models, default=[64],
                    help="pack sizes K, comma-separated; auto: 1, 2, 4, ... while the rate grows")
    ap.add_argument("--plateau", type=cli.real(0), default=0.1,
                    help="auto stops at the first doubling that gains less than this fraction")
    ap.add_argument("--max-models", type=cli.integer(1), default=65536, help="the largest pack auto tries")
    ap.add_argument("--single-models", type=cli.integer(1), default=8, help="how many models to time one at a time")
    ap.add_argument("--steps", type=cli.integer(1), default=30)
    ap.add_argument("--warmup", type=cli.integer(0), default=3)
    ap.add_argument("--cells", default=None, help="mixer:kappa:|V|:d:N or keep-nth:mixer:T:d:N, comma-separated "
                                                  f"(without --grid: {','.join(DEFAULT_CELLS)})")
    ap.add_argument("--grid", action="append", help="a grid file's run shapes as cells (repeatable)")
    ap.add_argument("--where", action="append", type=_where, help="FIELD=V1,V2: only --grid cells with these values")
    ap.add_argument("--minutes", type=cli.real(0, lo_open=True), default=None,
                    help="start no cell after this many minutes (the cells left: the same command resumes them)")
    ap.add_argument("--out", default=None, help="JSON file to write (resumed where its settings match)")
    ap.add_argument("--overwrite", action="store_true", help="replace an --out file of other settings")
    args = ap.parse_args(argv)
    if not args.grid and args.cells is None:
        args.cells = ",".join(DEFAULT_CELLS)
    if args.device == "cpu":
        torch.set_num_threads(1)
    else:
        require(torch.cuda.is_available(), f"--device {args.device}: CUDA is not available here")
    proto = protocol(args.protocol, train_samples=BENCH_TRAIN_SAMPLES, val_samples=16, test_samples=16)
    specs = cells(args, proto)
    settings = {"device": args.device, "protocol": args.protocol, "batch": proto.batch_size, "steps": args.steps,
                "warmup": args.warmup, "models": args.models, "plateau": args.plateau, "max_models": args.max_models,
                "single_models": args.single_models}
    out = Path(args.out) if args.out else None
    rows = []
    if out is not None and cli.resumable_file(out, settings, "--out", args.overwrite):
        rows = json.loads(out.read_text())["rows"]
    done = {r["cell"] for r in rows}
    command = f"python -m {MODULE} " + " ".join(argv if argv is not None else sys.argv[1:])
    deadline = None if args.minutes is None else time.time() + 60 * args.minutes
    left = [s for s in specs if describe(s) not in done]
    for i, spec in enumerate(left):
        if deadline is not None and time.time() > deadline:
            print(f"bench: --minutes {args.minutes:g} passed; {len(left) - i} cells left (the same command resumes "
                  "them)", file=sys.stderr, flush=True)
            break
        r = bench_cell(spec, args.models, args.steps, args.warmup, args.device, args.single_models, args.plateau,
                       args.max_models)
        print(json.dumps({k: r[k] for k in ("cell", "best", "stopped", "speedup")}), flush=True)
        rows.append(r)
        done.add(r["cell"])
        if out is not None:  # rewritten (atomically) after every cell, so a cut run keeps the cells it finished
            dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
            write_json_atomic(out, {"command": command, "settings": settings, "device_name": dev,
                                    "torch": torch.__version__, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run_main(main))
