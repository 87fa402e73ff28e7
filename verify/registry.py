"""Every construction the command line knows: its theorem, size formulas, parameters, default checks, builder, check.

A construction adds one ``Spec`` to ``SPECS`` (in its own module under ``verify/specs/`` if it is long); the CLI
derives ``check NAME`` / ``export NAME`` flags from the fields of ``Spec.params`` (``field_name`` -> ``--field-name``,
help text from ``field(metadata={"help": ...})``) and needs no other change.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from constructions import mqar_mamba
from constructions.layout import Construction
from verify.checks import CheckResult, check_mqar
from verify.tasks.mqar import MQARConfig


def _help(text: str):
    return {"help": text}


@dataclass(frozen=True)
class MQARParams:
    """Parameters of an MQAR construction check (CLI flags of the same names)."""

    kappa: int = field(default=8, metadata=_help("number of keys"))
    vocab: int = field(default=128, metadata=_help("number of values |V|"))
    variant: str = field(default="one-hot", metadata=_help("one-hot (step 1) or jl (step 2)"))
    seq_len: int | None = field(default=None, metadata=_help("sequence length T (default max(100, (2 + passes) kappa))"))
    samples: int = field(default=256, metadata=_help("number of sequences checked"))
    seed: int = field(default=0, metadata=_help("seed of the JL codes; the task uses seed + 1"))
    d_conv: int = field(default=4, metadata=_help("conv width of the mamba_ssm module (>= 2)"))
    jl_eps: float = field(default=0.5, metadata=_help("JL target coherence eps (sets p)"))
    query_passes: int = field(default=1, metadata=_help("times each key is queried"))

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
    formulas: dict[str, str]  # at least d_model, d_state, d_conv
    params: type  # frozen dataclass; its fields are the CLI flags
    defaults: tuple  # params instances that a bare ``verify-constructions`` checks
    build: Callable[..., Construction]
    check: Callable[..., CheckResult]  # check(construction, params, engine) -> CheckResult


def _build_mqar_mamba(p: MQARParams) -> Construction:
    p.task().validate()
    return mqar_mamba.build(p.kappa, p.vocab, p.variant, seq_len=p.length, seed=p.seed, d_conv=p.d_conv,
                            jl_eps=p.jl_eps)


def check_mqar_params(con: Construction, p: MQARParams, engine, batch_size: int = 256) -> CheckResult:
    """The MQAR check of any MQAR construction: ``p.samples`` sequences from seed ``p.seed + 1``."""
    return check_mqar(con, p.task(), engine, seed=p.seed + 1, batch_size=batch_size)


SPECS: dict[str, Spec] = {
    "mqar-mamba": Spec(
        name="mqar-mamba",
        theorem=mqar_mamba.THEOREM,
        mixer="Mamba (S6), gate held constant",
        formulas={
            "d_model": "one-hot: kappa + |V|;  jl: kappa + p, p = 2*ceil(2 ln|V| / eps^2)  [paper: O(kappa + log|V|)]",
            "d_state": "kappa  [paper: kappa]",
            "d_conv": "2 taps used (any d_conv >= 2; default 4)",
        },
        params=MQARParams,
        defaults=(MQARParams(), MQARParams(variant="jl"), MQARParams(kappa=32, vocab=512, seq_len=256, samples=32),
                  MQARParams(kappa=32, vocab=512, seq_len=256, samples=32, variant="jl")),
        build=_build_mqar_mamba,
        check=check_mqar_params,
    ),
}


def _register(module) -> None:
    SPECS[module.SPEC_FIELDS["name"]] = Spec(**module.SPEC_FIELDS)


# Issue 4: Huang et al. Corollary 2 (KEEP n-TH), Lemma 3 (induction heads), Theorem 1 (Haar); see verify/specs/.
from verify.specs import keep_nth as _keep_nth  # noqa: E402

_register(_keep_nth)
from verify.specs import induction_heads as _induction_heads  # noqa: E402

_register(_induction_heads)
from verify.specs import haar as _haar  # noqa: E402

_register(_haar)
