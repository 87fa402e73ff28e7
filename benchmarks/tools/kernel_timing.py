"""The harness's Triton kernels against what they replace, at the large MQAR shapes (GPU only): the fused readout
with and without its operands padded to ALIGN features, the channel-last token conv rolling vs tiled, the query gate
kernel vs torch's path; each pair's outputs compared. Milliseconds per call after a warm-up (which autotunes).

    python3 benchmarks/tools/kernel_timing.py
"""
from __future__ import annotations

import torch

from verify import fused_readout as fr
from verify.engines import query_gate, token_conv


def timed(f, n: int = 20) -> float:
    """Milliseconds per call of f over n calls, after one warm-up call."""
    f()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(True), torch.cuda.Event(True)
    start.record()
    for _ in range(n):
        f()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / n


def readout(g: torch.Generator, n: int = 65536, d: int = 275, vocab: int = 8192) -> None:
    """Mamba-2's large readout screen (bfloat16 operands and TF32), padded operands against unpadded."""
    R = torch.randn(vocab, d, device="cuda", generator=g)
    t = torch.randint(0, vocab, (n,), device="cuda", generator=g)
    for dtype, operands in ((torch.bfloat16, "bf16"), (torch.float32, "tf32")):
        h = torch.randn(n, d, device="cuda", generator=g).to(dtype)
        padded = timed(lambda: fr.own_and_best_other(h, R, t, operands))
        own, best = fr.own_and_best_other(h, R, t, operands)
        keep = fr._padded, fr._padded_readout
        fr._padded = fr._padded_readout = lambda x: x
        try:
            unpadded = timed(lambda: fr.own_and_best_other(h, R, t, operands))
            own2, best2 = fr.own_and_best_other(h, R, t, operands)
        finally:
            fr._padded, fr._padded_readout = keep
        print(f"readout {operands} d={d}: padded {padded:.3f} ms, unpadded {unpadded:.3f} ms, max diff own "
              f"{(own - own2).abs().max():.3g} best {(best - best2).abs().max():.3g}", flush=True)


def conv(g: torch.Generator, C: int = 808, L: int = 1024, batch: int = 1024) -> None:
    """Mamba-2's large one-pass conv (channel-last bfloat16), the rolling kernel against the tiled one."""
    table = torch.randn(8192 + 64, C, device="cuda", generator=g).bfloat16()
    tokens = torch.randint(0, 8192, (batch, L), device="cuda", generator=g)
    weight = torch.randn(C, 1, 4, device="cuda", generator=g).bfloat16()
    bias = torch.randn(C, device="cuda", generator=g).bfloat16()
    for width in (4, 2):
        w = weight[..., :width].contiguous()
        out, ms = {}, {}
        for rolling in (True, False):
            token_conv.ROLLING = rolling
            ms[rolling] = timed(lambda: token_conv.table_conv_silu(table, tokens, w, bias, True), 10)
            out[rolling] = token_conv.table_conv_silu(table, tokens, w, bias, True)
        token_conv.ROLLING = True
        print(f"token conv C={C} L={L} batch={batch} width={width} bf16 channels-last: rolling {ms[True]:.3f} ms, "
              f"tiled {ms[False]:.3f} ms, differing {(out[True] != out[False]).sum().item()} of {out[True].numel()}",
              flush=True)


def gate(g: torch.Generator, batch: int = 128, d: int = 3584, L: int = 512, q: int = 32) -> None:
    """Mamba-S4D's large query gate (bfloat16), the kernel against torch's gather, lookup and gate."""
    y = torch.randn(batch, d, L, device="cuda", generator=g).bfloat16()
    tokens = torch.randint(0, 1024, (batch, L), device="cuda", generator=g)
    pos = torch.stack([torch.randperm(L, device="cuda")[:q] for _ in range(batch)])
    z_t = torch.randn(1100, d, device="cuda", generator=g).bfloat16()
    strided = z_t.T.contiguous().T  # (n_tokens, d) with the strides of table[rows].T, as the torch path reads it
    fused = timed(lambda: query_gate.gate_at(y, pos, tokens, z_t))
    plain = timed(lambda: query_gate.reference(y, pos, tokens, strided))
    equal = torch.equal(query_gate.gate_at(y, pos, tokens, z_t), query_gate.reference(y, pos, tokens, strided))
    print(f"query gate b={batch} d={d} L={L} q={q} bf16: fused {fused:.3f} ms, torch {plain:.3f} ms, equal {equal}",
          flush=True)


if __name__ == "__main__":
    gen = torch.Generator(device="cuda").manual_seed(0)
    readout(gen)
    conv(gen)
    gate(gen)
