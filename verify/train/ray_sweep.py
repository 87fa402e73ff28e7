"""Run a sweep on Ray (optional extra: ``pip install 'mamba-constructions[sweep]'``).

Local by default (``ray.init()`` starts a one-machine cluster); ``address`` joins an existing cluster (``"auto"`` or
``"ray://host:10001"``). Each pack is one Ray task asking for one GPU (``device="cuda"``), so Ray runs one worker per
GPU across every machine of the cluster; with ``device="cpu"`` each task asks for one CPU. Workers return their
records and only the driver appends them to the store, so the store can sit on the driver's disk and the
append-only / resume semantics are those of ``run_local`` (a pack lost with a worker is simply trained again by the
next call). Packs are planned exactly as ``run_local`` plans them. A local cluster's workers import this checkout
(PYTHONPATH); on a multi-machine cluster, every node needs the package installed (or pass Ray a ``working_dir``
runtime env yourself and call ``ray.init`` before ``run_ray``).
"""
from __future__ import annotations

from constructions.errors import RequirementError
from verify.train.spec import RunSpec
from verify.train.store import ResultStore
from verify.train.sweep import plan


def _ray():
    try:
        import ray
    except ImportError:
        raise RequirementError("the Ray sweep needs ray (pip install 'mamba-constructions[sweep]')") from None
    return ray


def _train_remote(spec_dicts: list[dict], device: str, impl: str) -> list[dict]:
    import torch

    from verify.train.loop import train_pack

    if device == "cpu":
        torch.set_num_threads(1)
    res = train_pack([RunSpec.from_dict(d) for d in spec_dicts], device=device, impl=impl)
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in res]


def run_ray(specs: list[RunSpec], store: ResultStore, device: str = "cuda", impl: str = "packed",
            pack_size: int = 64, address: str | None = None, num_cpus: int | None = None, log=None) -> dict:
    ray = _ray()
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            import os

            root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": path}})  # workers import this checkout
    gpu = device == "cuda"
    remote = ray.remote(num_gpus=1 if gpu else 0, num_cpus=1, max_retries=1)(_train_remote)
    packs = plan(specs, store.keys(), 1 if impl == "module" else pack_size)
    pending = {remote.remote([s.as_dict() for s in p], device, impl): p for p in packs}
    finished = 0
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        pack = pending.pop(done[0])
        res = ray.get(done[0])
        store.append(res)
        finished += len(res)
        if log:
            log(f"{len(pending)} packs left; finished {len(res)} runs ({pack[0].mixer} d={pack[0].d_model})")
    return {"finished_now": finished, "remaining": sum(len(p) for p in plan(specs, store.keys(), pack_size)),
            "total": len(specs)}
