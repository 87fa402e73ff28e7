"""``verify-constructions list``: every construction, its theorem, size formulas, engines and concrete sizes."""
from __future__ import annotations

import json
from dataclasses import fields, replace

from rich.console import Console
from rich.table import Table

from constructions.layout import mixer_sizes
from verify.registry import BROKEN, SPECS
from verify_constructions import building


def engine_support(kind: str) -> dict[str, str | None]:
    """engine -> None if it runs block ``kind``, else the reason it does not."""
    from verify.engines import cuda

    out: dict[str, str | None] = {"reference": None,
                                  "mamba_ssm": None if kind in cuda.MODULES else "mamba_ssm has no such module"}
    try:
        from verify.engines import hf
    except ImportError:
        return out
    out["transformers"] = None if kind in hf.SUPPORTED else hf.UNSUPPORTED.get(kind, "transformers has no such block")
    return out


def _kind(spec) -> str:
    return spec.build(spec.defaults[0]).config.kind


def concrete_sizes(spec, kappa: int, vocab: int) -> dict:
    """The sizes each variant's construction actually uses at (kappa, |V|), from the built block."""
    if not {"kappa", "vocab", "variant"} <= {f.name for f in fields(spec.params)}:
        return {}  # not an MQAR construction: its formulas say it all
    out = {}
    for variant in ("one-hot", "jl"):
        params = replace(spec.params(), kappa=kappa, vocab=vocab, variant=variant, samples=1)
        out[variant] = mixer_sizes(building.build(spec, params, what=f"list --kappa {kappa} --vocab {vocab}").config)
    return out


def _sizes_cell(sizes: dict) -> str:
    return "\n".join(f"{v}: d_model={s['d_model']} d_inner={s['d_inner']} d_state={s['d_state']} "
                     f"state={s['state_size']}" for v, s in sizes.items())


def cmd_list(args, out: Console) -> int:
    concrete = {n: concrete_sizes(s, args.kappa, args.vocab) for n, s in SPECS.items()}
    engines = {n: engine_support(_kind(s)) for n, s in SPECS.items()}
    if args.json:
        print(json.dumps({n: {"theorem": s.theorem, "mixer": s.mixer, "sizes": s.formulas, "engines": engines[n],
                              "constants": [f.name for f in fields(s.constants)] if s.constants else [],
                              "concrete": {"kappa": args.kappa, "vocab": args.vocab, **concrete[n]}}
                          for n, s in SPECS.items()} | {n: {"broken": why} for n, why in BROKEN.items()},
                         allow_nan=False))
        return 0
    t = Table(title=f"Constructions (concrete sizes at kappa={args.kappa}, |V|={args.vocab})", show_lines=True)
    for col in ("construction", "theorem", "sizes", "engines", "concrete sizes"):
        t.add_column(col, overflow="fold")
    for n, s in SPECS.items():
        formulas = "\n".join(f"{k}: {v}" for k, v in s.formulas.items())
        runs = "\n".join(f"{e}: yes" if why is None else f"{e}: no ({why})" for e, why in engines[n].items())
        t.add_row(f"{n}\n{s.mixer}", s.theorem, formulas, runs, _sizes_cell(concrete[n]))
    out.print(t)
    for name, why in BROKEN.items():
        out.print(f"[red]{name}: registered but cannot be loaded[/red]: {why}", highlight=False)
    return 0
