"""Block kind ``mamba-s4d``: the Mamba-S4D block (Huang et al. §4.6), ``mamba_ssm.Mamba`` with its S6 mixer replaced
by S4D. mamba_ssm and transformers have no such block: ``MambaS4D`` here is its module.

Its S4D is real and diagonal (A, B and C real, each (d_inner, d_state): 3 d N trained numbers per block), the mixer
the constructions of Theorem 4 write. As a trained model it is an ablation: the paper's S4D, whose parameter counts
fit S4D's complex diagonal mixer (2 d N + N), is ``mamba-s4d-complex`` (``verify.blocks.mamba_s4d_complex``).

``in_proj`` (rows [x | z]) -> causal depthwise ``conv1d`` + SiLU on x -> S4D scan with input-independent
Delta = softplus(dt_bias), A = -exp(A_log), B and C (each (d_inner, d_state)) -> ``y + D x`` -> gate ``y * silu(z)``
-> ``out_proj``. Parameter names and shapes: ``constructions.layout.MambaS4DConfig``.

The scan is pluggable with the signature of mamba_ssm's ``selective_scan_fn``: the reference engine passes the
pure-torch ``selective_scan_ref``; the mamba_ssm engine passes the CUDA ``selective_scan_fn``, which accepts
input-independent B and C of shape (d_inner, d_state) (float32, like A). This module never imports mamba_ssm (the
factories below import it when called).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from constructions.layout import MambaS4DConfig
from verify.blocks import BlockKind, RealModule, Training
from verify.blocks.common import (add_biases, cuda_scan, freezer, lg, log_uniform_dt, mamba_front, out_proj_packed,
                                  uniform)
from verify.engines.scan import selective_scan_ref, work_dtype

FLOAT32_PARAMS = frozenset({"dt_bias", "A_log", "B", "C", "D"})  # kept float32 whatever the module dtype

UPDATE_RULE = (
    "Mamba-S4D, per channel c < d_inner and state k < d_state: h_t[c,k] = exp(Delta[c] A[c,k]) h_{t-1}[c,k] + "
    "Delta[c] B[c,k] x_t[c] (zero-order hold on A, Euler Delta*B on the write), y_t[c] = sum_k C[c,k] h_t[c,k] + "
    "D[c] x_t[c], out = out_proj(y * silu(z)); Delta = softplus(dt_bias), A = -exp(A_log), B and C are parameters "
    "(d_inner, d_state): nothing of the mixer depends on the input. Around it the Mamba block: [x | z] = in_proj(u) "
    "(rows 0..d_inner-1 and d_inner..), x = silu(causal depthwise conv1d(x)).")


def mamba_s4d_forward(params: dict[str, torch.Tensor], hidden: torch.Tensor, config,
                      scan=selective_scan_ref) -> torch.Tensor:
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


def packed_s4d_forward(p: dict, hidden: torch.Tensor, config, scan=selective_scan_ref) -> torch.Tensor:
    """K Mamba-S4D blocks (``mamba_s4d_forward``) at once, one ``selective_scan_fn``-style
    call over the K*width channels: B, C input-independent of shape (K*width, N) (cast to A's dtype, as the CUDA
    kernel needs for real B/C), delta zeros with delta_bias = dt_bias."""
    K, b, L, _ = hidden.shape
    w, n = config.width, config.d_state
    x, z = mamba_front(p, hidden, w)
    x = x.contiguous()
    work = work_dtype(hidden)
    A = -torch.exp(p["A_log"].to(work)).reshape(K * w, n)
    B, C = p["B"].to(work).reshape(K * w, n), p["C"].to(work).reshape(K * w, n)
    y = scan(x, torch.zeros_like(x), A, B, C, p["D"].reshape(K * w).to(work), z=z.contiguous(),
             delta_bias=p["dt_bias"].reshape(K * w).to(work), delta_softplus=True)
    return out_proj_packed(y.view(b, K, w, L), p)


def init_s4d(config, gen: torch.Generator) -> dict:
    """A fresh Mamba-S4D state dict (float64): in_proj / conv1d / out_proj as ``init_mamba``; the S4D mixer as
    S4D-real (A_log = log(1..N) per channel, B = 1, C ~ N(0, 1/N)), dt_bias = softplus^-1(dt) as Mamba's, D = 1."""
    d, di, n = config.d_model, config.width, config.d_state
    sd = {"in_proj.weight": uniform(gen, (2 * di, d), d ** -0.5),
          "conv1d.weight": uniform(gen, (di, 1, config.d_conv), config.d_conv ** -0.5),
          "dt_bias": log_uniform_dt(gen, di),
          "A_log": torch.log(torch.arange(1, n + 1, dtype=torch.float64)).repeat(di, 1),
          "B": torch.ones(di, n, dtype=torch.float64),
          "C": torch.randn(di, n, generator=gen, dtype=torch.float64) * n ** -0.5,
          "D": torch.ones(di, dtype=torch.float64),
          "out_proj.weight": uniform(gen, (d, di), di ** -0.5)}
    return add_biases(sd, config, gen, d, di)


def _mamba_ssm_module(config: MambaS4DConfig, device, dtype):
    """The project's Mamba-S4D block running mamba_ssm's CUDA ``selective_scan_fn`` (input-independent B, C)."""
    from mamba_ssm.modules.mamba_simple import selective_scan_fn

    return MambaS4D(**config.arguments(), scan=selective_scan_fn, device=device, dtype=dtype)


def _training_module(config: MambaS4DConfig, device, dtype):
    return MambaS4D(**config.arguments(), scan=cuda_scan(), device=device, dtype=dtype)


def _run_config(s) -> MambaS4DConfig:
    return MambaS4DConfig(d_model=s.d_model, d_state=s.d_state, d_conv=s.d_conv, d_inner=s.expand * s.d_model)


KIND = BlockKind(
    name="mamba-s4d", title="Mamba-S4D", config=MambaS4DConfig, update_rule=UPDATE_RULE,
    forward=mamba_s4d_forward, width=lambda c: c.width, state_size=lambda c: c.width * c.d_state,
    float32_params=FLOAT32_PARAMS,
    mamba_ssm=RealModule(_mamba_ssm_module, "mamba_ssm has no Mamba-S4D module: this project's "
                                            "verify.blocks.mamba_s4d.MambaS4D(**arguments, scan=mamba_ssm's "
                                            "selective_scan_fn) runs it on mamba_ssm's CUDA selective scan (scan=None: "
                                            "the pure-PyTorch reference scan, on any device); the same parameter "
                                            "names and shapes"),
    transformers="Mamba-S4D (S4D mixer with input-independent Delta, B, C inside the Mamba block) is this project's "
                 "block; transformers has only the selective (S6) Mamba and Mamba-2 mixers",
    training=Training(
        _run_config, init_s4d, freezer(lambda c: slice(c.width, 2 * c.width), lambda c: slice(0, c.width)),
        packed_forward=packed_s4d_forward, cuda_module=_training_module, packed_cuda_scan=cuda_scan,
        gate_default=True, d_bound=lambda kappa, vocab: kappa * lg(vocab),
        n_base={"fig2": lambda kappa, vocab: 4, "a3": lambda kappa, vocab: 1},
        decay_forward=mamba_s4d_forward, note="Mamba-S4D (verify.blocks.mamba_s4d); gate on in the paper's MQAR runs"),
)
