"""Engines compared on the same tokens: the largest |logit difference| at the scored positions.

What bounds it is the rounding model of ``verify.rounding`` in the dtype of the engine's arithmetic
(``engine.rounding_dtype`` where an engine computes coarser than its tensors, e.g. the transformers engine) times
``verify.checks.logit_bound`` of the reference's hidden state; ``tests/test_hf_engine.py`` asserts it."""
from __future__ import annotations

import torch

from constructions.layout import Construction
from verify.tasks.mqar import IGNORE


def scored_logits(con: Construction, engine, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Logits (scored positions, classes) of ``engine`` at the positions whose label is not IGNORE, in row-major
    order. The readout ``hidden @ readout.T`` is taken in float64 on the engine's hidden state, so that a comparison
    measures the engines and not the readout's rounding."""
    tokens, labels = torch.as_tensor(tokens), torch.as_tensor(labels)
    with engine.precision():
        hidden = engine.hidden(con, tokens)
    mask = (labels != IGNORE).to(hidden.device)
    return hidden[mask].double() @ con.readout.to(hidden.device, torch.float64).T


def max_logit_difference(con: Construction, engine_a, engine_b, tokens, labels, batch_size: int = 64) -> float:
    """max |logit_a - logit_b| over every class at every scored position (label != IGNORE) of token ids (S, L),
    both engines run on the same sequences in batches of ``batch_size``; 0.0 when nothing is scored, inf where a
    difference is not finite (a NaN or an inf in either engine's logits, which a plain ``max`` would skip)."""
    tokens, labels = torch.as_tensor(tokens), torch.as_tensor(labels)
    worst = 0.0
    for i in range(0, len(tokens), batch_size):
        t, l = tokens[i:i + batch_size], labels[i:i + batch_size]
        a, b = scored_logits(con, engine_a, t, l), scored_logits(con, engine_b, t, l)
        if a.numel():
            diff = (a.cpu() - b.cpu()).abs()
            worst = max(worst, float(diff.max()) if bool(torch.isfinite(diff).all()) else float("inf"))
    return worst

