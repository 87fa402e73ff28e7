"""``keep-nth``: Corollary 2's S6 layer on the paper's KEEP n-TH task (+PE), exact argmax at every t >= n."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from constructions import keep_nth
from constructions.layout import Construction
from symbolic import corollary2
from verify.api import Spec
from verify.checks import CheckResult, check_labelled
from verify.memory import TASK_BYTES, check_bytes
from verify.specs import batch_for, help_
from verify.tasks.keep_nth import KeepNthConfig, generate


@dataclass(frozen=True)
class KeepNthParams:
    """Parameters of the KEEP n-TH check (CLI flags of the same names)."""

    vocab: int = field(default=128, metadata=help_("number of tokens |V| (paper: 128)"))
    n: int = field(default=5, metadata=help_("keep the n-th token (paper: 5, KEEP FIFTH)"))
    seq_len: int = field(default=50, metadata=help_("sequence length T (paper: 50; the proof holds for every T)"))
    samples: int | None = field(default=None, metadata=help_("sequences checked (default min(256, max(8, 1e5/T)))"))
    seed: int = field(default=0, metadata=help_("task seed"))
    d_conv: int = field(default=4, metadata=help_("conv width of the mamba_ssm module (>= 1; one tap used)"))

    @property
    def num_examples(self) -> int:
        return self.samples if self.samples is not None else min(256, max(8, 100_000 // max(1, self.seq_len)))

    def task(self) -> KeepNthConfig:
        return KeepNthConfig(self.vocab, self.n, self.seq_len, self.num_examples)


def build(p: KeepNthParams, constants=corollary2.DEFAULT) -> Construction:
    p.task().validate()
    return keep_nth.build(p.vocab, p.n, d_conv=p.d_conv, constants=constants)


def check(con: Construction, p: KeepNthParams, engine) -> CheckResult:
    task = p.task()
    tokens, labels = generate(task, p.seed)
    summary = f"n={p.n} |V|={p.vocab} T={p.seq_len} d={con.config.d_model} N={con.config.d_state}"
    return check_labelled(con, tokens, labels, engine, config={**asdict(task), "seed": p.seed}, summary=summary,
                          batch_size=batch_for(p.seq_len, con.config.d_model))


def memory(p: KeepNthParams) -> int:
    d = p.vocab + 1
    return check_bytes(n_tokens=p.vocab, n_classes=p.vocab, d_model=d, d_inner=d, d_state=1, seq_len=p.seq_len,
                       batch=min(p.num_examples, batch_for(p.seq_len, d)), d_conv=p.d_conv) + TASK_BYTES * p.num_examples * p.seq_len


SPEC = Spec(
    name="keep-nth",
    theorem=keep_nth.THEOREM,
    mixer="Mamba (S6) + time PE, gate held constant",
    formulas={"d_model": "|V| + 1 (one-hot tokens + the position coordinate)  [paper: d = 32 trained]",
              "d_state": "1  [paper: N = 8 trained]",
              "d_conv": "1 tap used (any d_conv >= 1; default 4)"},
    params=KeepNthParams,
    defaults=(KeepNthParams(), KeepNthParams(seq_len=10_000, samples=4)),
    build=build,
    check=check,
    constants=corollary2.DEFAULT,
    memory=memory,
)
