"""Block kind ``linear-mamba``: Koren et al.'s simplified linear Mamba (the analysis model of the recall scaling law).

Config ``constructions.layout.LinearMambaConfig``; the forward, ``verify.engines.linear.linear_mamba_forward``, lives
beside the per-layer operators that the designed hashing circuit (``verify.hash_operators``) uses too. No decay, no
Delta, no gate: neither mamba_ssm nor transformers has such a block.

Training (the paper's §2.1, ``verify.train.recall_models``: wiring "tied", the lm_head tied to the embedding): the
run's ``model`` gives the stack (``layers``, ``residual``, ``heads``, ``head_pattern``); d_conv and expand are the
run's (the paper: 2 and 2). Trainable: in_proj (P_in), the conv taps (W), S_B and S_C (x_proj, or B_proj / C_proj
with several heads), W_contract and W_heads, out_proj (P_out); the D skip is frozen at 0 (A = 1 and Delta = 1 are
not parameters). The initial draws are PyTorch's defaults for the paper's modules (``init_linear``). The packed
forward is the reference forward itself: every parameter of ``verify.engines.linear`` may carry a leading model axis,
so K models run as one (the chunked form of its attention form, exact for A = 1).
"""
from __future__ import annotations

import math

import torch

from common.errors import require
from constructions.layout import LinearMambaConfig
from verify.blocks import BlockKind, Training
from verify.blocks.common import uniform
from verify.engines.linear import linear_mamba_forward

UPDATE_RULE = (
    "Simplified linear Mamba, per layer: x = causal depthwise conv1d(in_proj(u)) (no bias, no activation), "
    "h_t = h_{t-1} + x_t B_t^T (A = 1 and Delta = 1: a running sum; state (d_inner, d_state) per head), "
    "B_t = S_B x_t, C_t = S_C x_t, y_t = h_t C_t + D x_t, out = out_proj(y); heads (n_heads > 1) share or split B, C "
    "and the value by head_pattern (MHA, MQA, MKA, MVA: B_proj, C_proj, W_contract, W_heads); n_layers layers, "
    "added to their input when residual. No gate, no norm. Options (the circuit-minimality ablation's rows A and "
    "B): silu (a conv bias and SiLU after the conv) and gate (y <- y * silu(z_proj(u)) before out_proj).")


def _run_config(s) -> LinearMambaConfig:
    """The stack of a run: its sizes, and ``layers``, ``heads``, ``head_pattern``, ``residual`` (default: more than
    one layer) and ``silu`` (default off) of its ``model``; the run's ``gate`` gates the output."""
    n = s.model_arg("layers", 1)
    return LinearMambaConfig(d_model=s.d_model, d_state=s.d_state, d_conv=s.d_conv, expand=s.expand, n_layers=n,
                             n_heads=s.model_arg("heads", 1), head_pattern=s.model_arg("head_pattern", "MHA"),
                             residual=s.model_arg("residual", n > 1), silu=s.model_arg("silu", False),
                             gate=s.gate)


def _fan_in(name: str, shape: tuple, d_conv: int) -> int:
    """nn.Linear / nn.Conv1d's fan-in of a linear-Mamba parameter (W_contract, W_heads: the inputs each output sums,
    the paper's einsums; the notes give no init for them)."""
    if name in ("conv1d.weight", "conv1d.bias"):
        return d_conv  # depthwise: one channel times the kernel (nn.Conv1d draws its bias with the same bound)
    if name == "W_heads":
        return shape[1] * shape[2]  # P x H values per output channel
    return shape[-1]  # Linear (out, in); W_contract: d_inner (per head) or H chunks (shared)


def init_linear(config: LinearMambaConfig, gen: torch.Generator) -> dict:
    """Every projection U(+-1/sqrt(fan_in)) (PyTorch's nn.Linear / nn.Conv1d default), D = 0, layer by layer."""
    sd = {}
    for layer in range(config.n_layers):
        for k, shape in config.layer_shapes().items():
            sd[f"layers.{layer}.{k}"] = (torch.zeros(shape, dtype=torch.float64) if k == "D"
                                         else uniform(gen, shape, 1 / math.sqrt(_fan_in(k, shape, config.d_conv))))
    return sd


def freeze_linear(config: LinearMambaConfig, spec, sd: dict) -> dict:
    """D frozen at 0 (the paper's init_D = 0, frozen; also in the ablation's rows A and B, whose D the paper does not
    give: kept at the simplified model's 0 so that rows A to E differ only in the parts they name); the model trains
    its conv and projections (and the gate's projection, with gate)."""
    require(spec.conv and spec.proj, "the simplified linear Mamba trains its conv and projections (conv, proj = true)")
    masks = {}
    for k in sd:
        if k.endswith(".D"):
            sd[k].zero_()
            masks[k] = torch.zeros_like(sd[k])
    return masks


def packed_linear_forward(p: dict, hidden: torch.Tensor, config: LinearMambaConfig, scan=None) -> torch.Tensor:
    """K stacks at once: hidden (K, batch, L, d_model), every parameter (K, ...); ``scan`` is unused (no scan). The
    chunked form (``verify.engines.linear``): the attention form's sum at O(L) instead of O(L^2) a sequence."""
    return linear_mamba_forward(p, hidden, config, mode="chunked")


KIND = BlockKind(
    name="linear-mamba", title="simplified linear Mamba", config=LinearMambaConfig, update_rule=UPDATE_RULE,
    forward=linear_mamba_forward, width=lambda c: c.d_inner, state_size=lambda c: c.d_inner * c.d_state,
    mamba_ssm="the simplified linear Mamba (Koren et al.: no decay, no Delta, no gate) is an analysis model; "
              "mamba_ssm has no such block (check hash-recall with --block mamba for mamba_ssm.Mamba)",
    transformers="the simplified linear Mamba (Koren et al.: no decay, no Delta, no gate) is an analysis model; "
                 "transformers has no such block (check hash-recall with --block mamba instead)",
    training=Training(
        _run_config, init_linear, freeze_linear, packed_forward=packed_linear_forward, gate_default=False,
        note="Koren et al.'s simplified linear Mamba, trained under the tied wiring (verify.train.recall_models)"),
)
