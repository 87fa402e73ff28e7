"""Pure-PyTorch reference of ``mamba_ssm.Mamba`` (the slow path of ``mamba_simple.Mamba.forward``), on the reference
selective scans of ``verify.engines.scan``. It never imports mamba_ssm.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from constructions.layout import Construction, embed
from verify.engines.scan import selective_scan_delta_t_ref, selective_scan_ref
from verify.engines.query_only import at_positions, silu_conv


def mamba_forward(params: dict[str, torch.Tensor], hidden: torch.Tensor, config, scan=selective_scan_ref) -> torch.Tensor:
    """``mamba_ssm.Mamba.forward`` (no inference cache) on hidden (batch, L, d_model) with mamba_ssm's param names.

    ``scan`` is the selective scan (``selective_scan_ref``; ``selective_scan_delta_t_ref`` gives Mamba-Delta-transpose,
    whose dt_proj maps to d_state instead of d_inner)."""
    d_state, dt_rank = config.d_state, config.rank
    xz = F.linear(hidden, params["in_proj.weight"], params.get("in_proj.bias")).transpose(1, 2)
    x, z = xz.chunk(2, dim=1)
    x = silu_conv(x, params["conv1d.weight"], params.get("conv1d.bias"))
    x_dbl = F.linear(x.transpose(1, 2), params["x_proj.weight"])  # (batch, L, r + 2N)
    dt, B, C = torch.split(x_dbl, [dt_rank, d_state, d_state], dim=-1)
    dt = F.linear(dt, params["dt_proj.weight"]).transpose(1, 2)
    A = -torch.exp(params["A_log"].to(torch.float64 if hidden.dtype == torch.float64 else torch.float32))
    y = scan(x, dt, A, B.transpose(1, 2), C.transpose(1, 2), params["D"], z=z,
             delta_bias=params["dt_proj.bias"], delta_softplus=True)
    return F.linear(y.transpose(1, 2), params["out_proj.weight"], params.get("out_proj.bias"))


from verify.engines.linear import linear_mamba_forward  # noqa: E402  (Koren et al.'s simplified linear Mamba)

# block kind -> forward(params, hidden, config)
FORWARDS = {"mamba": mamba_forward, "linear-mamba": linear_mamba_forward,
            "mamba-delta-t": lambda params, hidden, config: mamba_forward(params, hidden, config,
                                                                          scan=selective_scan_delta_t_ref)}

# Parameters mamba_ssm keeps in float32 whatever the module dtype (kernel requirements), per block kind.
FLOAT32_PARAMS = {"mamba": {"A_log", "D", "dt_proj.bias"}, "linear-mamba": set(),
                  "mamba-delta-t": {"A_log", "D", "dt_proj.bias"}}


class ReferenceEngine:
    """Runs a construction with ``mamba_forward``; linear maps in ``dtype``, the scan in float32 (float64 kept)."""

    name = "reference"

    def __init__(self, dtype: str = "float64", device: str = "cpu"):
        self.dtype_name, self.dtype, self.device = dtype, getattr(torch, dtype), torch.device(device)
        self._cache: tuple | None = None

    def _params(self, con: Construction):
        if self._cache is None or self._cache[0] is not con:
            keep32 = FLOAT32_PARAMS.get(con.config.kind, set())
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
            return FORWARDS[con.config.kind](params, x.to(self.device, self.dtype), con.config)


def _register_blocks() -> None:
    """The Mamba2 and Mamba-S4D blocks (their forwards live in their own modules)."""
    from functools import partial

    from verify.engines.mamba_s4d import FLOAT32_PARAMS as S4D_FLOAT32, mamba_s4d_forward
    from verify.engines.reference_mamba2 import mamba2_forward

    FORWARDS.update({"mamba2": mamba2_forward, "mamba_s4d": partial(mamba_s4d_forward, scan=selective_scan_ref)})
    # mamba_ssm.Mamba2 casts A_log and dt_bias to the module dtype but creates D in float32.
    FLOAT32_PARAMS.update({"mamba2": {"D"}, "mamba_s4d": set(S4D_FLOAT32)})


_register_blocks()
