"""The gate of Mamba's and Mamba-S4D's query-only forms in one CUDA pass: ``y[b, :, pos] * silu(z)`` at the scored
positions, z read from the token table.

``query_only.mamba_forward_at`` and ``mamba_s4d_forward_at`` end with ``gate(at_positions(y.transpose(1, 2), pos),
z)``: the scan's output (batch, d, L) gathered at the query positions through a transposed view, the z rows looked up
in the table at the query tokens, then the gate in float32 and one rounding to y's dtype. In torch that is five
kernels over (batch, q, d) tensors; at Mamba-S4D's large MQAR configuration they cost 0.6 ms a batch, as much as the
scan. ``gate_at`` reads y at the positions and z from the table and writes the gated rows (batch, q, d) once.

Arithmetic (``query_only.gate``'s, the same operations in the same order): ``y * (z / (1 + exp(-z)))`` in float32,
exp being libdevice's ``expf`` (the one torch's SiLU calls), the division and the product rounded to nearest, then one
rounding to nearest-even to y's dtype. ``self_check`` compares the compiled kernel once per process, device, width
and dtype with ``query_only.gate`` on the first sequences of its first call and raises unless they are equal, bit for
bit, so a kernel that computes anything else ends a check with an error, never with a verdict (the CUDA tests require
the same equality on whole batches).
"""
from __future__ import annotations

import os

import torch

from verify.engines.query_only import at_positions, gate, transposed_rows

try:
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice
except ImportError:  # CPU-only torch: no Triton
    triton = None

# (queries per program, channels per program, warps); the interpreter runs the first only
_TILES = [(16, 128, 4), (32, 64, 4), (8, 256, 4), (32, 128, 8)]


def available(y: torch.Tensor) -> bool:
    """The kernel applies: float32, bfloat16 or float16 CUDA scan output, Triton importable."""
    return triton is not None and y.is_cuda and y.dtype in (torch.float32, torch.bfloat16, torch.float16)


if triton is not None:
    _interpreted = os.environ.get("TRITON_INTERPRET") == "1"

    @triton.autotune([triton.Config(dict(BLOCK_Q=q, BLOCK_D=d), num_warps=w) for q, d, w in _TILES][:1 if _interpreted
                                                                                                     else None],
                     key=["Q", "D"])
    @triton.jit
    def _gate_at(Y, POS, TOK, TAB, OUT, Q, D, stride_yb, stride_yd, stride_yl, stride_pb, stride_tb, stride_tab,
                 BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
        b = tl.program_id(2).to(tl.int64)
        qs = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)
        ds = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        qmask, dmask = qs < Q, ds < D
        mask = qmask[:, None] & dmask[None, :]
        pos = tl.load(POS + b * stride_pb + qs, mask=qmask, other=0).to(tl.int64)
        tok = tl.load(TOK + b * stride_tb + pos, mask=qmask, other=0).to(tl.int64)
        y = tl.load(Y + b * stride_yb + ds[None, :].to(tl.int64) * stride_yd + pos[:, None] * stride_yl, mask=mask,
                    other=0.0).to(tl.float32)
        z = tl.load(TAB + tok[:, None] * stride_tab + ds[None, :], mask=mask, other=0.0).to(tl.float32)
        silu = tl.math.div_rn(z, 1.0 + libdevice.exp(-z))
        out = (y * silu).to(OUT.dtype.element_ty, fp_downcast_rounding="rtne")
        tl.store(OUT + (b * Q + qs[:, None]) * D + ds[None, :], out, mask=mask)


def gate_at(y: torch.Tensor, pos: torch.Tensor, tokens: torch.Tensor, z_table_t: torch.Tensor) -> torch.Tensor:
    """``query_only.gate(at_positions(y.transpose(1, 2), pos), z_table_t[tokens.gather(1, pos)])``: (batch, q, d) in
    y's dtype.

    y: (batch, d, L), any strides (the scan's output); pos: (batch, q) positions; tokens: (batch, L) token ids;
    z_table_t: (n_tokens, d), unit stride along d (the z rows of ``query_only.in_proj_table``, transposed)."""
    batch, d, _ = y.shape
    q = pos.shape[1]
    assert z_table_t.stride(1) == 1 and z_table_t.shape[1] == d, "z_table_t must be (n_tokens, d), unit stride"
    pos, tokens = pos.contiguous(), tokens.contiguous()
    out = torch.empty(batch, q, d, device=y.device, dtype=y.dtype)
    grid = lambda meta: (triton.cdiv(q, meta["BLOCK_Q"]), triton.cdiv(d, meta["BLOCK_D"]), batch)  # noqa: E731
    _gate_at[grid](y, pos, tokens, z_table_t, out, q, d, y.stride(0), y.stride(1), y.stride(2), pos.stride(0),
                   tokens.stride(0), z_table_t.stride(0))
    self_check(y, pos, tokens, z_table_t, out)
    return out


def reference(y: torch.Tensor, pos: torch.Tensor, tokens: torch.Tensor, z_table_t: torch.Tensor) -> torch.Tensor:
    """``gate_at``'s value by ``query_only``'s torch path (the gather, the lookup, ``query_only.gate``)."""
    return gate(at_positions(y.transpose(1, 2), pos), z_table_t[tokens.gather(1, pos)])


def rows_gate(table: torch.Tensor):
    """``gate_at(y, pos, rows, tokens)`` for the query-only forms on an ``in_proj_table`` (d_in_proj, n_tokens): the
    kernel on the table's z rows ``rows`` (``query_only.transposed_rows``)."""
    rows_t = transposed_rows(table)
    return lambda y, pos, rows, tokens: gate_at(y, pos, tokens, rows_t(rows))


_CHECKED: set = set()
SELF_CHECK_SEQUENCES = 2
# The compiled kernel must equal torch's gate exactly; Triton's CPU interpreter (numpy's exp, truncation to bfloat16)
# is held to one ulp of the output dtype.
_ULPS = 1.0 if triton is not None and _interpreted else 0.0


def self_check(y, pos, tokens, z_table_t, out) -> None:
    """Once per process, device, d and dtype: the kernel's rows of the first SELF_CHECK_SEQUENCES sequences equal,
    bit for bit, ``reference`` (torch's gather, lookup and gate on the same values; ``_ULPS``); a kernel that
    differs raises."""
    key = (str(out.device), out.shape[-1], out.dtype)
    if key in _CHECKED:
        return
    n = min(pos.shape[0], SELF_CHECK_SEQUENCES)
    ref = reference(y[:n], pos[:n], tokens[:n], z_table_t).double()
    diff = (out[:n].double() - ref).abs()
    if not bool((diff <= _ULPS * torch.finfo(out.dtype).eps * ref.abs()).all()):
        worst = float(diff.max())
        raise RuntimeError(f"query gate kernel (d = {out.shape[-1]}, {out.dtype}) differs from torch's gate by up to "
                           f"{worst:.3g} on {out.device}")
    _CHECKED.add(key)
