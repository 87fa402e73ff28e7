"""Theorem 2 (Huang et al., ICML 2025) in ``mamba_ssm.Mamba``: MQAR with the S6 mixer, both steps.

Theorem: a one-layer Mamba block solves MQAR with kappa keys and |V| values with N = kappa and
d = kappa + |V| (step 1, ``variant="one-hot"``) or d = kappa + p, p = O(log |V|) (step 2, ``variant="jl"``).

Weights (channels: ``key[i]`` for i < kappa, then ``value[j]`` for j < |V| or ``code[m]`` for m < p; expand = 1):

==================  =========================================================================================
embedding           key i -> e_{key[i]}; value j -> e_{value[j]} (one-hot) or sum_m q_j[m] e_{code[m]} (JL);
                    noise -> 0
in_proj             x rows: identity; z rows: weight 0, bias ``gate_pre`` (so the gate is silu(gate_pre))
conv1d              key channels: taps (prev, cur) = (key_prev, key_cur); value/code channels: (0, value_gain);
                    bias 0; taps older than t-1 are 0 (any d_conv >= 2)
x_proj              dt rows 0; B rows and C rows both select the key channels (B_t = C_t = u_t[key])
dt_proj             weight 0, bias softplus^{-1}(delta)   -> constant step delta
A_log               log(decay_budget / (delta * seq_len)) -> decay >= exp(-decay_budget) within seq_len
D                   0
out_proj            identity
readout             row j: e_{value[j]} (one-hot) or sum_m q_j[m] e_{code[m]} (JL)
==================  =========================================================================================

The constants and the inequality each one satisfies are in ``symbolic.theorem2`` (its docstring explains the choices
that make the proof exact in the real block: per-channel conv taps, zero-embedded noise, constant gate, bounded
decay, balanced JL codes). ``build`` evaluates them, writes the weights, and attaches the ``Proof``: the proven lower
bound on every query's logit margin and the obligations it rests on, which checks decide and compare.
"""
from __future__ import annotations

import numpy as np
import sympy as sp
import torch

from common.errors import require
from constructions.jl import draw_codes, exact_ratio, jl_dim
from constructions.layout import Construction, MambaConfig, MQARTokens
from constructions.proof import Proof, margin_obligation, obligations_of
from constructions.weights import MambaWeights
from symbolic import theorem2 as th

NAME = "mqar-mamba"
THEOREM = "Theorem 2 (Huang et al. 2025)"
VARIANTS = ("one-hot", "jl")


def sizes(kappa: int, vocab_size: int, variant: str = "one-hot", jl_eps: float = 0.5) -> dict:
    p = vocab_size if variant == "one-hot" else jl_dim(vocab_size, jl_eps)
    return {"d_model": kappa + p, "d_state": kappa, "value_dim": p}


def build(kappa: int, vocab_size: int, variant: str = "one-hot", seq_len: int = 256, seed: int = 0,
          d_conv: int = 4, jl_eps: float = 0.5, noise_vocab: int = 1,
          constants: th.Theorem2Constants = th.DEFAULT) -> Construction:
    """Weights of Theorem 2's construction, valid for every MQAR sequence of length <= seq_len."""
    require(kappa >= 1, f"MQAR Mamba construction needs kappa >= 1, got kappa={kappa}")
    require(vocab_size >= 2, f"MQAR Mamba construction needs |V| >= 2 values, got vocab_size={vocab_size}")
    require(variant in VARIANTS, f"MQAR Mamba construction variant must be one of {VARIANTS}, got {variant!r}")
    require(seq_len >= 1, f"MQAR Mamba construction needs seq_len >= 1, got seq_len={seq_len}")
    require(d_conv >= 2, f"MQAR Mamba construction needs d_conv >= 2 (a size-2 conv), got d_conv={d_conv}")
    require(noise_vocab >= 1, f"MQAR Mamba construction needs noise_vocab >= 1, got noise_vocab={noise_vocab}")

    c = constants
    p = sizes(kappa, vocab_size, variant, jl_eps)["value_dim"]
    info: dict = {"variant": variant, "seq_len": seq_len, "value_dim": p}
    if variant == "one-hot":
        codes = np.eye(vocab_size, dtype=np.int64)
        bound = th.margin_lower_bound(c, "one-hot")
        obligations = obligations_of(th.obligations, c)
    else:
        mu_max = float(th.max_coherence(c))  # <= 0 for constants outside the proof: draw any codes, the obligation fails
        codes, mu, code_seed = draw_codes(p, vocab_size, seed, mu_max if mu_max > 0 else 1.0,
                                          "MQAR Mamba JL construction")
        mu = exact_ratio(mu, p)
        bound = th.margin_lower_bound(c, "jl", p, mu)
        obligations = obligations_of(th.obligations, c, mu, sp.Integer(p))
        info.update(jl_eps=jl_eps, coherence=float(mu), coherence_max=mu_max, code_seed=code_seed)
    proof = Proof("margin", "argmax = queried value at every query, logit margin >= the bound, every sequence of "
                            f"length <= {seq_len}", _with_margin(obligations, bound), margin=float(bound))

    cfg = MambaConfig(d_model=kappa + p, d_state=kappa, d_conv=d_conv)
    d, keys, vals = cfg.d_model, slice(0, kappa), slice(kappa, kappa + p)
    tokens = MQARTokens(kappa, vocab_size, noise_vocab)
    num = lambda e: float(sp.N(e, 30))  # noqa: E731

    embedding = torch.zeros(tokens.n_tokens, d, dtype=torch.float64)
    embedding[:kappa, keys] = torch.eye(kappa, dtype=torch.float64)
    embedding[kappa:kappa + vocab_size, vals] = torch.from_numpy(codes.T).double()

    W, eye = MambaWeights(cfg), torch.eye
    W.in_proj.x.weight[:] = eye(d, dtype=torch.float64)
    W.in_proj.z.bias[:] = num(c.gate_pre)  # z rows of the weight stay 0: the gate is silu(gate_pre)
    W.conv.tap(0)[keys] = num(c.key_cur)
    W.conv.tap(1)[keys] = num(c.key_prev)
    W.conv.tap(0)[vals] = num(c.value_gain)
    W.x_proj.B.weight[:, keys] = eye(kappa, dtype=torch.float64)  # B_t = u_t[key]
    W.x_proj.C.weight[:, keys] = eye(kappa, dtype=torch.float64)  # C_t = u_t[key]
    W.dt_proj.bias[:] = num(c.dt_bias)
    W.A_log[:] = num(c.a_log(seq_len))
    W.out_proj.weight[:] = eye(d, dtype=torch.float64)
    sd = W.state_dict()

    readout = torch.zeros(vocab_size, d, dtype=torch.float64)
    readout[:, vals] = torch.from_numpy(codes.T).double()

    channels = [f"key[{i}]" for i in range(kappa)] + [
        f"value[{j}]" if variant == "one-hot" else f"code[{j}]" for j in range(p)]
    return Construction(NAME, THEOREM, cfg, embedding, sd, readout, channels, tokens, info, proof=proof)


def _with_margin(obligations, bound):
    return lambda: (*obligations(), margin_obligation(bound, "these constants"))
