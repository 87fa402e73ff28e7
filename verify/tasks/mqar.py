"""Multi-query associative recall (MQAR) as in Huang et al. §5.1, with the gaps of the paper settled.

A sequence is ``k_1 v_1 ... k_kappa v_kappa`` (the kappa keys in random order, each with an iid uniform value), then a
query region of length ``seq_len - 2 kappa`` in which every key is queried exactly ``query_passes`` times (each pass a
fresh random order) at random positions, every other slot holding a random noise token. Keys, values and noise use
disjoint token ids (``constructions.layout.MQARTokens``: keys first, then values, then noise). Labels are the value
index (0..|V|-1) at query positions and ``IGNORE`` (-100) elsewhere, so the label sits at the query's own position,
as in zoology.

Choices for the paper's gaps (§4.1): keys are a permutation (iid keys would make the task ill-posed); queries and
noise positions are uniform over the query region (so adjacent queries happen); ids are disjoint.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from constructions.errors import require
from constructions.layout import MQARTokens

IGNORE = -100


@dataclass(frozen=True)
class MQARConfig:
    kappa: int
    vocab_size: int
    seq_len: int
    num_examples: int = 256
    noise_vocab: int = 1
    query_passes: int = 1

    @property
    def tokens(self) -> MQARTokens:
        return MQARTokens(self.kappa, self.vocab_size, self.noise_vocab)

    @property
    def num_queries(self) -> int:
        return self.kappa * self.query_passes

    def validate(self) -> None:
        require(self.kappa >= 1, f"MQAR needs kappa >= 1, got kappa={self.kappa}")
        require(self.vocab_size >= 2, f"MQAR needs |V| >= 2 values, got vocab_size={self.vocab_size}")
        require(self.noise_vocab >= 1, f"MQAR needs noise_vocab >= 1, got noise_vocab={self.noise_vocab}")
        require(self.query_passes >= 1, f"MQAR needs query_passes >= 1, got query_passes={self.query_passes}")
        require(self.num_examples >= 1, f"MQAR needs num_examples >= 1, got num_examples={self.num_examples}")
        need = 2 * self.kappa + self.num_queries
        require(self.seq_len >= need, f"MQAR needs seq_len >= 2*kappa + kappa*query_passes = {need} "
                                      f"(kappa={self.kappa}), got seq_len={self.seq_len}")


def generate(config: MQARConfig, seed: int | tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and labels, both int64 of shape (num_examples, seq_len); a pure function of (config, seed).

    ``seed`` is anything ``numpy.random.default_rng`` takes (an int, or a tuple such as (seed, batch_index)).
    """
    config.validate()
    rng = np.random.default_rng(seed)
    S, K, T, ids = config.num_examples, config.kappa, config.seq_len, config.tokens
    Q, nq = T - 2 * K, config.num_queries
    rows = np.arange(S)[:, None]

    order = np.argsort(rng.random((S, K)), axis=1)  # keys of the KV section, in order
    value_of_key = rng.integers(0, config.vocab_size, size=(S, K))
    tokens = np.empty((S, T), dtype=np.int64)
    tokens[:, 0:2 * K:2] = order
    tokens[:, 1:2 * K:2] = ids.values_start + value_of_key[rows, order]

    tokens[:, 2 * K:] = ids.noise_start + rng.integers(0, config.noise_vocab, size=(S, Q))
    queried = np.concatenate([np.argsort(rng.random((S, K)), axis=1) for _ in range(config.query_passes)], axis=1)
    chosen = np.argpartition(rng.random((S, Q)), nq - 1, axis=1)[:, :nq] if nq < Q else np.tile(np.arange(Q), (S, 1))
    slots = 2 * K + np.sort(chosen, axis=1)  # nq distinct uniform slots, in order
    tokens[rows, slots] = queried

    labels = np.full((S, T), IGNORE, dtype=np.int64)
    labels[rows, slots] = value_of_key[rows, queried]
    return tokens, labels
