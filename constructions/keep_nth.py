"""Corollary 2 (Huang et al., ICML 2025) in ``mamba_ssm.Mamba``: KEEP n-TH with one S6 layer and a time PE.

Corollary: an S6 layer with time positional encoding outputs y_t = x_n for every t >= n. Sizes: d_model = |V| + 1
(one-hot value channels, the last coordinate is the position, as in the paper's "+PE" models), d_state = 1,
dt_rank = 1, expand = 1. The paper's models have no conv and no gate; here the conv is an identity tap (plus a bias
on the position channel) and the gate the constant silu(gate_pre) from in_proj's bias, as in Theorem 2.

Weights (channels ``value[0..|V|-1]``, ``pos``):

==================  =========================================================================================
embedding           token v -> e_{value[v]}; coordinate ``pos`` replaced by the raw position t (1-based)
in_proj             x rows: identity; z rows: weight 0, bias ``gate_pre``
conv1d              value channels: tap on x_t = value_gain; pos: tap pos_gain, bias -pos_gain (n + 1/2)
x_proj              dt row: e_pos; B row: beta on every value channel; C row: gamma on every value channel
dt_proj             weight -w, bias dt_bias    -> Delta_t = softplus(dt_bias - w silu(t - n - 1/2))
A_log               log lam (lam = 1: A = -1, the paper's lambda)
D, out_proj         0, identity
readout             row m: e_{value[m]}
==================  =========================================================================================

``symbolic.corollary2`` proves the margin bound of the construction's ``proof`` for every T (its docstring
explains why Euler's write turns the paper's step bases into one spike at t = n). The S4D baseline that cannot keep x_n
(Lemma 1) is the paper's S4D+PE model, measured in ``verify.sensitivity``.
"""
from __future__ import annotations

import sympy as sp
import torch

from common.errors import require
from constructions.layout import Construction, MambaConfig
from constructions.proof import Proof, obligations_of
from constructions.weights import MambaWeights
from symbolic import corollary2 as c2

NAME = "keep-nth"
THEOREM = "Corollary 2 (Huang et al. 2025)"


def _num(e) -> float:
    return float(sp.N(e, 30))


def _frame(vocab_size: int, n: int, d_conv: int):
    require(vocab_size >= 2, f"KEEP n-TH construction needs |V| >= 2 tokens, got vocab_size={vocab_size}")
    require(n >= 1, f"KEEP n-TH construction needs n >= 1, got n={n}")
    require(d_conv >= 1, f"KEEP n-TH construction needs d_conv >= 1, got d_conv={d_conv}")
    cfg = MambaConfig(d_model=vocab_size + 1, d_state=1, d_conv=d_conv, expand=1, dt_rank=1)
    d, pos, vals = cfg.d_model, vocab_size, slice(0, vocab_size)
    embedding = torch.zeros(vocab_size, d, dtype=torch.float64)
    embedding[:, vals] = torch.eye(vocab_size, dtype=torch.float64)
    readout = torch.zeros(vocab_size, d, dtype=torch.float64)
    readout[:, vals] = torch.eye(vocab_size, dtype=torch.float64)
    channels = [f"value[{v}]" for v in range(vocab_size)] + ["pos"]
    return cfg, d, pos, vals, embedding, readout, channels


def build(vocab_size: int = 128, n: int = 5, d_conv: int = 4,
          constants: c2.Corollary2Constants = c2.DEFAULT) -> Construction:
    """Corollary 2's S6 layer; the recorded margin bound holds for every sequence length T >= n."""
    c = constants
    cfg, d, pos, vals, embedding, readout, channels = _frame(vocab_size, n, d_conv)
    W = MambaWeights(cfg)
    W.in_proj.x.weight[:] = torch.eye(d, dtype=torch.float64)
    W.in_proj.z.bias[:] = _num(c.gate_pre)
    W.conv.tap(0)[vals] = _num(c.value_gain)
    W.conv.tap(0)[pos] = _num(c.pos_gain)
    W.conv.bias[pos] = _num(-c.pos_gain * (n + sp.Rational(1, 2)))
    W.x_proj.dt.weight[0, pos] = 1.0  # dt_low = u_t (the position feature)
    W.x_proj.B.weight[0, vals] = _num(c.beta)  # B_t = beta * sum of value channels = beta silu(value_gain)
    W.x_proj.C.weight[0, vals] = _num(c.gamma)  # C_t = gamma silu(value_gain)
    W.dt_proj.weight[:, 0] = _num(-c.w)
    W.dt_proj.bias[:] = _num(c.dt_bias)
    W.A_log[:] = _num(c.a_log)
    W.out_proj.weight[:] = torch.eye(d, dtype=torch.float64)
    sd = W.state_dict()
    bound = c2.margin_lower_bound(c, sp.Integer(n))
    info = {"n": n, "delta_n": _num(c.delta_n_lo), "tail_delta_sum": _num(c.tail),
            "lemma2_c": _num(c2.lemma2_constant(c)), "position": "raw t = 1..T in the last coordinate"}
    proof = Proof("margin", f"argmax = x_{n} at every t >= {n}, logit margin >= the bound, for every T",
                  obligations_of(c2.obligations, c, n), margin=_num(bound))
    return Construction(NAME, THEOREM, cfg, embedding, sd, readout, channels, info=info, position_channel=pos,
                        proof=proof)
