"""Sweeps: typed grids of runs, the predefined grids of the papers, a resumable local runner, tightness tables.

**Bound convention** (the paper's bound lines cannot be recovered, selectivity.md §9.1; logs base 2, rounded up):

=========== ============================== =====================  =================================
mixer       d bound                        N of the theorem       N in Fig. 2 / 3
=========== ============================== =====================  =================================
mamba       kappa + ceil(log2 |V|)         kappa                  2 kappa
mamba2      ceil(log2 kappa)+ceil(log2|V|) ceil(log2 kappa)       ceil(8 ln kappa)
s4d         kappa ceil(log2 |V|)           1                      4
delta-top   2 |V|                          |V|                    4 |V|  (induction heads)
=========== ============================== =====================  =================================

The d grid around a bound b is ``ceil(m b)`` for m in ``D_MULTIPLIERS`` (a factor 2 apart, b itself included), at
least 2, rounded up to a multiple of ``D_MULTIPLE[mixer]`` (Mamba-2's heads need it). A cell's verdict is the best
over seeds and learning rates (the paper: best of 7 seeds for MQAR, 5 for induction heads; mean of 3 for KEEP n-TH).

Running: ``run_local`` trains the missing runs of a grid pack by pack (runs that differ only in seed and lr share a
pack, at most ``pack_size`` each, fewer where a mixer's scan tensors would pass ``PACK_BYTES``), appends each
finished pack to the store, and stops at ``minutes``, leaving a checkpoint next to the store (``<store>.ckpt/``) that
the next call resumes. With ``claim=True`` several processes share one store, each taking the next unclaimed pack,
largest first (``verify.train.claims``).
"""
from __future__ import annotations

import hashlib
import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from constructions.errors import require
from verify.train import registry
from verify.train.spec import RunSpec, pack_key, protocol, run_key
from verify.train.store import ResultStore

D_MULTIPLIERS = (0.25, 0.5, 1.0, 2.0, 4.0)
PACK_BYTES = 4 << 30  # a pack's scan tensors (registry.Mixer.scan_bytes) stay below this: a pool of ten fits an H100
D_MULTIPLE = {"mamba2": 8}
GATE_DEFAULT = {"mamba": False, "mamba2": False, "s4d": True, "delta-top": False, "mamba-delta-t": False}


def _lg(x: float) -> int:
    return max(1, math.ceil(math.log2(x)))


def d_bound(mixer: str, kappa: int, vocab: int, task: str = "mqar") -> int:
    """The d a construction needs, in the convention of the module docstring (induction heads: 2|V| for every mixer,
    the line of Fig. 3)."""
    if task == "induction-heads":
        return 2 * vocab
    if task != "mqar":
        raise ValueError(f"no d bound for task {task!r}")
    if mixer == "mamba":
        return kappa + _lg(vocab)
    if mixer == "mamba2":
        return _lg(kappa) + _lg(vocab)
    if mixer == "s4d":
        return kappa * _lg(vocab)
    if mixer in ("delta-top", "mamba-delta-t"):
        return 2 * vocab
    raise ValueError(f"no d bound for mixer {mixer!r}")


def n_base(mixer: str, kappa: int, vocab: int, rule: str, task: str = "mqar") -> float:
    """State size before the multiplier: 'fig2' (the figure's N), 'a3' (the theorem's N, unrounded), 'vocab' (|V|)."""
    if task == "induction-heads" and rule == "fig2":
        return 4 * vocab
    if rule == "vocab":
        return vocab
    if rule == "fig2":
        return {"mamba": 2 * kappa, "mamba2": 8 * math.log(kappa), "s4d": 4, "delta-top": 4 * vocab, "mamba-delta-t": 4 * vocab}[mixer]
    if rule == "a3":
        return {"mamba": kappa, "mamba2": math.log(kappa), "s4d": 1, "delta-top": vocab, "mamba-delta-t": vocab}[mixer]
    raise ValueError(f"unknown state rule {rule!r}")


def d_grid(mixer: str, kappa: int, vocab: int, multipliers=D_MULTIPLIERS, task: str = "mqar") -> list[int]:
    b, q = d_bound(mixer, kappa, vocab, task), D_MULTIPLE.get(mixer, 1)
    return sorted({max(2, q * math.ceil(math.ceil(m * b) / q)) for m in multipliers})


@dataclass(frozen=True)
class Grid:
    """A sweep as a typed config; ``runs()`` expands it. Empty ``d_models`` / ``d_states`` mean "by rule"."""

    name: str
    task: str
    mixers: tuple[str, ...]
    vocabs: tuple[int, ...]
    kappas: tuple[int, ...] = (0,)
    seq_lens: tuple[int, ...] = (100,)
    d_models: tuple[int, ...] = ()  # explicit d values; else d_grid(mixer, kappa, vocab, d_multipliers)
    d_multipliers: tuple[float, ...] = D_MULTIPLIERS
    d_states: tuple[int, ...] = ()  # explicit N values; else ceil(m * n_base(n_rule)) for m in n_multipliers
    n_rule: str = "fig2"
    n_multipliers: tuple[float, ...] = (1.0,)
    seeds: tuple[int, ...] = tuple(range(7))
    lrs: tuple[float, ...] = ()  # empty: the protocol's lrs
    protocol: str = "budgeted"
    gate: bool | None = None  # None: GATE_DEFAULT per mixer
    conv: bool = True
    proj: bool = True  # False: in/out projections frozen at the identity (the paper's KEEP n-TH models)
    d_conv: int = 4
    expand: int = 1
    task_args: tuple[tuple, ...] = ()  # each entry: sorted ((name, value), ...) for one task variant
    note: str = ""
    protocol_overrides: tuple = field(default=())  # (name, value) pairs passed to spec.protocol(...)
    reuses: tuple[str, ...] = ()  # grids whose stores hold some of these runs (same run keys): ``adopt`` copies them

    def runs(self) -> list[RunSpec]:
        proto = protocol(self.protocol, **dict(self.protocol_overrides))
        lrs = self.lrs or proto.lrs
        out = []
        for mixer in self.mixers:
            for vocab in self.vocabs:
                for kappa in self.kappas:
                    ds = self.d_models or d_grid(mixer, kappa, vocab, self.d_multipliers, self.task)
                    ns = self.d_states or sorted({max(1, math.ceil(m * n_base(mixer, kappa, vocab, self.n_rule, self.task)))
                                                  for m in self.n_multipliers})
                    for T in self.seq_lens:
                        for targs in self.task_args or ((),):
                            for d in ds:
                                for n in ns:
                                    for lr in lrs:
                                        for seed in self.seeds:
                                            out.append(RunSpec(
                                                task=self.task, mixer=mixer, vocab=vocab, kappa=kappa, seq_len=T,
                                                d_model=d, d_state=n, seed=seed, lr=lr, protocol=proto,
                                                gate=GATE_DEFAULT.get(mixer, False) if self.gate is None else self.gate,
                                                conv=self.conv, proj=self.proj, d_conv=self.d_conv, expand=self.expand,
                                                task_args=tuple(sorted(targs))))
        return out


_MQAR = dict(task="mqar", kappas=(4, 8, 16, 32), seq_lens=(100,))
def _keepnth(name: str, pe: bool, proj: bool, note: str) -> Grid:
    """A KEEP FIFTH grid of Tables 1 and A.1-A.4: |V| 128, T in 10..50, d and N in {8, 32, 64}, 3 seeds, no conv, no
    gate, with or without PE, with trainable or identity in/out projections."""
    return Grid(name, task="keep-nth", mixers=("mamba", "s4d"), vocabs=(128,), seq_lens=(50, 40, 30, 20, 10),
                d_models=(8, 32, 64), d_states=(8, 32, 64), seeds=(0, 1, 2), gate=False, conv=False, proj=proj,
                task_args=((("n", 5), ("pe", pe)),), note=note)


def calibration_reference(epochs: int = 8, kappas=(4, 8), d_multipliers=(0.5, 1, 2)) -> Grid:
    """The reference arm of the calibration (``verify.train.calibrate``): Mamba cells of Fig. 2 (|V| 128, kappa 4 and
    8, d at 0.5, 1 and 2 times the bound), 7 seeds, the reference protocol truncated after ``epochs`` epochs of 6250
    steps (its schedule still spans 600 epochs). Named "calibration": its store is calibration.jsonl."""
    return Grid("calibration", task="mqar", mixers=("mamba",), vocabs=(128,), kappas=kappas,
                d_multipliers=d_multipliers, protocol="reference", protocol_overrides=(("cap_steps", epochs * 6250),),
                note=f"the calibration's reference arm, {epochs} epochs (verify.train.calibrate compares the arms)")


GRIDS: dict[str, Grid] = {g.name: g for g in (
    Grid("fig2", mixers=("s4d", "mamba", "mamba2"), vocabs=(128,), **_MQAR,
         note="Figure 2: |V| = 128, N as in the figure (S4D 4, Mamba 2 kappa, Mamba-2 8 ln kappa)"),
    Grid("fig2-loss", mixers=("s4d", "mamba", "mamba2"), vocabs=(128,), protocol="budgeted-loss", **_MQAR,
         note="Figure 2 under the budgeted-loss protocol (the budget of 4000 steps, the reference's stop at validation "
              "loss < 1e-6), all 7 seeds: the grid of the 20-GPU-minute measurement"),
    Grid("fig2-tf32", mixers=("s4d", "mamba", "mamba2"), vocabs=(128,), protocol="budgeted-loss-tf32", **_MQAR,
         note="Figure 2 as fig2-loss with TF32 matrix products on CUDA (the S4D projections of d up to 896 are most "
              "of the grid's arithmetic): the 20-GPU-minute measurement, its verdicts compared with fig2-loss's"),
    Grid("figA2", mixers=("s4d", "mamba", "mamba2"), vocabs=(256, 512), **_MQAR, note="Figure A.2"),
    Grid("figA3-s4d", mixers=("s4d",), vocabs=(256,), n_rule="a3", n_multipliers=(1, 2, 4, 8), d_multipliers=(1, 2),
         **_MQAR, note="Figure A.3, S4D: N in {1, 2, 4, 8}"),
    Grid("figA3-mamba", mixers=("mamba",), vocabs=(512,), n_rule="a3", n_multipliers=(0.5, 1, 2, 4),
         d_multipliers=(1, 2), **_MQAR, note="Figure A.3, Mamba: N in {0.5, 1, 2, 4} kappa"),
    Grid("figA3-mamba2", mixers=("mamba2",), vocabs=(512,), n_rule="a3", n_multipliers=(1, 2, 4, 8),
         d_multipliers=(1, 2), **_MQAR, note="Figure A.3, Mamba-2: N in {1, 2, 4, 8} ln kappa"),
    _keepnth("keepnth-pe", pe=True, proj=True, note="Tables A.1/A.2 (and Table 1 at T=50, d=32, N=8): KEEP FIFTH, "
                                                    "+PE, no conv, no gate; mean of 3 seeds"),
    _keepnth("keepnth-nope", pe=False, proj=True, note="Tables A.3/A.4: as above without PE"),
    _keepnth("keepnth-pe-bare", pe=True, proj=False, note="Tables A.1/A.2 with the paper's architecture: embedding -> "
                                                          "SSM -> readout (in/out projections frozen at the identity)"),
    _keepnth("keepnth-nope-bare", pe=False, proj=False, note="Tables A.3/A.4 with the paper's architecture"),
    Grid("fig3", task="induction-heads", mixers=("mamba", "delta-top"), vocabs=(5, 10, 20, 40), seq_lens=(100,),
         n_rule="fig2", seeds=tuple(range(5)), gate=False, task_args=((("gamma", 0.1), ("p", 0.75)),),
         note="Figure 3: induction heads, N = 4|V|, d grid around 2|V|, best of 5 seeds"),
    Grid("figA4", task="induction-heads", mixers=("mamba", "delta-top"), vocabs=(5, 10, 20, 40), seq_lens=(100,),
         n_rule="vocab", n_multipliers=(1, 2, 4), seeds=tuple(range(5)), gate=False,
         task_args=((("gamma", 0.1), ("p", 0.75)),), reuses=("fig3",),
         note="Figure A.4: N in {1, 2, 4} |V| (N = 4|V| is Figure 3's grid)"),
    Grid("recall-regime0", task="mqar-zoology", mixers=("mamba",), vocabs=(512,), kappas=(16,), seq_lens=(64,),
         d_models=tuple(range(8, 65, 8)), d_states=(2, 4, 8, 16, 32), seeds=(0, 1, 2), gate=True, d_conv=2,
         expand=2, note="Koren et al. regime_0 (V=512, L=64, N_f=16), full Mamba-1 block (gate on, expand 2, "
                        "d_conv 2) in our one-layer model (no norm, no residual, untied readout)"),
    Grid("recall-vocab", task="mqar-zoology", mixers=("mamba",), vocabs=tuple(2 ** k for k in range(7, 15)),
         kappas=(16,), seq_lens=(64,), d_models=(32, 64), d_states=(16, 32), seeds=(0, 1, 2), gate=True, d_conv=2,
         expand=2, reuses=("recall-regime0",),
         note="Koren et al.'s recall vs vocabulary: regime_0's model and task (L=64, N_f=16) at V = 128..16384 "
              "(zoology needs V > L), D in {32, 64}, N in {16, 32}; its V = 512 cells are recall-regime0's"),
    calibration_reference(),
    Grid("smoke", mixers=("mamba",), vocabs=(4,), task="mqar", kappas=(2,), seq_lens=(8,), d_models=(8, 16),
         d_states=(4,), seeds=(0, 1), lrs=(0.03,), protocol="smoke", note="CPU smoke sweep"),
)}


def grid(name: str) -> Grid:
    require(name in GRIDS, f"unknown grid {name!r}; known: {', '.join(GRIDS)}")
    return GRIDS[name]


def adopt(specs: list[RunSpec], store: ResultStore, sources) -> int:
    """Copy into ``store`` the runs of ``specs`` that the stores ``sources`` finished (same run key: the same spec,
    data, initialization and protocol, so training them again would only replicate them); returns how many. Figure
    A.4's N = 4|V| column is Figure 3's grid, and the calibration's budgeted arms are Figure 2 cells."""
    want = {run_key(s) for s in specs}  # append itself skips the keys the store holds
    return store.append([r for src in sources if Path(src).exists() for r in ResultStore(src).records()
                         if r.get("key") in want])


def pack_limit(spec: RunSpec, pack_size: int) -> int:
    """``pack_size``, or fewer where the mixer's scan tensors would pass ``PACK_BYTES`` (at least 1)."""
    scan_bytes = registry.mixer(spec.mixer).scan_bytes
    return pack_size if scan_bytes is None else max(1, min(pack_size, PACK_BYTES // scan_bytes(spec)))


def plan(specs: list[RunSpec], done: set[str], pack_size: int) -> list[list[RunSpec]]:
    """The missing runs in packs: same pack key, at most ``pack_limit`` each, in grid order."""
    require(pack_size >= 1, f"pack_size must be >= 1, got {pack_size}")
    groups: dict[str, list[RunSpec]] = defaultdict(list)
    seen = set()
    for s in specs:
        k = run_key(s)
        if k in done or k in seen:
            continue
        seen.add(k)
        groups[pack_key(s)].append(s)
    sizes = {k: pack_limit(g[0], pack_size) for k, g in groups.items()}
    return [g[i:i + sizes[k]] for k, g in groups.items() for i in range(0, len(g), sizes[k])]


def pack_id(pack: list[RunSpec]) -> str:
    return hashlib.sha256(",".join(run_key(s) for s in pack).encode()).hexdigest()[:20]


def run_local(specs: list[RunSpec], store: ResultStore, device: str = "cpu", impl: str = "packed",
              pack_size: int = 64, minutes: float | None = None, log=None, train=None, claim: bool = False) -> dict:
    """Train the runs of ``specs`` missing from ``store``; returns counts. ``train`` replaces ``train_pack``
    (tests use it to simulate a crash). ``claim``: other processes share the store (``verify.train.claims``): take
    the packs largest first and train only those this process claims."""
    from verify.train.claims import claim as take, pack_cost
    from verify.train.loop import train_pack

    train = train or train_pack
    deadline = None if minutes is None else time.time() + 60 * minutes
    packs = plan(specs, store.keys(), 1 if impl == "module" else pack_size)
    if claim:
        packs.sort(key=pack_cost, reverse=True)
    ckdir = f"{store.path}.ckpt"
    finished = 0
    for i, pack in enumerate(packs):
        if deadline is not None and time.time() > deadline:
            break
        pid = pack_id(pack)
        if claim and (not take(store.path, pid) or {run_key(s) for s in pack} <= store.keys()):
            continue  # held by another process, or finished by one (whose claim went stale when it exited)
        res = train(pack, device=device, impl=impl, checkpoint=os.path.join(ckdir, pid + ".pt"),
                    deadline=deadline, log=log)  # a line per validation: a pool's logs show where each pack is
        if res is None:
            if log:
                log(f"deadline: pack {i + 1}/{len(packs)} checkpointed, rerun to resume")
            break
        store.append(res)
        finished += len(res)
        if log:
            solved = sum(r["result"]["solved"] for r in res)
            log(f"pack {i + 1}/{len(packs)}: {len(res)} runs ({pack[0].mixer} d={pack[0].d_model} "
                f"N={pack[0].d_state} kappa={pack[0].kappa} |V|={pack[0].vocab}), {solved} solved, "
                f"{res[0]['pack_seconds']:.1f}s")
    remaining = sum(len(p) for p in plan(specs, store.keys(), pack_size))
    return {"finished_now": finished, "remaining": remaining, "total": len(specs)}


CELL_AXES = ("task", "mixer", "vocab", "kappa", "seq_len", "gate", "conv", "d_conv", "expand", "task_args")


def tightness(records: list[dict], axis: str = "d_model") -> list[dict]:
    """Per cell (everything but seed, lr and ``axis``): the best-of-(seeds, lrs) test accuracy at each value of
    ``axis``, the smallest value where training solved the task (100% test recall), the smallest value where a run met
    its protocol's stopping rule (budgeted: 100% validation accuracy on 1,000 sequences; a run can stop there and
    still miss test queries), the construction's bound and their ratio."""
    cells: dict = defaultdict(lambda: defaultdict(list))
    other = "d_state" if axis == "d_model" else "d_model"
    for r in records:
        s = r["spec"]
        key = tuple((a, str(s[a])) for a in (*CELL_AXES, other)) + (("protocol", s["protocol"]["name"]),)
        cells[key][s[axis]].append(r["result"])
    rows = []
    for key, by_value in cells.items():
        c = dict(key)
        best = {v: max(x["test_acc"] for x in rs) for v, rs in sorted(by_value.items())}
        solved = [v for v, rs in sorted(by_value.items()) if any(x["solved"] for x in rs)]
        stopped = [v for v, rs in sorted(by_value.items()) if any(x.get("early_stopped") for x in rs)]
        row = {**c, "axis": axis, "best_test_acc": best, "smallest_solved": solved[0] if solved else None,
               "smallest_stopped": stopped[0] if stopped else None, "runs": sum(len(rs) for rs in by_value.values())}
        if axis == "d_model":
            try:
                row["bound"] = d_bound(c["mixer"], int(c["kappa"]), int(c["vocab"]), c["task"])
            except ValueError:
                row["bound"] = None
            if row["bound"] and row["smallest_solved"]:
                row["ratio"] = row["smallest_solved"] / row["bound"]
        rows.append(row)
    return rows
