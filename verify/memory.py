"""Memory a check needs, estimated before anything is allocated, against what the machine has available.

``check_bytes`` counts the float64 tensors of one construction and one batch of the reference engine's forward:
the weights (embedding, projections, scan parameters, readout), the activations of ``mamba_forward`` for one batch
(in_proj output, conv output, Delta, B, C, the scan's per-step outputs and its state), a readout chunk
(``verify.checks.READOUT_CHUNK`` logits), and the Gram matrix of ``n_codes`` JL codes when codes are drawn. The
estimate errs high (every activation counted live at once); ``require_memory`` refuses a check whose estimate
exceeds the available memory, naming both, before the construction is built.
"""
from __future__ import annotations

import os

from common.errors import require

FLOAT_BYTES = 8
TASK_BYTES = 16  # per token of a task generated whole: int64 token ids and int64 labels
READOUT_CHUNK_BYTES = 2 ** 25 * 4


def available_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux), else the physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_bytes(*, n_tokens: int, n_classes: int, d_model: int, d_inner: int, d_state: int, seq_len: int,
                batch: int, n_codes: int = 0, d_conv: int = 4) -> int:
    """Bytes of one check's weights, one batch's activations, a readout chunk and a JL Gram matrix (float64). The
    causal conv counts as torch's CPU convolution may run it: unfolded, d_conv values per channel and output position
    over the padded length seq_len + d_conv - 1."""
    weights = (n_tokens * d_model + n_classes * d_model + 3 * d_inner * d_model
               + d_inner * (3 * d_state + 16 + d_conv) + d_state * d_state)
    conv = batch * d_inner * d_conv * (seq_len + d_conv - 1)
    activations = batch * seq_len * (12 * d_inner + 4 * d_state + 2 * d_model) + 3 * batch * d_inner * d_state + conv
    return FLOAT_BYTES * (weights + activations + n_codes * n_codes) + READOUT_CHUNK_BYTES


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def require_memory(estimate: float, what: str, flags: str | None = None) -> None:
    """Refuse (RequirementError: exit 2) before allocating when ``estimate`` bytes exceed the memory available."""
    available = available_bytes()
    require(estimate <= available, f"{what} needs about {human(estimate)} of memory, and {human(available)} is "
                                   f"available: " + (f"lower {flags}" if flags else "choose smaller sizes"))
