"""The key code dimension N that Theorem 3's construction needs on typical sequences, next to the paper's N.

    python -m experiments.key_dim [--vocab 128] [--kappas 4,8,16,32]

prints one JSON line per kappa: the empirical N (``verify.key_dim.empirical_key_dim``: the smallest even key_dim
with exact recall on every query of ``--samples`` sequences, a measurement, not a proof), the paper's log2 kappa and
4 ln kappa, the proven N (the Hadamard order) and the rank bound kappa below which no N holds for every sequence.
"""
from __future__ import annotations

import math
import sys

from constructions import mqar_mamba2
from common.errors import RequirementError
from verify import cli_support as cli
from verify.key_dim import empirical_key_dim
from verify.tasks.mqar import MQARConfig

MODULE = "experiments.key_dim"
BATCH = 256  # sequences per batch of check_mqar
READOUT_CHUNK = 2**23  # logits per chunk of the readout (verify.checks)


def seq_len_for(kappa: int, seq_len: int) -> int:
    return max(seq_len, 3 * kappa)  # room for kappa pairs and kappa queries


def memory_bytes(kappa: int, vocab: int, seq_len: int) -> int:
    """Embedding and readout (float64, a few copies), the readout's logit chunks, one batch's activations."""
    d = mqar_mamba2.sizes(kappa, vocab, "jl")["d_model"]
    return 8 * (4 * (vocab + kappa + 1) * d + 3 * READOUT_CHUNK + 12 * BATCH * seq_len_for(kappa, seq_len) * d)


def parser() -> cli.Parser:
    ap = cli.Parser(prog=f"python -m {MODULE}", description=__doc__)
    ap.add_argument("--vocab", type=cli.integer(2, 2**31 - 1), default=128, help="|V| of the MQAR task")
    ap.add_argument("--kappas", type=cli.integers(1, 4096), default=[4, 8, 16, 32],
                    help="comma-separated kappa values (default: 4,8,16,32)")
    ap.add_argument("--seq-len", type=cli.integer(3, 10**7), default=100,
                    help="sequence length (at least 3 kappa is used)")
    ap.add_argument("--samples", type=cli.integer(1, 10**9), default=1000, help="sequences checked per key_dim")
    ap.add_argument("--seed", type=cli.integer(0, 2**32 - 2), default=0, help="seed of the codes and sequences")
    return ap


def main(argv) -> int:
    args = parser().parse_args(argv)
    for k in args.kappas:
        try:
            MQARConfig(k, args.vocab, seq_len_for(k, args.seq_len), num_examples=args.samples).validate()
        except RequirementError as e:
            raise RequirementError(f"--kappas {k} --vocab {args.vocab}: {e}") from None
    cli.require_memory(max(memory_bytes(k, args.vocab, args.seq_len) for k in args.kappas),
                       f"--vocab {args.vocab} --kappas {max(args.kappas)}", "--vocab, --kappas or --seq-len")
    with cli.Progress(len(args.kappas), "key dim", args.quiet) as progress:
        for k in args.kappas:
            progress.update(f"kappa = {k}")
            n = empirical_key_dim(k, args.vocab, seq_len_for(k, args.seq_len), args.samples, seed=args.seed)
            row = {"kappa": k, "empirical_N": n, "log2_kappa": math.log2(k), "4_ln_kappa": 4 * math.log(k),
                   "proven_N": mqar_mamba2.key_dim_default(k), "rank_bound": k}
            if n is None:
                row["empirical_N_note"] = "no even key_dim below the proven N recalled every query"
            print(cli.dumps(row), flush=True)
            progress.advance()
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
