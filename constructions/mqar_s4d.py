"""Theorem 4 (Huang et al. 2025) in the Mamba-S4D block: MQAR with the S4D mixer and the gate, both steps.

Theorem: a one-layer Mamba block with the S4D mixer solves MQAR with kappa keys and |V| values with N = 1 and mixer
width d = kappa |V| (step 1, ``variant="one-hot"``) or d = kappa p, p = O(log |V|) (step 2, ``variant="jl"``).

Block: ``MambaS4D(d_model, d_state=1, d_conv, d_inner=kappa*S, bias=False)`` (``verify.blocks.mamba_s4d``), S = |V|
(step 1) or p (step 2). The paper's d is the mixer width d_inner: its blocks act on x_t in R^{kappa S} directly,
while here in_proj widens a compact embedding (channels ``key[i]``, then ``value[j]`` or ``vcode[m]``, so
d_model = kappa + S) to the kappa blocks of S mixer channels ``(i, s)``, each reading the key-i and the slot-s
coordinate, exactly the coordinates the paper's block-structured embedding puts on channel (i, s).

==============  ===============================================================================================
embedding       key i -> k e_{key[i]}; value j -> v e_{value[j]} (step 1) or (q_j + beta) on vcode (step 2,
                balanced ±1 codes, beta = 1: entries in {0, 2}); noise -> 0
in_proj         x row (i, s) = e_{key[i]} + e_{slot s}; z row (i, s) = e_{key[i]} (the gate reads the raw key)
conv1d          tap -2 = c0, tap -1 = c1, bias -b on every channel (eq. 87); older taps 0 (any d_conv >= 2)
dt_bias         softplus^{-1}(delta)    A_log  log(decay_budget / (delta seq_len))    B = C = 1 (N = 1), D = 0
out_proj        channel (i, s) -> model coordinate of slot s (summed over the kappa blocks; the gate keeps one)
readout         row j: e_{value[j]} (step 1) or q_j on vcode (step 2)
==============  ===============================================================================================

Constants (the paper's k = 10, v = 1, c0 = 10, c1 = 1, b = 100, beta = 1), the classification of every conv pair
(signal, uniform repeated-key write, exact zero, leak <= L e^{-L}) and the margin bound: ``symbolic.theorem4``.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import sympy as sp
import torch

from common.errors import require
from constructions.jl import draw_codes, exact_ratio, jl_dim
from constructions.proof import Proof, obligations_of
from constructions.weights import MambaS4DWeights
from constructions.layout import Construction, MambaS4DConfig, MQARTokens
from symbolic import theorem4 as th

NAME = "mqar-s4d"
THEOREM = "Theorem 4 (Huang et al. 2025)"
VARIANTS = ("one-hot", "jl")


def sizes(kappa: int, vocab_size: int, variant: str = "one-hot", jl_eps: float = 0.5) -> dict:
    s = vocab_size if variant == "one-hot" else jl_dim(vocab_size, jl_eps)
    return {"d_model": kappa + s, "d_inner": kappa * s, "d_state": 1, "value_dim": s, "state_size": kappa * s}


def build(kappa: int, vocab_size: int, variant: str = "one-hot", seq_len: int = 256, seed: int = 0,
          d_conv: int = 4, jl_eps: float = 0.5, noise_vocab: int = 1,
          constants: th.Theorem4Constants = th.DEFAULT) -> Construction:
    """Weights of Theorem 4's construction, valid for every MQAR sequence of length <= seq_len."""
    require(kappa >= 1, f"MQAR S4D construction needs kappa >= 1, got kappa={kappa}")
    require(vocab_size >= 2, f"MQAR S4D construction needs |V| >= 2 values, got vocab_size={vocab_size}")
    require(variant in VARIANTS, f"MQAR S4D construction variant must be one of {VARIANTS}, got {variant!r}")
    require(seq_len >= 1, f"MQAR S4D construction needs seq_len >= 1, got seq_len={seq_len}")
    require(d_conv >= 2, f"MQAR S4D construction needs d_conv >= 2 (a size-2 conv), got d_conv={d_conv}")
    require(noise_vocab >= 1, f"MQAR S4D construction needs noise_vocab >= 1, got noise_vocab={noise_vocab}")
    c, num = constants, (lambda e: float(sp.N(e, 30)))
    info: dict = {"variant": variant, "seq_len": seq_len}
    T = sp.Integer(seq_len)
    if variant == "one-hot":
        codes = np.eye(vocab_size, dtype=np.int64)
        slot_embed = num(c.value) * codes
        bound = th.margin_lower_bound(c, 1, T)
        obligations = obligations_of(th.obligations, c, T)
    else:
        codes, mu, used = draw_codes(jl_dim(vocab_size, jl_eps), vocab_size, seed, 1.0, "MQAR S4D JL values")
        slot_embed = codes + num(c.beta)
        mu, p = exact_ratio(mu, codes.shape[0]), sp.Integer(codes.shape[0])
        bound = th.margin_lower_bound(c, 2, T, p, mu)
        obligations = obligations_of(th.obligations, c, T, p, mu)
        info.update(jl_eps=jl_eps, coherence=float(mu), code_seed=used)
    step = 1 if variant == "one-hot" else 2
    info.update(value_dim=codes.shape[0], leak_bound=num(th.leak_bound(c, step)))
    proof = Proof("margin", "argmax = queried value at every query, logit margin >= the bound, every sequence of "
                            f"length <= {seq_len}", obligations, margin=num(bound))
    return replace(_assemble(kappa, codes, slot_embed, seq_len, d_conv, noise_vocab, c, info), proof=proof)


def _assemble(kappa, codes, slot_embed, seq_len, d_conv, noise_vocab, c, info) -> Construction:
    s, vocab_size = codes.shape
    num = lambda e: float(sp.N(e, 30))  # noqa: E731
    t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float64))  # noqa: E731
    d, slots = kappa + s, slice(kappa, kappa + s)
    cfg = MambaS4DConfig(d_model=d, d_state=1, d_conv=d_conv, d_inner=kappa * s, bias=False)
    tokens = MQARTokens(kappa, vocab_size, noise_vocab)

    embedding = torch.zeros(tokens.n_tokens, d, dtype=torch.float64)
    embedding[:kappa, :kappa] = num(c.key) * torch.eye(kappa, dtype=torch.float64)
    embedding[kappa:kappa + vocab_size, slots] = t(slot_embed.T)

    W, di = MambaS4DWeights(cfg), kappa * s
    channel = torch.arange(di)
    block_of, slot_of = channel // s, channel % s  # channel (i, m) has index i * s + m
    W.in_proj.x.weight[channel, block_of] = 1.0
    W.in_proj.x.weight[channel, kappa + slot_of] = 1.0
    W.in_proj.z.weight[channel, block_of] = 1.0
    W.conv.tap(1)[:] = num(c.c_prev)
    W.conv.tap(0)[:] = num(c.c_cur)
    W.conv.bias[:] = -num(c.threshold)
    W.dt_bias[:] = num(c.dt_bias)
    W.A_log[:] = num(c.a_log(seq_len))
    W.B[:], W.C[:] = 1.0, 1.0
    W.out_proj.weight[kappa + slot_of, channel] = 1.0
    sd = W.state_dict()

    readout = torch.zeros(vocab_size, d, dtype=torch.float64)
    readout[:, slots] = t(codes.T)
    slot_name = "value" if info["variant"] == "one-hot" else "vcode"
    channels = [f"key[{i}]" for i in range(kappa)] + [f"{slot_name}[{m}]" for m in range(s)]
    return Construction(NAME, THEOREM, cfg, embedding, sd, readout, channels, tokens, info)
