"""Rounding allowance: how far a measured margin (or error) may miss the proven bound because an engine rounds.

A proof bounds the logit margin in exact arithmetic. An engine computes in floating point with unit roundoff ``u``
(``UNIT_ROUNDOFF``: float64 2^-53, float32 2^-24, float16 and TF32 2^-11, bfloat16 2^-8), from weights stored in a
dtype of unit roundoff ``u_w``. The allowance is the standard forward error bound (Higham, *Accuracy and Stability
of Numerical Algorithms*, 2nd ed., Lemma 3.1 and §3.1): a quantity computed by a chain of ``K`` rounded
operations, each with relative error at most ``u``, has relative error at most

    gamma_K(u) = K u / (1 - K u)        (K u < 1; for K u >= 1 the bound says nothing: gamma = inf).

``K`` is the block's ``chain_length(seq_len)`` (``constructions.layout``): the dot products of every projection
(d_model or d_inner terms), the conv taps, each nonlinearity (SiLU, softplus, exp) counted as ``NONLINEAR_OPS``
operations, three per scan step (decay product, write, sum over steps), and the readout. Rounding the weights to
the storage dtype perturbs each weight on the path by a relative ``u_w``; there are at most ``K`` of them. The two
combine as a chain of ``2 K`` operations at ``u_max = max(u, u_w)``.

A logit is ``r_c . h``, so its magnitude, and the magnitude every error above is relative to, is at most
``||r_c||_1 ||h||_inf``; a margin is the difference of two logits. Hence

    allowance = gamma_{2K}(max(u, u_w)) * 2 * max_c ||r_c||_1 * max |h|,

with ``max |h|`` the largest hidden coordinate over the scored positions (measured by the check). This is a
first-order model: it charges every rounding as a relative error of the quantity's final magnitude, so it assumes
no cancellation inside the block larger than ``||h||_inf``; the tests compare it with the float32-vs-float64 margin
differences of every construction (``tests/test_rounding.py``). In float64 it is below 1e-11 of the logit scale for
every construction here, so a float64 PASS compares the measured margin with the proven one essentially exactly.
For real-valued claims (Haar) the same gamma multiplies the scale of the normalised outputs.
"""
from __future__ import annotations

import math

UNIT_ROUNDOFF = {"float64": 2.0 ** -53, "float32": 2.0 ** -24, "tfloat32": 2.0 ** -11, "float16": 2.0 ** -11,
                 "bfloat16": 2.0 ** -8}


def gamma(k: int, u: float) -> float:
    """Higham's gamma_k = k u / (1 - k u); inf when k u >= 1 (no bound)."""
    ku = k * u
    return ku / (1 - ku) if ku < 1 else math.inf


def margin_allowance(chain_length: int, dtype: str, weights_dtype: str, readout_l1: float, max_hidden: float) -> float:
    """The rounding allowance of a logit margin (module docstring): gamma_{2K}(max(u, u_w)) 2 max||r||_1 max|h|."""
    u = max(UNIT_ROUNDOFF[dtype], UNIT_ROUNDOFF[weights_dtype])
    g = gamma(2 * chain_length, u)
    scale = 2 * readout_l1 * max_hidden
    return g * scale if g != math.inf and math.isfinite(scale) else math.inf


def error_allowance(chain_length: int, dtype: str, weights_dtype: str, scale: float) -> float:
    """The rounding allowance of a real-valued output of magnitude at most ``scale``: gamma_{2K}(u_max) scale."""
    g = gamma(2 * chain_length, max(UNIT_ROUNDOFF[dtype], UNIT_ROUNDOFF[weights_dtype]))
    return g * scale if g != math.inf else math.inf
