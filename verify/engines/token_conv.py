"""The conv + SiLU of a block's token-table rows in one CUDA pass: ``silu(conv1d(table[:, tokens]) + bias)``.

The query-only forms (``verify.engines.query_only``) start every block the same way: the in_proj rows a block needs
at every position are gathered from the token table (fold 1 there), then the causal depthwise conv + SiLU runs over
them. Done as two kernels (a gather, then causal_conv1d's), the gathered tensor is written and read back once more
than needed; at the large MQAR configurations the gather costs more than the conv and, for Mamba-S4D, more than the
scan. ``table_conv_silu`` computes the same values in one Triton kernel that reads table rows (15-20 MB at the large
MQAR configurations: they stay in L2) and writes only the conv's output, in the layout its consumer reads without a
copy: channel-first (batch, C, L) for ``selective_scan_fn`` (Mamba, Mamba-S4D), channel-last (batch, L, C) for
``mamba_chunk_scan_combined`` (Mamba-2, whose B and C would otherwise be copied to unit stride: mamba_ssm's
channel-last conv needs C a multiple of 8). The channel-last layout (conv width at most 4) takes a second kernel that
walks each program's positions in order with the last W - 1 rows in registers: every table row is read once, not W
times, and each position's outputs are one contiguous store.

Arithmetic (causal_conv1d's): each output ``bias_c + sum_k w_ck x_c,t-W+1+k`` summed in float32 in that order
(inputs of any float dtype read as float32, positions before the first read as 0), then ``y / (1 + exp(-y))``, rounded
once to the output dtype. ``self_check`` compares the compiled kernel once per process, device, width, dtype and
layout against float64 on the first sequences of its first call and raises outside the float32 rounding bound, so a
kernel that computes something else ends a check with an error, never with a verdict.
"""
from __future__ import annotations

import os

import torch

from verify.engines.query_only import transposed_rows

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only torch: no Triton
    triton = None

# (positions per program, channels per program, warps); the interpreter runs the first only
_TILES = [(64, 64, 4), (32, 128, 4), (128, 32, 4), (64, 128, 8)]
_ROLLING_TILES = [(64, 128, 4), (32, 256, 4), (64, 256, 8), (128, 128, 4), (32, 512, 4)]


def available(table_t: torch.Tensor, weight: torch.Tensor) -> bool:
    """The kernel applies: a CUDA float table, Triton importable, conv width at most 8."""
    return triton is not None and table_t.is_cuda and table_t.dtype.is_floating_point and weight.shape[-1] <= 8


if triton is not None:
    _interpreted = os.environ.get("TRITON_INTERPRET") == "1"

    @triton.autotune([triton.Config(dict(BLOCK_T=t, BLOCK_C=c), num_warps=w) for t, c, w in _TILES][:1 if _interpreted
                                                                                                     else None],
                     key=["C", "L", "WIDTH", "stride_oc"])  # stride_oc: the layout
    @triton.jit
    def _table_conv_silu(TAB, TOK, W, BIAS, OUT, C, L, stride_tab, stride_tok, stride_ob, stride_oc, stride_ot,
                         WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
        b = tl.program_id(2).to(tl.int64)
        ts = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
        cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = cs < C
        acc = tl.zeros((BLOCK_T, BLOCK_C), tl.float32)
        if HAS_BIAS:
            acc += tl.load(BIAS + cs, mask=cmask, other=0.0).to(tl.float32)[None, :]
        for k in tl.static_range(WIDTH):
            src = ts - (WIDTH - 1) + k
            valid = (src >= 0) & (src < L)
            tok = tl.load(TOK + b * stride_tok + src, mask=valid, other=0).to(tl.int64)
            x = tl.load(TAB + tok[:, None] * stride_tab + cs[None, :], mask=valid[:, None] & cmask[None, :],
                        other=0.0).to(tl.float32)
            w = tl.load(W + cs * WIDTH + k, mask=cmask, other=0.0).to(tl.float32)
            acc += w[None, :] * x
        y = acc / (1.0 + tl.exp(-acc))
        ptr = OUT + b * stride_ob + cs[None, :].to(tl.int64) * stride_oc + ts[:, None].to(tl.int64) * stride_ot
        tl.store(ptr, y.to(OUT.dtype.element_ty, fp_downcast_rounding="rtne"), mask=(ts < L)[:, None] & cmask[None, :])


    @triton.autotune([triton.Config(dict(BLOCK_T=t, BLOCK_C=c), num_warps=w) for t, c, w in _ROLLING_TILES]
                     [:1 if _interpreted else None], key=["C", "L", "WIDTH"])
    @triton.jit
    def _table_conv_silu_rolling(TAB, TOK, W, BIAS, OUT, C, L, stride_tab, stride_tok, stride_ob, stride_ot,
                                 WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_T: tl.constexpr,
                                 BLOCK_C: tl.constexpr):
        """The channel-last layout, widths up to 4: each program walks BLOCK_T positions in order, keeping the last
        WIDTH - 1 table rows in registers, so each row is read once (not WIDTH times) and each position's
        BLOCK_C outputs are one contiguous store. Same sum, same order: bias, then tap k = 0 .. WIDTH - 1."""
        b = tl.program_id(2).to(tl.int64)
        t0 = tl.program_id(0) * BLOCK_T
        cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = cs < C
        tok_row, out_row = TOK + b * stride_tok, OUT + b * stride_ob + cs
        bias = tl.zeros((BLOCK_C,), tl.float32)
        if HAS_BIAS:
            bias = tl.load(BIAS + cs, mask=cmask, other=0.0).to(tl.float32)
        w_last = tl.load(W + cs * WIDTH + WIDTH - 1, mask=cmask, other=0.0).to(tl.float32)  # tap on position t
        x1 = tl.zeros((BLOCK_C,), tl.float32)  # rows t - 1, t - 2, t - 3 (0 before the first position)
        x2 = tl.zeros((BLOCK_C,), tl.float32)
        x3 = tl.zeros((BLOCK_C,), tl.float32)
        if WIDTH > 1:
            w1 = tl.load(W + cs * WIDTH + WIDTH - 2, mask=cmask, other=0.0).to(tl.float32)
            x1 = _row(TAB, tok_row, t0 - 1, L, stride_tab, cs, cmask)
        if WIDTH > 2:
            w2 = tl.load(W + cs * WIDTH + WIDTH - 3, mask=cmask, other=0.0).to(tl.float32)
            x2 = _row(TAB, tok_row, t0 - 2, L, stride_tab, cs, cmask)
        if WIDTH > 3:
            w3 = tl.load(W + cs * WIDTH + WIDTH - 4, mask=cmask, other=0.0).to(tl.float32)
            x3 = _row(TAB, tok_row, t0 - 3, L, stride_tab, cs, cmask)
        for i in range(0, BLOCK_T):
            t = t0 + i
            x = _row(TAB, tok_row, t, L, stride_tab, cs, cmask)
            acc = bias
            if WIDTH > 3:
                acc += w3 * x3
            if WIDTH > 2:
                acc += w2 * x2
            if WIDTH > 1:
                acc += w1 * x1
            acc += w_last * x
            y = acc / (1.0 + tl.exp(-acc))
            tl.store(out_row + t.to(tl.int64) * stride_ot, y.to(OUT.dtype.element_ty, fp_downcast_rounding="rtne"),
                     mask=cmask & (t < L))
            x3, x2, x1 = x2, x1, x

    @triton.jit
    def _row(TAB, tok_row, t, L, stride_tab, cs, cmask):
        """Table row of the token at position t as float32 (zeros outside 0 <= t < L)."""
        valid = (t >= 0) & (t < L)
        tok = tl.load(tok_row + t, mask=valid, other=0).to(tl.int64)
        return tl.load(TAB + tok * stride_tab + cs, mask=cmask & valid, other=0.0).to(tl.float32)


ROLLING = True  # the channel-last layout (width <= 4) takes ``_table_conv_silu_rolling``


# Half an ulp of the output dtype: the compiled kernel rounds to nearest. Triton's CPU interpreter truncates to
# bfloat16 (one ulp), so its runs are held to that.
_ROUNDING_ULPS = 1.0 if triton is not None and _interpreted else 0.5


def table_conv_silu(table_t: torch.Tensor, tokens: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    channels_last: bool = False) -> torch.Tensor:
    """``silu(causal depthwise conv1d(x) + bias)`` of x (batch, C, L), ``x[b, c, t] = table_t[tokens[b, t], c]``:
    (batch, C, L) in table_t's dtype, contiguous, or with ``channels_last`` the (batch, C, L) view of a contiguous
    (batch, L, C) tensor.

    table_t: (n_tokens, C), unit stride along C; tokens: (batch, L) integer ids; weight: (C, W) or (C, 1, W) (the
    conv1d weight), bias: (C,) or None."""
    weight = weight.reshape(weight.shape[0], -1).contiguous()
    tokens = tokens.contiguous()
    batch, L = tokens.shape
    C, width = weight.shape
    assert table_t.stride(1) == 1 and table_t.shape[1] == C, "table_t must be (n_tokens, C) with unit stride along C"
    if channels_last:
        out = torch.empty(batch, L, C, device=table_t.device, dtype=table_t.dtype).transpose(1, 2)
    else:
        out = torch.empty(batch, C, L, device=table_t.device, dtype=table_t.dtype)
    grid = lambda meta: (triton.cdiv(L, meta["BLOCK_T"]), triton.cdiv(C, meta["BLOCK_C"]), batch)  # noqa: E731
    if channels_last and width <= 4 and ROLLING:
        _table_conv_silu_rolling[grid](table_t, tokens, weight, bias if bias is not None else weight, out, C, L,
                                       table_t.stride(0), tokens.stride(0), out.stride(0), out.stride(2),
                                       WIDTH=width, HAS_BIAS=bias is not None)
    else:
        _table_conv_silu[grid](table_t, tokens, weight, bias if bias is not None else weight, out, C, L,
                               table_t.stride(0), tokens.stride(0), out.stride(0), out.stride(1), out.stride(2),
                               WIDTH=width, HAS_BIAS=bias is not None)
    self_check(table_t, tokens, weight, bias, out)
    return out


def reference(table_t: torch.Tensor, tokens: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
              dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """(``table_conv_silu``'s value computed in ``dtype`` with torch's conv1d, the sum of the magnitudes of each
    output's terms |bias| + sum_k |w_k x_k|), (batch, C, L) each."""
    weight = weight.reshape(weight.shape[0], 1, -1).to(dtype)
    x = table_t.to(dtype)[tokens].transpose(1, 2)
    pad = weight.shape[-1] - 1
    pre = torch.nn.functional.conv1d(x, weight, None if bias is None else bias.to(dtype), padding=pad,
                                     groups=weight.shape[0])[..., :tokens.shape[1]]
    size = torch.nn.functional.conv1d(x.abs(), weight.abs(), None if bias is None else bias.to(dtype).abs(),
                                      padding=pad, groups=weight.shape[0])[..., :tokens.shape[1]]
    return torch.nn.functional.silu(pre), size


def error_bound(ref: torch.Tensor, size: torch.Tensor, width: int, dtype: torch.dtype) -> torch.Tensor:
    """The kernel's largest distance from the float64 value ``ref`` of an output whose terms' magnitudes sum to
    ``size`` (``reference``), for a conv of ``width`` taps written in ``dtype``: ``u |y| + (W + 2) 2^-22 S + 2^-20
    |y|`` (``self_check``)."""
    u = torch.finfo(dtype).eps * _ROUNDING_ULPS
    return u * ref.abs() + (width + 2) * 2.0 ** -22 * size + 2.0 ** -20 * ref.abs()


def rows_conv(table: torch.Tensor):
    """``token_conv(rows, tokens, weight, bias, channels_last)`` for ``query_only.conv_rows`` on an ``in_proj_table``
    (d_in_proj, n_tokens): ``table_conv_silu`` of the table's rows ``rows`` (``query_only.transposed_rows``)."""
    rows_t = transposed_rows(table)
    return lambda rows, tokens, weight, bias, channels_last=False: table_conv_silu(rows_t(rows), tokens, weight, bias,
                                                                                   channels_last)


_CHECKED: set = set()
SELF_CHECK_SEQUENCES = 2


def self_check(table_t, tokens, weight, bias, out) -> None:
    """Once per process, device, C, width, dtype and layout: the kernel's output on the first SELF_CHECK_SEQUENCES
    sequences against float64, within ``u |y| + (W + 2) 2^-22 S + 2^-20 |y|``: rounding to the output dtype (unit
    roundoff u; ``_ROUNDING_ULPS``) and
    float32 arithmetic, the W + 1 terms' sum (magnitudes S, at most W + 1 additions of 2^-24 each) through SiLU
    (slope at most 1.1) and exp (a few float32 ulps of y). A kernel outside it raises."""
    key = (str(out.device), out.shape[1], weight.shape[-1], out.dtype, out.stride(1) == 1)
    if key in _CHECKED:
        return
    n = min(tokens.shape[0], SELF_CHECK_SEQUENCES)
    ref, size = reference(table_t, tokens[:n], weight, bias)
    worst = ((out[:n].double() - ref).abs() - error_bound(ref, size, weight.shape[-1], out.dtype)).max()
    if not bool(worst <= 0):
        raise RuntimeError(f"token conv kernel (C = {out.shape[1]}, width {weight.shape[-1]}, {out.dtype}) differs "
                           f"from float64 by {float(worst):.3g} beyond its rounding bound on {out.device}")
    _CHECKED.add(key)
