"""``verify-constructions``: check, list and export the analytical constructions.

Run without a subcommand, it runs every construction's default checks (``list`` names them) on one engine and
reports each as it finishes, then a table; a construction refused for its input does not stop the others.

A check PASSES only when every obligation of its proof holds (sympy, at the construction's own parameters), every
scored position is recalled, and the measured margin meets the proven one less the engine's rounding allowance;
UNPROVEN means the parameters are outside the proof (measured only).

Exit codes: 0 every check passed; 1 a check failed or was not proven (or, in a bare run, a construction with no
default parameters was not run); 2 bad input (one line on stderr naming the requirement and the flag as typed); 3 an
internal error (one line; ``--debug`` prints the traceback; in a bare run also a construction that fails to load);
130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from dataclasses import MISSING, fields
from pathlib import Path
from typing import get_args, get_type_hints

from rich.console import Console
from rich.table import Table

from common.errors import RequirementError, require
from verify import checks
from verify.cli_support import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERNAL, EXIT_OK, integer, real, run_main, strict
from verify.engines import DTYPES, ENGINES, make_engine
from verify.registry import BROKEN, SPECS
from verify_constructions import building, exports, scaling_law
from verify.train import cli as train_cli

RUN_OPTIONS = ("engine", "dtype", "json", "quiet")
# Options typed before a subcommand act on it only where they mean the same thing there.
SAME_MEANING = {"check": set(RUN_OPTIONS), "list": {"json"}, "scaling-law": {"json"}, "train": {"json"},
                "export": {"quiet"}, "figures": {"quiet"}, "sweep": set()}
EXIT = {"pass": EXIT_OK, "fail": EXIT_FAILED, "input": EXIT_BAD_INPUT, "internal": EXIT_INTERNAL}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        raise RequirementError(f"{self.prog}: {message}")


SEED_MAX = 2**63 - 2
finite_float = real()  # argparse type: a finite number (NaN and inf are refused, naming the value as typed)


def _flag_type(name: str, t: type):
    """argparse type of a params field: floats finite; a field named ``seed`` a seed, an integer in [0, SEED_MAX]
    (numpy's generators take no negative seed, and a task may use seed + 1)."""
    if name == "seed":
        return integer(0, SEED_MAX)
    return finite_float if t is float else t


def _construction_args(p: argparse.ArgumentParser, spec) -> None:
    """One flag per field of the spec's params dataclass; defaults stay unset so that typed flags are known."""
    hints = get_type_hints(spec.params)
    for f in fields(spec.params):
        hint = hints[f.name]
        t = next((a for a in (get_args(hint) or (hint,)) if a in (int, float, str)), str)
        default = None if f.default is MISSING else f.default
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=_flag_type(f.name, t),
                       default=argparse.SUPPRESS, help=f"{f.metadata.get('help', '')} (default: {default})")
    if spec.constants is not None:
        names = ", ".join(f.name for f in fields(spec.constants))
        p.add_argument("--constant", action="append", default=[], metavar="NAME=VALUE",
                       help=f"override one of the proof's constants with an exact number (integer, decimal or a/b), "
                            f"repeatable; the obligations are decided at the new value. Names: {names}")


def _run_args(p: argparse.ArgumentParser, top: bool = False) -> None:
    prefix = "top_" if top else ""
    p.add_argument("--engine", dest=prefix + "engine", default=argparse.SUPPRESS,
                   help=f"one of: {', '.join(ENGINES)} (default: reference)")
    p.add_argument("--dtype", dest=prefix + "dtype", default=argparse.SUPPRESS,
                   help=f"one of: {', '.join(DTYPES)} (default: float64 on reference, float32 elsewhere)")
    p.add_argument("--json", dest=prefix + "json", action="store_true", default=argparse.SUPPRESS,
                   help="print one strict JSON object instead of a table")
    p.add_argument("--quiet", dest=prefix + "quiet", action="store_true", default=argparse.SUPPRESS,
                   help="no progress on stderr")


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="verify-constructions", description=__doc__,
                  formatter_class=argparse.RawDescriptionHelpFormatter)
    _run_args(top, top=True)
    top.add_argument("--debug", action="store_true", help="print the traceback of an internal error (anywhere)")
    top.add_argument("--jobs", type=int, default=None, help="bare run: checks run in this many processes (default: "
                                                           "min(cores, 4) on the reference engine, 1 on a GPU engine)")
    sub = top.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    lst = sub.add_parser("list", help="constructions, theorems, size formulas, engines and concrete sizes")
    lst.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object")
    lst.add_argument("--kappa", type=int, default=8, help="kappa for the concrete sizes (default: 8)")
    lst.add_argument("--vocab", type=int, default=128, help="|V| for the concrete sizes (default: 128)")
    scaling_law.add_parser(sub)
    train_cli.add_parsers(sub)
    fig = sub.add_parser("figures", help="render the papers' figures and tables from stored results")
    fig.add_argument("--results", default="results", help="stored results directory (default: results)")
    fig.add_argument("--out", default="figures", help="output directory (default: figures)")
    fig.add_argument("--only", default=None, help="render only this figure (default: all); names: "
                                                  + ", ".join(_figure_names()))
    fig.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress lines")
    check = sub.add_parser("check", help="build one construction and check it on generated tasks")
    export = sub.add_parser("export", help="write a construction's weights (safetensors) and config.json")
    checks_ = check.add_subparsers(dest="construction", metavar="CONSTRUCTION", parser_class=_Parser)
    exports_ = export.add_subparsers(dest="construction", metavar="CONSTRUCTION", parser_class=_Parser)
    for name in BROKEN:  # listed, and 'check NAME' says why it cannot load (``_main``)
        for subs in (checks_, exports_):
            subs.add_parser(name, help="registered but cannot be loaded")
    for name, spec in SPECS.items():
        c = checks_.add_parser(name, help=spec.theorem, description=f"{spec.theorem}: {spec.mixer}")
        _construction_args(c, spec)
        _run_args(c)
        c.add_argument("--from-export", default=None, metavar="DIR",
                       help="check the weights stored in an export folder (its recorded parameters; only "
                            "--samples may be changed)")
        e = exports_.add_parser(name, help=spec.theorem, description=f"{spec.theorem}: {spec.mixer}")
        _construction_args(e, spec)
        e.add_argument("--out", required=True, help="output folder (created; must be new or empty)")
        e.add_argument("--dtype", default="float32", help=f"tensor dtype in the file, one of: "
                                                          f"{', '.join(exports.FILE_DTYPES)} (default: float32)")
        e.add_argument("--force", action="store_true", help="replace an existing export in --out")
        e.add_argument("--format", default="mixer", help="mixer (embedding, mixer, readout; default) or lm (a whole "
                                                         "language model: transformers' MambaForCausalLM and, in "
                                                         "OUT/mamba_ssm, mamba_ssm's MambaLMHeadModel)")
        e.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no lines on stderr")
    return top


def _figure_names() -> list[str]:
    try:
        import paper_figures
        return list(paper_figures.FIGURES)
    except Exception:  # the figures need matplotlib; their names are listed when it imports
        return []


def _merge_run_options(args) -> None:
    """Options typed before the subcommand act on it where they mean the same there; elsewhere they are refused."""
    typed = {k: getattr(args, f"top_{k}") for k in RUN_OPTIONS if hasattr(args, f"top_{k}")}
    if args.command is not None:
        for k, v in typed.items():
            require(k in SAME_MEANING.get(args.command, set()),
                    f"--{k} typed before '{args.command}' has no effect there: type it after the subcommand "
                    f"(see 'verify-constructions {args.command} --help')")
            current = getattr(args, k, None)
            require(current in (None, False, v), f"--{k} was typed twice with different values ({v!r} and "
                                                 f"{current!r})")
    for k in RUN_OPTIONS:
        if getattr(args, k, None) in (None, False):
            setattr(args, k, typed.get(k, False if k in ("json", "quiet") else None))


def _spec(name: str | None):
    require(name is not None, f"name a construction; known: {', '.join(SPECS)}")
    require(name not in BROKEN, f"construction {name!r} is registered but cannot be loaded: {BROKEN.get(name)}")
    require(name in SPECS, f"unknown construction {name!r}; known: {', '.join(SPECS)}")
    return SPECS[name]


def _engine(args):
    engine = args.engine or "reference"
    dtype = args.dtype or ("float64" if engine == "reference" else "float32")
    return make_engine(engine, dtype)


# ----------------------------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------------------------

VERDICT_STYLE = {"PASS": "green", "FAIL": "red", "UNPROVEN": "yellow", "REFUSED": "magenta", "ERROR": "red",
                 "NOT RUN": "yellow"}


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "-"
    if not math.isfinite(x):
        return "inf" if x > 0 else ("-inf" if x < 0 else "nan")
    return f"{x:.{digits}g}"


def _margin_cell(r) -> str:
    if r.claim == "error":
        return f"err {_fmt(r.max_error, 3)}\n<= {_fmt(r.error_bound, 3)}"
    if r.claim == "probabilistic":
        return "need " + ("-" if r.required_recall is None else f"{r.required_recall:.3f}")
    bound = f">= {_fmt(r.proven_margin)}"
    if r.proven_margin is not None and not r.allowance <= 1e-6 * abs(r.proven_margin):
        bound += f" - {_fmt(r.allowance, 2)}"  # the rounding allowance matters at this dtype
    return f"{_fmt(r.min_margin)}\n{bound}"


def _label(r) -> str:
    variant = r.info.get("variant", "")
    return f"{r.construction} {variant}".strip()


def table(results, title: str) -> Table:
    """Verdict first; sizes wrap; every number printed whole (no ellipsis), so it reads at 80 columns."""
    t = Table(title=title, show_lines=False, expand=False, pad_edge=False)
    t.add_column("verdict", no_wrap=True)
    t.add_column("construction", overflow="fold", min_width=10)
    t.add_column("sizes", overflow="fold", min_width=12)
    t.add_column("recall", justify="right", no_wrap=True)
    t.add_column("margin / bound", justify="right", no_wrap=True)
    t.add_column("oblig.", justify="right", no_wrap=True)
    t.add_column("s", justify="right", no_wrap=True)
    for r in results:
        if isinstance(r, Refusal):
            t.add_row(f"[{VERDICT_STYLE[r.verdict]}]{r.verdict}[/]", r.name, r.message, "", "", "", "")
            continue
        held = len(r.obligations) - len(r.failed_obligations)
        t.add_row(f"[{VERDICT_STYLE[r.verdict]}]{r.verdict}[/]", _label(r), r.summary,
                  f"{r.correct}/{r.queries}", _margin_cell(r), f"{held}/{len(r.obligations)}", f"{r.seconds:.1f}")
    return t


def _reasons(results) -> list[str]:
    lines = []
    for r in results:
        if isinstance(r, Refusal):
            continue
        for reason in r.reasons:
            lines.append(f"{r.verdict} {_label(r)} ({r.summary}): {reason}")
    return lines


class Refusal:
    """A construction of a bare run that was not checked: refused for its input, an internal error, or not run."""

    passed = False

    def __init__(self, name: str, message: str, verdict: str):
        self.name, self.message, self.verdict = name, message, verdict

    def as_dict(self) -> dict:
        return {"construction": self.name, "verdict": self.verdict, "passed": False, "reasons": [self.message]}


def _exit_code(results) -> int:
    codes = [EXIT["internal"] if getattr(r, "verdict", "") == "ERROR" else
             EXIT["input"] if getattr(r, "verdict", "") == "REFUSED" else
             EXIT["pass"] if r.passed else EXIT["fail"] for r in results]
    return max(codes, default=EXIT["pass"])


def _print_json(body) -> None:
    print(json.dumps(strict(body), allow_nan=False))


def _report(results, args, out: Console, single: bool, title: str) -> int:
    code = _exit_code(results)
    if args.json:
        body = results[0].as_dict() if single else {
            "checks": [r.as_dict() for r in results], "passed": code == 0,
            "verdicts": {v: sum(getattr(r, "verdict", "") == v for r in results) for v in VERDICT_STYLE}}
        _print_json(body)
        return code
    out.print(table(results, title))
    for line in _reasons(results):
        out.print(line, markup=False, highlight=False)
    for r in results:
        if getattr(r, "reference_difference", None) is not None:
            out.print(f"{_label(r)} on {r.engine}: max |logit difference| from the float64 reference engine "
                      f"{r.reference_difference:.3g} (rounding bound {r.reference_bound:.3g})", highlight=False)
    n_pass = sum(getattr(r, "verdict", "") == "PASS" for r in results)
    summary = f"{n_pass}/{len(results)} checks passed"
    out.print(f"[green]{summary}[/green]" if code == 0 else f"[red]{summary}: exit {code}[/red]")
    return code


# ----------------------------------------------------------------------------------------------------------------
# Progress
# ----------------------------------------------------------------------------------------------------------------


class Progress:
    """Progress of long work on stderr: a line at most every ``every`` seconds (piped or on a terminal), silent
    with --quiet. ``checks.progress`` calls ``update(done, total)`` from inside a check."""

    def __init__(self, quiet: bool, every: float = 3.0):
        self.quiet, self.every = quiet, every
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)
        self.label, self.start, self.last = "", time.monotonic(), 0.0

    def begin(self, label: str) -> None:
        self.label, self.start, self.last = label, time.monotonic(), time.monotonic()

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.quiet or now - self.last < self.every:
            return
        self.last = now
        self.err.print(f"  {self.label}: {done}/{total} ({now - self.start:.0f} s)", markup=False)

    def line(self, text: str) -> None:
        if not self.quiet:
            self.err.print(text, markup=False)


# ----------------------------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------------------------


def cmd_list(args, out: Console) -> int:
    from verify_constructions.listing import cmd_list as run
    return run(args, out)


def _check_one(spec, params, constants, engine, progress: Progress, label: str):
    """The CheckResult of one construction built from ``params``."""
    return _checked(spec, building.build(spec, params, constants, what=label), params, engine, progress, label)


def _checked(spec, con, params, engine, progress: Progress, label: str):
    """``spec.check`` of a built construction, and what the verifier adds to its result on every path (``check``, a
    bare run, ``--from-export``): the proof as built, re-decided and compared with the result's
    (``checks.audit_proof``), and, on an engine other than the float64 reference, the largest logit difference from
    the reference on random tokens (``checks.compare_with_reference``); either failing FAILS the check."""
    proof = con.proof  # as built: a check that replaces it is compared with this one
    progress.begin(label)
    with checks.progress(progress.update):
        result = spec.check(con, params, engine)
    result.proof_mismatch = checks.audit_proof(result, con, proof)
    if engine.name != "reference" and result.claim != "error":
        length = min(256, int(result.config.get("seq_len", 64) or 64))
        vars(result).update(checks.compare_with_reference(con, engine, length))
    return result


def cmd_check(args, out: Console) -> int:
    spec = _spec(args.construction)
    progress = Progress(args.quiet)
    engine = _engine(args)
    if args.from_export:
        con, params = exports.load_export(spec, args)
        result = _checked(spec, con, params, engine, progress, f"{spec.name} from {args.from_export}")
    else:
        params = building.params_of(spec, args)
        constants = building.constants_of(spec, getattr(args, "constant", []))
        result = _check_one(spec, params, constants, engine, progress, spec.name)
    return _report([result], args, out, single=True, title=_title(engine))


def _title(engine) -> str:
    return f"Construction checks (engine {engine.name}, {engine.dtype_name})"


def _default_check(name: str, index: int, engine_name: str | None, dtype: str | None, debug: bool):
    """Default check ``index`` of construction ``name`` (in a worker process of the bare run): its CheckResult, or a
    Refusal for bad input or an internal error; never raises, so one construction cannot stop the others."""
    spec = SPECS[name]
    try:
        engine = make_engine(engine_name or "reference", dtype or ("float64" if engine_name in (None, "reference")
                                                                  else "float32"))
        return _check_one(spec, spec.defaults[index], None, engine, Progress(True), name)
    except RequirementError as e:
        return Refusal(name, f"refused: {e}", "REFUSED")
    except Exception as e:  # noqa: BLE001 -- reported, and the run goes on
        detail = traceback.format_exc() if debug else ""
        return Refusal(name, f"internal error: {type(e).__name__}: {e}" + (f"\n{detail}" if detail else ""), "ERROR")


def _worker_init(threads: int) -> None:
    """A bare run's worker: the main process handles Ctrl-C (and stops the workers); torch gets its share of cores."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)


def _jobs(args) -> int:
    if args.jobs is not None:
        require(args.jobs >= 1, f"--jobs {args.jobs}: must be >= 1")
        return args.jobs
    cores = os.cpu_count() or 1
    return 1 if (args.engine or "reference") != "reference" else max(1, min(cores, 4))  # a GPU engine: one process


def cmd_all(args, out: Console) -> int:
    """Every default check, ``--jobs`` at a time in worker processes; each is reported on stderr as it finishes, and a
    refusal or an error does not stop the others (the exit code says the worst)."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    import multiprocessing

    _engine(args)  # bad --engine / --dtype: refused before any work
    progress = Progress(args.quiet)
    todo = [(s.name, i) for s in SPECS.values() for i in range(len(s.defaults))]
    jobs = max(1, min(_jobs(args), len(todo)))
    results: list = [None] * len(todo)
    unchecked = _unchecked()
    for r in unchecked:
        progress.line(f"{r.name}: {r.message}")
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                               initargs=(max(1, (os.cpu_count() or 1) // jobs),))
    try:
        futures = {pool.submit(_default_check, name, i, args.engine, args.dtype, args.debug): k
                   for k, (name, i) in enumerate(todo)}
        for done, future in enumerate(as_completed(futures), 1):
            k = futures[future]
            r = results[k] = future.result()
            what = f"{_label(r)} {r.summary}: {r.verdict} ({r.seconds:.1f} s)" if not isinstance(r, Refusal) else \
                f"{r.name}: {r.message.splitlines()[0]}"
            progress.line(f"[{done}/{len(todo)}] {what}")
    except KeyboardInterrupt:
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return _report(results + unchecked, args, out, single=False, title=_title(_engine(args)))


def _unchecked() -> list[Refusal]:
    """The registered constructions a bare run cannot check, each reported rather than left out: one that fails to
    load (ERROR, exit 3) and one whose Spec lists no default parameters (NOT RUN, exit 1): a bare run passes only
    when every registered construction was checked."""
    return [*(Refusal(name, f"registered but cannot be loaded: {why}", "ERROR") for name, why in BROKEN.items()),
            *(Refusal(s.name, f"not run: its Spec lists no default parameters (Spec.defaults); check it with "
                              f"'verify-constructions check {s.name}'", "NOT RUN")
              for s in SPECS.values() if not s.defaults)]


def cmd_export(args, out: Console) -> int:
    spec = _spec(args.construction)
    params = building.params_of(spec, args)
    constants = building.constants_of(spec, getattr(args, "constant", []))
    return exports.cmd_export(spec, params, constants, args, out, lambda: building.build(spec, params, constants))


def cmd_figures(args, out: Console) -> int:
    import paper_figures

    results = Path(args.results)
    require(results.is_dir(), f"--results {args.results}: no such folder (the stored results are read from it)")
    if args.only is not None:
        require(args.only in paper_figures.FIGURES, f"--only {args.only}: unknown figure; known: "
                                                    f"{', '.join(paper_figures.FIGURES)}")
    exports.require_writable_folder(args.out, "--out")
    for line in paper_figures.render(args.results, args.out, args.only):
        if not getattr(args, "quiet", False):
            print(line)
    return 0


COMMANDS = {"list": cmd_list, "check": cmd_check, "export": cmd_export, "scaling-law": scaling_law.cmd,
            "train": train_cli.cmd_train, "sweep": train_cli.cmd_sweep, "figures": cmd_figures, None: cmd_all}


def _main(argv: list[str]) -> int:
    debug = "--debug" in argv  # anywhere on the line (run_main prints the traceback of an internal error)
    out = Console(width=None if sys.stdout.isatty() else 200)
    for command, name in zip(argv, argv[1:]):  # before its flags, which nothing could parse, are refused
        if command in ("check", "export") and name in BROKEN:
            _spec(name)
    args = parser().parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    _merge_run_options(args)
    return COMMANDS[args.command](args, out)


def main(argv=None) -> int:
    """Exit codes: ``verify.cli_support.run_main`` (0 pass, 1 fail, 2 bad input, 3 internal error, 130 interrupted)."""
    return run_main(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
