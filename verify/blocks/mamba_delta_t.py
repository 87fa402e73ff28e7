"""Block kind ``mamba-delta-t``: Mamba-Delta-transpose (Huang et al. eq. 15), and its run on an ordinary S6 selective
scan, e.g. mamba_ssm's CUDA ``selective_scan_fn``.

The block is ``mamba_ssm.Mamba`` with Delta along the state axis (``constructions.layout.MambaDeltaTConfig``); its
reference forward is ``verify.blocks.mamba.mamba_forward`` on ``verify.engines.scan.selective_scan_delta_t_ref``.
mamba_ssm and transformers have no such block (``MambaDeltaT`` here is its module), and mamba_ssm has no
Delta-transpose kernel. ``selective_scan_delta_t_via_s6`` runs the Delta-transpose recurrence

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

from common.errors import RequirementError
from constructions.layout import MambaDeltaTConfig
from verify.blocks import BlockKind, RealModule, Training
from verify.blocks.common import cuda_scan, freezer, log_uniform_dt, mamba_front, out_proj_packed, uniform
from verify.blocks.mamba import init_mamba, mamba_forward
from verify.engines.scan import selective_scan_delta_t_ref, selective_scan_ref, work_dtype

UPDATE_RULE = (
    "Mamba-Delta-transpose, per channel c < d_inner and state k < d_state: h_t[c,k] = exp(Delta_t[k] A[c,k]) "
    "h_{t-1}[c,k] + B_t[k] x_t[c] (Delta along the state axis, shared by every channel, and Delta-free writes: no "
    "Delta on B), y_t[c] = sum_k C_t[k] h_t[c,k] + D[c] x_t[c], out = out_proj(y * silu(z)). Here [x | z] = "
    "in_proj(u), x = silu(causal depthwise conv1d(x)), [dt | B | C] = x_proj(x) (rows dt_rank, d_state, d_state), "
    "Delta = softplus(dt_proj.weight dt + dt_proj.bias) in R^d_state (dt_proj maps to d_state), A = -exp(A_log).")


def delta_t_forward(params: dict[str, torch.Tensor], hidden: torch.Tensor, config) -> torch.Tensor:
    """The block on hidden (batch, L, d_model): ``mamba_forward`` with the Delta-transpose reference scan."""
    return mamba_forward(params, hidden, config, scan=selective_scan_delta_t_ref)


def selective_scan_delta_t_via_s6(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, *,
                                  scan_fn):
    """Same arguments and result as ``verify.engines.scan.selective_scan_delta_t_ref``, computed by ``scan_fn``.

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
    ``dt_proj`` (d_state outputs); see ``constructions.layout.MambaDeltaTConfig``. The scan is ``scan_fn`` (an S6 scan
    with mamba_ssm's signature, run through ``selective_scan_delta_t_via_s6``)."""

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


def packed_delta_t_forward(p: dict, hidden: torch.Tensor, config, scan=selective_scan_ref) -> torch.Tensor:
    """K Mamba-Delta-top blocks (``MambaDeltaT``) at once: one S6 ``scan`` call through
    ``selective_scan_delta_t_via_s6``'s grouped form (group = model; K*N*d_inner channels of state size 1, B/C in
    K*N groups)."""
    K, b, L, _ = hidden.shape
    di, n, r = config.d_inner, config.d_state, config.rank
    x, z = mamba_front(p, hidden, di)
    x_dbl = torch.einsum("bkil,kri->bkrl", x.view(b, K, di, L), p["x_proj.weight"])  # (b, K, r + 2N, L)
    dt, B, C = torch.split(x_dbl, [r, n, n], dim=2)
    dt = torch.einsum("bkrl,knr->bknl", dt, p["dt_proj.weight"])  # (b, K, N, L)
    A = -torch.exp(p["A_log"].to(work_dtype(hidden))).reshape(K * di, n)
    y = selective_scan_delta_t_via_s6(x, dt, A, B, C, p["D"].reshape(K * di), z, delta_bias=p["dt_proj.bias"],
                                      delta_softplus=True, scan_fn=scan)
    return out_proj_packed(y.view(b, K, di, L), p)


def init_delta_t(config, gen: torch.Generator) -> dict:
    """``init_mamba`` with dt_proj of Mamba-Delta-top's shape: weight (d_state, dt_rank) U(+-dt_rank^-1/2), bias
    softplus^-1(dt) of d_state log-uniform draws."""
    sd = init_mamba(config, gen)
    sd["dt_proj.weight"] = uniform(gen, (config.d_state, config.rank), config.rank ** -0.5)
    sd["dt_proj.bias"] = log_uniform_dt(gen, config.d_state)
    return sd


def delta_t_scan_bytes(s) -> int:
    """The S6 reduction's flattened channels (N * d_inner per model, above): about 8 float32 tensors
    of batch x L x N x d_inner in the step (forward inputs and output, backward gradients). Measured on the H100: a
    pack of 15 at |V| = 20, d 160 took 39 GB (2.6 GB a model here), one of 9 at |V| = 40, d 320 asked for 11 GB per
    tensor."""
    return 8 * 4 * s.protocol.batch_size * s.seq_len * s.d_state * s.d_model * s.expand


def _mamba_ssm_module(config: MambaDeltaTConfig, device, dtype):
    from mamba_ssm.modules.mamba_simple import selective_scan_fn

    return MambaDeltaT(config, scan_fn=selective_scan_fn, device=device, dtype=dtype)


def _training_module(config: MambaDeltaTConfig, device, dtype):
    return MambaDeltaT(config, scan_fn=cuda_scan(), device=device, dtype=dtype)


def _run_config(s) -> MambaDeltaTConfig:
    return MambaDeltaTConfig(d_model=s.d_model, d_state=s.d_state, d_conv=s.d_conv, expand=s.expand)


KIND = BlockKind(
    name="mamba-delta-t", title="Mamba-Δ⊤", config=MambaDeltaTConfig,
    update_rule=UPDATE_RULE, forward=delta_t_forward, width=lambda c: c.d_inner,
    state_size=lambda c: c.d_inner * c.d_state, float32_params=frozenset({"A_log", "D", "dt_proj.bias"}),
    mamba_ssm=RealModule(_mamba_ssm_module, "mamba_ssm has no Mamba-Delta-transpose module (mamba_ssm.Mamba would "
                                            "refuse dt_proj's shape in a strict load): this project's "
                                            "verify.blocks.mamba_delta_t.MambaDeltaT(constructions.layout.MambaDeltaTConfig(**arguments), "
                                            "scan_fn=mamba_ssm's selective_scan_fn) runs it on mamba_ssm's CUDA "
                                            "selective scan through the exact reduction of symbolic.lemma3 (any S6 "
                                            "scan with that signature works, e.g. verify.engines.scan."
                                            "selective_scan_ref on the CPU); the same parameter names and shapes"),
    transformers="Mamba-Delta-transpose (Delta along the state axis, Huang et al. eq. 15) is this project's block; "
                 "transformers' MambaMixer has Delta along the channels only",
    training=Training(
        _run_config, init_delta_t, freezer(lambda c: slice(c.d_inner, 2 * c.d_inner)),
        packed_forward=packed_delta_t_forward, cuda_module=_training_module, packed_cuda_scan=cuda_scan,
        graph_safe=False, scan_bytes=delta_t_scan_bytes, gate_default=False,
        d_bound=lambda kappa, vocab: 2 * vocab,
        n_base={"fig2": lambda kappa, vocab: 4 * vocab, "a3": lambda kappa, vocab: vocab},
        note="Mamba-Delta-top (verify.blocks.mamba_delta_t); gate off in the paper's induction heads"),
)
