"""The Ray scheduler on CPU workers (one local Ray instance for the module): every missing run trained once into the
store, the time budget and a signal checkpoint the packs in flight, and the next sweep resumes them."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from verify.train.runner import run_sweep
from verify.train.spec import RunSpec, protocol, run_key
from verify.train.store import ResultStore
from verify.train.sweep import grid

ray = pytest.importorskip("ray", reason="ray not installed (the sweep extra: pip install 'mamba-constructions[sweep]')")
ROOT = Path(__file__).resolve().parents[1]
STEPS = 100_000  # packs that never finish by themselves within a test
LONG = protocol("smoke", max_steps=STEPS, eval_every=1000, stop_value=2.0)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance of 2 CPUs whose workers import this checkout; this process's signal handlers kept."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}})
    for s, h in handlers.items():
        signal.signal(s, h)
    yield
    ray.shutdown()


def _long_specs() -> list[RunSpec]:
    """Two packs (d = 8 and 16) of two runs each."""
    return [RunSpec(task="mqar", mixer="mamba", vocab=4, kappa=2, seq_len=8, d_model=d, d_state=4, seed=s, lr=0.03,
                    protocol=LONG) for d in (8, 16) for s in (0, 1)]


def _checkpoints(store: ResultStore) -> dict[str, dict]:
    return {p.name: torch.load(p, weights_only=False) for p in Path(f"{store.path}.ckpt").glob("*.pt")}


def test_ray_trains_every_missing_run_once(local_ray, tmp_path):
    specs = grid("smoke").runs()
    store = ResultStore(tmp_path / "ray.jsonl")
    store.append([{"key": run_key(specs[0]), "spec": specs[0].as_dict(), "result": {}, "device": "cpu"}])
    res = run_sweep(specs, store, device="cpu", pack_size=1)
    assert res.counts() == {"finished_now": 3, "remaining": 0, "total": 4, "checkpointed": 0, "failed": 0}
    keys = [r["key"] for r in store.records()]
    assert len(keys) == len(set(keys)) == 4 and {r["device"] for r in store.records()} == {"cpu"}
    assert run_sweep(specs, store, device="cpu", pack_size=1).finished_now == 0


def test_the_time_budget_and_a_signal_checkpoint_the_packs_and_the_next_sweep_resumes(local_ray, tmp_path):
    specs, store = _long_specs(), ResultStore(tmp_path / "long.jsonl")
    res = run_sweep(specs, store, device="cpu", pack_size=2, minutes=0.07)  # 4 s, the workers already started
    assert res.interrupted == 0 and res.checkpointed == 2 and res.remaining == 4 and not store.records()
    first = {n: c["state"]["step"] for n, c in _checkpoints(store).items()}
    assert len(first) == 2 and all(0 < s < STEPS for s in first.values())

    timer = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        res = run_sweep(specs, store, device="cpu", pack_size=2)
    finally:
        timer.cancel()
    assert res.interrupted == signal.SIGTERM and res.checkpointed == 2 and not store.records()
    second = {n: c["state"]["step"] for n, c in _checkpoints(store).items()}
    assert all(second[n] > first[n] for n in first), (first, second)  # went on from the checkpoints

    for name, ck in _checkpoints(store).items():  # the rerun starts where a checkpoint says: near the end
        ck["state"]["step"], ck["state"]["seconds"] = STEPS - 2, 1000.0
        torch.save(ck, Path(f"{store.path}.ckpt") / name)
    res = run_sweep(specs, store, device="cpu", pack_size=2)
    assert res.counts() == {"finished_now": 4, "remaining": 0, "total": 4, "checkpointed": 0, "failed": 0}
    recs = store.records()
    assert all(r["result"]["steps"] == STEPS and r["pack_seconds"] >= 1000 for r in recs)
    assert not _checkpoints(store)


def _vocab_long_pack(seq_len: int) -> list[RunSpec]:
    return [next(s for s in grid("recall-vocab-long").runs() if s.seq_len == seq_len)]


def test_pack_host_bytes_counts_the_splits_positions():
    """Koren et al.'s V x L grid at L = 4000: 240,000 train sequences at 28 bytes a position, 10,000 val and 10,000
    test sequences at 16, and 2 GiB for the process: 30.31 GB; the paper's MQAR protocol (10^5 train, 10^3 val, 10^5
    test sequences) at L = 64: 0.28 GB of data."""
    from verify.train.runner import pack_host_bytes

    assert pack_host_bytes(_vocab_long_pack(4000)) == 2 * 2 ** 30 + 28 * 240_000 * 4000 + 16 * 20_000 * 4000
    ref = RunSpec(task="mqar", mixer="mamba", vocab=16, kappa=4, seq_len=64, d_model=8, d_state=4, seed=0, lr=0.03,
                  protocol=protocol("reference"))
    assert pack_host_bytes([ref]) == 2 * 2 ** 30 + 28 * 100_000 * 64 + 16 * 101_000 * 64


def test_pack_host_bytes_bounds_the_measured_peak_of_drawing_a_pack_s_data():
    """Drawing a tenth of a V x L cell's splits (L = 2000, V = 3688: 24,000 train, 1,000 val and 1,000 test
    sequences) peaks at most at the estimate's data part, and above half of it (an upper bound, not a blanket). The
    peak is tracemalloc's, which counts numpy's buffers (the resident set's high-water mark would count the imports'
    peak too)."""
    from verify.train.runner import HOST_BASE_BYTES

    code = """if True:
        import tracemalloc
        from dataclasses import replace
        from verify.train.loop import datasets
        from verify.train.runner import pack_host_bytes
        from verify.train.sweep import grid
        s = next(s for s in grid("recall-vocab-long").runs() if s.seq_len == 2000 and s.vocab == 3688)
        s = replace(s, protocol=replace(s.protocol, train_samples=24_000, val_samples=1_000, test_samples=1_000))
        tracemalloc.start()
        datasets(s)
        print(tracemalloc.get_traced_memory()[1], pack_host_bytes([s]))"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    grown, estimate = map(int, out.stdout.split())
    data = estimate - HOST_BASE_BYTES
    print(f"peak {grown / 1e9:.3f} GB, estimate {data / 1e9:.3f} GB")
    assert data / 2 < grown <= data, (grown, data)


def test_each_ray_task_reserves_its_pack_s_host_memory_at_most_the_largest_node_s(local_ray):
    """RayExecutor.submit asks Ray for pack_host_bytes of host memory, capped at the largest node's memory resource
    (a pack larger than every node still runs, alone)."""
    from verify.train.runner import RayExecutor, pack_host_bytes

    run = RayExecutor("cpu", "packed", 1)
    asked = []

    class Task:
        def options(self, **kw):
            asked.append(kw["memory"])
            return self

        def remote(self, *args):
            return None

    run.remote = Task()
    assert run.node_memory() > 0  # the local node reports its memory resource
    run.node_memory = lambda: 10 * 2 ** 30
    small = _long_specs()[:2]
    run.submit(small, "unused.pt", None)
    run.submit(_vocab_long_pack(4000), "unused.pt", None)
    assert asked == [pack_host_bytes(small), 10 * 2 ** 30]
    run.close()
