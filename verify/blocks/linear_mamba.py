"""Block kind ``linear-mamba``: Koren et al.'s simplified linear Mamba (the analysis model of the recall scaling law).

Config ``constructions.layout.LinearMambaConfig``; the forward, ``verify.engines.linear.linear_mamba_forward``, lives
beside the per-layer operators that the designed hashing circuit (``verify.hash_operators``) uses too. No decay, no
Delta, no gate: neither mamba_ssm nor transformers has such a block, and it is not trained here (the trained recall
grids use ``mamba``).
"""
from __future__ import annotations

from constructions.layout import LinearMambaConfig
from verify.blocks import BlockKind
from verify.engines.linear import linear_mamba_forward

UPDATE_RULE = (
    "Simplified linear Mamba, per layer: x = causal depthwise conv1d(in_proj(u)) (no bias, no activation), "
    "h_t = h_{t-1} + x_t B_t^T (A = 1 and Delta = 1: a running sum; state (d_inner, d_state) per head), "
    "B_t = S_B x_t, C_t = S_C x_t, y_t = h_t C_t + D x_t, out = out_proj(y); heads (n_heads > 1) share or split B, C "
    "and the value by head_pattern (MHA, MQA, MKA, MVA: B_proj, C_proj, W_contract, W_heads); n_layers layers, "
    "added to their input when residual. No gate, no norm.")

KIND = BlockKind(
    name="linear-mamba", title="simplified linear Mamba", config=LinearMambaConfig, update_rule=UPDATE_RULE,
    forward=linear_mamba_forward, width=lambda c: c.d_inner, state_size=lambda c: c.d_inner * c.d_state,
    mamba_ssm="the simplified linear Mamba (Koren et al.: no decay, no Delta, no gate) is an analysis model; "
              "mamba_ssm has no such block (check hash-recall with --block mamba for mamba_ssm.Mamba)",
    transformers="the simplified linear Mamba (Koren et al.: no decay, no Delta, no gate) is an analysis model; "
                 "transformers has no such block (check hash-recall with --block mamba instead)",
)
