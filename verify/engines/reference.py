"""Pure-PyTorch reference of ``mamba_ssm.Mamba`` (the slow path of ``mamba_simple.Mamba.forward``).

It never imports mamba_ssm. ``selective_scan_ref`` has the signature of mamba_ssm's and computes the same thing:
``delta = softplus(delta + delta_bias)`` (torch's softplus, threshold 20, as the kernel), ``h_t = exp(delta A) h_{t-1}
+ delta B_t u_t`` (ZOH on A, Euler on B), ``y_t = C_t h_t + D u_t``, ``y *= silu(z)``. Unlike mamba_ssm's reference
it keeps float64 when given float64; for float32 and below it scans in float32 as the CUDA kernel does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from constructions.layout import Construction


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """u, delta, z: (batch, d, L); A: (d, N); B, C: (batch, N, L), (batch, G, N, L) (G groups of d/G channels) or
    (d, N); D, delta_bias: (d,). Returns (batch, d, L)."""
    dtype_in = u.dtype
    work = torch.float64 if dtype_in == torch.float64 else torch.float32
    u, delta, A = u.to(work), delta.to(work), A.to(work)
    B, C = B.to(work), C.to(work)
    if delta_bias is not None:
        delta = delta + delta_bias.to(work)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, d, L = u.shape
    if B.dim() == 4:  # grouped, as mamba_ssm's: (batch, G, N, L), channel c reads group c // (d / G)
        B = B.repeat_interleave(d // B.shape[1], dim=1)
    if C.dim() == 4:
        C = C.repeat_interleave(d // C.shape[1], dim=1)
    du = delta * u
    h = u.new_zeros(batch, d, A.shape[1])
    ys = []
    for t in range(L):  # per step, so memory stays (batch, d, N) whatever L is
        dBu = du[:, :, t, None] * (B[None] if B.dim() == 2 else B[:, None, :, t] if B.dim() == 3 else B[..., t])
        h = torch.exp(delta[:, :, t, None] * A) * h + dBu
        ys.append(torch.einsum("bdn,dn->bd", h, C) if C.dim() == 2 else
                  torch.einsum("bdn,bn->bd", h, C[:, :, t]) if C.dim() == 3 else torch.einsum("bdn,bdn->bd", h, C[..., t]))
    y = torch.stack(ys, dim=2)
    if D is not None:
        y = y + u * D.to(work)[:, None]
    if z is not None:
        y = y * F.silu(z.to(work))
    return y.to(dtype_in)


def mamba_forward(params: dict[str, torch.Tensor], hidden: torch.Tensor, config) -> torch.Tensor:
    """``mamba_ssm.Mamba.forward`` (no inference cache) on hidden (batch, L, d_model) with mamba_ssm's param names."""
    d_state, dt_rank = config.d_state, config.rank
    L = hidden.shape[1]
    xz = F.linear(hidden, params["in_proj.weight"], params.get("in_proj.bias")).transpose(1, 2)
    x, z = xz.chunk(2, dim=1)
    w = params["conv1d.weight"]
    x = F.silu(F.conv1d(x, w, params.get("conv1d.bias"), padding=w.shape[-1] - 1, groups=w.shape[0])[..., :L])
    x_dbl = F.linear(x.transpose(1, 2), params["x_proj.weight"])  # (batch, L, r + 2N)
    dt, B, C = torch.split(x_dbl, [dt_rank, d_state, d_state], dim=-1)
    dt = F.linear(dt, params["dt_proj.weight"]).transpose(1, 2)
    A = -torch.exp(params["A_log"].to(torch.float64 if hidden.dtype == torch.float64 else torch.float32))
    y = selective_scan_ref(x, dt, A, B.transpose(1, 2), C.transpose(1, 2), params["D"], z=z,
                           delta_bias=params["dt_proj.bias"], delta_softplus=True)
    return F.linear(y.transpose(1, 2), params["out_proj.weight"], params.get("out_proj.bias"))


from verify.engines.linear import linear_mamba_forward  # noqa: E402  (Koren et al.'s simplified linear Mamba)

FORWARDS = {"mamba": mamba_forward, "linear-mamba": linear_mamba_forward}  # block kind -> forward(params, hidden, config)

# Parameters mamba_ssm keeps in float32 whatever the module dtype (kernel requirements), per block kind.
FLOAT32_PARAMS = {"mamba": {"A_log", "D", "dt_proj.bias"}, "linear-mamba": set()}


class ReferenceEngine:
    """Runs a construction with ``mamba_forward``; linear maps in ``dtype``, the scan in float32 (float64 kept)."""

    name = "reference"

    def __init__(self, dtype: str = "float64", device: str = "cpu"):
        self.dtype_name, self.dtype, self.device = dtype, getattr(torch, dtype), torch.device(device)
        self._cache: tuple | None = None

    def _params(self, con: Construction):
        if self._cache is None or self._cache[0] is not con:
            keep32 = FLOAT32_PARAMS.get(con.config.kind, set())
            p = {k: v.to(self.device, torch.float32 if (k in keep32 and self.dtype != torch.float64) else self.dtype)
                 for k, v in con.mixer.items()}
            self._cache = (con, p, con.embedding.to(self.device, self.dtype))
        return self._cache[1], self._cache[2]

    def hidden(self, con: Construction, tokens: torch.Tensor) -> torch.Tensor:
        """Mixer output (batch, L, d_model) for token ids (batch, L)."""
        params, emb = self._params(con)
        x = emb[tokens.to(self.device)]
        with torch.no_grad():
            return FORWARDS[con.config.kind](params, x, con.config)
