"""Several sweep processes on one store (``run_local(claim=True)``): every run trained exactly once, the largest
packs first, stale claims taken over."""
from __future__ import annotations

import multiprocessing as mp
import os
import socket
import time

from verify.train.claims import claim, pack_cost
from verify.train.spec import run_key
from verify.train.store import ResultStore
from verify.train.sweep import grid, pack_id, plan, run_local

SPECS = [s for s in grid("fig2").runs() if s.mixer == "mamba" and s.kappa == 4 and s.seed < 2]  # 5 packs of 6


def _fake_train(pack, **kw):
    """Stands in for train_pack: records which process trained the pack and when it began."""
    t = time.time()
    time.sleep(0.05)
    return [{"key": run_key(s), "spec": s.as_dict(), "pack_seconds": 0.05, "pid": os.getpid(), "t": t,
             "result": {"solved": False}} for s in pack]


def _worker(path):
    run_local(SPECS, ResultStore(path), train=_fake_train, claim=True)


def test_processes_sharing_a_store_train_every_run_once(tmp_path):
    path = tmp_path / "s.jsonl"
    procs = [mp.get_context("fork").Process(target=_worker, args=(path,)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    recs = ResultStore(path).records()
    keys = [r["key"] for r in recs]
    assert sorted(keys) == sorted(run_key(s) for s in SPECS) and len(set(keys)) == len(keys)
    assert len({r["pid"] for r in recs}) >= 2  # the work was shared
    for pid in {r["pid"] for r in recs}:  # each process took its packs largest first
        ds = [r["spec"]["d_model"] for r in sorted(recs, key=lambda r: r["t"]) if r["pid"] == pid]
        assert ds == sorted(ds, reverse=True)


def test_claim_order_is_largest_first_and_stale_claims_are_taken_over(tmp_path):
    packs = sorted(plan(SPECS, set(), 64), key=pack_cost, reverse=True)
    assert [p[0].d_model for p in packs] == sorted({s.d_model for s in SPECS}, reverse=True)
    store = tmp_path / "s.jsonl"
    pid = pack_id(packs[0])
    assert claim(store, pid) and claim(store, pid)  # new, then already ours
    f = tmp_path / "s.jsonl.claims" / pid
    f.write_text(f"{socket.gethostname()} {os.getppid()}")  # a live process holds it
    assert not claim(store, pid)
    dead = mp.get_context("fork").Process(target=int)
    dead.start()
    dead.join()
    f.write_text(f"{socket.gethostname()} {dead.pid}")  # its holder is gone: stale
    assert claim(store, pid) and f.read_text().endswith(f" {os.getpid()}")
    f.write_text(f"another-host {dead.pid}")  # another machine's claim is respected
    assert not claim(store, pid)


def test_claiming_sweep_skips_packs_held_by_a_live_process(tmp_path):
    store = ResultStore(tmp_path / "s.jsonl")
    held = sorted(plan(SPECS, set(), 64), key=pack_cost, reverse=True)[0]
    (tmp_path / "s.jsonl.claims").mkdir()
    (tmp_path / "s.jsonl.claims" / pack_id(held)).write_text(f"{socket.gethostname()} {os.getppid()}")
    counts = run_local(SPECS, store, train=_fake_train, claim=True)
    assert counts == {"finished_now": len(SPECS) - len(held), "remaining": len(held), "total": len(SPECS)}


def test_mamba2_packs_are_ordered_as_large_whatever_their_d():
    """Mamba-2's small-d packs took as long as Mamba's largest on the H100: they must not be left for last."""
    f2 = {(s.mixer, s.kappa, s.d_model): s for s in grid("fig2").runs() if s.seed == 0 and s.lr == 0.003}
    cost = lambda k: pack_cost([f2[k]])  # noqa: E731
    assert cost(("mamba2", 4, 8)) > cost(("mamba", 32, 78)) > cost(("mamba", 4, 22))



def test_a_pack_finished_by_a_process_that_has_exited_is_not_trained_again(tmp_path):
    """The H100 pool of the sixth session trained one pack twice: the process that finished it exited, so its claim
    turned stale, and a process whose plan predated the finish took the claim over. Claimed packs already stored
    are skipped."""
    store = ResultStore(tmp_path / "s.jsonl")
    packs = sorted(plan(SPECS, set(), 64), key=pack_cost, reverse=True)
    dead = mp.get_context("fork").Process(target=int)
    dead.start()
    dead.join()
    trained = []

    def train(pack, **kw):
        if not trained:  # meanwhile another process finishes the smallest pack, and exits
            store.append(_fake_train(packs[-1]))
            (tmp_path / "s.jsonl.claims" / pack_id(packs[-1])).write_text(f"{socket.gethostname()} {dead.pid}")
        trained.append(pack[0].d_model)
        return _fake_train(pack)

    run_local(SPECS, store, train=train, claim=True)
    assert trained == [p[0].d_model for p in packs[:-1]]
    keys = [r["key"] for r in store.records()]
    assert len(keys) == len(set(keys)) == len(SPECS)
