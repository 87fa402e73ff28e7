"""``induction-heads``: Lemma 3's Mamba-Delta-transpose layer on the paper's induction-heads task, exact recall
(blank included) at every position."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from constructions import induction_heads
from constructions.layout import Construction
from symbolic import lemma3
from verify.api import Spec
from verify.checks import CheckResult, check_labelled
from verify.memory import TASK_BYTES, check_bytes
from verify.specs import batch_for, help_
from verify.tasks.induction_heads import InductionHeadsConfig, generate


@dataclass(frozen=True)
class InductionHeadsParams:
    """Parameters of the induction-heads check (CLI flags of the same names)."""

    vocab: int = field(default=10, metadata=help_("number of tokens |V| (paper: 5, 10, 20, 40)"))
    seq_len: int = field(default=100, metadata=help_("sequence length T (paper: 100; needs T > 2|V| + 1)"))
    p_hard: float = field(default=0.75, metadata=help_("probability of the hard case (paper: 0.75)"))
    gamma: float = field(default=0.1, metadata=help_("range ratio of the hard case (paper: 0.1)"))
    samples: int | None = field(default=None, metadata=help_("sequences checked (default min(256, max(8, 1e5/T)))"))
    seed: int = field(default=0, metadata=help_("task seed"))
    variant: str = field(default="ours", metadata=help_("ours (softplus(0) fix) or paper (literal Lemma 3)"))
    d_conv: int = field(default=4, metadata=help_("conv width (>= 2)"))

    @property
    def num_examples(self) -> int:
        return self.samples if self.samples is not None else min(256, max(8, 100_000 // max(1, self.seq_len)))

    def task(self) -> InductionHeadsConfig:
        return InductionHeadsConfig(self.vocab, self.seq_len, self.p_hard, self.gamma, self.num_examples)


def build(p: InductionHeadsParams, constants=lemma3.DEFAULT) -> Construction:
    p.task().validate()
    return induction_heads.build(p.vocab, p.seq_len, p.variant, d_conv=p.d_conv, constants=constants)


def check(con: Construction, p: InductionHeadsParams, engine) -> CheckResult:
    task = p.task()
    tokens, labels = generate(task, p.seed)
    summary = (f"|V|={p.vocab} T={p.seq_len} p={p.p_hard} g={p.gamma} d={con.config.d_model} "
               f"N={con.config.d_state}")
    return check_labelled(con, tokens, labels, engine, config={**asdict(task), "seed": p.seed}, summary=summary,
                          batch_size=batch_for(p.seq_len, con.config.d_model * con.config.d_state))


def memory(p: InductionHeadsParams) -> int:
    d = 2 * p.vocab
    return check_bytes(n_tokens=p.vocab, n_classes=p.vocab + 1, d_model=d, d_inner=d, d_state=p.vocab,
                       seq_len=p.seq_len, batch=min(p.num_examples, batch_for(p.seq_len, d * p.vocab)), d_conv=p.d_conv) + \
        TASK_BYTES * p.num_examples * p.seq_len


SPEC = Spec(
    name="induction-heads",
    theorem=induction_heads.THEOREM,
    mixer="Mamba-Delta-transpose, gate held constant",
    formulas={"d_model": "2 |V|  [paper: 2|V|]", "d_state": "|V|  [paper: |V|]",
              "d_conv": "2 taps used (any d_conv >= 2; default 4)"},
    params=InductionHeadsParams,
    defaults=(*(InductionHeadsParams(vocab=v, samples=32) for v in (5, 10, 20, 40)),
              InductionHeadsParams(vocab=10, seq_len=5000, samples=4)),
    build=build,
    check=check,
    constants=lemma3.DEFAULT,
    memory=memory,
)
