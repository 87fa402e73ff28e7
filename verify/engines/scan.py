"""The reference selective scans, in plain PyTorch: the S6 scan with ``mamba_ssm.selective_scan_fn``'s signature, the
Mamba-Delta-transpose scan (Huang et al. eq. 15) and Mamba-2's SSD scan (``ssd_scan_ref``).

``selective_scan_ref`` computes what mamba_ssm's kernel computes: ``delta = softplus(delta + delta_bias)`` (torch's
softplus, threshold 20, as the kernel), ``h_t = exp(delta A) h_{t-1} + delta B_t u_t`` (ZOH on A, Euler on B),
``y_t = C_t h_t + D u_t``, ``y *= silu(z)``. Unlike mamba_ssm's reference it keeps float64 when given float64; for
float32 and below it scans in float32 as the CUDA kernel does. Without autograd the loop runs in place into two
buffers (the same operations in the same order as the out-of-place loop that autograd differentiates: bitwise the
same result).

``ssd_scan_ref`` mirrors ``mamba_chunk_scan_combined`` (the Triton kernels of ``mamba_ssm.Mamba2``): ``dt =
clamp(softplus(dt + dt_bias))`` (torch's softplus, threshold 20, as the kernel's ``where(dt <= 20, softplus(dt), dt)``),
per head h with group g = h // (nheads/ngroups): ``state_t = exp(dt_t A_h) state_{t-1} + dt_t x_t (x) B_t[g]`` (state
(headdim, d_state)), ``y_t = state_t C_t[g] + D x_t``, then ``y *= silu(z)`` when z is given. A sequential scan: exact
(no chunking), float64 kept in float64, float32 and below scanned in float32 as the kernels do.

``rms_norm_gated_ref`` mirrors ``layernorm_gated.rms_norm_ref`` (``mamba_ssm.Mamba2``'s RMSNormGated): ``norm(y *
silu(z))`` (or ``norm(y) * silu(z)`` with norm_before_gate), RMS taken per group of ``d_ssm / ngroups`` channels,
eps 1e-5 (RMSNormGated's), no bias.

This module imports nothing of the project, so every block, engine and the training code can use it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _skip_gate(y, u, D, z, dtype_out):
    """mamba_ssm's scan epilogue: ``y + D u``, then ``y * silu(z)``, cast back to the input dtype."""
    if D is not None:
        y = y + u * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(dtype_out)


def _ungroup(M, d):
    """(batch, G, N, L) grouped B or C -> (batch, d, N, L), group g serving channels [g d/G, (g+1) d/G) (mamba_ssm's)."""
    return M.repeat_interleave(d // M.shape[1], dim=1) if M.dim() == 4 else M


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """u, delta, z: (batch, d, L); A: (d, N); B, C: (batch, N, L), (batch, G, N, L) (G groups of d/G channels) or
    (d, N); D, delta_bias: (d,). Returns (batch, d, L)."""
    dtype_in = u.dtype
    work = torch.float64 if dtype_in == torch.float64 else torch.float32
    u, delta, A = u.to(work), delta.to(work), A.to(work)
    B, C = _ungroup(B.to(work), u.shape[1]), _ungroup(C.to(work), u.shape[1])
    if delta_bias is not None:
        delta = delta + delta_bias.to(work)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, d, L = u.shape
    du = delta * u
    grad = tracks_grad(u, delta, A, B, C)
    # per-step B and C, broadcastable to (batch, d, N): in training from one contiguous time-major copy and one unbind
    # (``_steps``; its backward stacks the L gradients once, where indexing [..., t] in the loop would write each
    # step's gradient into a zero tensor of the whole input's size), else views
    split = _steps if grad else (lambda M: M.unbind(-1))
    Bs, Cs = ([M[None]] * L if M.dim() == 2 else [m[:, None] if M.dim() == 3 else m for m in split(M)] for M in (B, C))
    if grad:  # training: out-of-place, so autograd can differentiate every step
        deltas, dus = _steps(delta), _steps(du)
        h, ys = u.new_zeros(batch, d, A.shape[1]), []
        for t in range(L):
            h = torch.exp(deltas[t][..., None] * A) * h + dus[t][..., None] * Bs[t]
            ys.append((h * Cs[t]).sum(-1))
        return _skip_gate(torch.stack(ys, dim=2), u, D, z, dtype_in)
    h = u.new_zeros(batch, d, A.shape[1])
    decay, write = torch.empty_like(h), torch.empty_like(h)
    y = u.new_empty(batch, d, L)
    for t in range(L):  # per step, so memory stays (batch, d, N) whatever L is; in place: the same operations in the
        # same order as the branch above (bitwise the same result), without allocating per step
        torch.exp(torch.mul(delta[:, :, t, None], A, out=decay), out=decay)
        h.mul_(decay).add_(torch.mul(du[:, :, t, None], Bs[t], out=write))  # h_t = exp(delta A) h + delta B u
        torch.sum(torch.mul(h, Cs[t], out=write), dim=-1, out=y[:, :, t])
    return _skip_gate(y, u, D, z, dtype_in)


def _steps(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The L time steps of x (..., L) as contiguous (...) tensors: one time-major copy, then unbind."""
    return x.movedim(-1, 0).contiguous().unbind(0)


def tracks_grad(*tensors) -> bool:
    """Whether autograd (reverse mode, or forward mode through torch.func) differentiates the scan: then the
    out-of-place loop, which both modes can trace."""
    from torch._C._functorch import is_functorch_wrapped_tensor

    return any(is_functorch_wrapped_tensor(t) for t in tensors) or (
        torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def selective_scan_delta_t_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Mamba-Delta-transpose scan (Huang et al. eq. 15): ``h_t[c,k] = exp(delta_t[k] A[c,k]) h_{t-1}[c,k] + B_t[k] u_t[c]``.

    u, z: (batch, d, L); delta: (batch, N, L); A: (d, N); B, C: (batch, N, L); D: (d,); delta_bias: (N,).
    """
    dtype_in = u.dtype
    work = torch.float64 if dtype_in == torch.float64 else torch.float32
    u, delta, A, B, C = u.to(work), delta.to(work), A.to(work), B.to(work), C.to(work)
    if delta_bias is not None:
        delta = delta + delta_bias.to(work)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    if tracks_grad(u, delta, A, B, C):  # training: out-of-place, per-step slices by unbind, as selective_scan_ref
        ys = []
        for d_t, u_t, B_t, C_t in zip(_steps(delta), _steps(u), _steps(B), _steps(C)):
            h = torch.exp(d_t[:, None, :] * A) * h + u_t[..., None] * B_t[:, None, :]
            ys.append((h * C_t[:, None, :]).sum(-1))
        return _skip_gate(torch.stack(ys, dim=2), u, D, z, dtype_in)
    decay, write = torch.empty_like(h), torch.empty_like(h)
    y = u.new_empty(u.shape)
    for t in range(u.shape[2]):  # in place, as selective_scan_ref
        torch.exp(torch.mul(delta[:, None, :, t], A, out=decay), out=decay)
        h.mul_(decay).add_(torch.mul(u[:, :, t, None], B[:, None, :, t], out=write))
        torch.sum(torch.mul(h, C[:, None, :, t], out=write), dim=-1, out=y[:, :, t])
    return _skip_gate(y, u, D, z, dtype_in)


def work_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype the scans compute in: float64 kept, float32 for every other dtype (as mamba_ssm's kernels)."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def ssd_scan_ref(x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False, dt_limit=(0.0, float("inf"))):
    """x, z: (batch, L, nheads, headdim); dt: (batch, L, nheads); A: (nheads,); B, C: (batch, L, ngroups, d_state);
    D: (nheads,) or (nheads, headdim); dt_bias: (nheads,). Returns y (batch, L, nheads, headdim) in x's dtype."""
    dtype_in, work = x.dtype, work_dtype(x)
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
    # time steps by one unbind each (views): in training its backward stacks the L gradients once, where indexing
    # [:, t] in the loop would write each step's gradient into a zero tensor of the whole input's size
    for dt_t, x_t, B_t, C_t in zip(dt.unbind(1), x.unbind(1), B.unbind(1), C.unbind(1)):
        # memory stays (batch, nheads, headdim, d_state) whatever L is; in place unless training
        decay = torch.exp(dt_t * A)[:, :, None, None]
        if grad:
            state = decay * state + (dt_t[:, :, None] * x_t)[..., None] * B_t[:, :, None, :]
        else:
            state.mul_(decay).add_(torch.mul((dt_t[:, :, None] * x_t)[..., None], B_t[:, :, None, :], out=write))
        ys.append(torch.einsum("bhpn,bhn->bhp", state, C_t))
    y = torch.stack(ys, dim=1)
    if D is not None:
        D = D.to(work)
        y = y + x * (D[:, None] if D.dim() == 1 else D)
    if z is not None:
        y = y * F.silu(z.to(work))
    return y.to(dtype_in)


RMSNORM_EPS = 1e-5  # Mamba2 builds RMSNormGated(d_ssm, eps=1e-5, ...)


def rms_norm_gated_ref(y, weight, z=None, eps=RMSNORM_EPS, group_size=None, norm_before_gate=False):
    """y, z: (..., d); weight: (d,). RMSNorm over groups of ``group_size`` channels, gated by silu(z)."""
    dtype_in, work = y.dtype, work_dtype(y)
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
