"""The MQAR constructions of Huang et al. (Theorems 2, 3 and 4): shared parameters, builders and the MQAR check."""
from __future__ import annotations

from dataclasses import dataclass, field

from constructions import mqar_mamba, mqar_mamba2, mqar_s4d
from constructions.layout import Construction
from symbolic import theorem2, theorem3, theorem4
from verify.api import Spec
from verify.checks import CheckResult, check_mqar
from verify.memory import check_bytes
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
    noise_vocab: int = field(default=1, metadata=_help("number of distinct noise tokens"))

    @property
    def length(self) -> int:
        return self.seq_len if self.seq_len is not None else max(100, (2 + self.query_passes) * self.kappa)

    def task(self) -> MQARConfig:
        return MQARConfig(self.kappa, self.vocab, self.length, num_examples=self.samples,
                          noise_vocab=self.noise_vocab, query_passes=self.query_passes)


def _build_mqar_mamba(p: MQARParams, constants=theorem2.DEFAULT) -> Construction:
    p.task().validate()
    return mqar_mamba.build(p.kappa, p.vocab, p.variant, seq_len=p.length, seed=p.seed, d_conv=p.d_conv,
                            jl_eps=p.jl_eps, noise_vocab=p.noise_vocab, constants=constants)


def check_mqar_params(con: Construction, p: MQARParams, engine, batch_size: int = 256) -> CheckResult:
    """The MQAR check of any MQAR construction: ``p.samples`` sequences from seed ``p.seed + 1``."""
    return check_mqar(con, p.task(), engine, seed=p.seed + 1, batch_size=batch_size)


def _mqar_memory(sizes_fn):
    """memory(params) of an MQAR construction from its module's ``sizes`` (before anything is built)."""
    def memory(p) -> int:
        kw = {"key_dim": p.key_dim} if getattr(p, "key_dim", None) is not None else {}
        s = sizes_fn(p.kappa, p.vocab, p.variant, p.jl_eps, **kw)
        return check_bytes(n_tokens=p.kappa + p.vocab + p.noise_vocab, n_classes=p.vocab, d_model=s["d_model"],
                           d_inner=s.get("d_inner", s["d_model"]), d_state=s["d_state"], seq_len=p.length,
                           batch=min(256, p.samples), n_codes=p.vocab if p.variant == "jl" else 0, d_conv=p.d_conv)
    return memory


MQAR_MAMBA = Spec(
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
    constants=theorem2.DEFAULT,
    memory=_mqar_memory(mqar_mamba.sizes),
)


@dataclass(frozen=True)
class MQARMamba2Params(MQARParams):
    """MQAR parameters plus Theorem 3's step-2 key code dimension."""

    key_dim: int | None = field(default=None, metadata=_help(
        "jl: key code dimension N (default 2^ceil(log2(kappa+1)), Hadamard codes, proven for every sequence; "
        "smaller N: low-coherence codes, no proof possible below kappa, recall only measured)"))


def _build_mqar_mamba2(p: MQARMamba2Params, constants=theorem3.DEFAULT) -> Construction:
    p.task().validate()
    return mqar_mamba2.build(p.kappa, p.vocab, p.variant, seq_len=p.length, seed=p.seed, d_conv=p.d_conv,
                             jl_eps=p.jl_eps, noise_vocab=p.noise_vocab, key_dim=p.key_dim, constants=constants)


def _build_mqar_s4d(p: MQARParams, constants=theorem4.DEFAULT) -> Construction:
    p.task().validate()
    return mqar_s4d.build(p.kappa, p.vocab, p.variant, seq_len=p.length, seed=p.seed, d_conv=p.d_conv,
                          jl_eps=p.jl_eps, noise_vocab=p.noise_vocab, constants=constants)


MQAR_MAMBA2 = Spec(
    name="mqar-mamba2",
    theorem=mqar_mamba2.THEOREM,
    mixer="Mamba-2 (SSD, one head), gate held constant",
    formulas={
        "d_model": "one-hot: kappa + |V|;  jl: N_k + 1 + p, p = 2*ceil(2 ln|V| / eps^2)  "
                   "[paper: O(log kappa + log|V|)]",
        "d_state": "one-hot: kappa;  jl: N_k + 1 (codes + key flag), N_k = 2^ceil(log2(kappa+1)) or --key-dim  "
                   "[paper: O(log kappa); a proof for every sequence needs N >= kappa; typical sequences "
                   "measured at N_k ~ 6-7.5 ln kappa]",
        "d_inner": "= d_model; SSM width d_ssm = |V| or p (one head)",
        "d_conv": "2 taps used (any d_conv >= 2; default 4)",
    },
    params=MQARMamba2Params,
    defaults=(MQARMamba2Params(), MQARMamba2Params(variant="jl"),
              MQARMamba2Params(kappa=32, vocab=512, seq_len=256, samples=32),
              MQARMamba2Params(kappa=32, vocab=512, seq_len=256, samples=32, variant="jl")),
    build=_build_mqar_mamba2,
    check=check_mqar_params,
    constants=theorem3.DEFAULT,
    memory=_mqar_memory(mqar_mamba2.sizes),
)
MQAR_S4D = Spec(
    name="mqar-s4d",
    theorem=mqar_s4d.THEOREM,
    mixer="Mamba-S4D (S4D mixer, gate on)",
    formulas={
        "d_model": "one-hot: kappa + |V|;  jl: kappa + p (in_proj widens it to d_inner)",
        "d_state": "1  [paper: 1]",
        "d_inner": "one-hot: kappa*|V|;  jl: kappa*p  [paper d: O(kappa log|V|)]",
        "d_conv": "2 taps used (any d_conv >= 2; default 4)",
    },
    params=MQARParams,
    defaults=(MQARParams(samples=32), MQARParams(samples=32, variant="jl"),  # d_inner = kappa |V|: kept small
              MQARParams(kappa=16, vocab=64, seq_len=128, samples=16),
              MQARParams(kappa=16, vocab=256, seq_len=256, samples=16, variant="jl")),
    build=_build_mqar_s4d,
    check=check_mqar_params,
    constants=theorem4.DEFAULT,
    memory=_mqar_memory(mqar_s4d.sizes),
)


