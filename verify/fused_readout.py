"""Fused readout for the CUDA checks: target logit and best other logit per row without writing the logits.

``verify.checks._recall`` needs, per query row h (d,), the target logit ``h . R[t]`` and the largest other logit
``max_{v != t} h . R[v]`` over all |V| readout rows. Written out, the logits are |V| floats per query (2 GB per
batch of the large MQAR configuration, |V| = 8192, 65,536 queries), written by the GEMM and read back by the max.
This Triton kernel keeps a running (target, best other) per row over tiles of R instead, so the logits never reach
memory. Rows of any float dtype are read as float32 (the plain path's upcast). Its dot products follow the check's
precision: TF32 tensor cores (``tl.dot`` input_precision "tf32") where TF32 matmuls are on (engine dtype tfloat32),
IEEE float32 ("ieee") otherwise; either is the arithmetic of the corresponding GEMM up to summation order. Triton ships with CUDA builds of torch; without it (or on the CPU) the
checks keep the plain GEMM.
"""
from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only torch: no Triton
    triton = None

# (query rows per program, readout rows per tile, warps, pipeline stages): Triton times each once per (|V|, d,
# precision) and keeps the fastest; under the CPU interpreter only the first runs.
_TILES = [(64, 32, 4, 2), (64, 64, 4, 3), (128, 64, 8, 3), (128, 32, 8, 3), (64, 128, 4, 2), (128, 128, 8, 2)]


FLOAT32_PRECISION = "ieee"  # dot products where TF32 is off; "tf32x3" (three TF32 products, float32-like) is timed
# by benchmarks/tools/harness_ablation.py


def available(h: torch.Tensor) -> bool:
    """The kernel applies: float32, bfloat16 or float16 rows on CUDA (read as float32), and Triton importable."""
    return triton is not None and h.is_cuda and h.dtype in (torch.float32, torch.bfloat16, torch.float16)


def precision() -> str:
    """The dot products' precision: TF32 where torch's TF32 matmuls are on, ``FLOAT32_PRECISION`` otherwise."""
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else FLOAT32_PRECISION


if triton is not None:
    _CONFIGS = [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in _TILES]

    @triton.autotune(_CONFIGS[:1] if os.environ.get("TRITON_INTERPRET") == "1" else _CONFIGS,
                     key=["V", "K", "PRECISION"])
    @triton.jit
    def _own_and_best_other(H, R, T, OWN, BEST, M, V, K, stride_h, stride_r,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                            PRECISION: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        ks = tl.arange(0, BLOCK_K)
        rmask = rows < M
        hmask = rmask[:, None] & (ks[None, :] < K)
        h = tl.load(H + rows[:, None] * stride_h + ks[None, :], mask=hmask, other=0.0).to(tl.float32)
        t = tl.load(T + rows, mask=rmask, other=-1)
        own = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        best = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        for n0 in range(0, V, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            r = tl.load(R + cols[None, :] * stride_r + ks[:, None], mask=(cols[None, :] < V) & (ks[:, None] < K),
                        other=0.0)  # (BLOCK_K, BLOCK_N): R^T tile
            logits = tl.dot(h, r, input_precision=PRECISION)
            is_t = cols[None, :] == t[:, None]
            own = tl.maximum(own, tl.max(tl.where(is_t, logits, float("-inf")), axis=1))
            other = tl.where(is_t | (cols[None, :] >= V), float("-inf"), logits)
            best = tl.maximum(best, tl.max(other, axis=1))
        tl.store(OWN + rows, own, mask=rmask)
        tl.store(BEST + rows, best, mask=rmask)


def own_and_best_other(h: torch.Tensor, readout: torch.Tensor, target: torch.Tensor):
    """(target logit, largest other logit), float32 (n,) each, for rows h (n, d), float32 readout (|V|, d), targets
    (n,); dot products in ``precision()``."""
    h, readout, target = h.contiguous(), readout.contiguous(), target.reshape(-1).contiguous()
    n, d = h.shape
    own, best = (torch.empty(n, device=h.device, dtype=torch.float32) for _ in range(2))
    _own_and_best_other[lambda meta: (triton.cdiv(n, meta["BLOCK_M"]),)](
        h, readout, target, own, best, n, readout.shape[0], d, h.stride(0), readout.stride(0),
        BLOCK_K=max(16, triton.next_power_of_2(d)),
        PRECISION=precision())
    return own, best
