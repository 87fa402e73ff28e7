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

Layout (the only layout knowledge, all in ``_mamba2_state_dict`` and the two tables above it). Mamba: the names and
shapes are mamba_ssm's, nothing is renamed. Mamba-2: the names are mamba_ssm's too, but transformers has no
``d_ssm < d_inner`` split: its in_proj rows are [z | x | B | C | dt] with ``intermediate_size = expand * d_model``
SSM channels, mamba_ssm's [z0 | x0 | z | x | B | C | dt]. The gated-MLP rows z0 and x0 are dropped (exact only when
they are zero, which is required), the x and z rows, the x conv channels and out_proj's SSM columns are padded with
zeros up to the smallest multiple of d_model that holds d_ssm (one head: the head grows; a zero x channel carries
nothing through the scan, its y is 0 and its out_proj column is 0), and out_proj's gated-MLP columns are dropped.

Gated RMSNorm (Mamba-2). transformers always applies ``norm(y, z) = w * g / sqrt(mean(g^2) + eps)`` with
``g = y * silu(z)`` (groups of ``intermediate_size / n_groups`` channels) and has no switch for mamba_ssm's
``rmsnorm=False`` (``y * silu(z)`` only), which the constructions use. Choice: the engine undoes the factor exactly
rather than declaring margins incomparable. It runs the norm with ``eps = 2^100`` and ``w = 2^50`` (``NORM_EPS``,
``NORM_WEIGHT``), both free parameters of transformers' module that the construction does not set. In float32, the
norm's arithmetic, ``mean(g^2) + 2^100`` rounds to 2^100 whenever ``mean(g^2) < 2^75`` (half an ulp of 2^100 is
2^76), ``rsqrt(2^100) = 2^-50`` and the products with 2^-50 and 2^50 are exact (powers of two; below |g| = 2^-76,
where g 2^-50 is subnormal, the error is under 2^-99 absolute), so the norm returns g and the margins are comparable
with every other engine's. In real
arithmetic the factor is ``(1 + mean(g^2) / 2^100)^(-1/2)`` in (0, 1]: it can only shrink a margin, never create one.
``mean(g^2) < 2^75`` (|g| below ~2e11) holds for every construction here by many orders of magnitude.

Blocks transformers does not have raise RequirementError with the reason (``UNSUPPORTED``).
"""
from __future__ import annotations

import contextlib

import torch

from constructions.errors import RequirementError, require
from constructions.layout import Construction, embed
from verify.engines.query_only import at_positions

SUPPORTED = ("mamba", "mamba2")
UNSUPPORTED = {
    "mamba_s4d": "Mamba-S4D (S4D mixer with input-independent Delta, B, C inside the Mamba block) is this project's "
                 "block; transformers has only the selective (S6) Mamba and Mamba-2 mixers",
    "mamba-delta-t": "Mamba-Delta-transpose (Delta along the state axis, Huang et al. eq. 15) is this project's "
                     "block; transformers' MambaMixer has Delta along the channels only",
    "linear-mamba": "the simplified linear Mamba (Koren et al.: no decay, no Delta, no gate) is an analysis model; "
                    "transformers has no such block (check hash-recall with --block mamba instead)",
}

# Mamba-2 gated norm made the identity on g = y * silu(z) (module docstring): eps = 2^100, weight = 2^50.
NORM_EPS, NORM_WEIGHT = 2.0 ** 100, 2.0 ** 50

# transformers' Mamba2Mixer in_proj row blocks, in its order, from mamba_ssm's (``Mamba2Config.in_proj_rows``);
# True: padded with zero rows up to transformers' intermediate size. mamba_ssm's gated-MLP rows are dropped.
MAMBA2_IN_PROJ = (("z", True), ("x", True), ("B", False), ("C", False), ("dt", False))
MAMBA2_DROPPED = ("z0", "x0")


def _mamba(config, transformers):
    """MambaMixer for a mamba_ssm.Mamba config: same names and shapes, so the state dict loads as it is."""
    from transformers.models.mamba.modeling_mamba import MambaMixer

    hf = transformers.MambaConfig(hidden_size=config.d_model, state_size=config.d_state, conv_kernel=config.d_conv,
                                  expand=config.expand, time_step_rank=config.rank, use_bias=config.bias,
                                  use_conv_bias=config.conv_bias, hidden_act="silu", num_hidden_layers=1,
                                  use_mambapy=False, use_associative_scan=False)
    return MambaMixer(hf, layer_idx=0)


def _mamba2_width(config) -> int:
    """transformers' intermediate size: the smallest multiple of d_model that holds d_ssm."""
    return -(-config.ssm_width // config.d_model) * config.d_model


def _mamba2(config, transformers):
    """Mamba2Mixer for a mamba_ssm.Mamba2 config (its SSM channels padded to ``_mamba2_width``)."""
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

    width = _mamba2_width(config)
    require(not config.rmsnorm, "engine transformers runs Mamba-2 with rmsnorm=False only (its gated norm is made "
                                "the identity); this construction sets rmsnorm=True")
    require(not config.D_has_hdim, "engine transformers needs Mamba-2's D per head (transformers has no "
                                   "D_has_hdim); this construction sets D_has_hdim=True")
    require(width == config.ssm_width or config.nheads == 1,
            f"engine transformers pads Mamba-2's d_ssm={config.ssm_width} to {width} channels only with one head, "
            f"got nheads={config.nheads}")
    heads = config.nheads
    hf = transformers.Mamba2Config(hidden_size=config.d_model, state_size=config.d_state, conv_kernel=config.d_conv,
                                   expand=width // config.d_model, num_heads=heads, head_dim=width // heads,
                                   n_groups=config.ngroups, use_bias=config.bias, use_conv_bias=config.conv_bias,
                                   chunk_size=config.chunk_size, layer_norm_epsilon=NORM_EPS, hidden_act="silu",
                                   num_hidden_layers=1, time_step_limit=(0.0, float("inf")))
    return Mamba2Mixer(hf, layer_idx=0)


def _pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.cat([t, t.new_zeros(rows - t.shape[0], *t.shape[1:])]) if rows > t.shape[0] else t


def _mamba2_state_dict(config, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mamba_ssm.Mamba2's state dict in transformers' Mamba2Mixer layout (module docstring, ``MAMBA2_IN_PROJ``)."""
    rows, width = config.in_proj_rows(), _mamba2_width(config)
    for block in MAMBA2_DROPPED:
        for key in ("in_proj.weight", "in_proj.bias"):
            require(key not in sd or not sd[key][rows[block]].any(),
                    f"engine transformers needs Mamba-2's gated-MLP rows ({block} of {key}) to be zero: "
                    f"transformers' Mamba2Mixer has no d_ssm < d_inner part to load them into")
    out = {k: v for k, v in sd.items() if not k.startswith(("in_proj.", "conv1d.", "out_proj.weight"))}
    for key in ("in_proj.weight", "in_proj.bias"):
        if key in sd:
            out[key] = torch.cat([_pad_rows(sd[key][rows[b]], width) if pad else sd[key][rows[b]]
                                  for b, pad in MAMBA2_IN_PROJ])
    ch = config.conv_channels()
    for key in ("conv1d.weight", "conv1d.bias"):
        if key in sd:
            out[key] = torch.cat([_pad_rows(sd[key][ch["x"]], width), sd[key][ch["B"]], sd[key][ch["C"]]])
    out["out_proj.weight"] = _pad_rows(sd["out_proj.weight"][:, config.d_mlp:].T, width).T
    out["norm.weight"] = torch.full((width,), NORM_WEIGHT, dtype=sd["out_proj.weight"].dtype)
    return out


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


# block kind -> (module factory(config, transformers), state dict in its layout(config, state dict))
MODULES = {"mamba": (_mamba, lambda config, sd: dict(sd)), "mamba2": (_mamba2, _mamba2_state_dict)}
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
            import transformers
        except ImportError as e:
            raise RequirementError("engine transformers needs the transformers package "
                                   "(pip install 'mamba-constructions[transformers]')") from e
        _quiet_fallback_notice()
        self._transformers = transformers
        self.dtype_name, self.dtype, self.device = dtype, getattr(torch, dtype), torch.device("cpu")
        self._cache = None

    def precision(self):
        """Nothing to set on the CPU."""
        return contextlib.nullcontext()

    def module(self, con: Construction):
        """The transformers mixer with the construction's weights (``load_state_dict(strict=True)``), and the
        embedding, in the engine's dtype."""
        if self._cache is None or self._cache[0] is not con:
            kind = con.config.kind
            if kind in UNSUPPORTED:
                raise RequirementError(f"engine transformers cannot run block {kind!r} "
                                       f"({con.name}): {UNSUPPORTED[kind]}")
            require(kind in MODULES, f"engine transformers has no module for block kind {kind!r} "
                                     f"(it runs: {', '.join(SUPPORTED)})")
            make, layout = MODULES[kind]
            with torch.random.fork_rng():  # the module draws its own initial weights; the global seed stays put
                m = make(con.config, self._transformers).to(self.dtype)
            m.load_state_dict(layout(con.config, con.mixer), strict=True)  # into self.dtype: float64 stays exact
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
