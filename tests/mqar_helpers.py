"""Shared helpers for the MQAR construction tests: run hand-written sequences and score every labelled query."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from verify.checks import score_queries
from verify.tasks.mqar import IGNORE


def sequence(con, kv: list[tuple[int, int]], tail: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens and labels of one sequence: the (key, value index) pairs, then ``tail`` of key ids or ``None`` (noise).

    Every key in the tail is labelled with its value (a query).
    """
    ids = con.tokens
    value_of = dict(kv)
    toks = [t for k, v in kv for t in (k, ids.values_start + v)]
    labels = [IGNORE] * len(toks)
    for t in tail:
        toks.append(ids.noise_start if t is None else t)
        labels.append(IGNORE if t is None else value_of[t])
    return torch.tensor([toks]), torch.tensor([labels])


def run(con, engine, tokens: torch.Tensor, labels: torch.Tensor) -> tuple[int, int, float]:
    """(queries, correct, min margin) of ``con`` on a batch of hand-written sequences."""
    return score_queries(con, engine.hidden(con, tokens), labels)


def logits_at(con, engine, tokens: torch.Tensor, position: int) -> np.ndarray:
    hidden = engine.hidden(con, tokens)[0, position].double()
    return (hidden @ con.readout.to(hidden.device).T).cpu().numpy()


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """One torch thread for these modules: on a shared 2-core box intra-op threads oversubscribe (~10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def hard_case_queries(task) -> int:
    """Queries of ``verify.tasks.mqar.hard_cases`` by its stated layout: ceil(|V| / kappa) coverage sequences of
    length min(seq_len, 6 kappa) with a packed query region (q queries) and as many alternating with noise
    (ceil(q / 2)), the decay sequences' min(Q, 4) queries each, Q = seq_len - 2 kappa, and (kappa > 1) one sequence
    whose whole region of Q slots is queries."""
    Q = task.seq_len - 2 * task.kappa
    q = min(task.seq_len, 6 * task.kappa) - 2 * task.kappa
    cover = -(-task.vocab_size // task.kappa)
    decay = max(1, -(-task.noise_vocab // max(Q - min(Q, 4), 1)))
    return cover * (q + -(-q // 2)) + decay * min(Q, 4) + (Q if task.kappa > 1 else 0)
