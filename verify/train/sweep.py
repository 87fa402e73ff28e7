"""Sweeps: typed grids of runs loaded from data files, packs of runs to train together, tightness tables.

**Bound convention** (the paper's bound lines cannot be recovered, selectivity.md §9.1; logs base 2, rounded up), each
block kind's ``Training.d_bound`` and ``Training.n_base`` (``verify.blocks``):

============= ============================== =====================  =================================
mixer         d bound                        N of the theorem       N in Fig. 2 / 3
============= ============================== =====================  =================================
mamba         kappa + ceil(log2 |V|)         kappa                  2 kappa
mamba2        ceil(log2 kappa)+ceil(log2|V|) ceil(log2 kappa)       ceil(8 ln kappa)
mamba-s4d     kappa ceil(log2 |V|)           1                      4
mamba-s4d-c.. kappa ceil(log2 |V|)           1 (A.3 rule: 2)        4  (two complex modes)
mamba-delta-t 2 |V|                          |V|                    4 |V|  (induction heads)
============= ============================== =====================  =================================

The d grid around a bound b is ``ceil(m b)`` for m in ``D_MULTIPLIERS`` (a factor 2 apart, b itself included), at
least 2, rounded up to a multiple of the kind's ``Training.d_multiple`` (Mamba-2's heads need 8). A cell's verdict is
the best over seeds and learning rates (the paper: best of 7 seeds for MQAR, 5 for induction heads; mean of 3 for KEEP n-TH).

Grids are data: one TOML file per figure or table in ``experiments/grids/`` (``verify.train.grids`` validates them),
loaded here as ``Grid``. Running: ``plan`` groups the missing runs of a grid into packs (runs that differ only in
seed and lr share a pack, at most ``pack_size`` each, fewer where a mixer's scan tensors would pass ``PACK_BYTES``);
``verify.train.runner`` trains them.
"""
from __future__ import annotations

import hashlib
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from common.errors import RequirementError, require
from verify import blocks
from verify.train import registry
from verify.train.spec import RunSpec, pack_key, protocol, run_key
from verify.train.store import ResultStore, device_type

D_MULTIPLIERS = (0.25, 0.5, 1.0, 2.0, 4.0)
PACK_BYTES = 4 << 30  # a pack's scan tensors (Training.scan_bytes) stay below this: ten packs fit an H100


def _training(mixer: str) -> blocks.Training:
    """The mixer's ``Training``; ValueError where it has none (no bound for it)."""
    kind = blocks.KINDS.get(mixer)
    if kind is None or kind.training is None:
        raise ValueError(f"no training entry for mixer {mixer!r}")
    return kind.training


def d_bound(mixer: str, kappa: int, vocab: int, task: str = "mqar") -> int:
    """The d a construction needs, in the convention of the module docstring (induction heads: 2|V| for every mixer,
    the line of Fig. 3)."""
    if task == "induction-heads":
        return 2 * vocab
    if task != "mqar":
        raise ValueError(f"no d bound for task {task!r}")
    bound = _training(mixer).d_bound
    if bound is None:
        raise ValueError(f"no d bound for mixer {mixer!r}")
    return bound(kappa, vocab)


def n_base(mixer: str, kappa: int, vocab: int, rule: str, task: str = "mqar") -> float:
    """State size before the multiplier: 'fig2' (the figure's N), 'a3' (the theorem's N, unrounded), 'vocab' (|V|)."""
    if task == "induction-heads" and rule == "fig2":
        return 4 * vocab
    if rule == "vocab":
        return vocab
    if rule in ("fig2", "a3"):
        base = _training(mixer).n_base.get(rule)
        if base is None:
            raise ValueError(f"no state rule {rule!r} for mixer {mixer!r}")
        return base(kappa, vocab)
    raise ValueError(f"unknown state rule {rule!r}")


def d_grid(mixer: str, kappa: int, vocab: int, multipliers=D_MULTIPLIERS, task: str = "mqar") -> list[int]:
    b, q = d_bound(mixer, kappa, vocab, task), _training(mixer).d_multiple
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
    gate: bool | None = None  # None: the mixer's Training.gate_default
    conv: bool = True
    proj: bool = True  # False: in/out projections frozen at the identity (the paper's KEEP n-TH models)
    d_conv: int = 4
    expand: int = 1
    task_args: tuple[tuple, ...] = ()  # each entry: sorted ((name, value), ...) for one task variant
    note: str = ""
    protocol_overrides: tuple = field(default=())  # (name, value) pairs passed to spec.protocol(...)
    reuses: tuple[str, ...] = ()  # grids whose stores hold some of these runs (same run keys): ``adopt`` copies them
    model: tuple = ()  # sorted (name, value) pairs: the model around the mixer (verify.train.recall_models)
    n_at_most_d: bool = False  # only cells with d_state <= d_model (Koren et al.'s D-N grids skip N > D)
    models: tuple[tuple, ...] = ()  # model variants, one grid axis (each like ``model``); empty: (model,)
    lambda_times_n: int = 0  # > 0: only cells with layers x d_state equal to it (Koren et al.'s Lambda x N_k grid)
    seq_len_per_kappa: int = 0  # > 0: kappa = T / it for each T, instead of kappas (Koren et al.'s V x L grid)
    vocab_above_seq_len: bool = False  # only cells with vocab > seq_len (zoology's task needs it)

    def cells(self, vocab: int) -> list[tuple[int, int]]:
        """The (kappa, T) pairs of the grid at |V| = ``vocab``, kappa-major."""
        pairs = ([(T // self.seq_len_per_kappa, T) for T in self.seq_lens] if self.seq_len_per_kappa else
                 [(kappa, T) for kappa in self.kappas for T in self.seq_lens])
        return [(k, T) for k, T in pairs if not self.vocab_above_seq_len or vocab > T]

    def runs(self) -> list[RunSpec]:
        proto = protocol(self.protocol, **dict(self.protocol_overrides))
        lrs = self.lrs or proto.lrs
        variants = [(t, m) for t in self.task_args or ((),) for m in self.models or (self.model,)]
        out = []
        for mixer in self.mixers:
            gate = registry.mixer(mixer).gate_default if self.gate is None else self.gate
            for vocab in self.vocabs:
                for kappa, T in self.cells(vocab):
                    ds = self.d_models or d_grid(mixer, kappa, vocab, self.d_multipliers, self.task)
                    ns = self.d_states or sorted({max(1, math.ceil(m * n_base(mixer, kappa, vocab, self.n_rule, self.task)))
                                                  for m in self.n_multipliers})
                    for targs, model in variants:
                        for d in ds:
                            for n in ns:
                                if self.n_at_most_d and n > d:
                                    continue
                                for lr in lrs:
                                    for seed in self.seeds:
                                        out.append(RunSpec(
                                            task=self.task, mixer=mixer, vocab=vocab, kappa=kappa, seq_len=T,
                                            d_model=d, d_state=n, seed=seed, lr=lr, protocol=proto, gate=gate,
                                            conv=self.conv, proj=self.proj, d_conv=self.d_conv, expand=self.expand,
                                            task_args=tuple(sorted(targs)), model=model))
        if self.lambda_times_n:
            from verify.train.recall_models import layers

            out = [s for s in out if layers(s) * s.d_state == self.lambda_times_n]
        return out


GRID_DIR = Path(__file__).resolve().parents[2] / "experiments" / "grids"


def load_grid(path: str | os.PathLike) -> Grid:
    """The grid of the data file ``path`` (``verify.train.grids``), each of its (mixer, task variant) combinations
    checked against the registry; a problem is one RequirementError naming the file."""
    from verify.train import grids as files

    g = Grid(**files.read(path))
    seen = set()
    try:
        for s in g.runs():
            combo = (s.mixer, s.task_args, s.gate, s.conv, s.proj, s.d_conv, s.expand, s.model)
            if combo not in seen:
                seen.add(combo)
                registry.validate(s)
    except (RequirementError, ValueError) as e:
        raise RequirementError(f"{files.display(Path(path))}: a run of this grid is invalid: {e}") from None
    filters = [f"'{k}' = {str(v).lower()}" for k, v in (("lambda_times_n", g.lambda_times_n),
                                                         ("n_at_most_d", g.n_at_most_d),
                                                         ("vocab_above_seq_len", g.vocab_above_seq_len)) if v]
    words = ("filter", "leaves") if len(filters) == 1 else ("filters", "leave")
    require(bool(seen), f"{files.display(Path(path))}: the grid has no run (its {words[0]} {', '.join(filters)} "
                        f"{words[1]} no cell)")
    return g


def grids(directory: str | os.PathLike = GRID_DIR) -> dict[str, Grid]:
    """Every grid file of ``directory`` by name, in name order."""
    return {p.stem: load_grid(p) for p in sorted(Path(directory).glob("*.toml"))}


def grid(name: str) -> Grid:
    """The grid ``name`` of ``GRID_DIR``, or of the file ``name`` where it ends in .toml."""
    if name.endswith(".toml"):
        return load_grid(name)
    known = sorted(p.stem for p in GRID_DIR.glob("*.toml"))
    require(name in known, f"unknown grid {name!r}; known: {', '.join(known) or f'none (no grid files in {GRID_DIR})'}")
    return load_grid(GRID_DIR / f"{name}.toml")


def calibration_reference(epochs: int = 8, kappas=(4, 8), d_multipliers=(0.5, 1, 2)) -> Grid:
    """The reference arm of the calibration (``experiments.calibrate``): the grid ``calibration`` (Mamba cells of
    Fig. 2, 7 seeds, the reference protocol) truncated after ``epochs`` epochs of 6250 steps (its schedule still
    spans 600 epochs), on the cells of ``kappas`` and ``d_multipliers``. Its store is calibration.jsonl."""
    g = grid("calibration")
    return replace(g, kappas=tuple(kappas), d_multipliers=tuple(d_multipliers),
                   protocol_overrides=(("cap_steps", epochs * 6250),),
                   note=f"the calibration's reference arm, {epochs} epochs (experiments.calibrate compares the arms)")


def adopt(specs: list[RunSpec], store: ResultStore, sources, device: str | None = None) -> int:
    """Copy into ``store`` the runs of ``specs`` that the stores ``sources`` finished (same run key: the same spec,
    data, initialization and protocol, so training them again would only replicate them), only those trained on
    ``device``'s type where it is given; returns how many. Figure A.4's N = 4|V| column is Figure 3's grid, and the
    calibration's budgeted arms are Figure 2 cells."""
    want = {run_key(s) for s in specs}  # append itself skips the keys the store holds
    return store.append([r for src in sources if Path(src).exists() for r in ResultStore(src).records()
                         if r.get("key") in want
                         and (device is None or device_type(r.get("device", "")) == device_type(device))])


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


def pack_cost(pack: list[RunSpec]) -> int:
    """A proxy of a pack's GPU time, to start the largest packs first (so that none is left to run alone at the
    end): models x steps x tokens x (d^2 of the projections + d N of the scan + the mixer's fixed overhead,
    ``Training.pack_overhead``: Mamba-2's SSD kernels took as long for fig2 packs of d = 8-48 as Mamba's largest
    (d = 156, N = 64: d (d + N) = 34k) on the H100)."""
    s, p = pack[0], pack[0].protocol
    steps = min(p.max_steps, p.cap_steps or p.max_steps)
    overhead = registry.mixer(s.mixer).pack_overhead
    return len(pack) * steps * s.seq_len * (s.d_model * (s.d_model + s.d_state) + overhead)


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
