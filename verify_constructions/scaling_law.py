"""``verify-constructions scaling-law``: the recall scaling law of Koren et al. 2026 as a calculator.

Without ``--d-model/--d-state``: the sizes the law requires for ``--target-accuracy`` (D_min, N_min(D), the N = D
point). With them: the predicted per-query recall (law; corrected law on the generator's sequences), the largest
vocabulary recalled at the target and at 50%, and the bounds. The coefficient a is computed from the generator
(``symbolic.recall_scaling.a_coefficient``) for the chosen model, never typed in (``--a`` overrides it).
"""
from __future__ import annotations

import json
import math

from rich.console import Console
from rich.table import Table

from common.errors import require
from symbolic import recall_scaling as rs
from verify import recall_law as rl
from verify.cli_support import real, strict
from verify.tasks.mqar import MQARConfig, generate

MODELS = ("designed", "trained-linear", "trained-full")


def add_parser(sub) -> None:
    p = sub.add_parser("scaling-law", help="sizes and recall predicted by the recall scaling law (Koren et al. 2026)")
    p.add_argument("--vocab", type=int, required=True, help="vocabulary size V")
    p.add_argument("--facts", type=int, required=True, help="number of facts N_f")
    p.add_argument("--target-accuracy", type=real(), default=0.99, help="target per-query recall (default 0.99)")
    p.add_argument("--layers", type=int, default=1, help="layers Lambda (N_eff = Lambda N; default 1)")
    p.add_argument("--model", default="designed", help=f"one of {', '.join(MODELS)} (sets a; default designed)")
    p.add_argument("--task", default="mqar", help="mqar or ar (default mqar)")
    p.add_argument("--seq-len", type=int, default=None, help="MQAR length L (default 4 N_f)")
    p.add_argument("--fillers", default="random", help="random (paper) or empty")
    p.add_argument("--a", type=real(), default=None, help="override the computed noise coefficient a")
    p.add_argument("--d-model", type=int, default=None, help="embedding dimension D")
    p.add_argument("--d-state", type=int, default=None, help="state dimension N")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def coefficient(model: str, task: str, facts: int, seq_len: int | None, fillers: str, vocab: int) -> float:
    require(model in MODELS, f"model must be one of {MODELS}, got {model!r}")
    circuit = "designed" if model == "designed" else "fact-selective"
    a = rs.a_coefficient(circuit, task, nf=facts, seq_len=None if task == "ar" or seq_len in (None, 4 * facts)
                         else seq_len, random_fillers=fillers == "random", vocab=vocab)
    return float(a) / (2 if model == "trained-full" else 1)  # the paper's empirical 1/2 for the full model


def compute(args) -> dict:
    V, nf, p, lam = args.vocab, args.facts, args.target_accuracy, args.layers
    require(args.task in rs.TASKS, f"task must be one of {rs.TASKS}, got {args.task!r}")
    require(args.fillers in ("random", "empty"), f"fillers must be random or empty, got {args.fillers!r}")
    require(lam >= 1, f"layers must be >= 1, got {lam}")
    L = 2 * nf + 1 if args.task == "ar" else (args.seq_len or 4 * nf)
    task = MQARConfig(nf, V, L, num_examples=64, layout="zoology", random_fillers=args.fillers == "random",
                      reduce_to_ar=args.task == "ar")
    task.validate()  # V > L, L >= 4 N_f, ... (the paper's generator constraints)
    a = args.a if args.a is not None else coefficient(args.model, args.task, nf, args.seq_len, args.fillers, V)
    require(a > 0, f"a must be > 0, got {a}")
    z = rl.z_of(p)
    req = rl.required_sizes_num(V, nf, a, p, lam)
    out = {"vocab": V, "facts": nf, "seq_len": L, "task": args.task, "model": args.model, "layers": lam, "a": a,
           "a_paper": float(rs.PAPER_A.get((args.model, args.task), float("nan"))), "target_accuracy": p,
           "m_V": float(rl.m_v_num(V)), "z": z, "k": req["k"], "D_min": req["D_min"], "D_at_N_equal_D": req["D_square"]}
    if args.d_model is None and args.d_state is None:
        ds = sorted({math.ceil(req["D_square"]), *[d for d in (16, 32, 64, 128, 256, 512, 1024) if d > req["k"]]})
        out["N_min"] = {d: math.ceil(req["N_min"](d)) for d in ds}
        return out
    require(args.d_model is not None and args.d_state is not None, "give both --d-model and --d-state")
    D, N = args.d_model, args.d_state
    require(D >= 2 and N >= 1, f"need D >= 2 and N >= 1, got D={D}, N={N}")
    require(N <= D, f"the hashing circuit needs N <= D (F F^T = (D/N) I_N), got N={N} > D={D}")
    tokens, labels = generate(task, 0)
    profile = rl.collision_profile(tokens, labels)
    n_w = int(profile.n_w.max())
    out.update({
        "d_model": D, "d_state": N,
        "law": float(rl.law_num(D, N, V, nf, a, lam)),
        "corrected_law_designed": rl.corrected_law_num(D, N, V, profile, lam) if args.model == "designed" else None,
        "largest_vocab_at_target": rl.largest_vocab_num(D, N, nf, a, p, lam),
        "largest_vocab_at_50pct": rl.largest_vocab_num(D, N, nf, a, 0.5, lam),
        "gaussian_union_bound_per_query": rl.gaussian_union_bound(D, N, V, n_w, lam),
        "rigorous_bound_per_query": rl.rigorous_failure_bound(D, N, V, n_w, int(profile.context.max()),
                                                              max(int(profile.multiplicity.max()), 1))["bound"]
        if lam == 1 and args.model == "designed" else None,
    })
    return out


def cmd(args, out: Console) -> int:
    r = compute(args)
    if args.json:
        print(json.dumps(strict(json.loads(json.dumps(r, default=float))), allow_nan=False))
        return 0
    t = Table(title=f"Recall scaling law: V={r['vocab']} N_f={r['facts']} L={r['seq_len']} {r['task']} "
                    f"{r['model']} Lambda={r['layers']}  a={r['a']:.4g} (paper {r['a_paper']:.4g})")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    rows = [("target accuracy p", f"{r['target_accuracy']:g}"), ("m_V", f"{r['m_V']:.4f}"),
            ("k = (m_V + z_p)^2", f"{r['k']:.3f}"), ("D_min (N -> inf)", f"{r['D_min']:.2f}"),
            ("D at N = D", f"{r['D_at_N_equal_D']:.2f}")]
    if "N_min" in r:
        rows += [(f"N_min at D={d}", str(n)) for d, n in r["N_min"].items()]
    else:
        rows += [("D, N", f"{r['d_model']}, {r['d_state']}"), ("law", f"{r['law']:.4f}")]
        if r["corrected_law_designed"] is not None:
            rows.append(("corrected law (designed)", f"{r['corrected_law_designed']:.4f}"))
        rows += [(f"largest V at p={r['target_accuracy']:g}", f"{r['largest_vocab_at_target']:.4g}"),
                 ("largest V at p=0.5", f"{r['largest_vocab_at_50pct']:.4g}"),
                 ("P(query wrong) <= (Gaussian union)", f"{r['gaussian_union_bound_per_query']:.3g}")]
        if r["rigorous_bound_per_query"] is not None:
            rows.append(("P(query wrong) <= (rigorous)", f"{r['rigorous_bound_per_query']:.3g}"))
    for row in rows:
        t.add_row(*row)
    out.print(t)
    return 0
