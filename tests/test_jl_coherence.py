"""``constructions.jl.coherence`` (float64 products in blocks of columns) equals the worst normalised inner product over
every pair of distinct columns, taken pair by pair in integers, across block boundaries."""
import numpy as np

from constructions.jl import balanced_codes, coherence


def _pairwise(codes):
    p, n = codes.shape
    return max(abs(int(codes[:, i] @ codes[:, j])) for i in range(n) for j in range(i + 1, n)) / p


def test_coherence_equals_the_pairwise_maximum_across_blocks():
    codes = balanced_codes(12, 1100, seed=4)  # two blocks of 1024 columns
    assert coherence(codes) == _pairwise(codes)
    codes[:, 1050] = codes[:, 3]  # a repeated column in the second block: coherence 1
    assert coherence(codes) == 1.0
    assert coherence(codes[:, :1]) == 0.0
