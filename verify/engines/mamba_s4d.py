"""The Mamba-S4D block (Huang et al. §4.6): ``mamba_ssm.Mamba`` with its S6 mixer replaced by S4D.

``in_proj`` (rows [x | z]) -> causal depthwise ``conv1d`` + SiLU on x -> S4D scan with input-independent
Delta = softplus(dt_bias), A = -exp(A_log), B and C (each (d_inner, d_state)) -> ``y + D x`` -> gate ``y * silu(z)``
-> ``out_proj``. Parameter names and shapes: ``constructions.layout.MambaS4DConfig``.

The scan is pluggable with the signature of mamba_ssm's ``selective_scan_fn``: the reference engine passes the
pure-torch ``selective_scan_ref``; the mamba_ssm engine passes the CUDA ``selective_scan_fn``, which accepts
input-independent B and C of shape (d_inner, d_state) (float32, like A). This module never imports mamba_ssm.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from verify.engines.scan import selective_scan_ref

FLOAT32_PARAMS = frozenset({"dt_bias", "A_log", "B", "C", "D"})  # kept float32 whatever the module dtype


def mamba_s4d_forward(params: dict[str, torch.Tensor], hidden: torch.Tensor, config, scan) -> torch.Tensor:
    """The Mamba-S4D block on hidden (batch, L, d_model); ``scan`` has ``selective_scan_fn``'s signature."""
    L = hidden.shape[1]
    xz = F.linear(hidden, params["in_proj.weight"], params.get("in_proj.bias")).transpose(1, 2)
    x, z = xz.chunk(2, dim=1)
    w = params["conv1d.weight"]
    x = F.silu(F.conv1d(x, w, params.get("conv1d.bias"), padding=w.shape[-1] - 1, groups=w.shape[0])[..., :L])
    work = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    A = -torch.exp(params["A_log"].to(work))
    B, C = params["B"].to(work), params["C"].to(work)
    delta = torch.zeros_like(x)  # Delta is input-independent: softplus(0 + dt_bias)
    y = scan(x.contiguous(), delta, A, B, C, params["D"].to(work), z=z.contiguous(),
             delta_bias=params["dt_bias"].to(work), delta_softplus=True)
    return F.linear(y.transpose(1, 2), params["out_proj.weight"], params.get("out_proj.bias"))


class MambaS4D(nn.Module):
    """The block as a module, with the state-dict names above (``load_state_dict(strict=True)`` an export's mixer)."""

    def __init__(self, d_model, d_state=1, d_conv=4, d_inner=None, bias=True, conv_bias=True, scan=None,
                 device=None, dtype=None):
        super().__init__()
        from constructions.layout import MambaS4DConfig

        self.config = c = MambaS4DConfig(d_model, d_state, d_conv, d_inner, bias, conv_bias)
        kw, f32 = {"device": device, "dtype": dtype}, {"device": device, "dtype": torch.float32}
        di = c.width
        self.in_proj = nn.Linear(d_model, 2 * di, bias=bias, **kw)
        self.conv1d = nn.Conv1d(di, di, d_conv, groups=di, padding=d_conv - 1, bias=conv_bias, **kw)
        self.dt_bias = nn.Parameter(torch.zeros(di, **f32))
        self.A_log = nn.Parameter(torch.zeros(di, d_state, **f32))
        self.B = nn.Parameter(torch.zeros(di, d_state, **f32))
        self.C = nn.Parameter(torch.zeros(di, d_state, **f32))
        self.D = nn.Parameter(torch.zeros(di, **f32))
        self.out_proj = nn.Linear(di, d_model, bias=bias, **kw)
        self.scan = selective_scan_ref if scan is None else scan

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return mamba_s4d_forward(dict(self.named_parameters()), hidden, self.config, self.scan)
