"""Checks: run a construction on an engine over generated tasks and compare with the theorem's claim.

The MQAR claim is exact recall: at every query position the argmax of the readout logits is the queried key's
value. Each check also reports the smallest logit margin (target logit minus the largest other logit) next to the
construction's proven lower bound on it.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch

from constructions.layout import Construction
from verify.tasks.mqar import IGNORE, MQARConfig, generate


@dataclass
class CheckResult:
    construction: str
    theorem: str
    sizes: dict
    engine: str
    dtype: str
    sequences: int
    queries: int
    correct: int
    min_margin: float
    proven_margin: float | None
    seconds: float
    config: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    summary: str = ""  # the problem sizes in one short line, for the table (e.g. "k=8 |V|=128 T=100 d=136 N=8")
    # Checks of a real-valued claim (e.g. Haar projections) instead of an argmax: the largest |output - exact| over
    # everything scored and the bound the proof derives on it. When error_bound is set, ``correct`` counts the outputs
    # within the bound, and min_margin is the smallest slack (bound - error).
    max_error: float | None = None
    error_bound: float | None = None

    @property
    def recall(self) -> float:
        return self.correct / self.queries if self.queries else 0.0

    @property
    def passed(self) -> bool:
        if self.error_bound is not None:
            return self.queries > 0 and self.correct == self.queries and self.max_error <= self.error_bound
        return self.queries > 0 and self.correct == self.queries and self.min_margin > 0

    def as_dict(self) -> dict:
        return {**asdict(self), "recall": self.recall, "passed": self.passed}


def score_queries(con: Construction, hidden: torch.Tensor, labels: torch.Tensor) -> tuple[int, int, float]:
    """(queries, correct, min margin) of the readout on the labelled positions of one batch."""
    mask = labels != IGNORE
    h = hidden[mask.to(hidden.device)]
    logits = h.float() @ con.readout.to(h.device, torch.float32).T if h.dtype != torch.float64 else \
        h @ con.readout.to(h.device).T
    target = labels[mask].to(h.device)
    own = logits.gather(1, target[:, None]).squeeze(1)
    others = logits.scatter(1, target[:, None], float("-inf")).amax(dim=1)
    correct = int((logits.argmax(dim=1) == target).sum()) if logits.shape[1] > 1 else int(target.numel())
    margin = float((own - others).min()) if target.numel() else float("inf")
    return int(target.numel()), correct, margin


def check_labelled(con: Construction, tokens, labels, engine, *, config: dict, summary: str,
                   batch_size: int = 256) -> CheckResult:
    """Run token ids (S, L) in batches and score every position whose label is not ``IGNORE`` (exact argmax)."""
    start = time.perf_counter()
    queries = correct = 0
    min_margin = float("inf")
    for i in range(0, len(tokens), batch_size):
        tok = torch.as_tensor(tokens[i:i + batch_size])
        hidden = engine.hidden(con, tok)
        q, c, m = score_queries(con, hidden, torch.as_tensor(labels[i:i + batch_size]))
        queries, correct, min_margin = queries + q, correct + c, min(min_margin, m)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return CheckResult(con.name, con.theorem, con.sizes(), engine.name, engine.dtype_name, len(tokens), queries,
                       correct, min_margin, con.info.get("proven_margin"), seconds, config=config,
                       info=dict(con.info), summary=summary)


def check_mqar(con: Construction, task: MQARConfig, engine, seed: int = 0, batch_size: int = 256) -> CheckResult:
    """Generate ``task.num_examples`` sequences, run them in batches, score every query."""
    tokens, labels = generate(task, seed)
    summary = (f"k={task.kappa} |V|={task.vocab_size} T={task.seq_len} d={con.config.d_model} "
               f"N={con.config.d_state}")
    return check_labelled(con, tokens, labels, engine, config={**asdict(task), "seed": seed}, summary=summary,
                          batch_size=batch_size)
