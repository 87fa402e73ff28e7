"""Induction heads as in Huang et al. §5.2 / App. D.4 (after Sanford et al. 2024a).

Target: for every position t, y_t = x_{j(t)+1} with j(t) = max{j < t : x_j = x_t} (the token that followed the most
recent earlier occurrence of x_t), or the blank class ``|V|`` if x_t has not appeared before. Every position is
scored (blanks included). Example: x = [2,1,3,2,4,3,2,4] gives y = [x,x,x,1,x,2,4,3].

Generator (parameters |V|, T > 2|V| + 1, hard-case probability p, range ratio gamma), per sequence:
X ~ Bernoulli(p). X = 0 (standard): tokens iid uniform over V. X = 1 (hard): draw a special token v*, draw the other
tokens iid uniform over V \\ {v*}, draw r ~ Uniform{1..floor(gamma T)} and put v* at the 1-based positions r and T - r
(so v* occurs exactly twice and its query at T - r must recall x_{r+1}, about (1 - 2 gamma) T steps back). Paper
settings: T = 100, |V| in {5, 10, 20, 40}, p = 0.75, gamma = 0.1. [gap] The paper leaves r's rounding unstated; we
use floor(gamma T) and require it >= 1 and 2 floor(gamma T) < T, so the two positions differ.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import require


@dataclass(frozen=True)
class InductionHeadsConfig:
    vocab_size: int = 10
    seq_len: int = 100
    p_hard: float = 0.75
    gamma: float = 0.1
    num_examples: int = 256

    @property
    def blank(self) -> int:
        return self.vocab_size

    @property
    def r_max(self) -> int:
        return int(np.floor(self.gamma * self.seq_len))

    def validate(self) -> None:
        V, T = self.vocab_size, self.seq_len
        require(V >= 2, f"induction heads needs |V| >= 2 tokens, got vocab_size={V}")
        require(T > 2 * V + 1, f"induction heads needs T > 2|V| + 1 = {2 * V + 1}, got seq_len={T}")
        require(0.0 <= self.p_hard <= 1.0, f"induction heads needs 0 <= p <= 1, got p_hard={self.p_hard}")
        require(self.gamma > 0 and self.r_max >= 1 and 2 * self.r_max < T,
                f"induction heads needs 1 <= floor(gamma T) < T/2, got gamma={self.gamma}, T={T}")
        require(self.num_examples >= 1, f"induction heads needs num_examples >= 1, got {self.num_examples}")


def labels_for(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """Induction-head targets of token ids (S, T): x_{j(t)+1} or ``vocab_size`` (blank)."""
    S, T = tokens.shape
    rows = np.arange(S)
    last = np.full((S, vocab_size), -1, dtype=np.int64)
    labels = np.empty_like(tokens)
    for t in range(T):
        j = last[rows, tokens[:, t]]
        labels[:, t] = np.where(j >= 0, tokens[rows, np.minimum(j + 1, T - 1)], vocab_size)
        last[rows, tokens[:, t]] = t
    return labels


def generate(config: InductionHeadsConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and labels, both int64 of shape (num_examples, seq_len); a pure function of (config, seed)."""
    config.validate()
    rng = np.random.default_rng(seed)
    S, T, V = config.num_examples, config.seq_len, config.vocab_size
    hard = rng.random(S) < config.p_hard
    tokens = rng.integers(0, V, size=(S, T), dtype=np.int64)
    special = rng.integers(0, V, size=S)
    others = rng.integers(0, V - 1, size=(S, T))
    others = others + (others >= special[:, None])  # uniform over V \ {v*}
    r = rng.integers(1, config.r_max + 1, size=S)
    tokens[hard] = others[hard]
    rows = np.flatnonzero(hard)
    tokens[rows, r[hard] - 1] = special[hard]
    tokens[rows, T - r[hard] - 1] = special[hard]
    return tokens, labels_for(tokens, V)
