"""Parameters, builders and checks of the constructions registered in ``verify.registry`` (one module each)."""
from __future__ import annotations


def help_(text: str) -> dict:
    """``field(metadata=help_(...))``: the CLI help text of a params field."""
    return {"help": text}


def batch_for(seq_len: int, width: int, budget: int = 12_000_000, cap: int = 256) -> int:
    """Sequences per batch so that one batch's activations stay near ``budget`` numbers (long T: small batches)."""
    return max(1, min(cap, budget // max(1, seq_len * width)))
