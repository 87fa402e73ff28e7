"""The reference engine: each block's pure-PyTorch forward (``verify.blocks``, on the reference scans of
``verify.engines.scan``), run on a construction. It never imports mamba_ssm.
"""
from __future__ import annotations

import contextlib

import torch

from constructions.layout import Construction, embed
from verify import blocks
from verify.engines.query_only import at_positions


class ReferenceEngine:
    """Runs a construction with its block kind's ``forward``; linear maps in ``dtype``, the scan in float32 (float64
    kept), the parameters of the kind's ``float32_params`` in float32 below float64, as the real modules keep them."""

    name = "reference"

    def __init__(self, dtype: str = "float64", device: str = "cpu"):
        self.dtype_name, self.dtype, self.device = dtype, getattr(torch, dtype), torch.device(device)
        self._cache: tuple | None = None

    def _params(self, con: Construction):
        if self._cache is None or self._cache[0] is not con:
            keep32 = blocks.of(con.config).float32_params
            p = {k: v.to(self.device, torch.float32 if (k in keep32 and self.dtype != torch.float64) else self.dtype)
                 for k, v in con.mixer.items()}
            self._cache = (con, p, con.embedding.to(self.device, self.dtype))
        return self._cache[1], self._cache[2]

    def precision(self):
        """The matmul precision context of the checks' readout: nothing to change on the reference engine."""
        return contextlib.nullcontext()

    def hidden(self, con: Construction, tokens: torch.Tensor) -> torch.Tensor:
        """Mixer output (batch, L, d_model) for token ids (batch, L)."""
        params, emb = self._params(con)
        return self.mixer(con, embed(con, emb, tokens.to(self.device)))

    def hidden_at(self, con: Construction, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Mixer output (batch, q, d_model) at positions pos (batch, q): ``hidden`` gathered."""
        return at_positions(self.hidden(con, tokens), pos.to(self.device))

    def mixer(self, con: Construction, x: torch.Tensor) -> torch.Tensor:
        """Mixer output (batch, L, d_model) for real-valued inputs x (batch, L, d_model), e.g. a signal and its time."""
        params, _ = self._params(con)
        with torch.no_grad():
            return blocks.of(con.config).forward(params, x.to(self.device, self.dtype), con.config)
