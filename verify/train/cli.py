"""``verify-constructions train`` / ``sweep``: one training run, or a grid into a results store.

Bad values exit 2 with one line naming the flag as typed; ``--store`` is checked before any training (a writable
results file, not a folder or another kind of file, holding runs of the sweep's device type unless
``--allow-mixed-devices``). SIGINT and SIGTERM checkpoint the packs in flight and exit 130 / 143 with one line; the
same command run again resumes them.
"""
from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from pathlib import Path

from common.errors import require
from verify.train.spec import PROTOCOLS, RunSpec, protocol

IMPLS = ("packed", "module")
STORE_DIR = Path("results/train")


class HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's help ends with its default, unless the help states it itself."""

    def _get_help_string(self, action):
        return action.help if "(default" in (action.help or "") else super()._get_help_string(action)


class OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (exit 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _arg_type(name: str, check, what: str, cast):
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or not check(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value
    parse.__name__ = name
    return parse


def int_at_least(lo: int):
    return _arg_type(f"int>={lo}", lambda v: v >= lo, f"an integer >= {lo}", int)


def finite(lo: float, strict: bool):
    """argparse type: a finite float > lo (``strict``) or >= lo; NaN and inf are refused."""
    return _arg_type("number", lambda v: math.isfinite(v) and (v > lo if strict else v >= lo),
                     f"a finite number {'>' if strict else '>='} {lo:g}", float)


def one_of(names, what: str):
    return _arg_type(what, lambda v: v in names, f"a known {what} ({', '.join(names)})", str)


def device_arg(text: str) -> str:
    """argparse type: 'cpu', 'cuda' or 'cuda:N' (whether CUDA is there is checked where the work runs)."""
    kind, _, index = text.partition(":")
    if kind == "cpu" and not index or kind == "cuda" and (not index or index.isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N, got {text!r}")


def csv_of(cast, lo: int | None = None):
    """argparse type: a comma-separated list of ``cast`` values (at least ``lo`` each, for ints), as a tuple; a
    malformed item is argparse's one-line usage error (exit 2)."""
    def parse(text: str) -> tuple:
        try:
            out = tuple(cast(v) for v in text.split(","))
        except ValueError:
            out = None
        if out is None or (lo is not None and min(out) < lo) or any(isinstance(v, float) and not math.isfinite(v)
                                                                    for v in out):
            at_least = f" >= {lo}" if lo is not None else ""
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {cast.__name__}{at_least}, "
                                             f"got {text!r}")
        return out
    return parse


def require_device(device: str, flag: str = "--device") -> None:
    """Exit 2 where ``device`` is CUDA and this machine has none."""
    if device.startswith("cuda"):
        import torch

        require(torch.cuda.is_available(), f"{flag} {device}: CUDA is not available on this machine")
        index = int(device.partition(":")[2] or 0)
        require(index < torch.cuda.device_count(), f"{flag} {device}: this machine has "
                                                   f"{torch.cuda.device_count()} CUDA device(s)")


def add_parsers(sub) -> None:
    from verify.blocks import trainable
    from verify.train import registry

    fmt = HelpWithDefaults
    t = sub.add_parser("train", help="train one one-layer model and print its result", formatter_class=fmt,
                       allow_abbrev=False, description="Train one one-layer model (embedding -> mixer -> readout) "
                                                       "on a task and print its test accuracy.")
    t.add_argument("--task", default="mqar", type=one_of(tuple(registry.TASKS), "task"),
                   help=f"task: {', '.join(registry.TASKS)}")
    t.add_argument("--mixer", default="mamba", type=one_of(tuple(trainable()), "mixer"),
                   help=f"mixer: {', '.join(trainable())}")
    t.add_argument("--kappa", type=int_at_least(0), default=4,
                   help="MQAR keys per sequence (0 where the task has none)")
    t.add_argument("--vocab", type=int_at_least(1), default=16, help="vocabulary size |V|")
    t.add_argument("--seq-len", type=int_at_least(1), default=32, help="sequence length T")
    t.add_argument("--d-model", type=int_at_least(1), default=16, help="model dimension d")
    t.add_argument("--d-state", type=int_at_least(1), default=8, help="state size N")
    t.add_argument("--d-conv", type=int_at_least(1), default=4, help="conv width (Koren et al.'s models: 2)")
    t.add_argument("--expand", type=int_at_least(1), default=1, help="inner width factor (Koren et al.'s models: 2)")
    t.add_argument("--seed", type=int_at_least(0), default=0, help="initialization and batch-order seed")
    t.add_argument("--lr", type=finite(0, True), default=0.03, help="peak learning rate (cosine to the protocol's end)")
    t.add_argument("--gate", action="store_true", help="keep the gate (else z is held constant)")
    t.add_argument("--no-conv", action="store_true", help="freeze the conv at the identity (KEEP n-TH's 'no conv')")
    t.add_argument("--task-arg", action="append", default=[], metavar="NAME=VALUE",
                   help="task setting, repeatable: n=5, pe=true (keep-nth); p=0.75, gamma=0.1 (induction-heads) "
                        "(default: none, the task's defaults)")
    t.add_argument("--model-arg", action="append", default=[], metavar="NAME=VALUE",
                   help="the model around the mixer, repeatable (verify.train.recall_models): wiring=tied (mixer "
                        "linear-mamba) or wiring=lm (the full model), layers=2, heads=4, head_pattern=MQA (default: "
                        "none, the one-layer model)")
    t.add_argument("--protocol", default="smoke", type=one_of(tuple(PROTOCOLS), "protocol"),
                   help=f"optimizer, data and stopping rule: {', '.join(PROTOCOLS)}")
    t.add_argument("--max-steps", type=int_at_least(1), default=None,
                   help="override the protocol's step budget (default: the protocol's)")
    t.add_argument("--device", default="cpu", type=device_arg, help="cpu, cuda or cuda:N")
    t.add_argument("--impl", default="packed", type=one_of(IMPLS, "impl"),
                   help="packed (any device) or module (one mamba_ssm module, CUDA)")
    t.add_argument("--json", action="store_true", help="print the run's record as one JSON object")

    s = sub.add_parser("sweep", help="train a grid (experiments/grids) into an append-only results store, on Ray",
                       formatter_class=fmt, allow_abbrev=False,
                       description="Train the runs of a grid that its store does not hold yet, packs of runs side by "
                                   "side as Ray tasks (local unless --address). Reruns resume: finished runs are "
                                   "skipped, cut packs continue from their checkpoints (STORE.ckpt/).")
    s.add_argument("--grid", default=None,
                   help="grid name (--list shows them) or a grid file NAME.toml (default: none)")
    s.add_argument("--list", action="store_true", help="list the grids and their run counts")
    s.add_argument("--status", action="store_true",
                   help=f"print what every grid has stored in {STORE_DIR} (with --seeds S: of seeds 0..S-1, else 3)")
    s.add_argument("--tightness", action="store_true", help="only print the tightness table of the store")
    s.add_argument("--store", default=None, help=f"JSONL results file (default: {STORE_DIR}/GRID.jsonl)")
    s.add_argument("--device", default="cpu", type=device_arg, help="cpu, cuda or cuda:N")
    s.add_argument("--impl", default="packed", type=one_of(IMPLS, "impl"),
                   help="packed (any device) or module (one mamba_ssm module per run, CUDA)")
    s.add_argument("--pack-size", type=int_at_least(1), default=64, help="at most this many runs trained as one pack")
    s.add_argument("--minutes", type=finite(0, False), default=None,
                   help="time budget: after this many minutes the packs in flight are checkpointed and the sweep "
                        "ends; run it again to resume (default: none, no budget)")
    s.add_argument("--mixers", type=csv_of(str), default=None,
                   help="comma-separated subset of the grid's mixers (default: all)")
    s.add_argument("--kappas", type=csv_of(int, 0), default=None,
                   help="comma-separated subset of the grid's kappas (default: all)")
    s.add_argument("--vocabs", type=csv_of(int, 1), default=None,
                   help="comma-separated subset of the grid's |V| (default: all)")
    s.add_argument("--seeds", type=int_at_least(1), default=None, help="only the first this many seeds (default: all)")
    s.add_argument("--address", default=None,
                   help="Ray cluster to join, 'auto' or 'ray://HOST:10001' (default: none, a local Ray instance)")
    s.add_argument("--gpus-per-pack", type=finite(0, True), default=0.1,
                   help="GPUs each pack asks Ray for with --device cuda: 0.1 trains ten packs side by side on a GPU "
                        "(fewer where their data would not fit the host's memory: each pack also reserves the host "
                        "memory it needs to draw its data)")
    s.add_argument("--cpus-per-pack", type=finite(0, True), default=1.0,
                   help="CPUs each pack asks Ray for (and its torch threads on --device cpu)")
    s.add_argument("--mps", action="store_true",
                   help="start the CUDA MPS daemon first (local GPU), so that the packs' kernels share the GPU "
                        "instead of taking turns")
    s.add_argument("--no-ray", action="store_true",
                   help="train the packs one after another in this process (no Ray: no parallel packs)")
    s.add_argument("--allow-mixed-devices", action="store_true",
                   help="let runs of this device type go into a store that holds runs of another")
    s.add_argument("--quiet", action="store_true", help="no progress lines (the final counts are still printed)")


def _task_args(items, flag: str = "--task-arg") -> tuple:
    out = {}
    for item in items:
        require("=" in item, f"{flag} needs NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        try:
            out[name] = json.loads(value)
        except ValueError:
            out[name] = value
        try:
            finite_value = math.isfinite(float(out[name]))
        except (TypeError, ValueError):
            finite_value = True  # not a number
        require(finite_value, f"{flag} {item}: a number must be finite")
    return tuple(sorted(out.items()))


def _protocol(name: str, max_steps: int | None):
    """The protocol, its step budget replaced by ``max_steps`` where given (a warm-up and flat phase scaled with it,
    at least one step of decay left)."""
    p = PROTOCOLS[name]
    if max_steps is None or not (p.warmup_steps or p.flat_steps):
        return protocol(name, max_steps=max_steps)
    warm = min(max_steps - 1, max(1, round(p.warmup_steps * max_steps / p.max_steps))) if p.warmup_steps else 0
    flat = min(max_steps - 1 - warm, round(p.flat_steps * max_steps / p.max_steps))
    return protocol(name, max_steps=max_steps, warmup_steps=warm, flat_steps=flat)


def cmd_train(args, out) -> int:
    from verify.train import registry
    from verify.train.loop import train_pack

    require_device(args.device)
    require(args.impl != "module" or args.device.startswith("cuda"), "--impl module needs --device cuda")
    spec = RunSpec(conv=not args.no_conv, task_args=_task_args(args.task_arg), model=_task_args(args.model_arg, "--model-arg"),
                   task=args.task, mixer=args.mixer,
                   kappa=args.kappa, vocab=args.vocab, seq_len=args.seq_len, d_model=args.d_model,
                   d_state=args.d_state, seed=args.seed, lr=args.lr, gate=args.gate, d_conv=args.d_conv,
                   expand=args.expand,
                   protocol=_protocol(args.protocol, args.max_steps))
    registry.validate(spec)
    t0 = time.time()
    try:
        rec = train_pack([spec], device=args.device, impl=args.impl)[0]
    except KeyboardInterrupt as e:
        return _interrupted(e, "train: interrupted")
    rec.pop("_weights", None)
    r = rec["result"]
    if args.json:
        print(json.dumps(rec, default=float))
    else:
        verdict = "solved" if r["solved"] else "not solved"
        out.print(f"{spec.mixer} on {spec.task}: test acc {r['test_acc']:.4f} ({verdict}), {r['steps']} steps, "
                  f"{time.time() - t0:.1f}s")
    return 0


def _interrupted(e: BaseException, what: str) -> int:
    signum = getattr(e, "signum", signal.SIGINT)
    print(f"{what} by {signal.Signals(signum).name}", file=sys.stderr)
    return 128 + signum


def _select(g, args) -> list[RunSpec]:
    """The grid's runs that the filters keep; a filter value the grid does not have is bad input."""
    kappas = sorted({k for v in g.vocabs for k, _ in g.cells(v)})
    for flag, values, have in (("--mixers", args.mixers, g.mixers), ("--kappas", args.kappas, kappas),
                               ("--vocabs", args.vocabs, g.vocabs)):
        for v in values or ():
            require(v in have, f"{flag} {v}: grid {g.name} has {', '.join(map(str, have))}")
    specs = [s for s in g.runs() if (args.mixers is None or s.mixer in args.mixers)
             and (args.kappas is None or s.kappa in args.kappas) and (args.vocabs is None or s.vocab in args.vocabs)
             and (args.seeds is None or s.seed < args.seeds)]
    require(specs, "the filters leave no runs of this grid")
    return specs


def cmd_sweep(args, out) -> int:
    try:
        return _sweep(args, out)
    except KeyboardInterrupt as e:  # before or after the training loop, which reports its own interrupts
        return _interrupted(e, "sweep: interrupted")


def _sweep(args, out) -> int:
    from verify.train.store import ResultStore, check_target
    from verify.train.sweep import adopt, grid, grids, tightness

    if args.list:
        for name, g in grids().items():
            print(f"{name}: {len(g.runs())} runs, {g.protocol} protocol. {g.note}")
        return 0
    if args.status:
        from verify.train.status import table

        print(table(STORE_DIR, args.seeds or 3))
        return 0
    require(args.grid is not None, f"sweep needs --grid NAME; known: {', '.join(grids())}")
    g = grid(args.grid)
    path = args.store or str(STORE_DIR / f"{g.name}.jsonl")
    flag = "--store" if args.store else "the default store"
    if args.tightness:
        require(Path(path).is_file(), f"{flag} {path}: no such results file")
        for row in tightness(ResultStore(path).records()):
            print(json.dumps(row))
        return 0
    specs = _select(g, args)
    if args.address is None:
        require_device(args.device)
    require(args.impl != "module" or args.device.startswith("cuda"), "--impl module needs --device cuda")
    if not args.no_ray:
        from verify.train.runner import _ray

        require(":" not in args.device, f"--device {args.device}: Ray assigns each pack its GPU, pass --device cuda "
                                        f"(or --no-ray to train on this one)")
        _ray()  # not installed: exit 2 now, before any work
    check_target(path, args.device, flag, args.allow_mixed_devices)
    store = ResultStore(path)
    report = None if args.quiet else (lambda line: print(line, flush=True))
    if g.reuses:
        n = adopt(specs, store, [store.path.parent / f"{other}.jsonl" for other in g.reuses], device=args.device)
        if report:
            report(f"{n} runs copied from {', '.join(g.reuses)} (same run keys)")
    return _run(specs, store, args, report)


def _run(specs, store, args, report) -> int:
    from verify.train.runner import run_sweep

    res = run_sweep(specs, store, device=args.device, impl=args.impl, pack_size=args.pack_size, minutes=args.minutes,
                    executor="inline" if args.no_ray else "ray", address=args.address,
                    gpus_per_pack=args.gpus_per_pack, cpus_per_pack=args.cpus_per_pack, mps=args.mps, report=report)
    where = f"{store.path}.ckpt"
    if res.interrupted:
        print(f"sweep: interrupted by {signal.Signals(res.interrupted).name}: {res.finished_now} runs stored, "
              f"{res.checkpointed} packs checkpointed in {where}; run the same command again to resume",
              file=sys.stderr)
        return 128 + res.interrupted
    print(json.dumps(res.counts()), flush=True)
    for line in res.failed:
        print(f"sweep: pack failed: {line}", file=sys.stderr)
    if res.failed:
        return 3
    if res.remaining and report:
        report(f"sweep: {res.remaining} runs left ({res.checkpointed} packs checkpointed in {where}); "
               f"run the same command again to resume")
    return 0
