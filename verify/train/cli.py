"""``verify-constructions train`` / ``sweep``: one training run, or a grid into a results store."""
from __future__ import annotations

import argparse
import faulthandler
import json
import signal
import sys
import time

from constructions.errors import require
from verify.train.spec import PROTOCOLS, RunSpec, protocol


def add_parsers(sub) -> None:
    t = sub.add_parser("train", help="train one one-layer model (issue 6) and print its result")
    t.add_argument("--task", default="mqar")
    t.add_argument("--mixer", default="mamba")
    t.add_argument("--kappa", type=int, default=4)
    t.add_argument("--vocab", type=int, default=16)
    t.add_argument("--seq-len", type=int, default=32)
    t.add_argument("--d-model", type=int, default=16)
    t.add_argument("--d-state", type=int, default=8)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--lr", type=float, default=0.03)
    t.add_argument("--gate", action="store_true", help="keep the gate (default: off, z held constant)")
    t.add_argument("--no-conv", action="store_true", help="freeze the conv at the identity (KEEP n-TH's 'no conv')")
    t.add_argument("--task-arg", action="append", default=[], metavar="NAME=VALUE",
                   help="task setting, repeatable: n=5, pe=true (keep-nth); p=0.75, gamma=0.1 (induction-heads)")
    t.add_argument("--protocol", default="smoke", help=f"one of: {', '.join(PROTOCOLS)}")
    t.add_argument("--max-steps", type=int, default=None, help="override the protocol's step budget")
    t.add_argument("--device", default="cpu")
    t.add_argument("--impl", default="packed", help="packed (any device) or module (mamba_ssm, CUDA)")
    t.add_argument("--json", action="store_true")
    s = sub.add_parser("sweep", help="train a predefined grid into an append-only JSONL store (resumable)")
    s.add_argument("--grid", default=None, help="grid name (--list shows them)")
    s.add_argument("--list", action="store_true", help="list the grids and their run counts")
    s.add_argument("--store", default=None, help="JSONL results file (default results/train/<grid>.jsonl)")
    s.add_argument("--device", default="cpu")
    s.add_argument("--impl", default="packed")
    s.add_argument("--pack-size", type=int, default=64)
    s.add_argument("--minutes", type=float, default=None, help="stop (checkpointing) after this long")
    s.add_argument("--mixers", type=csv_of(str), default=None, help="comma-separated subset")
    s.add_argument("--kappas", type=csv_of(int), default=None, help="comma-separated subset")
    s.add_argument("--vocabs", type=csv_of(int), default=None, help="comma-separated subset")
    s.add_argument("--seeds", type=int, default=None, help="only the first this many seeds")
    s.add_argument("--shard", default=None, metavar="I/N",
                   help="only the packs whose pack key falls in shard I of N (parallel processes on one store)")
    s.add_argument("--claim", action="store_true",
                   help="several processes run this sweep on one store: each claims its packs, largest first")
    s.add_argument("--ray", action="store_true", help="run on Ray (local unless --address)")
    s.add_argument("--address", default=None, help="Ray cluster address (implies --ray)")
    s.add_argument("--tightness", action="store_true", help="only print the tightness table of the store")
    s.add_argument("--status", action="store_true",
                   help="print what every grid has stored in results/train (with --seeds S: of seeds 0..S-1; default 3)")


def _task_args(items) -> tuple:
    out = {}
    for item in items:
        require("=" in item, f"--task-arg needs NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        try:
            out[name] = json.loads(value)
        except ValueError:
            out[name] = value
    return tuple(sorted(out.items()))


def csv_of(cast):
    """argparse type: a comma-separated list of ``cast`` values, as a tuple; a malformed item is argparse's one-line
    usage error (exit 2)."""
    def parse(text: str) -> tuple:
        try:
            return tuple(cast(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {cast.__name__}, got {text!r}")
    return parse


def cmd_train(args, out) -> int:
    from verify.train.loop import train_pack

    spec = RunSpec(conv=not args.no_conv, task_args=_task_args(args.task_arg), task=args.task, mixer=args.mixer, kappa=args.kappa, vocab=args.vocab, seq_len=args.seq_len,
                   d_model=args.d_model, d_state=args.d_state, seed=args.seed, lr=args.lr, gate=args.gate,
                   protocol=protocol(args.protocol, max_steps=args.max_steps))
    t0 = time.time()
    rec = train_pack([spec], device=args.device, impl=args.impl)[0]
    rec.pop("_weights", None)
    r = rec["result"]
    if args.json:
        print(json.dumps(rec, default=float))
    else:
        out.print(f"{spec.mixer} on {spec.task}: test acc {r['test_acc']:.4f} ({'solved' if r['solved'] else 'not solved'})"
                  f", {r['steps']} steps, {time.time() - t0:.1f}s")
    return 0


def cmd_sweep(args, out) -> int:
    from verify.train.store import ResultStore
    from verify.train.sweep import GRIDS, adopt, grid, run_local, tightness

    if args.list:
        for name, g in GRIDS.items():
            out.print(f"{name}: {len(g.runs())} runs, {g.protocol} protocol. {g.note}")
        return 0
    if args.status:
        from pathlib import Path

        from verify.train.status import table
        print(table(Path("results/train"), args.seeds or 3))
        return 0
    require(args.grid is not None, f"sweep needs --grid NAME; known: {', '.join(GRIDS)}")
    g = grid(args.grid)
    store = ResultStore(args.store or f"results/train/{g.name}.jsonl")
    if args.tightness:
        for row in tightness(store.records()):
            print(json.dumps(row))
        return 0
    specs = [s for s in g.runs() if (args.mixers is None or s.mixer in args.mixers)
             and (args.kappas is None or s.kappa in args.kappas) and (args.vocabs is None or s.vocab in args.vocabs)
             and (args.seeds is None or s.seed < args.seeds)]
    require(specs, "the filters leave no runs of this grid")
    if args.shard is not None:  # a shard may be empty: nothing to do
        from verify.train.spec import pack_key

        try:
            i, n = (int(x) for x in args.shard.split("/"))
        except ValueError:
            i = n = -1
        require(0 <= i < n, f"--shard needs I/N with 0 <= I < N, got {args.shard!r}")
        specs = [s for s in specs if int(pack_key(s), 16) % n == i]
    require(not (args.claim and (args.ray or args.address)),
            "sweep --claim is for local processes sharing a store; Ray schedules the packs itself (drop one of them)")
    log = lambda m: out.print(m)  # noqa: E731
    if g.reuses:
        n = adopt(specs, store, [store.path.parent / f"{other}.jsonl" for other in g.reuses])
        log(f"{n} runs copied from {', '.join(g.reuses)} (same run keys)")
    # `kill -USR1`: where a stalled sweep waits (gpu_pool.sh); fd 2 itself, as a captured sys.stderr has no fd
    faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)
    if args.ray or args.address:
        from verify.train.ray_sweep import run_ray

        counts = run_ray(specs, store, device=args.device, impl=args.impl, pack_size=args.pack_size,
                         address=args.address, log=log)
    else:
        counts = run_local(specs, store, device=args.device, impl=args.impl, pack_size=args.pack_size,
                           minutes=args.minutes, log=log, claim=args.claim)
    out.print(json.dumps(counts))
    return 0
