"""The state-dict format every engine shares: the block's own parameter names, plus embedding and readout.

A model is ``logits = readout(mixer(embedding[tokens]))`` with no norm and no residual (the paper's one-layer model).
Flat keys: ``embedding.weight`` (n_tokens, d_model), ``mixer.<name>`` with ``<name>`` exactly as in the block's
module (for ``mamba_ssm.Mamba(d_model, d_state, d_conv, expand, dt_rank, bias, conv_bias)``: ``in_proj.weight``,
``conv1d.weight``, ``x_proj.weight``, ``dt_proj.weight``, ``dt_proj.bias``, ``A_log``, ``D``, ``out_proj.weight``,
and the biases), and ``readout.weight`` (n_classes, d_model).

The config classes of the five block kinds are here, because the constructions build with them: each names its kind
(``kind``, the name ``verify.blocks.KINDS`` knows it by), fixes the parameter shapes (``zeros``), gives the block's
constructor arguments with every default resolved (``arguments``) and its rounding chain (``chain_length``).
Everything else about a kind (forward, real modules, sizes, training) is its module in ``verify.blocks``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import torch

from constructions.proof import Proof


@dataclass(frozen=True)
class MQARTokens:
    """Token ids of an MQAR vocabulary: keys, values and noise are disjoint ranges (keys first)."""

    kappa: int
    vocab_size: int
    noise_vocab: int = 1

    @property
    def values_start(self) -> int:
        return self.kappa

    @property
    def noise_start(self) -> int:
        return self.kappa + self.vocab_size

    @property
    def n_tokens(self) -> int:
        return self.kappa + self.vocab_size + self.noise_vocab

    def as_dict(self) -> dict:
        return {
            "keys": [0, self.kappa],
            "values": [self.values_start, self.noise_start],
            "noise": [self.noise_start, self.n_tokens],
            "label_of_value_token": "token_id - values_start",
        }


NONLINEAR_OPS = 4  # rounded operations charged to one SiLU, softplus or exp (each within a few ulps of exact)


def _with_biases(sd: dict, config, di: int, dtype) -> dict:
    """Add the optional biases of a Mamba-style block (in_proj/out_proj if ``bias``, conv1d if ``conv_bias``)."""
    if config.bias:
        sd["in_proj.bias"] = torch.zeros(2 * di, dtype=dtype)
        sd["out_proj.bias"] = torch.zeros(config.d_model, dtype=dtype)
    if config.conv_bias:
        sd["conv1d.bias"] = torch.zeros(di, dtype=dtype)
    return sd


@dataclass(frozen=True)
class MambaConfig:
    """Constructor arguments of ``mamba_ssm.Mamba`` that fix the parameter shapes."""

    kind: ClassVar[str] = "mamba"
    d_model: int
    d_state: int
    d_conv: int = 4
    expand: int = 1
    dt_rank: int | None = None  # None = mamba_ssm's "auto", ceil(d_model / 16)
    bias: bool = True
    conv_bias: bool = True

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def rank(self) -> int:
        return self.dt_rank if self.dt_rank is not None else math.ceil(self.d_model / 16)

    def arguments(self) -> dict:
        """``mamba_ssm.Mamba``'s constructor arguments, dt_rank resolved."""
        return {"d_model": self.d_model, "d_state": self.d_state, "d_conv": self.d_conv, "expand": self.expand,
                "dt_rank": self.rank, "bias": self.bias, "conv_bias": self.conv_bias}

    def chain_length(self, seq_len: int) -> int:
        """Rounded operations on the longest path from an input to a logit (``verify.rounding``): in_proj, conv,
        SiLU, x_proj, dt_proj, softplus and exp, 3 per scan step (decay product, write, sum over steps), the read
        over d_state, skip and gate, out_proj, and a readout over d_model; nonlinearities count ``NONLINEAR_OPS``."""
        return (2 * self.d_model + 2 * self.d_inner + self.d_conv + self.rank + 2 * self.d_state + 3 * seq_len
                + 4 * NONLINEAR_OPS + 4)

    def zeros(self, dtype=torch.float64) -> dict[str, torch.Tensor]:
        """A state dict of the right names and shapes, all zero, for a construction to fill."""
        di, n, r = self.d_inner, self.d_state, self.rank
        sd = {
            "in_proj.weight": torch.zeros(2 * di, self.d_model, dtype=dtype),
            "conv1d.weight": torch.zeros(di, 1, self.d_conv, dtype=dtype),
            "x_proj.weight": torch.zeros(r + 2 * n, di, dtype=dtype),
            "dt_proj.weight": torch.zeros(di, r, dtype=dtype),
            "dt_proj.bias": torch.zeros(di, dtype=dtype),
            "A_log": torch.zeros(di, n, dtype=dtype),
            "D": torch.zeros(di, dtype=dtype),
            "out_proj.weight": torch.zeros(self.d_model, di, dtype=dtype),
        }
        return _with_biases(sd, self, di, dtype)


HEAD_PATTERNS = ("MHA", "MQA", "MKA", "MVA")


@dataclass(frozen=True)
class LinearMambaConfig:
    """Koren et al.'s "simplified linear Mamba" (the analysis model), ``n_layers`` layers of ``n_heads`` heads.

    Per layer (prefix ``layers.{l}.``): ``in_proj.weight`` (d_inner, d_model); depthwise causal ``conv1d.weight``
    (d_inner, 1, d_conv), no bias, no activation; with one head ``x_proj.weight`` (2 d_state, d_inner) = [S_B; S_C];
    with several heads ``B_proj.weight`` / ``C_proj.weight`` ((H or 1) d_state, d_inner) and ``W_contract``, ``W_heads``
    (shapes by ``head_pattern``, see ``verify.engines.linear``); ``D`` (d_inner,) skip (0 in the paper);
    ``out_proj.weight`` (d_model, d_inner). No decay (A = 1), no Delta, no gate, no norm. Layers are stacked with a
    residual connection when ``residual`` (the paper: off for one layer, on for several).

    Two options give the rows of the paper's circuit-minimality ablation (§4.4) that keep Mamba-1's non-linear parts
    after its Delta and decay are removed: ``silu`` (Mamba-1's conv path: a ``conv1d.bias`` (d_inner,) and SiLU after
    the conv; row B) and ``gate`` (Mamba-1's gate: ``z_proj.weight`` (d_inner, d_model), the z half of Mamba-1's
    in_proj, and y <- y * silu(z) before out_proj; row A with ``silu``). Both off is the analysis model itself.
    """

    kind: ClassVar[str] = "linear-mamba"
    d_model: int
    d_state: int
    d_conv: int = 2
    expand: int = 2
    n_layers: int = 1
    n_heads: int = 1
    head_pattern: str = "MHA"
    residual: bool = False
    silu: bool = False
    gate: bool = False

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    def __post_init__(self):
        from common.errors import require

        require(self.d_model >= 1 and self.d_state >= 1 and self.d_conv >= 1 and self.expand >= 1,
                f"linear Mamba needs positive sizes, got d_model={self.d_model}, d_state={self.d_state}, "
                f"d_conv={self.d_conv}, expand={self.expand}")
        require(self.n_layers >= 1, f"linear Mamba needs n_layers >= 1, got {self.n_layers}")
        require(self.head_pattern in HEAD_PATTERNS,
                f"head_pattern must be one of {HEAD_PATTERNS}, got {self.head_pattern!r}")
        require(self.n_heads >= 1 and self.d_inner % self.n_heads == 0,
                f"linear Mamba needs n_heads dividing d_inner = {self.d_inner}, got n_heads={self.n_heads}")

    @property
    def head_dim(self) -> int:
        return self.d_inner // self.n_heads

    def arguments(self) -> dict:
        return asdict(self)

    def chain_length(self, seq_len: int) -> int:
        """Per layer: in_proj, conv, B/C projections, 2 per scan step, the read, the head maps and out_proj; the
        residual adds one per layer; then the readout."""
        per_layer = self.d_model + self.d_conv + 3 * self.d_inner + 2 * seq_len + self.d_state + self.d_inner + 2
        per_layer += 2 * self.silu + 3 * self.gate  # the conv bias and SiLU; the gate's SiLU and product
        return self.n_layers * per_layer + self.d_model + 1

    def layer_shapes(self) -> dict[str, tuple]:
        di, n, h, p = self.d_inner, self.d_state, self.n_heads, self.head_dim
        shapes = {"in_proj.weight": (di, self.d_model), "conv1d.weight": (di, 1, self.d_conv), "D": (di,),
                  "out_proj.weight": (self.d_model, di)}
        if h == 1:
            shapes["x_proj.weight"] = (2 * n, di)
        else:
            per_b, per_c = self.head_pattern in ("MHA", "MKA"), self.head_pattern in ("MHA", "MQA")
            shapes["B_proj.weight"] = ((h if per_b else 1) * n, di)
            shapes["C_proj.weight"] = ((h if per_c else 1) * n, di)
            shapes["W_contract"] = (p, h, di) if self.head_pattern in ("MHA", "MVA") else (p, h)
            shapes["W_heads"] = (di, p, h)
        if self.silu:
            shapes["conv1d.bias"] = (di,)
        if self.gate:
            shapes["z_proj.weight"] = (di, self.d_model)
        return shapes

    def zeros(self, dtype=torch.float64) -> dict[str, torch.Tensor]:
        return {f"layers.{l}.{k}": torch.zeros(*s, dtype=dtype)
                for l in range(self.n_layers) for k, s in self.layer_shapes().items()}


@dataclass(frozen=True)
class MambaDeltaTConfig(MambaConfig):
    """The Mamba-Delta-transpose mixer of Huang et al. (eq. 15): Delta varies along the state axis, not the channels.

    Same parameter names as ``mamba_ssm.Mamba``; only ``dt_proj`` changes shape: ``dt_proj.weight`` (d_state, dt_rank)
    and ``dt_proj.bias`` (d_state,), so Delta_t is in R^N and is shared by every channel. The recurrence is
    ``h_t[c, k] = exp(Delta_t[k] A[c, k]) h_{t-1}[c, k] + B_t[k] u_t[c]`` (no Delta on the write), ``y_t = h_t C_t + D u_t``,
    then the gate ``y * silu(z)`` and ``out_proj`` as in Mamba. mamba_ssm has no such module: the ``mamba_ssm`` engine
    runs it on mamba_ssm's ``selective_scan_fn`` through the exact reduction of ``symbolic.lemma3``.
    """

    kind: ClassVar[str] = "mamba-delta-t"

    def zeros(self, dtype=torch.float64) -> dict[str, torch.Tensor]:
        sd = super().zeros(dtype)
        sd["dt_proj.weight"] = torch.zeros(self.d_state, self.rank, dtype=dtype)
        sd["dt_proj.bias"] = torch.zeros(self.d_state, dtype=dtype)
        return sd


@dataclass
class Construction:
    """Hand-set weights of one model, with the names of its channels and what the proof says about it."""

    name: str
    theorem: str
    config: MambaConfig  # or any block kind's config (``config.kind`` names the block, ``verify.blocks``)
    embedding: torch.Tensor
    mixer: dict[str, torch.Tensor]
    readout: torch.Tensor
    channels: list[str]
    tokens: MQARTokens | None = None
    info: dict = field(default_factory=dict)
    # "+PE" models (KEEP n-TH, Haar): this embedding coordinate is replaced by the raw position t = 1..L (see ``embed``)
    position_channel: int | None = None
    proof: Proof | None = None  # what the proof guarantees at these parameters, and its obligations

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"embedding.weight": self.embedding, **{f"mixer.{k}": v for k, v in self.mixer.items()},
                "readout.weight": self.readout}


def embed(con: Construction, embedding: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The model input (batch, L, d_model): ``embedding[tokens]``, with coordinate ``con.position_channel`` (if any)
    replaced by the raw 1-based position t (the paper's "+PE": the last embedding coordinate replaced by the position)."""
    x = embedding[tokens]
    if con.position_channel is not None:
        x = x.clone()
        x[..., con.position_channel] = torch.arange(1, tokens.shape[-1] + 1, device=x.device, dtype=x.dtype)
    return x


def from_state_dict(sd: dict[str, torch.Tensor], config, **kw) -> Construction:
    """The inverse of ``Construction.state_dict`` (for reloading an export)."""
    mixer = {k[len("mixer."):]: v for k, v in sd.items() if k.startswith("mixer.")}
    return Construction(config=config, embedding=sd["embedding.weight"], mixer=mixer, readout=sd["readout.weight"], **kw)


@dataclass(frozen=True)
class Mamba2Config:
    """Constructor arguments of ``mamba_ssm.Mamba2`` that fix its parameter shapes and forward semantics.

    ``headdim=None`` means one head (headdim = d_ssm); ``d_ssm=None`` means d_ssm = d_inner (mamba_ssm's default),
    otherwise the first d_inner - d_ssm inner channels form Mamba2's gated MLP ``silu(z0) * x0``. ``dt_limit`` is
    left at mamba_ssm's default (0, inf). ``chunk_size`` only changes how the Triton kernels tile the scan.
    """

    kind: ClassVar[str] = "mamba2"
    d_model: int
    d_state: int
    d_conv: int = 4
    expand: int = 1
    headdim: int | None = None
    d_ssm: int | None = None
    ngroups: int = 1
    D_has_hdim: bool = False
    rmsnorm: bool = False
    norm_before_gate: bool = False
    bias: bool = True
    conv_bias: bool = True
    chunk_size: int = 256

    def __post_init__(self):
        from common.errors import require

        require(self.d_conv >= 2, f"Mamba2 needs d_conv >= 2 (mamba_ssm slices the conv output by d_conv - 1), "
                                  f"got d_conv={self.d_conv}")
        require(self.ssm_width <= self.d_inner, f"Mamba2 needs d_ssm <= d_inner, got d_ssm={self.d_ssm}, "
                                                f"d_inner={self.d_inner}")
        require(self.ssm_width % self.head_dim == 0, f"Mamba2 needs headdim to divide d_ssm, got "
                                                     f"headdim={self.head_dim}, d_ssm={self.ssm_width}")
        require(self.nheads % self.ngroups == 0 and self.ssm_width % self.ngroups == 0,
                f"Mamba2 needs ngroups to divide nheads and d_ssm, got ngroups={self.ngroups}, "
                f"nheads={self.nheads}, d_ssm={self.ssm_width}")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def ssm_width(self) -> int:
        """mamba_ssm's ``d_ssm``: the channels that go through the SSM."""
        return self.d_inner if self.d_ssm is None else self.d_ssm

    @property
    def head_dim(self) -> int:
        return self.ssm_width if self.headdim is None else self.headdim

    @property
    def nheads(self) -> int:
        return self.ssm_width // self.head_dim

    @property
    def d_mlp(self) -> int:
        return self.d_inner - self.ssm_width

    @property
    def conv_dim(self) -> int:
        return self.ssm_width + 2 * self.ngroups * self.d_state

    @property
    def d_in_proj(self) -> int:
        return 2 * self.d_inner + 2 * self.ngroups * self.d_state + self.nheads

    def in_proj_rows(self) -> dict[str, slice]:
        """Row blocks of ``in_proj.weight`` in mamba_ssm's order [z0 | x0 | z | x | B | C | dt]."""
        sizes = {"z0": self.d_mlp, "x0": self.d_mlp, "z": self.ssm_width, "x": self.ssm_width,
                 "B": self.ngroups * self.d_state, "C": self.ngroups * self.d_state, "dt": self.nheads}
        out, start = {}, 0
        for name, n in sizes.items():
            out[name], start = slice(start, start + n), start + n
        return out

    def conv_channels(self) -> dict[str, slice]:
        """Channel blocks of ``conv1d`` (the xBC stream): [x | B | C]."""
        rows = self.in_proj_rows()
        base = rows["x"].start
        return {k: slice(rows[k].start - base, rows[k].stop - base) for k in ("x", "B", "C")}

    def chain_length(self, seq_len: int) -> int:
        """in_proj, conv, SiLU, softplus and exp of dt, 3 per scan step, the read over d_state, skip, gate (and the
        gated RMSNorm over d_ssm when on), out_proj, and a readout over d_model."""
        norm = self.ssm_width + NONLINEAR_OPS if self.rmsnorm else 0
        return (2 * self.d_model + self.d_conv + 3 * seq_len + self.d_state + self.d_inner + norm
                + 4 * NONLINEAR_OPS + 4)

    def arguments(self) -> dict:
        """``mamba_ssm.Mamba2``'s constructor arguments, headdim and d_ssm resolved."""
        return {"d_model": self.d_model, "d_state": self.d_state, "d_conv": self.d_conv, "expand": self.expand,
                "headdim": self.head_dim, "d_ssm": self.ssm_width, "ngroups": self.ngroups,
                "D_has_hdim": self.D_has_hdim, "rmsnorm": self.rmsnorm, "norm_before_gate": self.norm_before_gate,
                "bias": self.bias, "conv_bias": self.conv_bias, "chunk_size": self.chunk_size}

    def zeros(self, dtype=torch.float64) -> dict[str, torch.Tensor]:
        """All-zero tensors with exactly ``mamba_ssm.Mamba2``'s state-dict names and shapes."""
        sd = {
            "dt_bias": torch.zeros(self.nheads, dtype=dtype),
            "A_log": torch.zeros(self.nheads, dtype=dtype),
            "D": torch.zeros(self.ssm_width if self.D_has_hdim else self.nheads, dtype=dtype),
            "in_proj.weight": torch.zeros(self.d_in_proj, self.d_model, dtype=dtype),
            "conv1d.weight": torch.zeros(self.conv_dim, 1, self.d_conv, dtype=dtype),
            "out_proj.weight": torch.zeros(self.d_model, self.d_inner, dtype=dtype),
        }
        if self.bias:
            sd["in_proj.bias"] = torch.zeros(self.d_in_proj, dtype=dtype)
            sd["out_proj.bias"] = torch.zeros(self.d_model, dtype=dtype)
        if self.conv_bias:
            sd["conv1d.bias"] = torch.zeros(self.conv_dim, dtype=dtype)
        if self.rmsnorm:
            sd["norm.weight"] = torch.zeros(self.ssm_width, dtype=dtype)
        return sd


@dataclass(frozen=True)
class MambaS4DConfig:
    """The Mamba block with its S6 mixer replaced by S4D (Huang et al. §4.6, "Mamba-S4D"): this project's own block.

    Same in_proj (rows [x | z]), depthwise conv + SiLU, gate ``silu(z)`` and out_proj as ``mamba_ssm.Mamba``; the
    mixer's Delta, B and C are learned but input-independent. The mixer width ``d_inner`` is a field (default
    d_model) rather than an integer ``expand``, so in_proj may widen a small embedding to many mixer channels.
    State-dict names (``verify.blocks.mamba_s4d.MambaS4D``): ``in_proj.weight`` (2 d_inner, d_model),
    ``in_proj.bias``, ``conv1d.weight`` (d_inner, 1, d_conv), ``conv1d.bias``, ``dt_bias`` (d_inner,) with
    Delta = softplus(dt_bias), ``A_log`` (d_inner, d_state) with A = -exp(A_log), ``B`` and ``C`` (d_inner, d_state),
    ``D`` (d_inner,), ``out_proj.weight`` (d_model, d_inner), ``out_proj.bias``. ``dt_bias``, ``A_log``, ``B``, ``C``
    and ``D`` are float32 whatever the module dtype (the CUDA selective scan needs float32 weights when B and C are
    input-independent).
    """

    kind: ClassVar[str] = "mamba-s4d"
    d_model: int
    d_state: int = 1
    d_conv: int = 4
    d_inner: int | None = None
    bias: bool = True
    conv_bias: bool = True

    @property
    def width(self) -> int:
        """The mixer width (number of S4D channels)."""
        return self.d_model if self.d_inner is None else self.d_inner

    def chain_length(self, seq_len: int) -> int:
        """in_proj, conv, SiLU, softplus and exp, 3 per scan step, the read over d_state, skip and gate, out_proj over
        the mixer width, and a readout over d_model."""
        return 2 * self.d_model + self.d_conv + 3 * seq_len + self.d_state + self.width + 4 * NONLINEAR_OPS + 4

    def arguments(self) -> dict:
        """``MambaS4D``'s constructor arguments, d_inner resolved."""
        return {"d_model": self.d_model, "d_state": self.d_state, "d_conv": self.d_conv, "d_inner": self.width,
                "bias": self.bias, "conv_bias": self.conv_bias}

    def zeros(self, dtype=torch.float64) -> dict[str, torch.Tensor]:
        di, n = self.width, self.d_state
        sd = {
            "in_proj.weight": torch.zeros(2 * di, self.d_model, dtype=dtype),
            "conv1d.weight": torch.zeros(di, 1, self.d_conv, dtype=dtype),
            "dt_bias": torch.zeros(di, dtype=dtype),
            "A_log": torch.zeros(di, n, dtype=dtype),
            "B": torch.zeros(di, n, dtype=dtype),
            "C": torch.zeros(di, n, dtype=dtype),
            "D": torch.zeros(di, dtype=dtype),
            "out_proj.weight": torch.zeros(self.d_model, di, dtype=dtype),
        }
        return _with_biases(sd, self, di, dtype)
