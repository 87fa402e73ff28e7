"""The state-dict format every engine shares: mamba_ssm's own parameter names, plus embedding and readout.

A model is ``logits = readout(mixer(embedding[tokens]))`` with no norm and no residual (the paper's one-layer model).
Flat keys: ``embedding.weight`` (n_tokens, d_model), ``mixer.<name>`` with ``<name>`` exactly as in
``mamba_ssm.Mamba(d_model, d_state, d_conv, expand, dt_rank, bias, conv_bias)`` (``in_proj.weight``,
``conv1d.weight``, ``x_proj.weight``, ``dt_proj.weight``, ``dt_proj.bias``, ``A_log``, ``D``, ``out_proj.weight``,
and the biases), and ``readout.weight`` (n_classes, d_model).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import torch


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

    def mamba_kwargs(self) -> dict:
        return {"d_model": self.d_model, "d_state": self.d_state, "d_conv": self.d_conv, "expand": self.expand,
                "dt_rank": self.rank, "bias": self.bias, "conv_bias": self.conv_bias}

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
        if self.bias:
            sd["in_proj.bias"] = torch.zeros(2 * di, dtype=dtype)
            sd["out_proj.bias"] = torch.zeros(self.d_model, dtype=dtype)
        if self.conv_bias:
            sd["conv1d.bias"] = torch.zeros(di, dtype=dtype)
        return sd


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

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    def __post_init__(self):
        from constructions.errors import require

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

    def mamba_kwargs(self) -> dict:
        return asdict(self)

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
        return shapes

    def zeros(self, dtype=torch.float64) -> dict[str, torch.Tensor]:
        return {f"layers.{l}.{k}": torch.zeros(*s, dtype=dtype)
                for l in range(self.n_layers) for k, s in self.layer_shapes().items()}


CONFIG_KINDS: dict[str, type] = {"mamba": MambaConfig, "linear-mamba": LinearMambaConfig}  # engines dispatch on kind


def config_from_dict(kind: str, fields: dict):
    """Rebuild a block config from ``config_to_dict``'s output."""
    return CONFIG_KINDS[kind](**fields)


def config_to_dict(config) -> dict:
    return asdict(config)


@dataclass
class Construction:
    """Hand-set weights of one model, with the names of its channels and what the proof says about it."""

    name: str
    theorem: str
    config: MambaConfig  # or any class in CONFIG_KINDS (``config.kind`` names the block)
    embedding: torch.Tensor
    mixer: dict[str, torch.Tensor]
    readout: torch.Tensor
    channels: list[str]
    tokens: MQARTokens | None = None
    info: dict = field(default_factory=dict)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"embedding.weight": self.embedding, **{f"mixer.{k}": v for k, v in self.mixer.items()},
                "readout.weight": self.readout}

    def sizes(self) -> dict:
        return {"d_model": self.config.d_model, "d_state": self.config.d_state, "d_conv": self.config.d_conv,
                "expand": self.config.expand}


def from_state_dict(sd: dict[str, torch.Tensor], config, **kw) -> Construction:
    """The inverse of ``Construction.state_dict`` (for reloading an export)."""
    mixer = {k[len("mixer."):]: v for k, v in sd.items() if k.startswith("mixer.")}
    return Construction(config=config, embedding=sd["embedding.weight"], mixer=mixer, readout=sd["readout.weight"], **kw)
