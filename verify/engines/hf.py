"""The ``transformers`` engine: Hugging Face transformers' own Mamba and Mamba-2 mixers run a construction, on the CPU.

An implementation written outside this project, so that a misreading of ``mamba_ssm`` shared by the reference engine
and the constructions does not pass unseen. The construction's mixer state dict is loaded into
``transformers.models.mamba.modeling_mamba.MambaMixer`` or ``...mamba2.modeling_mamba2.Mamba2Mixer`` by those
modules' own parameter names with ``load_state_dict(strict=True)``, and their forward runs it. On the CPU every
function they call falls back to its pure-PyTorch form (transformers uses mamba_ssm / causal_conv1d kernels only for
CUDA inputs): Mamba's recurrent selective scan, Mamba-2's chunked SSD scan (``mamba2_chunk_scan``). ``transformers``
is optional (``pip install 'mamba-constructions[transformers]'``) and imported only when the engine is made.

Precision. transformers computes part of each block in float32 whatever the module dtype: in Mamba, A, D, the dt bias,
B and the scan input u (``.float()`` in ``mamba_selective_scan``); in Mamba-2, the whole SSD scan (x, B, C, A, dt
products) and the gated norm. A float64 engine therefore differs from the float64 reference by float32 rounding of
those quantities, not by float64 rounding.

Layout. Each block kind's ``transformers`` entry (``verify.blocks``) builds transformers' module and puts the
construction's state dict into its layout: Mamba's names and shapes are mamba_ssm's, nothing is renamed; Mamba-2's
in_proj rows are permuted and padded and its gated RMSNorm is made the identity (``verify.blocks.mamba2``'s docstring
says how and why that is exact). A block transformers does not have raises RequirementError with the kind's reason.
"""
from __future__ import annotations

import contextlib

import torch

from common.errors import RequirementError, require
from constructions.layout import Construction, embed
from verify import blocks
from verify.engines.query_only import at_positions


def _quiet_fallback_notice() -> None:
    """Drop transformers' once-per-function notice that a kernel "is falling back to its reference PyTorch
    implementation": on the CPU that path is the one this engine runs, by design (module docstring)."""
    import logging

    log = logging.getLogger("transformers.integrations.hub_kernels")
    if not any(isinstance(f, _FallbackNotice) for f in log.filters):
        log.addFilter(_FallbackNotice())


class _FallbackNotice:
    @staticmethod
    def filter(record) -> bool:
        return "falling back to its reference PyTorch implementation" not in record.getMessage()


DTYPES = ("float64", "float32")


class TransformersEngine:
    """Runs a construction on transformers' MambaMixer / Mamba2Mixer, strictly loaded, on the CPU.

    ``rounding_dtype`` is the dtype whose unit roundoff bounds the engine's arithmetic: float32 for both dtypes, as
    transformers computes part of each block in float32 (module docstring, "Precision"); a rounding allowance for
    this engine is float32's even when ``dtype_name`` is float64."""

    name = "transformers"
    rounding_dtype = "float32"

    def __init__(self, dtype: str = "float32", device: str | None = None):
        require(dtype in DTYPES, f"engine transformers runs {' or '.join(DTYPES)} on the CPU, got {dtype} (float16 "
                                 f"cannot hold the Mamba-2 norm's weight 2^50; bfloat16 is not tested)")
        require(device in (None, "cpu"), f"engine transformers runs on the CPU (its pure-PyTorch path), "
                                         f"got device {device!r}")
        try:
            import transformers  # noqa: F401  (the block kinds' factories import it again when they build a module)
        except ImportError as e:
            raise RequirementError("engine transformers needs the transformers package "
                                   "(pip install 'mamba-constructions[transformers]')") from e
        _quiet_fallback_notice()
        self.dtype_name, self.dtype, self.device = dtype, getattr(torch, dtype), torch.device("cpu")
        self._cache = None

    def precision(self):
        """Nothing to set on the CPU."""
        return contextlib.nullcontext()

    def module(self, con: Construction):
        """The transformers mixer with the construction's weights (``load_state_dict(strict=True)``), and the
        embedding, in the engine's dtype."""
        if self._cache is None or self._cache[0] is not con:
            kind = blocks.of(con.config)
            if isinstance(kind.transformers, str):
                raise RequirementError(f"engine transformers cannot run block {kind.name!r} "
                                       f"({con.name}): {kind.transformers}")
            # the module draws its own initial weights (the global seed stays put), then loads in self.dtype:
            # float64 stays exact
            m = kind.transformers.load(con.config, con.mixer, dtype=self.dtype)
            self._cache = (con, m.eval(), con.embedding.to(self.dtype))
        return self._cache[1], self._cache[2]

    def hidden(self, con: Construction, tokens: torch.Tensor) -> torch.Tensor:
        """Mixer output (batch, L, d_model) for token ids (batch, L)."""
        _, emb = self.module(con)
        return self.mixer(con, embed(con, emb, tokens.cpu()))

    def hidden_at(self, con: Construction, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Mixer output (batch, q, d_model) at positions pos (batch, q): ``hidden`` gathered."""
        return at_positions(self.hidden(con, tokens), pos.cpu())

    def mixer(self, con: Construction, x: torch.Tensor) -> torch.Tensor:
        """Mixer output (batch, L, d_model) for real-valued inputs x (batch, L, d_model)."""
        m, _ = self.module(con)
        with torch.no_grad():
            return m(x.to(self.device, self.dtype))
