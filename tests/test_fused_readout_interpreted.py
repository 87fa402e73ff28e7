"""The fused readout kernel's logic on the CPU, through Triton's interpreter (TRITON_INTERPRET=1, set before
triton is imported: run this file in its own process). Skipped where triton is not installed (CPU-only torch)."""
import os

import pytest
import torch

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("run with TRITON_INTERPRET=1 (Triton's CPU interpreter)", allow_module_level=True)
triton = pytest.importorskip("triton")
if tuple(int(x) for x in triton.__version__.split(".")[:2]) < (3, 9):
    # Triton 3.6's interpreter raises TypeError on the kernel's `range(0, V, BLOCK_N)` (a loop bound passed as an
    # argument); 3.9's runs it. The compiled kernel is checked on the GPU by the cuda tests of the MQAR checks.
    pytest.skip(f"Triton {triton.__version__}'s interpreter cannot run this kernel (3.9 or later can)",
                allow_module_level=True)

from verify import fused_readout  # noqa: E402


@pytest.mark.parametrize("n, vocab, d", [(300, 1000, 37), (77, 5, 16), (130, 200, 210)])
def test_interpreted_kernel_gives_target_and_best_other_logit(n, vocab, d):
    """Row counts and |V| that are not multiples of the tiles; the interpreter's dot is float32, so the float64
    values are met to float32 rounding."""
    g = torch.Generator().manual_seed(0)
    h, R = torch.randn(n, d, generator=g), torch.randn(vocab, d, generator=g)
    t = torch.randint(0, vocab, (n,), generator=g)
    own, best = fused_readout.own_and_best_other(h, R, t)
    logits = h.double() @ R.double().T
    bound = 1e-5 * (h.double().abs() @ R.double().abs().T).amax(dim=1)
    assert ((own.double() - logits.gather(1, t[:, None]).squeeze(1)).abs() <= bound).all()
    assert ((best.double() - logits.scatter(1, t[:, None], float("-inf")).amax(1)).abs() <= bound).all()
