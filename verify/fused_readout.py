"""Fused readout for the CUDA checks: target logit and best other logit per row without writing the logits.

``verify.checks`` needs, per query row h (d,), the target logit ``h . R[t]`` and the largest other logit
``max_{v != t} h . R[v]`` over all |V| readout rows. Written out, the logits are |V| floats per query (2 GB per
batch of the large MQAR configuration, |V| = 8192, 65,536 queries), written by the GEMM and read back by the max.
The Triton kernels here keep a running (target, best other) per row over tiles of R instead, so the logits never
reach memory. Rows of at most RESIDENT_D features are held in registers for the whole sweep over R, one ``tl.dot``
per tile of R; wider rows (up to MAX_D) are read BLOCK_K features at a time, each tile's dot products accumulated
chunk after chunk in one float32 tile. The dot products run on TF32 tensor cores; rows of any float dtype are read
as float32. Rows and readout reach the kernels zero-padded to a multiple of ALIGN features (aligned, vectorised
loads; the added products are exact zeros, so no sum changes). The kernels pay where the logits are many
(``MIN_LOGITS``); small readouts keep the plain GEMM.

- TF32 checks (engine dtype tfloat32) take its values as they are: TF32 is the check's arithmetic.
- float32, bfloat16 and float16 checks read the readout in IEEE float32 (the plain GEMM's arithmetic). For them
  :class:`Screen` certifies the float32 verdicts from the TF32 pass. With ``S_rv = sum_k |h_rk R_vk|`` and
  ``B_r = sum_k |h_rk| max_v |R_vk| >= S_rv``, every TF32 dot product of the kernels is within ``c(d) B_r`` of the
  exact one and of the float32 GEMM's, where

      c(d) = 2^-9 + 2^-20 + d 2^-22        (d <= MAX_D)

  Products: TF32 keeps 10 of float32's 23 mantissa bits; truncated rather than rounded (the worst case) each
  operand is within 2^-10 of its float32 value, relatively, so each product, exact in float32 (11 x 11 bits), is
  within ``e = 2^-9 + 2^-20`` of ``|h_rk R_vk|``. Sums: both kernels add the d products into one float32
  accumulator (the tensor cores' steps within a ``tl.dot``, then, for d > RESIDENT_D, chunk after chunk; masked
  features add exact zeros). In any order, a float32 sum of d terms whose additions each err by at most u
  relatively is within ``g(d-1, u) = (d-1) u / (1 - (d-1) u)`` times the sum of the terms' magnitudes (each term
  passes through at most d-1 additions). The accumulator, taken to truncate (u = 2^-23), puts the TF32 value within
  ``e S + g(d-1, 2^-23) (1 + e) S`` of the exact one; the float32 GEMM (round to nearest, u = 2^-24, any blocking
  or split of the sum, products rounded or fused) within ``g(d, 2^-24) S``. For d <= MAX_D = 2048,
  ``g(d-1, 2^-23) (1 + e) <= 1.003 (d-1) 2^-23`` and ``g(d, 2^-24) <= 1.001 d 2^-24``, so TF32 and float32 differ by
  at most ``e + 1.51 d 2^-23`` of S, below c(d) by ``0.49 d 2^-23``: room for the tensor cores' fused addition of
  each step of 8 products and the accumulator (aligned to the largest, truncated: at most one unit of 2^-23 of S
  more per step than 8 chopped additions, d/8 + 1 in all).
  So a row's TF32 margin m_r is within ``delta_r = 2 c(d) B_r (1 + 2^-8)`` of its float32 margin (the target and
  the best other logit each move by at most c(d) B_r; 2^-8 of slack for the rounding of B_r itself, a float32 sum
  of d non-negative terms, within d 2^-24 <= 2^-13). Rows with ``m_r > delta_r`` are recalled in float32, rows
  with ``m_r < -delta_r`` are not; the rest, and every row with ``m_r - delta_r <= min_s (m_s + delta_s)`` (the
  only rows whose float32 margin can be the smallest), are recomputed with the plain float32 GEMM. The result,
  correct count and min margin, is the plain path's.
  (At the large MQAR configuration B_r is the target logit itself, about 270, so delta_r is about 1.1 against
  margins of 124 to 270: a handful of rows are recomputed.)
- bfloat16 checks, whose rows are bfloat16 values, have the kernels multiply them by the readout rounded to nearest
  bfloat16 (``bf16_readout``, once per readout) on bfloat16 tensor cores instead: half the bytes of TF32 and twice its
  rate. The rows are exact; each readout entry moves by at most 2^-8 of its magnitude (bfloat16 keeps 8 significant
  bits; a readout with a nonzero float32 below 2^-126, where bfloat16's subnormals keep fewer, takes the TF32 screen);
  a product of two bfloat16 values is exact in float32, and its sums are the TF32 kernels' sums. So the argument
  above holds with e = 2^-8 in place of 2^-9 + 2^-20:

      c_bf16(d) = 2^-8 + d 2^-22

  (delta_r about 2.2 at the large MQAR configuration, against margins of 124 to 270), and ``Screen`` certifies the
  float32 verdicts from it the same way.

MAX_D = 2048 keeps the steps above: ``g(d-1, 2^-23)`` stays near ``(d-1) 2^-23`` only while ``d (d-1) 2^-23`` is
well below 1 (it passes ``d 2^-23`` past d = 2896), and 2048 is the largest power of two under that. Memory does
not limit d: the chunked kernel's tiles are BLOCK_K wide whatever d is. Wider rows, e.g. one-hot codes over a big
vocabulary, keep the plain GEMM.

The certification above assumes the kernels keep the TF32 bound. ``self_check`` tests that of the compiled kernel
once per process, device, d and |V|, on the first rows of its first call against float64 logits, and raises where it
does not: a miscompiled kernel stops the check instead of passing it.
"""
from __future__ import annotations

import os

import torch
from torch.utils.weak import WeakIdKeyDictionary

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only torch: no Triton
    triton = None

# (query rows per program, readout rows per tile, warps, pipeline stages): Triton times each once per (|V|, d) and
# keeps the fastest (128, 32, 8, 3 on the H100 at the large MQAR configuration); under the CPU interpreter only the
# first runs.
_TILES = [(128, 32, 8, 3), (64, 32, 4, 2), (128, 64, 8, 3), (64, 64, 4, 3)]
# The same with the features per chunk (BLOCK_K) third, for rows wider than RESIDENT_D: at most 64 KiB of h and R
# tiles per pipeline stage. Each program reads its rows' features once per tile of R and R once in all, so the larger
# tiles read less (at d = 275, |V| = 8192 a program of 128 rows and tiles of 64 reads its rows 128 times).
_CHUNKED_TILES = [(128, 64, 32, 8, 3), (128, 128, 32, 8, 3), (64, 128, 32, 4, 3), (128, 64, 64, 8, 3),
                  (128, 256, 32, 8, 3), (256, 128, 32, 8, 3), (128, 128, 64, 8, 3), (256, 64, 32, 8, 4)]


RESIDENT_D, MAX_D, MIN_LOGITS = 256, 2048, 2 ** 24


def available(h: torch.Tensor, vocab: int) -> bool:
    """The kernels apply and pay: float32, bfloat16 or float16 rows of at most MAX_D features on CUDA, at least
    MIN_LOGITS logits (rows x vocab), Triton importable."""
    return (triton is not None and h.is_cuda and h.dtype in (torch.float32, torch.bfloat16, torch.float16)
            and h.shape[-1] <= MAX_D and h.shape[0] * vocab >= MIN_LOGITS)


if triton is not None:
    def _tuned(tiles):
        configs = [triton.Config(dict(zip(("BLOCK_M", "BLOCK_N", "BLOCK_K"), t[:-2])), num_warps=t[-2],
                                 num_stages=t[-1]) for t in tiles]
        return triton.autotune(configs[:1] if os.environ.get("TRITON_INTERPRET") == "1" else configs,
                               key=["V", "K"])

    @triton.jit
    def _keep(own, best, logits, cols, t, V):
        """The running (target, best other) of each row after one tile of logits (columns ``cols`` of R)."""
        is_t = cols[None, :] == t[:, None]
        own = tl.maximum(own, tl.max(tl.where(is_t, logits, float("-inf")), axis=1))
        other = tl.where(is_t | (cols[None, :] >= V), float("-inf"), logits)
        return own, tl.maximum(best, tl.max(other, axis=1))

    @_tuned(_TILES)
    @triton.jit
    def _own_and_best_other(H, R, T, OWN, BEST, M, V, K, stride_h, stride_r, PRECISION: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """Rows of at most BLOCK_K features, held for the whole sweep over R."""
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        ks = tl.arange(0, BLOCK_K)
        rmask = rows < M
        hmask = rmask[:, None] & (ks[None, :] < K)
        h = tl.load(H + rows[:, None] * stride_h + ks[None, :], mask=hmask, other=0.0)
        t = tl.load(T + rows, mask=rmask, other=-1)
        own = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        best = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        for n0 in range(0, V, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            r = tl.load(R + cols[None, :] * stride_r + ks[:, None], mask=(cols[None, :] < V) & (ks[:, None] < K),
                        other=0.0)  # (BLOCK_K, BLOCK_N): R^T tile
            logits = tl.dot(h, r, input_precision=PRECISION)
            own, best = _keep(own, best, logits, cols, t, V)
        tl.store(OWN + rows, own, mask=rmask)
        tl.store(BEST + rows, best, mask=rmask)

    @_tuned(_CHUNKED_TILES)
    @triton.jit
    def _own_and_best_other_chunked(H, R, T, OWN, BEST, M, V, K, stride_h, stride_r, PRECISION: tl.constexpr,
                                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """Rows of any width: each tile's logits accumulated over chunks of BLOCK_K features in one float32 tile."""
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        rmask = rows < M
        h_rows = H + rows.to(tl.int64)[:, None] * stride_h  # int64: M d may pass 2^31
        t = tl.load(T + rows, mask=rmask, other=-1)
        own = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        best = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        for n0 in range(0, V, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            r_cols = R + cols.to(tl.int64)[None, :] * stride_r
            logits = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
            for k0 in range(0, K, BLOCK_K):
                ks = k0 + tl.arange(0, BLOCK_K)
                h = tl.load(h_rows + ks[None, :], mask=rmask[:, None] & (ks[None, :] < K), other=0.0)
                r = tl.load(r_cols + ks[:, None], mask=(cols[None, :] < V) & (ks[:, None] < K), other=0.0)
                logits = tl.dot(h, r, logits, input_precision=PRECISION)
            own, best = _keep(own, best, logits, cols, t, V)
        tl.store(OWN + rows, own, mask=rmask)
        tl.store(BEST + rows, best, mask=rmask)


def own_and_best_other(h: torch.Tensor, readout: torch.Tensor, target: torch.Tensor, operands: str = "tf32"):
    """(target logit, largest other logit), float32 (n,) each, for rows h (n, d), float32 readout (|V|, d), targets
    (n,). ``operands`` "tf32": float32 rows and readout, TF32 dot products; "bf16": rows already bfloat16 (their
    values exact in it) times the readout rounded to nearest bfloat16, products exact and summed in float32."""
    readout = readout.contiguous()
    if operands == "bf16":
        r, precision = bf16_readout(readout), "ieee"
        assert h.dtype == torch.bfloat16 and r is not None, "bf16 operands: bfloat16 rows, a readout without " \
                                                            "float32 subnormals"
    else:
        # float32 rows: Triton's dot of a bfloat16 tile converted in the kernel ran 5x slower (H100, large MQAR config)
        h, r, precision = h.float(), readout, "tf32"
    target = target.reshape(-1).contiguous()
    n, d = h.shape
    hp, rp = _padded(h.contiguous()), _padded_readout(r)
    own, best = (torch.empty(n, device=h.device, dtype=torch.float32) for _ in range(2))
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK_M"]),)  # noqa: E731
    args = hp, rp, target, own, best, n, rp.shape[0], hp.shape[1], hp.stride(0), rp.stride(0), precision
    if d <= RESIDENT_D:
        _own_and_best_other[grid](*args, BLOCK_K=max(16, triton.next_power_of_2(hp.shape[1])))
    else:
        _own_and_best_other_chunked[grid](*args)
    self_check(h, readout, target, own, best, operands)
    return own, best


ALIGN = 16  # features: rows of a multiple of 16 elements start on 32-byte (bfloat16) / 64-byte (float32) boundaries


def _padded(t: torch.Tensor) -> torch.Tensor:
    """t (n, d) with zero features appended up to a multiple of ALIGN (t itself where d is one already). The kernels
    then read whole aligned vectors instead of single elements (a row stride of 275 elements defeats vectorised
    loads); the appended products are exact zeros, so every sum, hence every logit, is unchanged."""
    pad = -t.shape[1] % ALIGN
    return t if pad == 0 else torch.nn.functional.pad(t, (0, pad))


_PADDED = WeakIdKeyDictionary()  # readout operand -> (its version, ``_padded`` of it)


def _padded_readout(r: torch.Tensor) -> torch.Tensor:
    """``_padded(r)`` of a readout operand, computed once per tensor (and again after it is written to); an aligned
    readout is returned as it is, uncached (a cache entry holding its own key would never be freed)."""
    return r if r.shape[1] % ALIGN == 0 else _memo(_PADDED, r, _padded)


def _memo(cache: WeakIdKeyDictionary, t: torch.Tensor, compute):
    """``compute(t)``, kept in ``cache`` while t lives and is not written to (its version unchanged)."""
    if t not in cache or cache[t][0] != t._version:
        cache[t] = t._version, compute(t)
    return cache[t][1]


_CHECKED: set = set()
SELF_CHECK_ROWS = 256


def self_check(h: torch.Tensor, readout: torch.Tensor, target: torch.Tensor, own: torch.Tensor,
               best: torch.Tensor, operands: str = "tf32") -> None:
    """Once per process, device, d and |V|: the kernel's (target, best other) logits of the first SELF_CHECK_ROWS
    rows against float64 logits, each within the bound a TF32 logit keeps from the exact one (half of
    ``margin_error_bound``; the max over the other logits moves no more than they do). A compiled kernel that breaks
    it (a miscompiled loop, a skipped feature chunk) raises instead of feeding the certification values outside the
    bound it assumes, so such a kernel can fail a check but never pass one."""
    key = (str(h.device), h.shape[1], readout.shape[0], operands)
    if key in _CHECKED:
        return
    rows = slice(0, min(h.shape[0], SELF_CHECK_ROWS))
    hr, t = h[rows].double(), target[rows]
    logits = hr @ readout.double().T  # (rows, |V|)
    own_ref = logits.gather(1, t[:, None]).squeeze(1)
    best_ref = logits.scatter(1, t[:, None], float("-inf")).amax(dim=1)
    bound = margin_error_bound(h[rows], readout, operands).double() / 2
    worst = torch.maximum((own[rows] - own_ref).abs(), (best[rows] - best_ref).abs()) - bound
    if not bool((worst <= 0).all()):
        name = "TF32" if operands == "tf32" else "bfloat16"
        raise RuntimeError(f"fused readout kernel (d = {h.shape[1]}, |V| = {readout.shape[0]}) differs from the "
                           f"float64 logits by {float(worst.max()):.3g} beyond the {name} bound on {h.device}")
    _CHECKED.add(key)


def margin_error_bound(h: torch.Tensor, readout: torch.Tensor, operands: str = "tf32") -> torch.Tensor:
    """delta_r (n,): a bound on |kernel margin - float32 margin| of each row, for the kernel's ``operands`` (module
    docstring: c(d), or c_bf16(d) for bfloat16 rows times the readout rounded to bfloat16)."""
    c = (2.0 ** -8 if operands == "bf16" else 2.0 ** -9 + 2.0 ** -20) + h.shape[1] * 2.0 ** -22
    return 2 * c * (1 + 2.0 ** -8) * (h.float().abs() @ readout.abs().amax(dim=0))


def certify(margin: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From approximate margins within ``delta`` of the float32 ones: (rows surely recalled and not to be
    recomputed: count, rows to recompute: bool mask); the recomputed rows hold every undecided row and every row
    whose float32 margin can be the smallest. Rows with a non-finite margin or bound are recomputed."""
    finite = torch.isfinite(margin) & torch.isfinite(delta)
    upper = torch.where(finite, margin + delta, float("inf")).min()
    recompute = ~finite | (margin.abs() <= delta) | (margin - delta <= upper)
    return ((margin > delta) & ~recompute).sum(), recompute


_BF16 = WeakIdKeyDictionary()  # float32 readout -> (its version, its bfloat16 rounding or None: not close enough)


def bf16_readout(readout: torch.Tensor) -> torch.Tensor | None:
    """The readout rounded to nearest bfloat16 (computed once per readout tensor), or None where an entry is a nonzero
    float32 below 2^-126: there bfloat16's subnormals keep fewer bits, the rounding can move an entry by more than
    2^-8 of its magnitude, and the TF32 screen is used instead."""
    def rounded(r):
        tiny = (r != 0) & (r.abs() < 2.0 ** -126)
        return None if bool(tiny.any()) else r.to(torch.bfloat16)
    return _memo(_BF16, readout, rounded)


class Screen:
    """A certified float32 readout of one batch (module docstring): the TF32 pass and the choice of rows to recompute
    run at once; ``result(exact)`` waits only for this batch's screen (an event, not a device sync, so the batches
    enqueued after it keep the GPU busy), recomputes the chosen rows with ``exact(h_rows, target_rows) -> (correct,
    min margin)`` and returns (correct, min margin) over all rows as 0-dim device tensors."""

    def __init__(self, h: torch.Tensor, readout: torch.Tensor, target: torch.Tensor):
        bf16 = h.dtype == torch.bfloat16 and bf16_readout(readout) is not None
        operands = "bf16" if bf16 else "tf32"
        own, best = own_and_best_other(h, readout, target, operands)
        h = h.float()  # once, for the bound and the recomputed rows
        self.sure, recompute = certify(own - best, margin_error_bound(h, readout, operands))
        self.recompute = recompute.to("cpu", non_blocking=True)
        self.done = torch.cuda.Event()
        self.done.record()
        self.h, self.target = h, target.reshape(-1)

    def result(self, exact):
        self.done.synchronize()
        rows = self.recompute.nonzero().squeeze(1).to(self.h.device, non_blocking=True)
        correct, margin = exact(self.h[rows], self.target[rows])
        return self.sure + correct, margin
