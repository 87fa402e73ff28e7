"""Pure-PyTorch reference of ``mamba_ssm.Mamba`` (the slow path of ``mamba_simple.Mamba.forward``).

It never imports mamba_ssm. ``selective_scan_ref`` has the signature of mamba_ssm's and computes the same thing:
``delta = softplus(delta + delta_bias)`` (torch's softplus, threshold 20, as the kernel), ``h_t = exp(delta A) h_{t-1}
+ delta B_t u_t`` (ZOH on A, Euler on B), ``y_t = C_t h_t + D u_t``, ``y *= silu(z)``. Unlike mamba_ssm's reference
it keeps float64 when given float64; for float32 and below it scans in float32 as the CUDA kernel does.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from constructions.layout import Construction, embed
from verify.engines.query_only import at_positions, silu_conv


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
    step_B = (lambda t: B[None]) if B.dim() == 2 else (lambda t: B[:, None, :, t] if B.dim() == 3 else B[..., t])
    step_C = (lambda t: C[None]) if C.dim() == 2 else (lambda t: C[:, None, :, t] if C.dim() == 3 else C[..., t])
    if _tracks_grad(u, delta, A, B, C):  # training: out-of-place, so autograd can differentiate every step
        h, ys = u.new_zeros(batch, d, A.shape[1]), []
        for t in range(L):
            h = torch.exp(delta[:, :, t, None] * A) * h + du[:, :, t, None] * step_B(t)
            ys.append((h * step_C(t)).sum(-1))
        return _skip_gate(torch.stack(ys, dim=2), u, D, z, dtype_in)
    h = u.new_zeros(batch, d, A.shape[1])
    decay, write = torch.empty_like(h), torch.empty_like(h)
    y = u.new_empty(batch, d, L)
    for t in range(L):  # per step, so memory stays (batch, d, N) whatever L is; in place: the same operations in the
        # same order as the branch above (bitwise the same result), without allocating per step
        torch.exp(torch.mul(delta[:, :, t, None], A, out=decay), out=decay)
        h.mul_(decay).add_(torch.mul(du[:, :, t, None], step_B(t), out=write))  # h_t = exp(delta A) h + delta B u
        torch.sum(torch.mul(h, step_C(t), out=write), dim=-1, out=y[:, :, t])
    return _skip_gate(y, u, D, z, dtype_in)


def _tracks_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


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
    if _tracks_grad(u, delta, A, B, C):  # training: out-of-place, as selective_scan_ref
        ys = []
        for t in range(u.shape[2]):
            h = torch.exp(delta[:, None, :, t] * A) * h + u[:, :, t, None] * B[:, None, :, t]
            ys.append((h * C[:, None, :, t]).sum(-1))
        return _skip_gate(torch.stack(ys, dim=2), u, D, z, dtype_in)
    decay, write = torch.empty_like(h), torch.empty_like(h)
    y = u.new_empty(u.shape)
    for t in range(u.shape[2]):  # in place, as selective_scan_ref
        torch.exp(torch.mul(delta[:, None, :, t], A, out=decay), out=decay)
        h.mul_(decay).add_(torch.mul(u[:, :, t, None], B[:, None, :, t], out=write))
        torch.sum(torch.mul(h, C[:, None, :, t], out=write), dim=-1, out=y[:, :, t])
    return _skip_gate(y, u, D, z, dtype_in)


from verify.engines.linear import linear_mamba_forward  # noqa: E402  (Koren et al.'s simplified linear Mamba)

# block kind -> forward(params, hidden, config)
FORWARDS = {"mamba": mamba_forward, "linear-mamba": linear_mamba_forward,
            "mamba-delta-t": lambda params, hidden, config: mamba_forward(params, hidden, config,
                                                                          scan=selective_scan_delta_t_ref)}

# Parameters mamba_ssm keeps in float32 whatever the module dtype (kernel requirements), per block kind.
FLOAT32_PARAMS = {"mamba": {"A_log", "D", "dt_proj.bias"}, "linear-mamba": set(),
                  "mamba-delta-t": {"A_log", "D", "dt_proj.bias"}}


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

    def precision(self):
        """The matmul precision context of the checks' readout: nothing to change on the reference engine."""
        return contextlib.nullcontext()

    def hidden(self, con: Construction, tokens: torch.Tensor) -> torch.Tensor:
        """Mixer output (batch, L, d_model) for token ids (batch, L)."""
        params, emb = self._params(con)
        return self.mixer(con, embed(con, emb, tokens.to(self.device)))

    def hidden_at(self, con: Construction, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Mixer output (batch, q, d_model) at positions pos (batch, q): ``hidden`` gathered."""
        return at_positions(self.hidden(con, tokens), pos.to(self.device))

    def mixer(self, con: Construction, x: torch.Tensor) -> torch.Tensor:
        """Mixer output (batch, L, d_model) for real-valued inputs x (batch, L, d_model), e.g. a signal and its time."""
        params, _ = self._params(con)
        with torch.no_grad():
            return FORWARDS[con.config.kind](params, x.to(self.device, self.dtype), con.config)


def _register_blocks() -> None:
    """The Mamba2 and Mamba-S4D blocks (their forwards live in their own modules)."""
    from functools import partial

    from verify.engines.mamba_s4d import FLOAT32_PARAMS as S4D_FLOAT32, mamba_s4d_forward
    from verify.engines.reference_mamba2 import mamba2_forward

    FORWARDS.update({"mamba2": mamba2_forward, "mamba_s4d": partial(mamba_s4d_forward, scan=selective_scan_ref)})
    # mamba_ssm.Mamba2 casts A_log and dt_bias to the module dtype but creates D in float32.
    FLOAT32_PARAMS.update({"mamba2": {"D"}, "mamba_s4d": set(S4D_FLOAT32)})


_register_blocks()
