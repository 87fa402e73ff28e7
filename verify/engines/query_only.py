"""``mamba_ssm.Mamba.forward`` evaluated only at the positions a check scores (the MQAR query positions).

Pure PyTorch (no mamba_ssm import): the mamba_ssm engine runs ``mamba_forward_at`` with mamba_ssm's kernels, the CPU
tests with the reference scan. It is Mamba's slow path (``mamba_simple.Mamba.forward``, ``else:`` branch: conv + SiLU,
x_proj, ``dt_proj.weight @ dt``, the selective scan with z, D, delta_bias, delta_softplus=True, out_proj), in Mamba's
layouts, with two folds that are exact in real arithmetic:

1. ``embed`` then in_proj (+ bias) is a per-token linear map, so ``in_proj_table`` precomputes
   ``in_proj.weight @ E^T + in_proj.bias`` once per construction and ``folded_xz`` builds xz (batch, 2 d_inner, L) by
   one column gather (d slow, L fastest, as Mamba lays it out). A "+PE" position channel p (``embed`` writes t there)
   is zeroed in the table and its term ``in_proj.weight[:, p] t`` added per position.
2. out_proj acts per position, so the scan output is gathered at the scored positions first and out_proj applied to
   (batch, q, d_inner) only.

In floating point the result differs from ``Mamba.forward`` gathered at the same positions only by the summation order
of the in_proj and out_proj products (GEMMs of other shapes); everything between runs on the same values.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from constructions.layout import Construction


def at_positions(hidden: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Rows of hidden (batch, L, d) at positions pos (batch, q): (batch, q, d)."""
    return hidden.gather(1, pos[..., None].expand(-1, -1, hidden.shape[-1]))


def silu_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Mamba's torch conv branch: SiLU of the causal depthwise conv1d of x (batch, d, L), cut to L."""
    out = F.conv1d(x, weight, bias, padding=weight.shape[-1] - 1, groups=weight.shape[0])
    return F.silu(out[..., :x.shape[-1]])


def in_proj_table(con: Construction, embedding: torch.Tensor, weight: torch.Tensor,
                  bias: torch.Tensor | None) -> torch.Tensor:
    """(2 d_inner, n_tokens): ``weight @ embedding^T + bias``, in_proj of every token's embedding (fold 1), with
    ``con.position_channel`` (if any) zeroed (``folded_xz`` adds its term)."""
    if con.position_channel is not None:
        embedding = embedding.clone()
        embedding[:, con.position_channel] = 0
    table = weight @ embedding.T
    return table if bias is None else table + bias[:, None]


def folded_xz(con: Construction, table: torch.Tensor, weight: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """in_proj(embed(con, E, tokens)) as xz (batch, 2 d_inner, L) for token ids (batch, L), from ``in_proj_table``:
    one gather giving (2 d_inner, batch L), viewed "d (b l) -> b d l" as ``Mamba.forward`` does."""
    batch, L = tokens.shape
    xz = table.index_select(1, tokens.flatten()).unflatten(1, (batch, L)).transpose(0, 1)
    if con.position_channel is not None:
        t = torch.arange(1, L + 1, device=xz.device, dtype=xz.dtype)
        xz = xz + weight[:, con.position_channel, None] * t
    return xz


def mamba_forward_at(params: dict[str, torch.Tensor], table: torch.Tensor, con: Construction, tokens: torch.Tensor,
                     pos: torch.Tensor, scan, conv=silu_conv) -> torch.Tensor:
    """``Mamba.forward(embed(con, E, tokens))`` at positions pos (batch, q): (batch, q, d_model).

    params: the block's parameters by mamba_ssm's names; table: ``in_proj_table``; scan: ``selective_scan_fn`` or its
    reference; conv(x, conv1d.weight, conv1d.bias): the conv + SiLU (``silu_conv`` or causal_conv1d's kernel)."""
    cfg, L = con.config, tokens.shape[1]
    x, z = folded_xz(con, table, params["in_proj.weight"], tokens).chunk(2, dim=1)
    x = conv(x, params["conv1d.weight"], params.get("conv1d.bias"))
    x_dbl = F.linear(x.transpose(1, 2).reshape(-1, x.shape[1]), params["x_proj.weight"])  # (b l, r + 2N)
    dt, B, C = torch.split(x_dbl, [cfg.rank, cfg.d_state, cfg.d_state], dim=-1)
    dt = (params["dt_proj.weight"] @ dt.t()).unflatten(1, (-1, L)).transpose(0, 1)  # "d (b l) -> b d l"
    B, C = (M.unflatten(0, (-1, L)).transpose(1, 2).contiguous() for M in (B, C))  # "(b l) n -> b n l"
    f32 = torch.float64 if x.dtype == torch.float64 else torch.float32  # Mamba's .float(); float64 kept (CPU tests)
    y = scan(x, dt, -torch.exp(params["A_log"].to(f32)), B, C, params["D"].to(f32), z=z,
             delta_bias=params["dt_proj.bias"].to(f32), delta_softplus=True)
    return F.linear(at_positions(y.transpose(1, 2), pos), params["out_proj.weight"], params.get("out_proj.bias"))


def mamba2_forward_at(params: dict[str, torch.Tensor], table: torch.Tensor, con: Construction, tokens: torch.Tensor,
                      pos: torch.Tensor, chunk_scan, conv=silu_conv) -> torch.Tensor:
    """``mamba_ssm.Mamba2.forward(embed(con, E, tokens))`` at positions pos (batch, q): (batch, q, d_model).

    Mamba2's unfused path (``use_mem_eff_path=False``) with the same two folds as ``mamba_forward_at``: in_proj of every
    token from ``in_proj_table`` (rows [z0 | x0 | z | x | B | C | dt]), and everything after the scan (the gated
    RMSNorm, which acts per position, the gated MLP z0/x0 and out_proj) at the scored positions only. chunk_scan has
    ``mamba_chunk_scan_combined``'s signature (x (b, l, h, p), dt (b, l, h), A (h,), B, C (b, l, g, n), chunk_size,
    D, z, dt_bias, dt_softplus) -> (b, l, h, p); the reference passes ``ssd_chunk_scan_ref``."""
    c, L = con.config, tokens.shape[1]
    zxbcdt = folded_xz(con, table, params["in_proj.weight"], tokens).transpose(1, 2)  # (b, l, d_in_proj)
    rows, ch = c.in_proj_rows(), c.conv_channels()
    xbc = conv(zxbcdt[..., rows["x"].start:rows["C"].stop].transpose(1, 2).contiguous(), params["conv1d.weight"],
               params.get("conv1d.bias")).transpose(1, 2)
    x, B, C = (xbc[..., ch[k]] for k in ("x", "B", "C"))
    heads, groups = (c.nheads, c.head_dim), (c.ngroups, c.d_state)
    f32 = torch.float64 if x.dtype == torch.float64 else torch.float32
    D = params["D"].view(heads) if c.D_has_hdim else params["D"]
    z = zxbcdt[..., rows["z"]]
    y = chunk_scan(x.unflatten(-1, heads).contiguous(), zxbcdt[..., rows["dt"]].contiguous(),
                   -torch.exp(params["A_log"].to(f32)), B.unflatten(-1, groups).contiguous(),
                   C.unflatten(-1, groups).contiguous(), c.chunk_size, D=D,
                   z=None if c.rmsnorm else z.unflatten(-1, heads).contiguous(), dt_bias=params["dt_bias"],
                   dt_softplus=True)
    y = at_positions(y.flatten(-2), pos)  # (b, q, d_ssm): what follows acts per position
    z_at = at_positions(z, pos)
    if c.rmsnorm:
        from verify.engines.reference_mamba2 import rms_norm_gated_ref

        y = rms_norm_gated_ref(y, params["norm.weight"], z_at, group_size=c.ssm_width // c.ngroups,
                               norm_before_gate=c.norm_before_gate)
    if c.d_mlp > 0:
        z0, x0 = (at_positions(zxbcdt[..., rows[k]], pos) for k in ("z0", "x0"))
        y = torch.cat([F.silu(z0) * x0, y], dim=-1)
    return F.linear(y, params["out_proj.weight"], params.get("out_proj.bias"))


def mamba_s4d_forward_at(params: dict[str, torch.Tensor], table: torch.Tensor, con: Construction,
                         tokens: torch.Tensor, pos: torch.Tensor, scan, conv=silu_conv) -> torch.Tensor:
    """The Mamba-S4D block (``verify.engines.mamba_s4d``) on ``embed(con, E, tokens)`` at positions pos (batch, q):
    in_proj from ``in_proj_table``, the conv + SiLU and the S4D scan (input-independent Delta, B, C; ``scan`` has
    ``selective_scan_fn``'s signature) over every position, out_proj at the scored positions only."""
    x, z = folded_xz(con, table, params["in_proj.weight"], tokens).chunk(2, dim=1)
    x = conv(x.contiguous(), params["conv1d.weight"], params.get("conv1d.bias"))
    f32 = torch.float64 if x.dtype == torch.float64 else torch.float32
    y = scan(x.contiguous(), torch.zeros_like(x), -torch.exp(params["A_log"].to(f32)), params["B"].to(f32),
             params["C"].to(f32), params["D"].to(f32), z=z.contiguous(), delta_bias=params["dt_bias"].to(f32),
             delta_softplus=True)
    return F.linear(at_positions(y.transpose(1, 2), pos), params["out_proj.weight"], params.get("out_proj.bias"))
