"""Trained-parameter counts of the stored runs' models, computed from the model definition (``verify.train``).

A run's count is the number of entries training can change: every entry of its initial state dict
(``verify.train.loop.initial_state``: embedding, mixer, readout) that its freeze masks leave trainable, less the
embedding's last column where the task feeds the position there instead (``+PE``: ``verify.train.models.with_position``
overwrites that coordinate, so it never reaches the loss). The paper's counts (Tables 1, A.1-A.4) count the same
thing: its +PE models have |V| = 128 fewer parameters than the models without PE.
"""
from __future__ import annotations

from functools import lru_cache

from verify.train.spec import RunSpec


@lru_cache(maxsize=None)
def trained_params(spec: RunSpec) -> int:
    from verify.train import registry
    from verify.train.loop import initial_state

    sd, masks = initial_state(spec)
    n = sum(int(masks[k].sum()) if k in masks else v.numel() for k, v in sd.items())
    if registry.task(spec.task).position(spec):
        n -= sd["embedding.weight"].shape[0]
    return n


def spec_params(spec: dict, **changes) -> int:
    """``trained_params`` of a stored spec dict, with fields changed (seed and lr do not matter)."""
    return trained_params(RunSpec.from_dict({**spec, "seed": 0, "lr": 0.01, **changes}))


def kilo(n: float) -> str:
    """A count as the paper prints it: thousands to one decimal."""
    return f"{n / 1000:.1f}k"


def versus(ours: int, paper: float | None) -> str:
    """"ours / paper (ratio)", or ours alone where the paper gives no count."""
    if paper is None:
        return kilo(ours)
    return f"{kilo(ours)} / {kilo(paper)} ({ours / paper:.2f})"
