"""Fused readout for the CUDA checks: target logit and best other logit per row without writing the logits.

``verify.checks`` needs, per query row h (d,), the target logit ``h . R[t]`` and the largest other logit
``max_{v != t} h . R[v]`` over all |V| readout rows. Written out, the logits are |V| floats per query (2 GB per
batch of the large MQAR configuration, |V| = 8192, 65,536 queries), written by the GEMM and read back by the max.
The Triton kernel here keeps a running (target, best other) per row over tiles of R instead, so the logits never
reach memory. Its dot products run on TF32 tensor cores; rows of any float dtype are read as float32. It pays
where the logits are many (``MIN_LOGITS``); small readouts keep the plain GEMM.

- TF32 checks (engine dtype tfloat32) take its values as they are: TF32 is the check's arithmetic.
- float32, bfloat16 and float16 checks read the readout in IEEE float32 (the plain GEMM's arithmetic). For them
  :class:`Screen` certifies the float32 verdicts from the TF32 pass: with ``B_r = sum_k |h_rk| max_v |R_vk|``, every
  TF32 dot product is within ``c(d) B_r`` of the exact one, and every float32 dot product too, where

      c(d) = 2^-9 + 2^-20 + d 2^-22

  (operands truncated to TF32's 10 mantissa bits, 2 * 2^-10 + 2^-20 of |h_k R_vk| per product, the case of
  truncation rather than rounding; float32 accumulation, at most d 2^-23 + d 2^-24 of sum_k |h_k R_vk| for the
  tensor cores' and the GEMM's summation, bounded by d 2^-22; sum_k |h_k R_vk| <= B_r). So a
  row's TF32 margin m_r is within ``delta_r = 2 c(d) B_r (1 + 2^-8)`` of its float32 margin (the target and the best
  other logit each move by at most 2 c(d) B_r over the two arithmetics; 2^-8 of slack for the norms' own rounding).
  Rows with ``m_r > delta_r`` are recalled in float32, rows with ``m_r < -delta_r`` are not; the rest, and every row
  with ``m_r - delta_r <= min_s (m_s + delta_s)`` (the only rows whose float32 margin can be the smallest), are
  recomputed with the plain float32 GEMM. The result, correct count and min margin, is the plain path's.
  (At the large MQAR configuration B_r is the target logit itself, about 270, so delta_r is about 1.1 against
  margins of 124 to 270: a handful of rows are recomputed.)

The kernel holds a row's d features at once: it applies for d <= MAX_D (larger d, e.g. one-hot codes over a big
vocabulary, keeps the plain GEMM).
"""
from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only torch: no Triton
    triton = None

# (query rows per program, readout rows per tile, warps, pipeline stages): Triton times each once per (|V|, d) and
# keeps the fastest (128, 32, 8, 3 on the H100 at the large MQAR configuration); under the CPU interpreter only the
# first runs.
_TILES = [(128, 32, 8, 3), (64, 32, 4, 2), (128, 64, 8, 3), (64, 64, 4, 3)]


MAX_D, MIN_LOGITS = 256, 2 ** 24


def available(h: torch.Tensor, vocab: int) -> bool:
    """The kernel applies and pays: float32, bfloat16 or float16 rows of at most MAX_D features on CUDA, at least
    MIN_LOGITS logits (rows x vocab), Triton importable."""
    return (triton is not None and h.is_cuda and h.dtype in (torch.float32, torch.bfloat16, torch.float16)
            and h.shape[-1] <= MAX_D and h.shape[0] * vocab >= MIN_LOGITS)


if triton is not None:
    _CONFIGS = [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in _TILES]

    @triton.autotune(_CONFIGS[:1] if os.environ.get("TRITON_INTERPRET") == "1" else _CONFIGS, key=["V", "K"])
    @triton.jit
    def _own_and_best_other(H, R, T, OWN, BEST, M, V, K, stride_h, stride_r,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
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
            logits = tl.dot(h, r, input_precision="tf32")
            is_t = cols[None, :] == t[:, None]
            own = tl.maximum(own, tl.max(tl.where(is_t, logits, float("-inf")), axis=1))
            other = tl.where(is_t | (cols[None, :] >= V), float("-inf"), logits)
            best = tl.maximum(best, tl.max(other, axis=1))
        tl.store(OWN + rows, own, mask=rmask)
        tl.store(BEST + rows, best, mask=rmask)


def own_and_best_other(h: torch.Tensor, readout: torch.Tensor, target: torch.Tensor):
    """(target logit, largest other logit), float32 (n,) each, for rows h (n, d), float32 readout (|V|, d), targets
    (n,), with TF32 dot products."""
    # float32 rows: Triton's dot of a bfloat16 tile converted in the kernel ran 5x slower (H100, large MQAR config)
    h, readout, target = h.float().contiguous(), readout.contiguous(), target.reshape(-1).contiguous()
    n, d = h.shape
    own, best = (torch.empty(n, device=h.device, dtype=torch.float32) for _ in range(2))
    _own_and_best_other[lambda meta: (triton.cdiv(n, meta["BLOCK_M"]),)](
        h, readout, target, own, best, n, readout.shape[0], d, h.stride(0), readout.stride(0),
        BLOCK_K=max(16, triton.next_power_of_2(d)))
    return own, best


def margin_error_bound(h: torch.Tensor, readout: torch.Tensor) -> torch.Tensor:
    """delta_r (n,): a bound on |TF32 margin - float32 margin| of each row (module docstring)."""
    c = 2.0 ** -9 + 2.0 ** -20 + h.shape[1] * 2.0 ** -22
    return 2 * c * (1 + 2.0 ** -8) * (h.float().abs() @ readout.abs().amax(dim=0))


def certify(margin: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From approximate margins within ``delta`` of the float32 ones: (rows surely recalled and not to be
    recomputed: count, rows to recompute: bool mask); the recomputed rows hold every undecided row and every row
    whose float32 margin can be the smallest. Rows with a non-finite margin or bound are recomputed."""
    finite = torch.isfinite(margin) & torch.isfinite(delta)
    upper = torch.where(finite, margin + delta, float("inf")).min()
    recompute = ~finite | (margin.abs() <= delta) | (margin - delta <= upper)
    return ((margin > delta) & ~recompute).sum(), recompute


class Screen:
    """A certified float32 readout of one batch (module docstring): the TF32 pass and the choice of rows to recompute
    run at once; ``result(exact)`` waits only for this batch's screen (an event, not a device sync, so the batches
    enqueued after it keep the GPU busy), recomputes the chosen rows with ``exact(h_rows, target_rows) -> (correct,
    min margin)`` and returns (correct, min margin) over all rows as 0-dim device tensors."""

    def __init__(self, h: torch.Tensor, readout: torch.Tensor, target: torch.Tensor):
        h = h.float()  # once, for the kernel, the bound and the recomputed rows
        own, best = own_and_best_other(h, readout, target)
        self.sure, recompute = certify(own - best, margin_error_bound(h, readout))
        self.recompute = recompute.to("cpu", non_blocking=True)
        self.done = torch.cuda.Event()
        self.done.record()
        self.h, self.target = h, target.reshape(-1)

    def result(self, exact):
        self.done.synchronize()
        rows = self.recompute.nonzero().squeeze(1).to(self.h.device, non_blocking=True)
        correct, margin = exact(self.h[rows], self.target[rows])
        return self.sure + correct, margin
