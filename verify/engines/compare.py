"""Engines compared on the same tokens: the largest |logit difference| at the scored positions."""
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
    both engines run on the same sequences in batches of ``batch_size``; 0.0 when nothing is scored."""
    tokens, labels = torch.as_tensor(tokens), torch.as_tensor(labels)
    worst = 0.0
    for i in range(0, len(tokens), batch_size):
        t, l = tokens[i:i + batch_size], labels[i:i + batch_size]
        a, b = scored_logits(con, engine_a, t, l), scored_logits(con, engine_b, t, l)
        if a.numel():
            worst = max(worst, float((a.cpu() - b.cpu()).abs().max()))
    return worst


UNIT_ROUNDOFF_FLOAT32 = 2.0 ** -24


def float32_roundings(config, seq_len: int) -> int:
    """K: float32 roundings a logit term of a Mamba or Mamba-2 block accumulates, summed over its factors.

    A logit is a sum of terms; in Mamba a term at position t from position s is
    ``R[c,j] W_out[j,i] silu(z_t)[i] C_t[n] prod_{s<tau<=t} exp(dt_tau[i] A[i,n]) dt_s[i] B_s[n] u_s[i]`` (plus the
    D and bias terms, which have fewer factors). To first order its relative error is at most u times the number of
    roundings on the chains of all its factors (standard model ``fl(a op b) = (a op b)(1 + d)``, ``|d| <= u``; a dot
    product of n terms counts n; Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., §2.2, §3.1):

    * u_s = silu(conv(in_proj(E x))): storage of E, in_proj, conv (3), in_proj dot (d_model) + bias, conv dot
      (d_conv) + bias, silu: c0 = d_model + d_conv + 6;
    * B_s and C_t: c0 + x_proj storage + dot (d_inner), each; dt_s: c0 + x_proj (d_inner + 1) + dt_proj (dt_rank + 1)
      + bias + softplus; silu(z_t): d_model + 4;
    * the decay: per step dt A and exp (2 L), A = -exp(A_log) (2), and one more dt chain for exp's condition number
      |dt A| (its weight ``x e^-x <= 1`` against the decayed term);
    * the scan: L additions, dt B, times u (L + 2); C h, a dot over d_state; + D u, times silu(z) (2);
    * out_proj: storage, dot (d_inner), bias; the output cast (1).

    Total ``K = 6 d_model + 5 d_conv + 5 d_inner + 2 dt_rank + d_state + 3 L + 53``. Mamba-2's SSD term
    ``... silu(z_t) <C_t, B_s> exp(cumsum_t - cumsum_s) dt_s x_s`` counts at most ``6 d_model + 3 d_conv + d_inner +
    d_state + 3 L + 45`` the same way (three c0 chains, G = C.B over d_state, the chunk cumsum over L), less than the
    formula with dt_rank = 0, which this function returns for it. A float64 engine rounds a subset of these to float32
    (in transformers: A, D, the dt bias, B, u for Mamba; the SSD scan for Mamba-2), so K bounds it too.
    """
    rank = config.rank if config.kind == "mamba" else 0
    return (6 * config.d_model + 5 * config.d_conv + 5 * config.d_inner + 2 * rank + config.d_state + 3 * seq_len
            + 53)


def logit_magnitude(con: Construction, reference, tokens, labels) -> float:
    """S: max over scored positions and classes of ``sum_j |R[c,j]| |h_j|``, h the ``reference`` engine's hidden
    state: the size of the terms of a logit at the readout (cancellation in the readout counted, not inside the
    mixer)."""
    tokens, labels = torch.as_tensor(tokens), torch.as_tensor(labels)
    with reference.precision():
        hidden = reference.hidden(con, tokens)
    mask = (labels != IGNORE).to(hidden.device)
    if not mask.any():
        return 0.0
    return float((hidden[mask].double().abs() @ con.readout.to(hidden.device, torch.float64).abs().T).max())


def float32_logit_bound(con: Construction, reference, tokens, labels) -> float:
    """``gamma_K S`` (``gamma_K = K u / (1 - K u)``, u = 2^-24): a first-order bound on the |logit difference|
    between an engine that computes a Mamba or Mamba-2 block in float32 (wholly or in part) and the exact block.

    K is ``float32_roundings`` at the sequence length of ``tokens`` and S is ``logit_magnitude`` on ``reference``
    (the float64 reference engine, whose own error is ~2^-29 of this and ignored; ``scored_logits`` takes the readout
    in float64). Assumed, not proven: the sums inside the mixer do not cancel by more than the readout's magnitude
    shows (S is taken at the readout), each nonlinear step (silu, softplus, exp) amplifies relative error by at
    most one rounding, and a term's total decay exponent is O(1). It is a worst case (every rounding error of one
    sign), so measured differences are far below it (tests/test_hf_engine.py prints both)."""
    gamma = lambda k: k * UNIT_ROUNDOFF_FLOAT32 / (1 - k * UNIT_ROUNDOFF_FLOAT32)  # noqa: E731
    return gamma(float32_roundings(con.config, torch.as_tensor(tokens).shape[-1])) * \
        logit_magnitude(con, reference, tokens, labels)
