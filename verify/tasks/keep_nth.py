"""KEEP n-TH (Huang et al. §4.2, App. D.2; generalises KEEP FIRST of Chiang & Cholak 2022), as in the paper's experiments.

Tokens x_1..x_T are iid uniform over the |V| token ids 0..|V|-1 (the paper: |V| = 128, n = 5, "KEEP FIFTH", T = 50).
The target is y_t = x_n for t = n..T; loss and accuracy are on those positions only, so labels are the token id of
x_n at (1-based) positions n..T and ``IGNORE`` (-100) at positions 1..n-1.

"+PE" variant: the paper replaces the **last coordinate of the embedding by the position**. The position is not said
to be normalised (notes §9.4); we use the **raw 1-based position t**, written by ``constructions.layout.embed`` into
``Construction.position_channel``. Raw t keeps a model independent of T (a causal model cannot know T, and t/T
would move the threshold between n and n+1 with T); integers up to 2^24 are exact in float32, so every position a
check uses (T <= 10^4) is represented exactly on both engines. The generator itself emits token ids only; the
position is part of the model input, not of the data.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import require

from verify.tasks.mqar import IGNORE  # noqa: E402  (one ignore label for every task)


@dataclass(frozen=True)
class KeepNthConfig:
    vocab_size: int = 128
    n: int = 5
    seq_len: int = 50
    num_examples: int = 256

    def validate(self) -> None:
        require(self.vocab_size >= 2, f"KEEP n-TH needs |V| >= 2 tokens, got vocab_size={self.vocab_size}")
        require(self.n >= 1, f"KEEP n-TH needs n >= 1, got n={self.n}")
        require(self.seq_len >= self.n, f"KEEP n-TH needs seq_len >= n = {self.n}, got seq_len={self.seq_len}")
        require(self.num_examples >= 1, f"KEEP n-TH needs num_examples >= 1, got num_examples={self.num_examples}")

    @property
    def scored_per_sequence(self) -> int:
        return self.seq_len - self.n + 1


def generate(config: KeepNthConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and labels, both int64 of shape (num_examples, seq_len); a pure function of (config, seed)."""
    config.validate()
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, config.vocab_size, size=(config.num_examples, config.seq_len), dtype=np.int64)
    labels = np.full_like(tokens, IGNORE)
    labels[:, config.n - 1:] = tokens[:, config.n - 1, None]
    return tokens, labels
