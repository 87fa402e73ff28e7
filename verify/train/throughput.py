"""Packed vs one-at-a-time training throughput, side by side in one process: models x steps per second.

For each cell (one run shape: task, mixer, sizes; the protocol's batch) ``bench_cell`` times ``steps`` Adam steps of

* ``packed``: K models in one ``PackedModel`` (on CUDA the scan is the mixer's ``packed_cuda_scan``: mamba_ssm's
  ``selective_scan_fn``, ``mamba_chunk_scan_combined`` for Mamba-2),
* ``packed_graph`` (CUDA): the packed step captured once as a CUDA graph and replayed (``verify.train.step``; the
  sweeps' path on CUDA),
* ``single``: ``single_models`` models one after another, each alone: on CUDA a real ``mamba_ssm`` module per
  model where the mixer has one (``impl="module"``; the honest baseline), else the packed model with K = 1,
* ``packed_1`` (CUDA): the packed model with K = 1 (the same kernels unpacked),

after ``warmup`` untimed steps, with a device synchronize around each timing. Every rate is models x steps /
the measured seconds.

**Pack size sweep** (``sweep_sizes``). ``models`` lists the pack sizes K to time, and ``auto`` adds 1, 2, 4, ...
doubling while the rate grows: the doubling stops at the first K whose best rate (graph on CUDA) is less than
``1 + plateau`` times the rate at K / 2, at ``max_models``, or where the pack no longer fits the device's memory
(CUDA out of memory: recorded, and the sweep of that cell ends there). Each cell's ``best`` is its highest rate over
every K and path.

The command line, its cells and its JSON file: ``python -m experiments.train_bench``.
"""
from __future__ import annotations

import time
from dataclasses import replace

import torch

from common.errors import require
from verify.cli_support import out_of_memory
from verify.train import registry
from verify.train.loop import build_model, datasets
from verify.train.spec import RunSpec
from verify.train.step import WARMUP_STEPS, Adam, Stepper

CELL_FIELDS = ("task", "mixer", "vocab", "kappa", "seq_len", "d_model", "d_state", "gate", "conv", "proj",
               "task_args")


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


def describe(spec: RunSpec) -> str:
    """A cell's label: the form ``mixer:kappa:|V|:d:N`` (MQAR) or ``keep-nth:mixer:T:d:N`` (KEEP FIFTH, the paper's
    model) where there is one (``experiments.train_bench --cells`` parses it), else every field that tells cells
    apart."""
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
                if not out_of_memory(e):
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
