"""Pure-PyTorch reference of ``mamba_ssm.Mamba2.forward`` (the ``use_mem_eff_path=False`` path, no inference cache).

It never imports mamba_ssm. Every op has the signature and semantics of the mamba_ssm op it mirrors:

* ``ssd_scan_ref`` ~ ``mamba_chunk_scan_combined``: ``dt = clamp(softplus(dt + dt_bias))`` (torch's softplus, threshold
  20, as the Triton kernel's ``where(dt <= 20, softplus(dt), dt)``), per head h with group g = h // (nheads/ngroups):
  ``state_t = exp(dt_t A_h) state_{t-1} + dt_t x_t (x) B_t[g]`` (state (headdim, d_state)), ``y_t = state_t C_t[g]
  + D x_t``, then ``y *= silu(z)`` when z is given. A sequential scan: exact (no chunking), float64 kept in float64,
  float32 and below scanned in float32 as the kernels do.
* ``rms_norm_gated_ref`` ~ ``layernorm_gated.rms_norm_ref``: ``norm(y * silu(z))`` (or ``norm(y) * silu(z)`` with
  norm_before_gate), RMS taken per group of ``d_ssm / ngroups`` channels, eps 1e-5 (RMSNormGated's), no bias.
* ``mamba2_forward``: in_proj rows [z0 | x0 | z | xBC | dt]; causal depthwise conv over xBC + SiLU; split x | B | C;
  A = -exp(A_log); the scan (gate inside it when rmsnorm is off); RMSNormGated when on; ``silu(z0) * x0`` prepended
  when d_ssm < d_inner; out_proj.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from verify.engines.scan import tracks_grad

RMSNORM_EPS = 1e-5  # Mamba2 builds RMSNormGated(d_ssm, eps=1e-5, ...)


def _work_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def ssd_scan_ref(x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False, dt_limit=(0.0, float("inf"))):
    """x, z: (batch, L, nheads, headdim); dt: (batch, L, nheads); A: (nheads,); B, C: (batch, L, ngroups, d_state);
    D: (nheads,) or (nheads, headdim); dt_bias: (nheads,). Returns y (batch, L, nheads, headdim) in x's dtype."""
    dtype_in, work = x.dtype, _work_dtype(x)
    batch, L, nheads, headdim = x.shape
    heads_per_group = nheads // B.shape[2]
    x, dt, A = x.to(work), dt.to(work), A.to(work)
    B = B.to(work).repeat_interleave(heads_per_group, dim=2)  # (batch, L, nheads, d_state)
    C = C.to(work).repeat_interleave(heads_per_group, dim=2)
    if dt_bias is not None:
        dt = dt + dt_bias.to(work)
    if dt_softplus:
        dt = F.softplus(dt)
    dt = dt.clamp(min=dt_limit[0], max=dt_limit[1])
    state = x.new_zeros(batch, nheads, headdim, B.shape[-1])
    grad = tracks_grad(x, dt, A, B, C)
    write, ys = torch.empty_like(state), []
    for t in range(L):  # memory stays (batch, nheads, headdim, d_state) whatever L is; in place unless training
        decay = torch.exp(dt[:, t] * A)[:, :, None, None]
        if grad:
            state = decay * state + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, :, None, :]
        else:
            state.mul_(decay).add_(torch.mul((dt[:, t, :, None] * x[:, t])[..., None], B[:, t, :, None, :],
                                             out=write))
        ys.append(torch.einsum("bhpn,bhn->bhp", state, C[:, t]))
    y = torch.stack(ys, dim=1)
    if D is not None:
        D = D.to(work)
        y = y + x * (D[:, None] if D.dim() == 1 else D)
    if z is not None:
        y = y * F.silu(z.to(work))
    return y.to(dtype_in)


def rms_norm_gated_ref(y, weight, z=None, eps=RMSNORM_EPS, group_size=None, norm_before_gate=False):
    """y, z: (..., d); weight: (d,). RMSNorm over groups of ``group_size`` channels, gated by silu(z)."""
    dtype_in, work = y.dtype, _work_dtype(y)
    y, weight = y.to(work), weight.to(work)
    z = z.to(work) if z is not None else None
    if z is not None and not norm_before_gate:
        y = y * F.silu(z)
    g = y.shape[-1] if group_size is None else group_size
    grouped = y.unflatten(-1, (-1, g))
    out = (grouped * torch.rsqrt(grouped.square().mean(dim=-1, keepdim=True) + eps)).flatten(-2) * weight
    if z is not None and norm_before_gate:
        out = out * F.silu(z)
    return out.to(dtype_in)


def mamba2_forward(params: dict[str, torch.Tensor], hidden: torch.Tensor, config) -> torch.Tensor:
    """``mamba_ssm.Mamba2.forward`` on hidden (batch, L, d_model) with mamba_ssm's parameter names."""
    c, L = config, hidden.shape[1]
    zxbcdt = F.linear(hidden, params["in_proj.weight"], params.get("in_proj.bias"))
    rows = c.in_proj_rows()
    z0, x0, z, dt = (zxbcdt[..., rows[k]] for k in ("z0", "x0", "z", "dt"))
    xbc = zxbcdt[..., rows["x"].start:rows["C"].stop].transpose(1, 2).contiguous()
    w = params["conv1d.weight"]
    xbc = F.silu(F.conv1d(xbc, w, params.get("conv1d.bias"), padding=w.shape[-1] - 1, groups=w.shape[0])[..., :L])
    xbc = xbc.transpose(1, 2)
    ch = c.conv_channels()
    x, B, C = (xbc[..., ch[k]] for k in ("x", "B", "C"))
    heads = (c.nheads, c.head_dim)
    A = -torch.exp(params["A_log"].to(_work_dtype(hidden)))
    D = params["D"].view(heads) if c.D_has_hdim else params["D"]
    y = ssd_scan_ref(x.unflatten(-1, heads), dt, A, B.unflatten(-1, (c.ngroups, c.d_state)),
                     C.unflatten(-1, (c.ngroups, c.d_state)), D=D,
                     z=None if c.rmsnorm else z.unflatten(-1, heads), dt_bias=params["dt_bias"], dt_softplus=True)
    y = y.flatten(-2)
    if c.rmsnorm:
        y = rms_norm_gated_ref(y, params["norm.weight"], z, group_size=c.ssm_width // c.ngroups,
                               norm_before_gate=c.norm_before_gate)
    if c.d_mlp > 0:
        y = torch.cat([F.silu(z0) * x0, y], dim=-1)
    return F.linear(y, params["out_proj.weight"], params.get("out_proj.bias"))
