"""``verify-constructions``: list, check and export the analytical constructions.

Exit codes: 0 every check passed; 1 a check failed; 2 bad input (one line on stderr naming the requirement).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import MISSING, fields
from typing import get_args, get_type_hints

from rich.console import Console
from rich.table import Table

from constructions.errors import RequirementError
from verify.engines import DTYPES, ENGINES, make_engine
from verify.registry import SPECS
from verify_constructions import scaling_law
from verify.train import cli as train_cli


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        raise RequirementError(f"{self.prog}: {message}")


def _construction_args(p: argparse.ArgumentParser, spec) -> None:
    hints = get_type_hints(spec.params)
    for f in fields(spec.params):
        hint = hints[f.name]
        t = next((a for a in (get_args(hint) or (hint,)) if a in (int, float, str)), str)
        default = None if f.default is MISSING else f.default
        p.add_argument(f"--{f.name.replace('_', '-')}", type=t, default=default,
                       help=f"{f.metadata.get('help', '')} (default: {default})")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", default="reference", help=f"one of: {', '.join(ENGINES)}")
    p.add_argument("--dtype", default=None, help=f"one of: {', '.join(DTYPES)} (default float64 on reference, "
                                                 "float32 on mamba_ssm)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="verify-constructions", description=__doc__)
    _run_args(top)
    sub = top.add_subparsers(dest="command", parser_class=_Parser)
    lst = sub.add_parser("list", help="constructions, theorems, size formulas and concrete sizes")
    lst.add_argument("--json", action="store_true")
    lst.add_argument("--kappa", type=int, default=8, help="kappa for the concrete sizes (default: 8)")
    lst.add_argument("--vocab", type=int, default=128, help="|V| for the concrete sizes (default: 128)")
    scaling_law.add_parser(sub)
    train_cli.add_parsers(sub)
    fig = sub.add_parser("figures", help="render the papers' figures and tables from stored results (paper_figures)")
    fig.add_argument("--results", default="results", help="stored results directory (default: results)")
    fig.add_argument("--out", default="figures", help="output directory (default: figures)")
    fig.add_argument("--only", default=None, help="render only this figure (names: paper_figures.FIGURES)")
    check = sub.add_parser("check", help="build one construction and check it on generated tasks")
    export = sub.add_parser("export", help="write weights (safetensors, mamba_ssm names) and config.json")
    checks = check.add_subparsers(dest="construction", metavar="CONSTRUCTION", parser_class=_Parser)
    exports = export.add_subparsers(dest="construction", metavar="CONSTRUCTION", parser_class=_Parser)
    for name, spec in SPECS.items():
        c = checks.add_parser(name, help=spec.theorem)
        _construction_args(c, spec)
        _run_args(c)
        e = exports.add_parser(name, help=spec.theorem)
        _construction_args(e, spec)
        e.add_argument("--out", required=True, help="output directory")
        e.add_argument("--dtype", default="float32", help="tensor dtype in the file")
    return top


def _params(spec, args):
    names = {f.name for f in fields(spec.params)}
    return spec.params(**{k: v for k, v in vars(args).items() if k in names})


def _spec(name: str):
    if name is None:
        raise RequirementError(f"name a construction; known: {', '.join(SPECS)}")
    if name not in SPECS:
        raise RequirementError(f"unknown construction {name!r}; known: {', '.join(SPECS)}")
    return SPECS[name]


def _engine(args):
    dtype = args.dtype or ("float64" if args.engine == "reference" else "float32")
    return make_engine(args.engine, dtype)


def _table(results) -> Table:
    t = Table(title="Construction checks")
    for col in ("construction", "theorem", "sizes", "engine", "dtype", "seqs", "queries", "recall",
                "min margin", "proven margin", "time (s)", "verdict"):
        t.add_column(col, no_wrap=True, justify="right" if col in ("seqs", "queries", "recall", "min margin",
                                                                   "proven margin", "time (s)") else "left")
    for r in results:
        variant = r.info.get("variant", "")
        proven = "" if r.proven_margin is None else f"{r.proven_margin:.4g}"
        measured = f"{r.min_margin:.4g}"
        if r.error_bound is not None:  # a real-valued claim: max error against the derived bound
            measured, proven = f"err {r.max_error:.3g}", f"bound {r.error_bound:.3g}"
        t.add_row(f"{r.construction} {variant}".strip(), r.theorem.split(" (")[0], r.summary, r.engine, r.dtype, str(r.sequences), str(r.queries),
                  f"{r.recall:.4f}", measured, proven, f"{r.seconds:.2f}",
                  "[green]PASS[/green]" if r.passed else "[red]FAIL[/red]")
    return t


def _concrete_sizes(spec, kappa: int, vocab: int) -> dict:
    """The sizes each variant's construction actually uses at (kappa, |V|), from the built block."""
    from dataclasses import replace

    from constructions.layout import mixer_sizes

    out = {}
    if not {"kappa", "vocab", "variant"} <= {f.name for f in fields(spec.params)}:
        return out  # not an MQAR construction: its formulas say it all
    for variant in ("one-hot", "jl"):
        params = replace(spec.params(), kappa=kappa, vocab=vocab, variant=variant, samples=1)
        out[variant] = mixer_sizes(spec.build(params).config)
    return out


def _sizes_cell(sizes: dict) -> str:
    return "\n".join(f"{v}: d_model={s['d_model']} d_inner={s['d_inner']} d_state={s['d_state']} "
                     f"state={s['state_size']}" for v, s in sizes.items())


def cmd_list(args, out: Console) -> int:
    concrete = {n: _concrete_sizes(s, args.kappa, args.vocab) for n, s in SPECS.items()}
    if args.json:
        print(json.dumps({n: {"theorem": s.theorem, "mixer": s.mixer, "sizes": s.formulas,
                              "concrete": {"kappa": args.kappa, "vocab": args.vocab, **concrete[n]}}
                          for n, s in SPECS.items()}))
        return 0
    t = Table(title=f"Constructions (concrete sizes at kappa={args.kappa}, |V|={args.vocab})", show_lines=True)
    for col in ("construction", "theorem", "mixer", "d_model", "d_state", "d_inner", "d_conv", "concrete sizes"):
        t.add_column(col)
    for s in SPECS.values():
        t.add_row(s.name, s.theorem, s.mixer, s.formulas["d_model"], s.formulas["d_state"],
                  s.formulas.get("d_inner", "= d_model"), s.formulas["d_conv"], _sizes_cell(concrete[s.name]))
    out.print(t)
    return 0


def _report(results, args, out: Console, single: bool) -> int:
    ok = all(r.passed for r in results)
    if args.json:
        body = results[0].as_dict() if single else {"checks": [r.as_dict() for r in results], "passed": ok}
        print(json.dumps(body, default=float))
    else:
        out.print(_table(results))
        out.print("[green]all checks passed[/green]" if ok else "[red]some checks FAILED[/red]")
    return 0 if ok else 1


def cmd_check(args, out: Console) -> int:
    spec = _spec(args.construction)
    params, engine = _params(spec, args), _engine(args)
    con = spec.build(params)
    return _report([spec.check(con, params, engine)], args, out, single=True)


def cmd_all(args, out: Console) -> int:
    engine = _engine(args)
    results = [s.check(s.build(p), p, engine) for s in SPECS.values() for p in s.defaults]
    return _report(results, args, out, single=False)


def cmd_export(args, out: Console) -> int:
    import torch

    from constructions.export import save

    spec = _spec(args.construction)
    params = _params(spec, args)
    file_dtypes = tuple(d for d in DTYPES if d != "tfloat32")  # TF32 is a matmul mode, not a storage type
    if args.dtype not in file_dtypes:
        raise RequirementError(f"export dtype must be one of {file_dtypes}, got {args.dtype!r}")
    path = save(spec.build(params), args.out, dtype=getattr(torch, args.dtype))
    out.print(f"wrote {path / 'model.safetensors'} and {path / 'config.json'}")
    return 0


def cmd_figures(args, out: Console) -> int:
    import paper_figures

    for line in paper_figures.render(args.results, args.out, args.only):
        print(line)
    return 0


def main(argv=None) -> int:
    out = Console(width=None if sys.stdout.isatty() else 200)
    try:
        args = parser().parse_args(argv)
        command = {"list": cmd_list, "check": cmd_check, "export": cmd_export, "scaling-law": scaling_law.cmd,
                   "train": train_cli.cmd_train, "sweep": train_cli.cmd_sweep,
                   "figures": cmd_figures, None: cmd_all}[args.command]
        return command(args, out)
    except RequirementError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
