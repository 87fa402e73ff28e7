"""Block kind ``transformer``: the one-layer Transformer that Huang et al. train as the baseline of KEEP n-TH (Table 1
and Tables A.1/A.2), as a block the training loop trains like the state-space blocks (embedding -> block -> readout).

The paper gives the Transformer's depth (one layer), its width d in {16, 32, 64} and its parameter counts, nothing
else. The block here is the usual pre-norm layer: a learned absolute position embedding (``pos_embedding``, one row
per position up to the run's T, added to the token embedding), ``h = h + Attn(LN1(h))`` (causal softmax attention,
``d_state`` heads of width d / d_state, query/key/value projection ``attn.in_proj`` with rows [q | k | v] and output
projection ``attn.out_proj``, as ``torch.nn.MultiheadAttention`` names them), ``h = h + MLP(LN2(h))`` (d -> d_mlp ->
d, GELU) and a final LayerNorm. A Transformer has no recurrent state; the run's state size N is the number of heads
(the KEEP grids use one).

Trained numbers: 6 d^2 + 12 d + T d (d_mlp = d, the default). The paper's counts grow by d per position of T (a learned
position embedding: 5.8k -> 6.4k at d = 16 from T = 10 to 50) and by about 6 d^2 (an attention layer, 4 d^2, and an
MLP of width d, 2 d^2); with the 2 |V| d of the embedding and readout ours is 0.99-1.04 x the paper's at every
(d, T) whose paper value is not a copy of T = 10 (``tests/test_transformer_block.py``). The paper's counts fit no
polynomial in d exactly, so some part of its layer differs from this one by a few percent of the parameters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from common.errors import require
from verify.blocks import BlockKind, Training
from verify.blocks.common import uniform

UPDATE_RULE = (
    "One pre-norm Transformer layer: h = u + P[t] (learned position embedding), h = h + W_o softmax_causal(Q K^T / "
    "sqrt(d_head)) V with [Q | K | V] = W_in LN1(h) + b_in (d_state heads), h = h + W_2 gelu(W_1 LN2(h) + b_1) + b_2, "
    "out = LN_f(h); attention reads every earlier position, there is no recurrent state.")


@dataclass(frozen=True)
class TransformerConfig:
    """Constructor arguments: d_model, d_state (the number of attention heads, dividing d_model), max_len (the rows of
    the position embedding: the longest sequence), d_mlp (the MLP's width, default d_model), bias (the linear maps'
    biases)."""

    kind: ClassVar[str] = "transformer"
    d_model: int
    d_state: int = 1
    max_len: int = 100
    d_mlp: int | None = None
    bias: bool = True

    def __post_init__(self):
        require(self.d_state >= 1 and self.d_model % self.d_state == 0,
                f"transformer: the heads (d_state = {self.d_state}) must divide d_model = {self.d_model}")
        require(self.max_len >= 1, f"transformer: max_len must be >= 1, got {self.max_len}")

    @property
    def width(self) -> int:
        return self.d_model if self.d_mlp is None else self.d_mlp

    def chain_length(self, seq_len: int) -> int:
        """Norm, projection, scores, softmax and sum over seq_len, output projection, MLP and norm."""
        return 6 * self.d_model + 2 * self.width + 2 * seq_len + 16

    def arguments(self) -> dict:
        return {"d_model": self.d_model, "d_state": self.d_state, "max_len": self.max_len, "d_mlp": self.width,
                "bias": self.bias}

    def zeros(self, dtype=torch.float64) -> dict[str, torch.Tensor]:
        d, f = self.d_model, self.width
        z = lambda *s: torch.zeros(*s, dtype=dtype)  # noqa: E731
        sd = {"pos_embedding": z(self.max_len, d),
              "norm1.weight": z(d), "norm1.bias": z(d),
              "attn.in_proj.weight": z(3 * d, d), "attn.out_proj.weight": z(d, d),
              "norm2.weight": z(d), "norm2.bias": z(d),
              "mlp.fc1.weight": z(f, d), "mlp.fc2.weight": z(d, f),
              "norm_f.weight": z(d), "norm_f.bias": z(d)}
        if self.bias:
            sd.update({"attn.in_proj.bias": z(3 * d), "attn.out_proj.bias": z(d), "mlp.fc1.bias": z(f),
                       "mlp.fc2.bias": z(d)})
        return sd


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(e) + causal mask) v for q, k, v (..., L, e)."""
    L = q.shape[-2]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    mask = torch.ones(L, L, dtype=torch.bool, device=q.device).triu(1)
    return scores.masked_fill(mask, float("-inf")).softmax(-1) @ v


def _norm(x, p, name):
    return F.layer_norm(x, x.shape[-1:]) * p[f"{name}.weight"][:, None, None] + p[f"{name}.bias"][:, None, None]


def _linear(x, p, name):
    y = torch.einsum("kbli,koi->kblo", x, p[f"{name}.weight"])
    return y + p[f"{name}.bias"][:, None, None] if f"{name}.bias" in p else y


def packed_forward(p: dict, hidden: torch.Tensor, config, scan=causal_attention) -> torch.Tensor:
    """K layers at once: hidden (K, b, L, d), every parameter with a leading K axis; ``scan`` mixes the sequence
    (q, k, v (K, b, heads, L, d_head) -> the same)."""
    K, b, L, d = hidden.shape
    H = config.d_state
    h = hidden + p["pos_embedding"][:, None, :L]
    q, k, v = _linear(_norm(h, p, "norm1"), p, "attn.in_proj").split(d, dim=-1)
    heads = lambda t: t.reshape(K, b, L, H, d // H).transpose(2, 3)  # noqa: E731
    a = scan(heads(q), heads(k), heads(v)).transpose(2, 3).reshape(K, b, L, d)
    h = h + _linear(a, p, "attn.out_proj")
    h = h + _linear(F.gelu(_linear(_norm(h, p, "norm2"), p, "mlp.fc1")), p, "mlp.fc2")
    return _norm(h, p, "norm_f")


def forward(params: dict, hidden: torch.Tensor, config, scan=causal_attention) -> torch.Tensor:
    """One layer on hidden (batch, L, d_model)."""
    return packed_forward({k: v[None] for k, v in params.items()}, hidden[None], config, scan)[0]


def init(config: TransformerConfig, gen: torch.Generator) -> dict:
    """A fresh state dict (float64): position embedding N(0, 1) (nn.Embedding's), linear maps U(+-1/sqrt(fan_in))
    (nn.Linear's), norms weight 1 and bias 0."""
    d, f = config.d_model, config.width
    sd = config.zeros()
    sd["pos_embedding"] = torch.randn(config.max_len, d, generator=gen, dtype=torch.float64)
    for name, (o, i) in (("attn.in_proj", (3 * d, d)), ("attn.out_proj", (d, d)), ("mlp.fc1", (f, d)),
                         ("mlp.fc2", (d, f))):
        sd[f"{name}.weight"] = uniform(gen, (o, i), i ** -0.5)
        if config.bias:
            sd[f"{name}.bias"] = uniform(gen, (o,), i ** -0.5)
    for name in ("norm1", "norm2", "norm_f"):
        sd[f"{name}.weight"] = torch.ones(d, dtype=torch.float64)
    return sd


def freeze(config, spec, sd: dict) -> dict:
    """Nothing is frozen; a run that asks for a gate, or for a conv or in/out projections frozen, names parts this
    block does not have."""
    require(not spec.gate and spec.conv and spec.proj,
            "transformer has no gate, conv or in/out projections to switch (a run needs gate=false, conv=true, "
            "proj=true)")
    return {}


def _run_config(s) -> TransformerConfig:
    return TransformerConfig(d_model=s.d_model, d_state=s.d_state, max_len=s.seq_len)


_NO_MODULE = "the one-layer Transformer baseline is this project's block (verify.blocks.transformer); {} has no such module"

KIND = BlockKind(
    name="transformer", title="Transformer (one layer)", config=TransformerConfig, update_rule=UPDATE_RULE,
    forward=forward, width=lambda c: c.width, state_size=lambda c: 2 * c.d_model * c.max_len,  # keys and values
    mamba_ssm=_NO_MODULE.format("mamba_ssm"), transformers=_NO_MODULE.format("transformers"),
    training=Training(_run_config, init, freeze, packed_forward=packed_forward, reference_scan=causal_attention,
                      note="one-layer Transformer, the KEEP n-TH baseline of Huang et al. (verify.blocks.transformer)"),
)
