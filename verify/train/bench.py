"""Packed vs one-at-a-time training throughput, side by side in one process: models x steps per second.

For each cell (one run shape: task, mixer, sizes; the protocol's batch) it times ``--steps`` Adam steps of

* ``packed``: K models in one ``PackedModel`` (on CUDA the scan is the mixer's ``packed_cuda_scan``: mamba_ssm's
  ``selective_scan_fn``, ``mamba_chunk_scan_combined`` for Mamba-2),
* ``packed_graph`` (CUDA): the packed step captured once as a CUDA graph and replayed (``verify.train.step``; the
  sweeps' path on CUDA),
* ``single``: ``--single-models`` models one after another, each alone: on CUDA a real ``mamba_ssm`` module per
  model where the mixer has one (``impl="module"``; the honest baseline), else the packed model with K = 1,
* ``packed_1`` (CUDA): the packed model with K = 1 (the same kernels unpacked),

after ``--warmup`` untimed steps, with a device synchronize around each timing. Every rate is models x steps /
the measured seconds.

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

    python -m verify.train.bench --device cuda --protocol reference --models 3,7,auto --grid keepnth-pe-bare \
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
from verify.train.loop import build_model, datasets
from verify.train.spec import PROTOCOLS, RunSpec, pack_key, protocol
from verify.train.step import WARMUP_STEPS, Adam, Stepper

DEFAULT_CELLS = ("mamba:4:128:11:8", "mamba:16:128:23:32", "mamba:32:128:39:64")
CELL_FIELDS = ("task", "mixer", "vocab", "kappa", "seq_len", "d_model", "d_state", "gate", "conv", "proj",
               "task_args")
BENCH_TRAIN_SAMPLES = 4096


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_models(specs: list[RunSpec], device: str, impl: str, steps: int, warmup: int, graph: bool = False) -> float:
    """Seconds for ``steps`` steps of the models in ``specs`` trained together (one model if impl is module); with
    ``graph`` (CUDA, packed) the step is a replayed CUDA graph (``verify.train.step``), captured during the warmup."""
    model = build_model(specs, device, impl)
    opt = Adam(model.params, model.masks, model.stacked)
    train = tuple(x.to(device) for x in datasets(specs[0])["train"])
    stepper = Stepper(model, opt, train, [s.seed for s in specs], specs[0].protocol, [s.lr for s in specs], 0,
                      graph=graph)
    warmup = max(warmup, WARMUP_STEPS + 1) if graph else warmup
    for i in range(warmup):
        stepper(i)
    _sync(device)
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        stepper(i)
    _sync(device)
    return time.perf_counter() - t0


def rate(models: int, steps: int, seconds: float) -> dict:
    return {"seconds": seconds, "model_steps_per_s": models * steps / seconds}


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
    from verify.train.sweep import grid

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


def describe(spec: RunSpec) -> str:
    """A cell's label: the ``--cells`` form where there is one, else every field that tells cells apart."""
    if spec.task == "mqar" and spec.seq_len == 100 and spec.gate == registry.mixer(spec.mixer).gate_default \
            and spec.conv and spec.proj and not spec.task_args:
        return f"{spec.mixer}:{spec.kappa}:{spec.vocab}:{spec.d_model}:{spec.d_state}"
    if spec.task == "keep-nth" and spec.vocab == 128 and not (spec.gate or spec.conv or spec.proj) \
            and spec.task_args == (("n", 5), ("pe", True)):
        return f"keep-nth:{spec.mixer}:{spec.seq_len}:{spec.d_model}:{spec.d_state}"
    args = ",".join(f"{k}={v}" for k, v in spec.task_args)
    return (f"{spec.task}:{spec.mixer}:V{spec.vocab}:k{spec.kappa}:T{spec.seq_len}:d{spec.d_model}:N{spec.d_state}"
            f":gate={int(spec.gate)}:conv={int(spec.conv)}:proj={int(spec.proj)}" + (f":{args}" if args else ""))


def cell_fields(spec: RunSpec) -> dict:
    d = spec.as_dict()
    return {f: d[f] for f in CELL_FIELDS}


# --- the pack-size sweep ----------------------------------------------------------------------------------------------


def plateaued(previous: float, current: float, plateau: float) -> bool:
    """Whether doubling the pack stopped paying: ``current`` (rate at 2K) < (1 + plateau) x ``previous`` (at K)."""
    return current < (1 + plateau) * previous


def best_rate(point: dict) -> float:
    return max(point[p]["model_steps_per_s"] for p in ("packed", "packed_graph") if p in point)


def _out_of_memory(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def time_pack(spec: RunSpec, k: int, steps: int, warmup: int, device: str) -> dict:
    """One point of the sweep: K = ``k`` models of ``spec``'s shape (seeds 0..k-1), eager and (CUDA) graph."""
    specs = [replace(spec, seed=s) for s in range(k)]
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    point = {"models": k, "packed": rate(k, steps, time_models(specs, device, "packed", steps, warmup))}
    if cuda:
        if registry.mixer(spec.mixer).graph_safe:
            point["packed_graph"] = rate(k, steps, time_models(specs, device, "packed", steps, warmup, graph=True))
        point["peak_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    return point


def sweep_sizes(spec: RunSpec, models: list, steps: int, warmup: int, device: str, plateau: float,
                max_models: int) -> tuple[list[dict], str]:
    """The sweep's points (ascending K) and why it ended."""
    fixed = sorted({k for k in models if k != "auto"})
    points: dict[int, dict] = {}
    stopped = "the sizes asked for"

    def measure(k: int) -> bool:
        if k not in points:
            try:
                points[k] = time_pack(spec, k, steps, warmup, device)
            except RuntimeError as e:
                if not _out_of_memory(e):
                    raise
                torch.cuda.empty_cache()
                return False
        return True

    for k in fixed:
        if not measure(k):
            stopped = f"out of memory at {k} models"
            break
    if "auto" in models and not stopped.startswith("out of memory"):
        k, prev = 1, None
        while True:
            if k > max_models:
                stopped = f"--max-models {max_models}"
                break
            if not measure(k):
                stopped = f"out of memory at {k} models"
                break
            r = best_rate(points[k])
            if prev is not None and plateaued(prev, r, plateau):
                stopped = f"plateau: {k} models ran less than {1 + plateau:g} x the rate of {k // 2}"
                break
            prev, k = r, 2 * k
    return [points[k] for k in sorted(points)], stopped


def bench_cell(spec: RunSpec, models: list, steps: int, warmup: int, device: str, single_models: int,
               plateau: float = 0.1, max_models: int = 65536) -> dict:
    cuda = torch.device(device).type == "cuda"
    out = {"cell": describe(spec), "spec": cell_fields(spec), "steps": steps, "batch": spec.protocol.batch_size,
           "device": device}
    out["sweep"], out["stopped"] = sweep_sizes(spec, models, steps, warmup, device, plateau, max_models)
    require(bool(out["sweep"]), f"cell {out['cell']}: not one pack size fits the device's memory")
    best = max(((p["models"], path, p[path]["model_steps_per_s"]) for p in out["sweep"]
                for path in ("packed", "packed_graph") if path in p), key=lambda x: x[2])
    out["best"] = {"models": best[0], "path": best[1], "model_steps_per_s": best[2]}
    specs = [replace(spec, seed=s) for s in range(single_models)]
    module = cuda and registry.mixer(spec.mixer).cuda_module is not None
    t1 = sum(time_models([s], device, "module" if module else "packed", steps, warmup) for s in specs)
    impl = f"mamba_ssm module ({spec.mixer}, verify.train.registry)" if module else "packed K=1"
    out["single"] = {"impl": impl, "models_timed": single_models, **rate(single_models, steps, t1)}
    if module:
        tp = sum(time_models([s], device, "packed", steps, warmup) for s in specs)
        out["packed_1"] = {"models_timed": single_models, **rate(single_models, steps, tp)}
    out["speedup"] = out["best"]["model_steps_per_s"] / out["single"]["model_steps_per_s"]
    return out


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
    ap = cli.Parser(prog="python -m verify.train.bench", description=__doc__.split("\n")[0], progress=False)
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
    command = "python -m verify.train.bench " + " ".join(argv if argv is not None else sys.argv[1:])
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
