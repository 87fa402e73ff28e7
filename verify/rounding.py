"""Rounding allowance: how far a measured margin (or error) may miss the proven bound because an engine rounds.

A proof bounds the logit margin in exact arithmetic. An engine computes in floating point; the allowance is the
standard forward error bound (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., Lemma 3.1 and
§3.1): a quantity reached through ``k`` rounded operations of unit roundoff ``u`` has relative error at most

    gamma_k(u) = k u / (1 - k u)        (k u < 1; for k u >= 1 the bound says nothing: gamma = inf),

summed over the three kinds of rounding on the path from an input to a logit:

* **accumulation**, ``gamma_K(u_acc)``: ``K`` is the block's ``chain_length(seq_len)`` (``constructions.layout``):
  the dot products of every projection (d_model or d_inner terms), the conv taps, each nonlinearity (SiLU, softplus,
  exp) counted as ``NONLINEAR_OPS`` operations, three per scan step (decay product, write, sum over steps) and the
  readout. Both engines accumulate and scan in float32 for every dtype below float64 (the reference engine's
  ``selective_scan_ref``, mamba_ssm's kernels and GEMMs), so ``u_acc`` is 2^-53 in float64 and 2^-24 otherwise;
* **storage**, ``gamma_R(u)``: at most ``ROUNDED_TENSORS`` intermediates on the path (projection outputs, conv,
  SiLU, Delta, B, C, scan output, gate, out_proj, logits, each counted twice) are stored in the engine's dtype of unit
  roundoff ``u`` (``UNIT_ROUNDOFF``: float64 2^-53, float32 2^-24, float16 2^-11, bfloat16 2^-8; TF32 rounds the
  matmul inputs to 2^-11);
* **weights**, ``gamma_W(u_w)``: at most ``ROUNDED_WEIGHTS`` weights on the path, each rounded once to the coarser of
  the stored dtype (an export's file) and the engine's dtype.

A logit is ``r_c . h = sum_i r_ci h_i``; with every hidden coordinate off by at most ``g |h_i|`` (g the sum of
gammas above) every logit is off by at most ``g sum_i max_c |r_ci| |h_i|``, and a margin, the difference of two
logits, by twice that. Hence

    allowance = (gamma_K(u_acc) + gamma_R(u) + gamma_W(u_w)) * 2 * max_q sum_i max_c |r_ci| |h_qi|,

the maximum over the scored positions q (``verify.checks.logit_bound``, measured by the check). This is a
first-order model: it charges every rounding as a relative error of the hidden coordinate it ends in, so it assumes
no cancellation inside the block larger than that coordinate; ``tests/test_rounding.py`` compares it with the
measured margin differences of every construction between float64 and float32, bfloat16 and float16 (engine and
stored weights). In float64 it is below 1e-10 of the logit scale for every construction here. When the allowance
reaches the proven bound itself, the claim cannot be decided in that dtype and the check says so (UNPROVEN).
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


ROUNDED_TENSORS = 24
ROUNDED_WEIGHTS = 16


def relative_error(chain_length: int, dtype: str, weights_dtype: str) -> float:
    """gamma_K(u_acc) + gamma_R(u) + gamma_W(u_w) of the module docstring."""
    u_acc = UNIT_ROUNDOFF["float64"] if dtype == "float64" else UNIT_ROUNDOFF["float32"]
    return (gamma(chain_length, u_acc) + gamma(ROUNDED_TENSORS, UNIT_ROUNDOFF[dtype])
            + gamma(ROUNDED_WEIGHTS, UNIT_ROUNDOFF[weights_dtype]))


def margin_allowance(chain_length: int, dtype: str, weights_dtype: str, logit_bound: float) -> float:
    """The rounding allowance of a logit margin: relative_error * 2 * logit_bound (module docstring)."""
    g = relative_error(chain_length, dtype, weights_dtype)
    scale = 2 * logit_bound
    return g * scale if math.isfinite(g) and math.isfinite(scale) else math.inf


def error_allowance(chain_length: int, dtype: str, weights_dtype: str, scale: float) -> float:
    """The rounding allowance of a real-valued output of magnitude at most ``scale``."""
    g = relative_error(chain_length, dtype, weights_dtype)
    return g * scale if math.isfinite(g) else math.inf
