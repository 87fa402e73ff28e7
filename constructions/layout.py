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


# block kind -> config class; engines dispatch on kind
CONFIG_KINDS: dict[str, type] = {"mamba": MambaConfig, "mamba-delta-t": MambaDeltaTConfig}


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
    # "+PE" models (KEEP n-TH, Haar): this embedding coordinate is replaced by the raw position t = 1..L (see ``embed``)
    position_channel: int | None = None

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"embedding.weight": self.embedding, **{f"mixer.{k}": v for k, v in self.mixer.items()},
                "readout.weight": self.readout}

    def sizes(self) -> dict:
        return {"d_model": self.config.d_model, "d_state": self.config.d_state, "d_conv": self.config.d_conv,
                "expand": self.config.expand}


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
