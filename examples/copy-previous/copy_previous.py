"""COPY-PREVIOUS: one mamba_ssm.Mamba layer whose argmax at position t >= 2 is the token at t - 1.

Claim: with one-hot embeddings, in_proj x = I, the conv reading only token t - 1 (gain g), B = C = 0 so the output
is the skip D u (D = 1), a constant gate silu(z) and out_proj = readout = I, the logits at t are
silu(z) silu(g) e_{x_{t-1}}: the margin is exactly silu(z) silu(g) > 0 (other channels are silu(0) = 0).
"""
from dataclasses import dataclass, field

import numpy as np
import sympy as sp
import torch

from symbolic.blocks import silu
from verify.api import (IGNORE, Construction, MambaConfig, MambaWeights, Obligation, Proof, Spec, check_labelled,
                        help_, obligations_of, require)


MAX_VOCAB = 4096  # d_model = |V|: one-hot embeddings and identity projections


@dataclass(frozen=True)
class Constants:
    gain: sp.Expr = sp.Integer(1)  # conv weight on token t - 1
    gate_pre: sp.Expr = sp.Integer(1)  # z, so the gate is silu(gate_pre)


@dataclass(frozen=True)
class Params:
    vocab: int = field(default=16, metadata=help_("number of tokens |V|"))
    seq_len: int = field(default=32, metadata=help_("sequence length T"))
    samples: int = field(default=64, metadata=help_("sequences checked"))
    seed: int = field(default=0, metadata=help_("task seed"))


def obligations(c: Constants):
    return [Obligation("the previous token's channel survives the conv", "silu(gain) > 0", bool(silu(c.gain) > 0)),
            Obligation("other channels are exactly 0", "silu(0) = 0", silu(sp.Integer(0)) == 0),
            Obligation("the gate is a positive constant", "silu(gate_pre) > 0", bool(silu(c.gate_pre) > 0))]


def build(p: Params, constants: Constants = Constants()) -> Construction:
    require(2 <= p.vocab <= MAX_VOCAB, f"copy-previous needs 2 <= --vocab <= {MAX_VOCAB} (the model is |V| wide, "
                                       f"|V| x |V| weights a projection), got {p.vocab}")
    require(p.seq_len >= 2, f"copy-previous needs --seq-len >= 2, got {p.seq_len}")
    cfg, eye = MambaConfig(d_model=p.vocab, d_state=1, d_conv=2), torch.eye(p.vocab, dtype=torch.float64)
    W = MambaWeights(cfg)
    W.in_proj.x.weight[:] = eye
    W.in_proj.z.bias[:] = float(constants.gate_pre)
    W.conv.tap(1)[:] = float(constants.gain)
    W.D[:] = 1.0
    W.out_proj.weight[:] = eye
    margin = silu(constants.gate_pre) * silu(constants.gain)
    proof = Proof("margin", "argmax at t >= 2 is x_{t-1}, margin silu(gate_pre) silu(gain)",
                  obligations_of(obligations, constants), margin=float(sp.N(margin, 30)))
    return Construction("copy-previous", "COPY-PREVIOUS (example)", cfg, eye.clone(), W.state_dict(), eye.clone(),
                        [f"token[{v}]" for v in range(p.vocab)], proof=proof)


def check(con: Construction, p: Params, engine):
    require(p.samples >= 1, f"copy-previous checks at least one sequence, got --samples {p.samples}")
    tokens = np.random.default_rng(p.seed).integers(0, p.vocab, size=(p.samples, p.seq_len))
    labels = np.full_like(tokens, IGNORE)
    labels[:, 1:] = tokens[:, :-1]
    return check_labelled(con, tokens, labels, engine, config={"seed": p.seed},
                          summary=f"|V|={p.vocab} T={p.seq_len} d={p.vocab} N=1")


SPEC = Spec(name="copy-previous", theorem="COPY-PREVIOUS (example)", mixer="Mamba (S6), skip path only",
            formulas={"d_model": "|V|", "d_state": "1 (unused)", "d_conv": "2 (one tap)"}, params=Params,
            defaults=(Params(),), build=build, check=check, constants=Constants())
