"""The blocks' forwards evaluated only at the positions a check scores (the MQAR query positions): Mamba
(``mamba_ssm.Mamba``), Mamba-2 (``mamba_ssm.Mamba2``) and Mamba-S4D (``verify.blocks.mamba_s4d``).

Pure PyTorch (no mamba_ssm import): the mamba_ssm engine runs these forms with mamba_ssm's kernels, the CPU tests with
the reference scans. Each is its block's forward (Mamba's slow path, Mamba2's unfused path, the Mamba-S4D block), in
the block's layouts, with three folds that are exact in real arithmetic:

1. ``embed`` then in_proj (+ bias) is a per-token linear map, so ``in_proj_table`` precomputes
   ``in_proj.weight @ E^T + in_proj.bias`` once per construction, and the in_proj rows a block needs at every
   position (the conv's input; Mamba-2's dt) are one gather of table rows (``gathered``). A "+PE" position channel p
   (``embed`` writes t there) is zeroed in the table and its term ``in_proj.weight[:, p] t`` added per position.
2. Everything after the scan acts per position: the gate ``y * silu(z)``, Mamba-2's gated RMSNorm and gated MLP
   ``silu(z0) * x0``, and out_proj. The scan runs without its gate, its output is gathered at the scored positions,
   and the rows z (z0, x0) are read from the table at the scored tokens only (``queried``).
3. Mamba-S4D's Delta is input-independent (``softplus(0 + dt_bias)``): its zero input is one length-L row broadcast
   over batch and channels (stride 0), not a tensor of the input's size.

In floating point the result differs from the block's forward gathered at the same positions by the summation order
of the in_proj and out_proj products (GEMMs of other shapes) and, where the block's scan kernel applies the gate in
float32 before rounding its output to a lower dtype, by that one rounding (the gate is applied here in float32 to the
scan's rounded output). Everything else runs on the same values.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from constructions.layout import Construction
from verify.engines.scan import rms_norm_gated_ref


def at_positions(hidden: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Rows of hidden (batch, L, d) at positions pos (batch, q): (batch, q, d)."""
    return hidden.gather(1, pos[..., None].expand(-1, -1, hidden.shape[-1]))


def silu_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Mamba's torch conv branch: SiLU of the causal depthwise conv1d of x (batch, d, L), cut to L."""
    out = F.conv1d(x, weight, bias, padding=weight.shape[-1] - 1, groups=weight.shape[0])
    return F.silu(out[..., :x.shape[-1]])


def in_proj_table(con: Construction, embedding: torch.Tensor, weight: torch.Tensor,
                  bias: torch.Tensor | None) -> torch.Tensor:
    """(d_in_proj, n_tokens): ``weight @ embedding^T + bias``, in_proj of every token's embedding (fold 1), with
    ``con.position_channel`` (if any) zeroed (``gathered`` and ``queried`` add its term)."""
    if con.position_channel is not None:
        embedding = embedding.clone()
        embedding[:, con.position_channel] = 0
    table = weight @ embedding.T
    return table if bias is None else table + bias[:, None]


def gathered(con: Construction, table: torch.Tensor, weight: torch.Tensor, rows: slice,
             tokens: torch.Tensor) -> torch.Tensor:
    """in_proj rows ``rows`` of ``embed(con, E, tokens)`` for token ids (batch, L): (batch, len(rows), L), contiguous
    (the channel-first layout of Mamba's conv input), one gather of ``table`` (``in_proj_table``) rows."""
    part = table[rows]
    batch, L = tokens.shape
    out = torch.gather(part.expand(batch, -1, -1), 2, tokens[:, None, :].expand(-1, part.shape[0], -1))
    if con.position_channel is not None:
        t = torch.arange(1, L + 1, device=out.device, dtype=out.dtype)
        out = out + weight[rows, con.position_channel, None] * t
    return out


def transposed_rows(table: torch.Tensor):
    """``rows -> table[rows].T.contiguous()`` for an ``in_proj_table`` (d_in_proj, n_tokens), each slice transposed
    once, on first use: the (n_tokens, len(rows)) unit-stride tables the one-pass kernels read."""
    done = {}

    def get(rows: slice) -> torch.Tensor:
        key = rows.start, rows.stop
        if key not in done:
            done[key] = table[rows].T.contiguous()
        return done[key]
    return get


def queried(con: Construction, table: torch.Tensor, weight: torch.Tensor, rows: slice, tokens: torch.Tensor,
            pos: torch.Tensor) -> torch.Tensor:
    """in_proj rows ``rows`` of ``embed(con, E, tokens)`` at positions pos (batch, q) only: (batch, q, len(rows))."""
    out = table[rows].T[tokens.gather(1, pos)]
    if con.position_channel is not None:
        out = out + weight[rows, con.position_channel] * (pos[..., None] + 1).to(out.dtype)
    return out


def conv_rows(con: Construction, table: torch.Tensor, params: dict[str, torch.Tensor], rows: slice,
              tokens: torch.Tensor, conv=silu_conv, token_conv=None, channels_last: bool = False) -> torch.Tensor:
    """The conv + SiLU over in_proj rows ``rows`` of ``embed(con, E, tokens)`` at every position: (batch, len(rows),
    L). ``conv(gathered rows, conv1d.weight, conv1d.bias)`` by default; ``token_conv(rows, tokens, conv1d.weight,
    conv1d.bias, channels_last)``, where given, computes the same in one pass from the table
    (``verify.engines.token_conv``), in the channel-last layout where ``channels_last`` asks for it."""
    weight, bias = params["conv1d.weight"], params.get("conv1d.bias")
    if token_conv is not None:
        return token_conv(rows, tokens, weight, bias, channels_last)
    return conv(gathered(con, table, params["in_proj.weight"], rows, tokens), weight, bias)


def gate(y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``y * silu(z)`` in float32 (float64 kept), rounded to y's dtype: the scan kernels' gate."""
    work = torch.float64 if y.dtype == torch.float64 else torch.float32
    return (y.to(work) * F.silu(z.to(work))).to(y.dtype)


def _f32(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """t in the scans' float32 (float64 kept where the input is float64: the CPU tests)."""
    return t.to(torch.float64 if like.dtype == torch.float64 else torch.float32)


def _out_proj(params: dict[str, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    return F.linear(y, params["out_proj.weight"], params.get("out_proj.bias"))


def gated_at(con: Construction, table: torch.Tensor, weight: torch.Tensor, rows: slice, y: torch.Tensor,
             tokens: torch.Tensor, pos: torch.Tensor, gate_at=None) -> torch.Tensor:
    """``gate(at_positions(y.transpose(1, 2), pos), z)`` with z the in_proj rows ``rows`` at pos (``queried``), for
    the scan's output y (batch, d, L): (batch, q, d). ``gate_at(y, pos, rows, tokens)``, where given and the
    construction has no position channel, computes the same in one pass (``verify.engines.query_gate``)."""
    if gate_at is not None and con.position_channel is None:
        return gate_at(y, pos, rows, tokens)
    return gate(at_positions(y.transpose(1, 2), pos), queried(con, table, weight, rows, tokens, pos))


def mamba_forward_at(params: dict[str, torch.Tensor], table: torch.Tensor, con: Construction, tokens: torch.Tensor,
                     pos: torch.Tensor, scan, conv=silu_conv, token_conv=None, gate_at=None) -> torch.Tensor:
    """``Mamba.forward(embed(con, E, tokens))`` at positions pos (batch, q): (batch, q, d_model).

    params: the block's parameters by mamba_ssm's names; table: ``in_proj_table`` (rows [x | z]); scan:
    ``selective_scan_fn`` or its reference; conv(x, conv1d.weight, conv1d.bias): the conv + SiLU (``silu_conv`` or
    causal_conv1d's kernel), or token_conv (``conv_rows``; it also writes a channel-last copy for x_proj, which a
    second pass of its kernel writes faster than a transpose of the first); gate_at: ``gated_at``'s. Mamba's slow
    path: conv + SiLU, x_proj, ``dt_proj.weight @ dt``, the selective scan with D, delta_bias, delta_softplus=True;
    the gate and out_proj at pos."""
    cfg, L, di = con.config, tokens.shape[1], con.config.d_inner
    W = params["in_proj.weight"]
    x = conv_rows(con, table, params, slice(0, di), tokens, conv, token_conv)
    rows = x if token_conv is None else conv_rows(con, table, params, slice(0, di), tokens, conv, token_conv, True)
    x_dbl = F.linear(rows.transpose(1, 2).reshape(-1, di), params["x_proj.weight"])  # (b l, r + 2N)
    dt, B, C = torch.split(x_dbl, [cfg.rank, cfg.d_state, cfg.d_state], dim=-1)
    dt = (params["dt_proj.weight"] @ dt.t()).unflatten(1, (-1, L)).transpose(0, 1)  # "d (b l) -> b d l"
    B, C = (M.unflatten(0, (-1, L)).transpose(1, 2).contiguous() for M in (B, C))  # "(b l) n -> b n l"
    y = scan(x, dt, -torch.exp(_f32(params["A_log"], x)), B, C, _f32(params["D"], x), z=None,
             delta_bias=_f32(params["dt_proj.bias"], x), delta_softplus=True)
    return _out_proj(params, gated_at(con, table, W, slice(di, 2 * di), y, tokens, pos, gate_at))


def mamba2_forward_at(params: dict[str, torch.Tensor], table: torch.Tensor, con: Construction, tokens: torch.Tensor,
                      pos: torch.Tensor, chunk_scan, conv=silu_conv, norm=None, token_conv=None) -> torch.Tensor:
    """``mamba_ssm.Mamba2.forward(embed(con, E, tokens))`` at positions pos (batch, q): (batch, q, d_model).

    Mamba2's unfused path (``use_mem_eff_path=False``). table: ``in_proj_table`` (rows [z0 | x0 | z | x | B | C |
    dt]); at every position only the rows x, B, C (through the conv + SiLU) and dt, and the scan (without z); the gate
    or the gated RMSNorm, the gated MLP z0/x0 and out_proj at pos. chunk_scan has ``mamba_chunk_scan_combined``'s
    signature (x (b, l, h, p), dt (b, l, h), A (h,), B, C (b, l, g, n), chunk_size, D, z, dt_bias, dt_softplus) ->
    (b, l, h, p); the reference passes ``ssd_chunk_scan_ref``. x, B, C are views of the conv's output: with ``conv``
    (b, channels, l) with unit stride along l, as Mamba2's torch conv branch gives them; with ``token_conv``
    (``conv_rows``) channel-last, unit stride along the channels, as Mamba2's causal_conv1d branch gives them (so the
    scan reads B and C without copying them). norm(y, z): the module's RMSNormGated (default:
    ``rms_norm_gated_ref`` with the config's group size and gate order)."""
    c, W = con.config, params["in_proj.weight"]
    rows, ch = c.in_proj_rows(), c.conv_channels()
    xbc = conv_rows(con, table, params, slice(rows["x"].start, rows["C"].stop), tokens, conv, token_conv,
                    channels_last=True).transpose(1, 2)  # (b, l, conv_dim)
    x, B, C = (xbc[..., ch[k]] for k in ("x", "B", "C"))
    dt = gathered(con, table, W, rows["dt"], tokens).transpose(1, 2)  # (b, l, h)
    heads, groups = (c.nheads, c.head_dim), (c.ngroups, c.d_state)
    D = params["D"].view(heads) if c.D_has_hdim else params["D"]
    y = chunk_scan(x.unflatten(-1, heads), dt, -torch.exp(_f32(params["A_log"], x)), B.unflatten(-1, groups),
                   C.unflatten(-1, groups), c.chunk_size, D=D, z=None, dt_bias=params["dt_bias"], dt_softplus=True)
    y = at_positions(y.flatten(-2), pos)  # (b, q, d_ssm)
    z = queried(con, table, W, rows["z"], tokens, pos)
    if not c.rmsnorm:
        y = gate(y, z)
    elif norm is not None:
        y = norm(y, z)
    else:
        y = rms_norm_gated_ref(y, params["norm.weight"], z, group_size=c.ssm_width // c.ngroups,
                               norm_before_gate=c.norm_before_gate)
    if c.d_mlp > 0:
        z0, x0 = (queried(con, table, W, rows[k], tokens, pos) for k in ("z0", "x0"))
        y = torch.cat([F.silu(z0) * x0, y], dim=-1)
    return _out_proj(params, y)


def mamba_s4d_forward_at(params: dict[str, torch.Tensor], table: torch.Tensor, con: Construction,
                         tokens: torch.Tensor, pos: torch.Tensor, scan, conv=silu_conv,
                         token_conv=None, gate_at=None) -> torch.Tensor:
    """The Mamba-S4D block (``verify.blocks.mamba_s4d``) on ``embed(con, E, tokens)`` at positions pos (batch, q):
    table: ``in_proj_table`` (rows [x | z]); the conv + SiLU and the S4D scan (input-independent Delta, B, C; ``scan``
    has ``selective_scan_fn``'s signature) over every position, its zero Delta input one broadcast row (fold 3); the
    gate (``gated_at``) and out_proj at pos."""
    di, W = con.config.width, params["in_proj.weight"]
    x = conv_rows(con, table, params, slice(0, di), tokens, conv, token_conv)
    delta = x.new_zeros(x.shape[-1]).expand_as(x)  # softplus(0 + dt_bias): strides (0, 0, 1)
    y = scan(x, delta, -torch.exp(_f32(params["A_log"], x)), _f32(params["B"], x), _f32(params["C"], x),
             _f32(params["D"], x), z=None, delta_bias=_f32(params["dt_bias"], x), delta_softplus=True)
    return _out_proj(params, gated_at(con, table, W, slice(di, 2 * di), y, tokens, pos, gate_at))
