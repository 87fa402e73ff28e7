"""The key code dimension N that Theorem 3's step 2 needs *empirically* (typical sequences), next to the paper's.

No N < kappa can be proven for every sequence (rank bound, ``constructions.mqar_mamba2``); the paper's
N = O(log kappa) and its trained models' N ~ 4 ln kappa (Fig. A.3) are typical-case numbers. ``empirical_key_dim``
measures the typical-case N of our construction: the smallest even ``key_dim`` whose low-coherence balanced key codes
(``jl.low_coherence_codes``) recall exactly on every query of ``samples`` generated sequences. A measurement, not a
proof; ``python -m experiments.key_dim`` prints it next to the paper's N for several kappa.
"""
from __future__ import annotations

from constructions import mqar_mamba2
from common.errors import RequirementError
from verify.checks import check_mqar
from verify.engines import make_engine
from verify.tasks.mqar import MQARConfig


def empirical_key_dim(kappa: int, vocab_size: int, seq_len: int = 100, samples: int = 1000, seed: int = 0,
                      jl_eps: float = 0.5, dtype: str = "float64") -> int | None:
    """Smallest even key_dim <= hadamard order with exact recall on ``samples`` sequences (None if none below)."""
    engine, task = make_engine("reference", dtype), MQARConfig(kappa, vocab_size, seq_len, num_examples=samples)
    for n in range(2, mqar_mamba2.key_dim_default(kappa), 2):
        try:
            con = mqar_mamba2.build(kappa, vocab_size, "jl", seq_len=seq_len, seed=seed, jl_eps=jl_eps, key_dim=n)
        except RequirementError:
            continue  # fewer than kappa balanced codes that are pairwise neither equal nor opposite
        result = check_mqar(con, task, engine, seed=seed + 1, constructed=False)  # typical sequences only
        if result.correct == result.queries:
            return n
    return None
