"""Packed vs one-at-a-time training throughput, side by side in one process: models x steps per second.

For each cell (mixer, kappa, |V|, d, N; the budgeted protocol's batch) it times ``--steps`` Adam steps of

* ``packed``: K models in one ``PackedModel`` (on CUDA the scan is the mixer's ``packed_cuda_scan``: mamba_ssm's
  ``selective_scan_fn``, ``mamba_chunk_scan_combined`` for Mamba-2),
* ``single``: the same K models one after another, each alone: on CUDA a real ``mamba_ssm.Mamba`` module per model
  (``impl="module"``; the honest baseline), on CPU the packed model with K = 1,
* ``packed-1`` (CUDA): the packed model with K = 1 (the same kernels unpacked),
* ``packed_graph`` (CUDA): the packed step captured once as a CUDA graph and replayed (``verify.train.step``; the
  sweeps' path on CUDA),

after ``--warmup`` untimed steps, with a device synchronize around each timing. Writes one JSON file (atomically).

    python -m verify.train.bench --device cuda --models 64 --steps 30 --out results/train/bench_h100.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from common.io import write_json_atomic
from verify.train.loop import build_model, datasets
from verify.train.spec import RunSpec, protocol
from verify.train.step import WARMUP_STEPS, Adam, Stepper

DEFAULT_CELLS = ("mamba:4:128:11:8", "mamba:16:128:23:32", "mamba:32:128:39:64")


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


def bench_cell(cell: str, models: int, steps: int, warmup: int, device: str, single_models: int) -> dict:
    mixer, kappa, vocab, d, n = cell.split(":")
    proto = protocol("budgeted", train_samples=4096)
    specs = [RunSpec(task="mqar", mixer=mixer, kappa=int(kappa), vocab=int(vocab), d_model=int(d), d_state=int(n),
                     seed=s, lr=1e-3, protocol=proto) for s in range(models)]
    cuda = torch.device(device).type == "cuda"
    out = {"cell": cell, "models": models, "steps": steps, "batch": proto.batch_size, "device": device}
    t = time_models(specs, device, "packed", steps, warmup)
    out["packed"] = {"seconds": t, "model_steps_per_s": models * steps / t}
    if cuda:
        tg = time_models(specs, device, "packed", steps, warmup, graph=True)
        out["packed_graph"] = {"seconds": tg, "model_steps_per_s": models * steps / tg}
    m1 = min(models, single_models)
    t1 = sum(time_models([s], device, "module" if cuda else "packed", steps, warmup) for s in specs[:m1])
    impl = f"mamba_ssm module ({mixer}, verify.train.registry)" if cuda else "packed K=1"
    out["single"] = {"impl": impl, "models_timed": m1,
                     "seconds": t1, "model_steps_per_s": m1 * steps / t1}
    if cuda:
        tp = sum(time_models([s], device, "packed", steps, warmup) for s in specs[:m1])
        out["packed_1"] = {"models_timed": m1, "seconds": tp, "model_steps_per_s": m1 * steps / tp}
    out["speedup"] = out["packed"]["model_steps_per_s"] / out["single"]["model_steps_per_s"]
    if cuda:
        out["speedup_graph"] = out["packed_graph"]["model_steps_per_s"] / out["single"]["model_steps_per_s"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", type=int, default=64, help="K, models packed together")
    ap.add_argument("--single-models", type=int, default=8, help="how many of the K to time one at a time")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--cells", default=",".join(DEFAULT_CELLS), help="mixer:kappa:|V|:d:N, comma-separated")
    ap.add_argument("--out", default=None, help="JSON file to write")
    args = ap.parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(1)
    rows = []
    for cell in args.cells.split(","):
        r = bench_cell(cell, args.models, args.steps, args.warmup, args.device, args.single_models)
        print(json.dumps(r), flush=True)
        rows.append(r)
        if args.out:  # rewritten (atomically) after every cell, so a cut run keeps the cells it finished
            from pathlib import Path

            dev = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
            write_json_atomic(Path(args.out), {"command": "python -m verify.train.bench " + " ".join(
                argv if argv is not None else sys.argv[1:]), "device_name": dev, "torch": torch.__version__,
                "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
