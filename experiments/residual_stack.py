"""Why the naive residual stack of designed layers loses recall with depth, and the designed stack that does not.

    python -m experiments.residual_stack [--out results/recall_scaling/residual_stack.json]

On regime_0 (V=512, N_f=16, L=64) at D=64, for N in ``--n-values`` and Lambda in ``--lams`` (Lambda N <= D), one
row per cell: the law and the corrected law at N_eff = Lambda N (and the corrected law at the independent hashes'
N_eff = Lambda N D / (D + (Lambda - 1) N)); the recall of the designed stack (``hash_recall.build_residual_stack``);
the recall of the naive stack (``build_analysis(n_layers=Lambda)``) as built and with each path repaired
(``verify.hash_operators.stack_ablation``: keys, queries or values read from the clean embedding, the readout
without the residual's e_q, everything at once); and the pollution power that layer 1 adds to layer 2's input at
the queries, measured (|y_1(t) - e_v / Lambda|^2) and predicted (n_w / (Lambda^2 N) + the self-match variance /
Lambda^2, ``symbolic.recall_scaling.naive_stack_moments``). The result file records its command; an existing one
is refused unless ``--overwrite``.
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from constructions import hash_recall
from symbolic import recall_scaling as rs
from verify import cli_support as cli
from verify import recall_law as rl
from verify.checks import score_queries
from verify.engines import make_engine
from verify.engines.linear import layer_forward, layer_params
from verify.hash_operators import stack_ablation
from verify.recall_grid import REGIMES, cell_seed
from verify.tasks.mqar import IGNORE, generate

MODULE = "experiments.residual_stack"
D_MODEL = 64
REPAIRS = {  # name -> stack_ablation switches
    "as_built": {},
    "readout_without_embedding": {"drop_embedding": True},
    "clean_keys": {"clean_keys": True},
    "clean_queries": {"clean_queries": True},
    "clean_values": {"clean_values": True},
    "clean_keys_queries_values": {"clean_keys": True, "clean_queries": True, "clean_values": True},
    "all_repaired": {"clean_keys": True, "clean_queries": True, "clean_values": True, "drop_embedding": True},
}


def pollution(con, tokens: torch.Tensor, labels: torch.Tensor, lam: int) -> float:
    """Mean over queries of |y_1(t) - e_{v*} / Lambda|^2: the power layer 1 adds to layer 2's input besides the fact."""
    e = con.embedding.double()
    y1 = layer_forward({k: v.double() for k, v in layer_params(con.mixer, 0).items()}, e[tokens], con.config)
    mask = labels != IGNORE
    return float(((y1[mask] - e[labels[mask]] / lam) ** 2).sum(-1).mean())


def table(n_values, lams, draws: int, seqs: int, seed: int, on_row=None) -> dict:
    regime = REGIMES["regime_0"]
    tokens, labels = generate(regime.task_config(seqs), seed)
    profile = rl.collision_profile(tokens, labels)
    tok, lab = torch.from_numpy(tokens), torch.from_numpy(labels)
    eng = make_engine("reference", "float64")
    V, nf, D = regime.vocab, regime.facts, D_MODEL
    self_var = rs.hash_moments()["self_var"]
    rows = []
    for lam in lams:
        for n in n_values:
            if lam * n > D:
                continue
            n_par = lam * n * D / (D + (lam - 1) * n)
            row = {"D": D, "N": n, "Lambda": lam, "law": float(rl.law_num(D, n, V, nf, 3.0, lam)),
                   "corrected": rl.corrected_law_num(D, n, V, profile, lam),
                   "corrected_independent_hashes": rl.corrected_law_num(D, n_par, V, profile)}
            designed, naive, power = [], {k: [] for k in REPAIRS}, []
            for k in range(draws):
                s_ = cell_seed(seed, D, n, 100 * lam + k)
                stack = hash_recall.build_residual_stack(V, D, n, lam, s_)
                q, c, _ = score_queries(stack, eng.hidden(stack, tok), lab)
                designed.append(c / q)
                con = hash_recall.build_analysis(V, D, n, s_, n_layers=lam)
                for name, switches in REPAIRS.items():
                    q, c, _ = score_queries(con, stack_ablation(con, tok, **switches), lab)
                    naive[name].append(c / q)
                if lam > 1:
                    power.append(pollution(con, tok, lab, lam))
            row.update({"designed_stack": float(np.mean(designed)),
                        "naive_stack": {k: float(np.mean(v)) for k, v in naive.items()}})
            if lam > 1:  # one layer: nothing above it to pollute
                predicted = (profile.n_w.mean() / n + float(self_var.subs({rs.D: D, rs.N: n}))) / lam**2
                row.update({"pollution_measured": float(np.mean(power)), "pollution_predicted": float(predicted)})
            rows.append(row)
            if on_row:
                on_row(row)
    return {"regime": regime.name, "draws": draws, "seqs": seqs, "seed": seed, "rows": rows}


def parser() -> cli.Parser:
    ap = cli.Parser(prog=f"python -m {MODULE}", description=__doc__)
    ap.add_argument("--out", default="results/recall_scaling/residual_stack.json", help="result file")
    ap.add_argument("--n-values", type=cli.integers(1, D_MODEL), default=[4, 8, 16],
                    help="comma-separated N (default: 4,8,16)")
    ap.add_argument("--lams", type=cli.integers(1, D_MODEL), default=[1, 2, 3, 4],
                    help="comma-separated Lambda (default: 1,2,3,4)")
    ap.add_argument("--draws", type=cli.integer(1, 10**4), default=3, help="code draws per cell")
    ap.add_argument("--seqs", type=cli.integer(1, 10**5), default=64, help="sequences")
    ap.add_argument("--seed", type=cli.integer(0, 2**63 - 1), default=0, help="seed of the sequences and codes")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing result file")
    return ap


def main(argv) -> int:
    args = parser().parse_args(argv)
    path = cli.output_file(args.out, "--out", args.overwrite)
    regime = REGIMES["regime_0"]
    # the largest tensors: alpha (seqs, L, L) and the stack's activations (seqs, L, 4 * 2D), float64, a few copies
    cli.require_memory(8 * 16 * args.seqs * regime.seq_len * (regime.seq_len + 8 * D_MODEL), f"--seqs {args.seqs}",
                       "--seqs")
    cells = sum(lam * n <= D_MODEL for lam in args.lams for n in args.n_values)
    with cli.Progress(cells, "residual stack", args.quiet) as progress:
        data = table(args.n_values, args.lams, args.draws, args.seqs, args.seed, on_row=lambda r: progress.advance())
    cli.write_json(path, {"command": cli.command_line(MODULE, argv), **data})
    for row in data["rows"]:
        print(cli.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
