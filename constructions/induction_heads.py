"""Lemma 3 (Huang et al., ICML 2025): induction heads with one Mamba-Delta-transpose block, d = 2|V|, N = |V|.

Lemma: a one-layer Mamba with the Delta-transpose mixer (Delta in R^N along the state axis) and no gate solves
induction heads with d = 2|V| and N = |V|. Block format: ``constructions.layout.MambaDeltaTConfig`` (mamba_ssm's
parameter names; dt_proj maps to d_state), expand = 1, dt_rank = |V|; the gate is the constant silu(gate_pre).

Weights (channels ``prev[0..|V|-1]``, ``cur[0..|V|-1]``; s_p = silu(g_prev), s_c = silu(g_cur)):

==================  =========================================================================================
embedding           token v -> e_{prev[v]} + e_{cur[v]}   (the paper's [e_v; e_v])
in_proj             x rows: identity; z rows: weight 0, bias gate_pre
conv1d              prev channels: tap g_prev on x_{t-1}; cur channels: tap g_cur on x_t; bias 0
x_proj              dt rows k: (2w/s_p) e_{prev[k]} (``variant="paper"``: w/s_p); B rows k: (beta/s_p) e_{prev[k]};
                    C rows k: (gamma/s_c) e_{cur[k]}
dt_proj             weight I, bias -w (paper: 0)   -> Delta[k] = softplus(+-w) (paper: softplus(w) or ln 2)
A_log               log lam (lam = 1: Lambda = -1, the paper's)
D                   0
out_proj            cur rows: identity on the cur channels; bias 1 on output ``prev[0]`` (the blank's constant)
readout             row m < |V|: e_{cur[m]}; row |V| (blank): theta e_{prev[0]}, theta = K / 2
==================  =========================================================================================

``symbolic.lemma3`` proves the margin of the construction's ``proof`` for every sequence of length <= ``seq_len``,
the softplus(0) = ln 2 fix, and the exact reduction the mamba_ssm engine uses. ``variant="paper"`` is the literal
construction (Delta = softplus(w [I|0] x^)) kept to show the bug; its proven margin is negative.
"""
from __future__ import annotations

import sympy as sp
import torch

from common.errors import require
from constructions.layout import Construction, MambaDeltaTConfig
from constructions.proof import Proof, margin_obligation, obligations_of
from constructions.weights import MambaWeights
from symbolic import lemma3 as l3

NAME = "induction-heads"
THEOREM = "Lemma 3 (Huang et al. 2025)"
VARIANTS = ("ours", "paper")


def _num(e) -> float:
    return float(sp.N(e, 30))


def build(vocab_size: int, seq_len: int = 100, variant: str = "ours", d_conv: int = 4,
          constants: l3.Lemma3Constants = l3.DEFAULT) -> Construction:
    """Lemma 3's construction; the recorded margin bound holds for every sequence of length <= seq_len."""
    require(vocab_size >= 2, f"induction-heads construction needs |V| >= 2 tokens, got vocab_size={vocab_size}")
    require(vocab_size <= 256, f"induction-heads construction needs N = |V| <= 256 (selective_scan_cuda's dstate "
                               f"limit), got vocab_size={vocab_size}")
    require(seq_len >= 1, f"induction-heads construction needs seq_len >= 1, got seq_len={seq_len}")
    require(d_conv >= 2, f"induction-heads construction needs d_conv >= 2 (a size-2 conv), got d_conv={d_conv}")
    require(variant in VARIANTS, f"induction-heads variant must be one of {VARIANTS}, got {variant!r}")
    c, V = constants, vocab_size
    cfg = MambaDeltaTConfig(d_model=2 * V, d_state=V, d_conv=d_conv, expand=1, dt_rank=V)
    d, prev, cur = cfg.d_model, slice(0, V), slice(V, 2 * V)
    eye = torch.eye(V, dtype=torch.float64)
    s_p, s_c = _num(c.s_p), _num(c.s_c)

    embedding = torch.zeros(V, d, dtype=torch.float64)
    embedding[:, prev] = eye
    embedding[:, cur] = eye

    W = MambaWeights(cfg)
    W.in_proj.x.weight[:] = torch.eye(d, dtype=torch.float64)
    W.in_proj.z.bias[:] = _num(c.gate_pre)
    W.conv.tap(1)[prev] = _num(c.g_prev)
    W.conv.tap(0)[cur] = _num(c.g_cur)
    slope = 2 * _num(c.w) if variant == "ours" else _num(c.w)
    W.x_proj.dt.weight[:, prev] = eye * (slope / s_p)  # dt_low[k] = slope * [x_{t-1} = k]
    W.x_proj.B.weight[:, prev] = eye * (_num(c.beta) / s_p)  # B[k] = beta [x_{t-1} = k]
    W.x_proj.C.weight[:, cur] = eye * (_num(c.gamma) / s_c)  # C[k] = gamma [x_t = k]
    W.dt_proj.weight[:] = eye
    W.dt_proj.bias[:] = -_num(c.w) if variant == "ours" else 0.0
    W.A_log[:] = _num(sp.log(c.lam))
    W.out_proj.weight[cur, cur] = eye
    W.out_proj.bias[0] = 1.0  # constant on output coordinate prev[0], read by the blank class
    sd = W.state_dict()

    readout = torch.zeros(V + 1, d, dtype=torch.float64)
    readout[:V, cur] = eye
    readout[V, 0] = _num(c.theta)
    bound = l3.margin_lower_bound(c, sp.Integer(seq_len), variant)
    obligations = obligations_of(l3.obligations, c, seq_len)
    proof = Proof("margin", f"argmax = the induction-head target (or blank) at every position, logit margin >= the "
                            f"bound, every sequence of length <= {seq_len}",
                  obligations if variant == "ours" else _paper_variant(obligations, bound, seq_len),
                  margin=_num(bound))
    info = {"variant": variant, "seq_len": seq_len, "blank_class": V,
            "r_min": _num(c.r_min(sp.Integer(seq_len), variant)), "wipe": _num(c.wipe(variant)),
            "blank_threshold": _num(c.theta)}
    channels = [f"prev[{v}]" for v in range(V)] + [f"cur[{v}]" for v in range(V)]
    return Construction(NAME, THEOREM, cfg, embedding, sd, readout, channels, info=info, proof=proof)


def _paper_variant(obligations, bound, seq_len):
    """The literal Lemma 3: its own margin bound at seq_len is an obligation too (it fails for seq_len >= 2)."""
    return lambda: (*obligations(), margin_obligation(bound, f"the literal Lemma 3, T = {seq_len}"))
