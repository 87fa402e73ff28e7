"""Every construction the command line knows: its theorem, size formulas, default checks, builder and check.

A later construction adds one ``Spec`` to ``SPECS``; the CLI needs no other change.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from constructions import mqar_mamba
from constructions.layout import Construction
from verify.checks import CheckResult, check_mqar
from verify.tasks.mqar import MQARConfig


@dataclass(frozen=True)
class MQARParams:
    """Parameters of an MQAR construction check (CLI flags of the same names)."""

    kappa: int = 8
    vocab: int = 128
    variant: str = "one-hot"
    seq_len: int | None = None  # None: max(100, 2 kappa + kappa * query_passes), the paper's T = 100 when it fits
    samples: int = 256
    seed: int = 0
    d_conv: int = 4
    jl_eps: float = 0.5
    query_passes: int = 1

    @property
    def length(self) -> int:
        return self.seq_len if self.seq_len is not None else max(100, (2 + self.query_passes) * self.kappa)

    def task(self) -> MQARConfig:
        return MQARConfig(self.kappa, self.vocab, self.length, num_examples=self.samples,
                          query_passes=self.query_passes)


@dataclass(frozen=True)
class Spec:
    name: str
    theorem: str
    mixer: str
    formulas: dict[str, str]
    defaults: tuple[MQARParams, ...]
    build: Callable[[MQARParams], Construction]
    check: Callable[..., CheckResult]


def _build_mqar_mamba(p: MQARParams) -> Construction:
    p.task().validate()
    return mqar_mamba.build(p.kappa, p.vocab, p.variant, seq_len=p.length, seed=p.seed, d_conv=p.d_conv,
                            jl_eps=p.jl_eps)


def _check_mqar(con: Construction, p: MQARParams, engine, batch_size: int = 256) -> CheckResult:
    return check_mqar(con, p.task(), engine, seed=p.seed + 1, batch_size=batch_size)


SPECS = {
    "mqar-mamba": Spec(
        name="mqar-mamba",
        theorem=mqar_mamba.THEOREM,
        mixer="Mamba (S6), gate held constant",
        formulas={
            "d_model": "one-hot: kappa + |V|;  jl: kappa + p, p = 2*ceil(2 ln|V| / eps^2)  [paper: O(kappa + log|V|)]",
            "d_state": "kappa  [paper: kappa]",
            "d_conv": "2 taps used (any d_conv >= 2; default 4)",
        },
        defaults=(MQARParams(), MQARParams(variant="jl"), MQARParams(kappa=32, vocab=512, seq_len=256, samples=32),
                  MQARParams(kappa=32, vocab=512, seq_len=256, samples=32, variant="jl")),
        build=_build_mqar_mamba,
        check=_check_mqar,
    ),
}
