"""Block kind ``mamba``: the Mamba block with its S6 selective mixer, as ``mamba_ssm.Mamba`` (Gu & Dao 2023).

Config ``constructions.layout.MambaConfig`` (``mamba_ssm.Mamba``'s constructor arguments). The reference forward
``mamba_forward`` is ``mamba_ssm.Mamba.forward``'s slow path (``mamba_simple.Mamba.forward``, no inference cache) on
``verify.engines.scan.selective_scan_ref``; it never imports mamba_ssm. Real modules: ``mamba_ssm.Mamba`` and
transformers' ``MambaMixer``, both with exactly these parameter names and shapes.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from constructions.layout import MambaConfig
from verify.blocks import BlockKind, RealModule, Training
from verify.blocks.common import add_biases, cuda_scan, freezer, lg, mamba_front, out_proj_packed, uniform
from verify.engines.query_only import silu_conv
from verify.engines.scan import selective_scan_ref, work_dtype

UPDATE_RULE = (
    "Mamba (S6), per channel c < d_inner and state k < d_state: h_t[c,k] = exp(Delta_t[c] A[c,k]) h_{t-1}[c,k] + "
    "Delta_t[c] B_t[k] x_t[c] (zero-order hold on A, Euler Delta*B on the write), y_t[c] = sum_k C_t[k] h_t[c,k] + "
    "D[c] x_t[c], out = out_proj(y * silu(z)). Here [x | z] = in_proj(u) (rows 0..d_inner-1 and d_inner..), "
    "x = silu(causal depthwise conv1d(x)), [dt | B | C] = x_proj(x) (rows dt_rank, d_state, d_state), "
    "Delta = softplus(dt_proj.weight dt + dt_proj.bias), A = -exp(A_log).")


def mamba_forward(params: dict[str, torch.Tensor], hidden: torch.Tensor, config, scan=selective_scan_ref) -> torch.Tensor:
    """``mamba_ssm.Mamba.forward`` (no inference cache) on hidden (batch, L, d_model) with mamba_ssm's param names.

    ``scan`` is the selective scan (``selective_scan_ref``; ``selective_scan_delta_t_ref`` gives Mamba-Delta-transpose,
    whose dt_proj maps to d_state instead of d_inner)."""
    d_state, dt_rank = config.d_state, config.rank
    xz = F.linear(hidden, params["in_proj.weight"], params.get("in_proj.bias")).transpose(1, 2)
    x, z = xz.chunk(2, dim=1)
    x = silu_conv(x, params["conv1d.weight"], params.get("conv1d.bias"))
    x_dbl = F.linear(x.transpose(1, 2), params["x_proj.weight"])  # (batch, L, r + 2N)
    dt, B, C = torch.split(x_dbl, [dt_rank, d_state, d_state], dim=-1)
    dt = F.linear(dt, params["dt_proj.weight"]).transpose(1, 2)
    A = -torch.exp(params["A_log"].to(torch.float64 if hidden.dtype == torch.float64 else torch.float32))
    y = scan(x, dt, A, B.transpose(1, 2), C.transpose(1, 2), params["D"], z=z,
             delta_bias=params["dt_proj.bias"], delta_softplus=True)
    return F.linear(y.transpose(1, 2), params["out_proj.weight"], params.get("out_proj.bias"))


def init_mamba(config, gen: torch.Generator, dt_min=1e-3, dt_max=0.1, dt_floor=1e-4) -> dict:
    """A fresh ``mamba_ssm.Mamba`` state dict (float64) as its constructor draws it: nn.Linear / nn.Conv1d defaults
    (U(+-1/sqrt(fan_in))), dt_proj weight U(+-dt_rank^-1/2), dt_proj bias = softplus^-1(dt), dt log-uniform in
    [dt_min, dt_max] floored at dt_floor, A_log = log(1..N) (S4D-real), D = 1."""
    c = config
    di, n, r, d = c.d_inner, c.d_state, c.rank, c.d_model
    sd = {"in_proj.weight": uniform(gen, (2 * di, d), d ** -0.5),
          "conv1d.weight": uniform(gen, (di, 1, c.d_conv), c.d_conv ** -0.5),
          "x_proj.weight": uniform(gen, (r + 2 * n, di), di ** -0.5),
          "dt_proj.weight": uniform(gen, (di, r), r ** -0.5)}
    dt = torch.exp(torch.rand(di, generator=gen, dtype=torch.float64) * (math.log(dt_max) - math.log(dt_min))
                   + math.log(dt_min)).clamp(min=dt_floor)
    sd["dt_proj.bias"] = dt + torch.log(-torch.expm1(-dt))
    sd["A_log"] = torch.log(torch.arange(1, n + 1, dtype=torch.float64)).repeat(di, 1)
    sd["D"] = torch.ones(di, dtype=torch.float64)
    sd["out_proj.weight"] = uniform(gen, (d, di), di ** -0.5)
    return add_biases(sd, c, gen, d, di)


def packed_mamba_forward(p: dict, hidden: torch.Tensor, config: MambaConfig, scan=selective_scan_ref) -> torch.Tensor:
    """K ``mamba_ssm.Mamba`` blocks at once: hidden (K, batch, L, d_model) -> (K, batch, L, d_model).

    The K*d_inner channels are folded into one scan call with B, C grouped by model, which is the call signature of
    mamba_ssm's ``selective_scan_fn``; with K = 1 this is ``verify.engines.reference.mamba_forward`` operation for
    operation.
    """
    K, b, L, _ = hidden.shape
    di, n, r = config.d_inner, config.d_state, config.rank
    x, z = mamba_front(p, hidden, di)
    x_dbl = torch.einsum("bkil,kri->bkrl", x.view(b, K, di, L), p["x_proj.weight"])  # (b, K, r + 2N, L)
    dt, B, C = torch.split(x_dbl, [r, n, n], dim=2)
    dt = torch.einsum("bkrl,kir->bkil", dt, p["dt_proj.weight"]).reshape(b, K * di, L)
    work = work_dtype(hidden)
    A = -torch.exp(p["A_log"].to(work)).reshape(K * di, n)
    y = scan(x, dt, A, B.contiguous(), C.contiguous(), p["D"].reshape(K * di).to(work), z=z,
             delta_bias=p["dt_proj.bias"].reshape(K * di).to(work), delta_softplus=True)
    return out_proj_packed(y.view(b, K, di, L), p)


def _mamba_ssm_module(config: MambaConfig, device, dtype):
    from mamba_ssm import Mamba

    return Mamba(**config.arguments(), device=device, dtype=dtype)


def _training_module(config: MambaConfig, device, dtype):
    """``mamba_ssm.Mamba`` on its unfused path: the fused ``mamba_inner_fn`` (taken when causal_conv1d is installed)
    returns a gradient of the wrong shape for ``out_proj.bias`` (mamba_ssm 2.3.2: "MambaInnerFnBackward returned an
    invalid gradient at index 6"), and the gate-off runs need that bias."""
    from mamba_ssm import Mamba

    return Mamba(**config.arguments(), use_fast_path=False, device=device, dtype=dtype)


def _transformers_module(config: MambaConfig, device, dtype):
    """transformers' MambaMixer for a mamba_ssm.Mamba config: same names and shapes, so the state dict loads as it
    is."""
    import transformers
    from transformers.models.mamba.modeling_mamba import MambaMixer

    hf = transformers.MambaConfig(hidden_size=config.d_model, state_size=config.d_state, conv_kernel=config.d_conv,
                                  expand=config.expand, time_step_rank=config.rank, use_bias=config.bias,
                                  use_conv_bias=config.conv_bias, hidden_act="silu", num_hidden_layers=1,
                                  use_mambapy=False, use_associative_scan=False)
    return MambaMixer(hf, layer_idx=0).to(device=device, dtype=dtype)


def _run_config(s) -> MambaConfig:
    return MambaConfig(d_model=s.d_model, d_state=s.d_state, d_conv=s.d_conv, expand=s.expand)


KIND = BlockKind(
    name="mamba", title="Mamba (S6)", config=MambaConfig, update_rule=UPDATE_RULE,
    forward=mamba_forward, width=lambda c: c.d_inner, state_size=lambda c: c.d_inner * c.d_state,
    float32_params=frozenset({"A_log", "D", "dt_proj.bias"}),
    mamba_ssm=RealModule(_mamba_ssm_module, "mamba_ssm.Mamba(**arguments): the same parameter names and shapes"),
    transformers=RealModule(
        _transformers_module, "transformers.models.mamba.modeling_mamba.MambaMixer(MambaConfig(hidden_size=d_model, "
        "state_size=d_state, conv_kernel=d_conv, expand=expand, time_step_rank=dt_rank, use_bias=bias, "
        "use_conv_bias=conv_bias, hidden_act='silu'), layer_idx=0): the same parameter names and shapes"),
    training=Training(
        _run_config, init_mamba,
        freezer(lambda c: slice(c.d_inner, 2 * c.d_inner), lambda c: slice(0, c.d_inner)),
        packed_forward=packed_mamba_forward, cuda_module=_training_module, packed_cuda_scan=cuda_scan,
        gate_default=False, d_bound=lambda kappa, vocab: kappa + lg(vocab),
        n_base={"fig2": lambda kappa, vocab: 2 * kappa, "a3": lambda kappa, vocab: kappa},
        decay_forward=mamba_forward, note="mamba_ssm.Mamba (S6); gate off = z frozen at a constant"),
)
