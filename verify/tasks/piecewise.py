"""Random piecewise-constant signals on a grid, for the Haar projections of Theorem 1 (Remark 6: token sequences are
piecewise constant).

A signal has T cells (cell i = [(i-1)/T, i/T)); ``jumps`` distinct jump positions are drawn uniformly among the T - 1
cell boundaries, and each of the jumps + 1 pieces gets an iid value uniform in [-amplitude, amplitude]. ``projection``
is the exact inner product <x, f> = (1/T) sum_i x_i f(s_i) for an f constant on each cell (every Haar function up to
level log2(T) - 1 is).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import require


@dataclass(frozen=True)
class PiecewiseConfig:
    seq_len: int = 128
    jumps: int = 4
    num_examples: int = 64
    amplitude: float = 1.0

    def validate(self) -> None:
        require(self.seq_len >= 2, f"piecewise signals need seq_len >= 2, got {self.seq_len}")
        require(0 <= self.jumps <= self.seq_len - 1,
                f"piecewise signals need 0 <= jumps <= seq_len - 1 = {self.seq_len - 1}, got jumps={self.jumps}")
        require(self.num_examples >= 1, f"piecewise signals need num_examples >= 1, got {self.num_examples}")
        require(self.amplitude > 0, f"piecewise signals need amplitude > 0, got {self.amplitude}")


def generate(config: PiecewiseConfig, seed: int) -> np.ndarray:
    """Signals (num_examples, seq_len), float64; a pure function of (config, seed)."""
    config.validate()
    rng = np.random.default_rng(seed)
    S, T = config.num_examples, config.seq_len
    boundaries = np.sort(np.argsort(rng.random((S, T - 1)), axis=1)[:, :config.jumps], axis=1) + 1  # cut after cell b
    piece = np.zeros((S, T), dtype=np.int64)
    np.add.at(piece, (np.repeat(np.arange(S), config.jumps), boundaries.ravel()), 1)
    piece = np.cumsum(piece, axis=1)
    values = rng.uniform(-config.amplitude, config.amplitude, size=(S, config.jumps + 1))
    return np.take_along_axis(values, piece, axis=1)


def projection(signals: np.ndarray, f_on_grid: np.ndarray) -> np.ndarray:
    """<x, f> for every signal: (S, T) x (T,) or (T, W) -> (S,) or (S, W)."""
    return signals @ f_on_grid / signals.shape[1]
