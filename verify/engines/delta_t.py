"""Mamba-Delta-transpose (Huang et al. eq. 15) on an ordinary S6 selective scan, e.g. mamba_ssm's CUDA ``selective_scan_fn``.

mamba_ssm has no Delta-transpose kernel. ``selective_scan_delta_t_via_s6`` runs the Delta-transpose recurrence

    h_t[c, k] = exp(Delta_t[k] A[c, k]) h_{t-1}[c, k] + B_t[k] u_t[c],     y_t[c] = sum_k C_t[k] h_t[c, k]

on any S6 scan with mamba_ssm's signature (``scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus)``, grouped
variable B and C) by the reduction proved in ``symbolic.lemma3.flattening_obligations``:

* every (channel c, state k) pair becomes its own S6 channel ``k * d + c`` with state size 1 (the recurrence is
  elementwise in (c, k), so the pairs never interact);
* that channel gets ``u' = u[c]``, ``delta' = Delta[k]``, ``A' = A[c, k]`` and, through the k-th of N groups,
  ``B' = B[k] / Delta[k]`` (0 where B[k] = 0) and ``C' = C[k]``; the S6 write ``delta' B' u' = B[k] u[c]`` is then
  the Delta-transpose write (no Delta factor), exactly, whenever Delta[k] > 0 where B[k] != 0;
* ``y[c] = sum_k y'[k * d + c]``, then ``+ D u`` and ``* silu(z)`` as in Mamba.

Grouped form (several independent blocks in one call, e.g. the K models of a training pack): Delta, B, C of shape
(batch, G, N, L) and delta_bias (G, N) give channels c of group g = c // (d / G) group g's Delta, B and C. The
reduction is the same one applied per group (groups never interact): channel ``(k * G + g) * (d / G) + c'`` of the S6
scan is (state k, group g, channel c' of the group), in S6 group ``k * G + g``; with G = 1 this is the layout above.

Delta = softplus(dt + bias) is computed here with torch's softplus (threshold 20), the formula the CUDA kernel uses.

The flattened scan has N * d channels, and mamba_ssm's ``selective_scan_cuda`` puts channels on the launch grid's y
axis, at most 65535 (CUDA's limit; beyond it the launch fails with "invalid argument": a training pack of
Mamba-Delta-top models at |V| = 40, N = 160, had 160 * K * d_inner channels). So the scan runs in pieces of at most
``S6_MAX_CHANNELS`` channels, each made of whole S6 groups (channels never interact: the pieces' outputs are the
whole scan's).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from constructions.errors import RequirementError


def selective_scan_delta_t_via_s6(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, *,
                                  scan_fn):
    """Same arguments and result as ``verify.engines.reference.selective_scan_delta_t_ref``, computed by ``scan_fn``.

    u, z: (batch, d, L); delta: (batch, N, L); A: (d, N); B, C: (batch, N, L); D: (d,); delta_bias: (N,).
    Grouped (see the module docstring): delta, B, C (batch, G, N, L), delta_bias (G, N) or (N,), G dividing d.
    """
    batch, d, L = u.shape
    N = A.shape[1]
    if delta.dim() == 3:  # one group
        delta, B, C = delta[:, None], B[:, None], C[:, None]
    G = delta.shape[1]
    if d % G:
        raise RequirementError(f"grouped Delta-transpose scan needs the {G} groups to divide the {d} channels")
    wd = torch.float64 if u.dtype == torch.float64 else torch.float32  # float32 unless given float64, as the kernel
    delta = delta.to(wd)
    if delta_bias is not None:
        delta = delta + delta_bias.to(wd)[..., None]
    if delta_softplus:
        delta = F.softplus(delta)
    Bf = B.to(wd)
    if bool(((Bf != 0) & (delta <= 0)).any()):
        raise RequirementError("Mamba-Delta-transpose on an S6 scan needs Delta > 0 wherever B != 0 (Delta underflowed "
                               "to 0: lower the dt pre-activation's magnitude)")
    b_prime = torch.where(Bf == 0, torch.zeros_like(Bf), Bf / torch.where(delta > 0, delta, torch.ones_like(delta)))
    work = u.dtype
    by_state = lambda t: t.transpose(1, 2).reshape(batch, N * G, L)  # noqa: E731  (b, G, N, L) -> (b, N*G, L)
    u_f = u.repeat(1, N, 1).contiguous()  # channel k*d + c -> u[c]
    delta_f = by_state(delta).repeat_interleave(d // G, dim=1).to(work).contiguous()  # -> Delta[group of c, k]
    A_f = A.to(wd).transpose(0, 1).reshape(N * d, 1).contiguous()  # channel k*d + c -> A[c, k]
    B_f = by_state(b_prime)[:, :, None, :].to(work).contiguous()  # S6 group k*G + g, state size 1
    C_f = by_state(C)[:, :, None, :].to(work).contiguous()
    y_f = _scan_in_pieces(scan_fn, u_f, delta_f, A_f, B_f, C_f, group=d // G)
    y = y_f.to(wd).view(batch, N, d, L).sum(dim=1)
    if D is not None:
        y = y + u.to(wd) * D.to(wd)[:, None]
    if z is not None:
        y = y * F.silu(z.to(wd))
    return y.to(u.dtype)


S6_MAX_CHANNELS = 65535  # CUDA's gridDim.y limit, where selective_scan_cuda launches its channels


def _scan_in_pieces(scan_fn, u, delta, A, B, C, group: int):
    """``scan_fn`` (no D, z, bias) over the channels in pieces of whole S6 groups of ``group`` channels each, at most
    ``S6_MAX_CHANNELS`` channels a piece (or one group), concatenated: equal to one call, which it is when it fits."""
    per = max(1, S6_MAX_CHANNELS // group) * group
    if u.shape[1] <= per:
        return scan_fn(u, delta, A, B, C, None, None, None, False)
    return torch.cat([scan_fn(u[:, i:i + per].contiguous(), delta[:, i:i + per].contiguous(), A[i:i + per],
                              B[:, i // group:(i + per) // group].contiguous(),
                              C[:, i // group:(i + per) // group].contiguous(), None, None, None, False)
                      for i in range(0, u.shape[1], per)], dim=1)


class MambaDeltaT(nn.Module):
    """A Mamba block with the Delta-transpose mixer, parameter names and layout as ``mamba_ssm.Mamba`` except
    ``dt_proj`` (d_state outputs); see ``constructions.layout.MambaDeltaTConfig``. The scan is ``scan_fn``."""

    def __init__(self, config, scan_fn, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        di, n, r = config.d_inner, config.d_state, config.rank
        self.config, self.scan_fn = config, scan_fn
        self.in_proj = nn.Linear(config.d_model, 2 * di, bias=config.bias, **kw)
        self.conv1d = nn.Conv1d(di, di, config.d_conv, groups=di, padding=config.d_conv - 1, bias=config.conv_bias,
                                **kw)
        self.x_proj = nn.Linear(di, r + 2 * n, bias=False, **kw)
        self.dt_proj = nn.Linear(r, n, bias=True, **kw)
        self.A_log = nn.Parameter(torch.zeros(di, n, device=device, dtype=torch.float32))
        self.D = nn.Parameter(torch.zeros(di, device=device, dtype=torch.float32))
        self.out_proj = nn.Linear(di, config.d_model, bias=config.bias, **kw)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        L, n, r = hidden.shape[1], self.config.d_state, self.config.rank
        x, z = self.in_proj(hidden).transpose(1, 2).chunk(2, dim=1)
        x = F.silu(self.conv1d(x)[..., :L])
        dt, B, C = torch.split(self.x_proj(x.transpose(1, 2)), [r, n, n], dim=-1)
        dt = (dt @ self.dt_proj.weight.T).transpose(1, 2)
        y = selective_scan_delta_t_via_s6(x, dt, -torch.exp(self.A_log.to(torch.float64 if hidden.dtype == torch.float64 else torch.float32)), B.transpose(1, 2), C.transpose(1, 2),
                                          self.D, z, delta_bias=self.dt_proj.bias, delta_softplus=True,
                                          scan_fn=self.scan_fn)
        return self.out_proj(y.transpose(1, 2))
