"""What a trained KEEP n-TH model does with its memory (Huang et al. Fig. 1): the distribution of e^{-lambda Delta_t}.

For a one-layer model with an S6 mixer (``mamba``) the decay factor of state (c, k) at step t is
``exp(Delta_t[c] A[c, k]) = e^{-lambda_{c,k} Delta_t[c]}`` with ``Delta_t = softplus(dt_proj(x_proj(x_t)) + dt_bias)``,
read off the scan call of ``verify.blocks.mamba.mamba_forward``; for Mamba-S4D (``mamba-s4d``) Delta =
softplus(dt_bias) is input-independent, so every position has the same factors. The forward each kind's histogram
runs is its ``Training.decay_forward`` (``verify.blocks``; kinds without one get no histogram). The paper's reading of
Fig. 1: Mamba drives the factor to about 0 before position n (forget) and to about 1 from n on (keep), S4D cannot
depend on the position.

``decay_histogram`` returns fractions of all (channel, state) factors in ``BINS`` equal bins of [0, 1], split into
positions t < n and t >= n (1-based t), over the first ``sequences`` test sequences, in float64 on the CPU. The
training loop stores it in a KEEP n-TH run's result as ``decay_hist`` (a few hundred bytes; weights are not stored).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from verify import blocks
from verify.train.models import with_position

BINS = 20


def has_histogram(mixer: str) -> bool:
    """Whether the mixer's training runs store a decay histogram (its kind has a ``decay_forward``)."""
    kind = blocks.KINDS.get(mixer)
    return kind is not None and kind.training is not None and kind.training.decay_forward is not None


def decay_factors(mixer: str, sd: dict, tokens: torch.Tensor, position: bool, config) -> torch.Tensor:
    """e^{-lambda Delta_t} of every (channel, state), shape (batch, L, d_inner, N), float64: the kind's own block
    forward (``Training.decay_forward``: ``mamba_forward`` / ``mamba_s4d_forward``) run up to its scan, whose Delta
    and A are read off."""
    seen = {}

    def scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
        d = delta if delta_bias is None else delta + delta_bias[:, None]
        seen["f"] = torch.exp((F.softplus(d) if delta_softplus else d).transpose(1, 2)[..., None] * A)
        return torch.zeros_like(u)  # the block's output is not needed

    p = {k[len("mixer."):]: v.to(torch.float64) for k, v in sd.items() if k.startswith("mixer.")}
    x = with_position(sd["embedding.weight"].to(torch.float64)[tokens], position)
    blocks.KINDS[mixer].training.decay_forward(p, x, config, scan)
    return seen["f"]


def decay_histogram(mixer: str, sd: dict, tokens: torch.Tensor, n: int, position: bool, config,
                    sequences: int = 64) -> dict:
    """{"edges", "before_n", "from_n", "mean_before_n", "mean_from_n"}: fractions per bin (each list sums to 1)."""
    with torch.no_grad():
        f = decay_factors(mixer, sd, tokens[:sequences].cpu(), position, config)
    edges = torch.linspace(0, 1, BINS + 1, dtype=torch.float64)
    out = {"edges": [round(float(e), 6) for e in edges], "n": n, "sequences": int(f.shape[0])}
    for name, part in (("before_n", f[:, :n - 1]), ("from_n", f[:, n - 1:])):
        if part.numel() == 0:
            out[name], out[f"mean_{name}"] = None, None
            continue
        h = torch.histc(part.clamp(0, 1), bins=BINS, min=0, max=1)
        out[name] = [round(float(x), 6) for x in h / h.sum()]
        out[f"mean_{name}"] = float(part.mean())
    return out
