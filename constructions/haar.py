"""Theorem 1 (Huang et al., ICML 2025) in ``mamba_ssm.Mamba``: one S6 layer whose last output is the Haar projection.

Theorem: with time as an input channel, S6 basis functions combined (+1, -2, +1) represent the Haar wavelet psi_{j,k};
so one layer can output <x, psi_{j,k}> for every wavelet up to level J (plus the scaling function phi = 1).

Input (batch, T, d_model): coordinate 0 is the signal x_i, coordinate 1 the raw time i = 1..T (Theorem 1's
x~ = [x; s]); cell i is [(i-1)/T, i/T) and T must be a multiple of 2^{J+1}. Output at the last step, coordinate
``w``: the projection onto wavelet w (``outputs``: ``phi``, then ``psi[j,k]`` by level). Every jump of every wavelet is
one of the 2^{J+1} breakpoints q = m / 2^{J+1}; each breakpoint gets three channels (Theorem 1's three bases per wavelet,
shared between wavelets with a common jump; Delta is per channel, so each jump needs its own):

==================  =========================================================================================
``step[m]+/-``      in_proj: +-value_gain on x; Delta from feat[m]; they store sum_i K_i silu(+-g x_i)
``feat[m]``         in_proj: -kappa on time, bias kappa theta_m (theta_m = m T / 2^{J+1} + 1/2): silu(kappa (theta - i))
``one``             in_proj: bias one_pre; B row and C row read it (B = C = 1)
conv1d              identity tap on x_t (bias 0)
x_proj              dt row m: e_{feat[m]}; B row, C row: (1/silu(one_pre)) e_{one}
dt_proj             row step[m]+/-: -1 on dt_low m; bias 0   -> Delta = softplus(-silu(kappa (theta_m - i)))
A_log               a_log = -40 (lam = e^-40: no decay);  D = 0;  z rows: bias gate_pre (constant gate)
out_proj            row w, columns step[m]+/-: +-c_{w,m} 2^{j/2} / (T gate ln2 g), c in (+1, -2, +1) at (a, mid, b);
                    a jump at b = 1 is dropped (H(s - 1) = 0 on [0, 1))
readout             identity on the outputs
==================  =========================================================================================

``symbolic.theorem1`` proves the grid sup bound ``|T K_i - psi_w(s_i)| <= 2^{j/2} c_w eps`` (recorded in ``info``) and
why the Euler write makes us switch Delta from ~0 (nothing written) to ln 2 rather than the paper's oo -> 0.
"""
from __future__ import annotations

import math

import numpy as np
import sympy as sp
import torch

from common.errors import require
from constructions.layout import Construction, MambaConfig
from constructions.proof import Proof, obligations_of
from constructions.weights import MambaWeights
from symbolic import theorem1 as t1
from symbolic.blocks import silu

NAME = "haar"
THEOREM = "Theorem 1 (Huang et al. 2025)"


def _num(e) -> float:
    return float(sp.N(e, 30))


def wavelets(levels: int) -> list[tuple[int, int]]:
    """(-1, 0) for phi, then (j, k) for j = 0..levels, k = 0..2^j - 1."""
    return [(-1, 0)] + [(j, k) for j in range(levels + 1) for k in range(2**j)]


def wavelet_steps(j: int, k: int, levels: int) -> tuple[list[tuple[int, int]], float]:
    """[(breakpoint index m, coefficient)] of phi (j = -1) or psi_{j,k}, and its 2^{j/2} scale."""
    M = 2 ** (levels + 1)
    if j < 0:
        return [(0, 1)], 1.0
    per = M // 2**j
    a, mid, b = k * per, k * per + per // 2, (k + 1) * per
    steps = [(a, 1), (mid, -2)] + ([(b, 1)] if b < M else [])
    return steps, 2 ** (j / 2)


def grid_values(j: int, k: int, T: int) -> np.ndarray:
    """psi_{j,k} (or phi for j = -1) at the cell midpoints s_i = (i - 1/2)/T, i = 1..T (exact on this grid)."""
    s = (np.arange(1, T + 1) - 0.5) / T
    if j < 0:
        return np.ones(T)
    u = 2.0**j * s - k
    return 2 ** (j / 2) * np.where((u >= 0) & (u < 0.5), 1.0, np.where((u >= 0.5) & (u < 1), -1.0, 0.0))


def build(levels: int = 4, seq_len: int = 256, d_conv: int = 4,
          constants: t1.Theorem1Constants = t1.DEFAULT) -> Construction:
    """Theorem 1's layer: its output at step seq_len, coordinate w, approximates <x, psi_w> within info's bound."""
    require(levels >= 0, f"Haar construction needs levels >= 0, got levels={levels}")
    M = 2 ** (levels + 1)
    require(seq_len >= M and seq_len % M == 0,
            f"Haar construction needs seq_len a multiple of 2^(levels+1) = {M} (jumps between grid cells), "
            f"got seq_len={seq_len}")
    require(bool(sp.sympify(constants.kappa) >= 4), f"Haar construction needs kappa >= 4, got {constants.kappa}")
    require(d_conv >= 1, f"Haar construction needs d_conv >= 1, got d_conv={d_conv}")
    c, T = constants, seq_len
    ws = wavelets(levels)
    n_out = len(ws)  # = M
    n_used = 3 * M + 1
    d_model = max(2, n_out)
    expand = math.ceil(n_used / d_model)
    cfg = MambaConfig(d_model=d_model, d_state=1, d_conv=d_conv, expand=expand, dt_rank=M)
    di = cfg.d_inner
    plus, minus, feat, one = (lambda m: 3 * m), (lambda m: 3 * m + 1), (lambda m: 3 * m + 2), 3 * M

    g, kappa, gate = _num(c.value_gain), _num(c.kappa), _num(c.gate)
    s_one = _num(silu(c.one_pre))
    W = MambaWeights(cfg)
    x_in, z_in = W.in_proj.x, W.in_proj.z
    for m in range(M):
        theta = m * T / M + 0.5
        x_in.weight[plus(m), 0], x_in.weight[minus(m), 0] = g, -g
        x_in.weight[feat(m), 1], x_in.bias[feat(m)] = -kappa, kappa * theta
        W.x_proj.dt.weight[m, feat(m)] = 1.0
        W.dt_proj.weight[plus(m), m] = W.dt_proj.weight[minus(m), m] = -1.0
    x_in.bias[one] = _num(c.one_pre)
    z_in.bias[:] = _num(c.gate_pre)
    W.conv.tap(0)[:] = 1.0
    W.x_proj.B.weight[0, one] = 1.0 / s_one  # B = 1
    W.x_proj.C.weight[0, one] = 1.0 / s_one  # C = 1
    W.A_log[:] = _num(c.a_log)
    sd = W.state_dict()

    names, bounds = [], []
    eps = t1.eps(c.kappa, c.lam, sp.Integer(T))
    for w, (j, k) in enumerate(ws):
        steps, scale = wavelet_steps(j, k, levels)
        for m, coef in steps:
            val = coef * scale / (T * gate * math.log(2) * g)
            W.out_proj.weight[w, plus(m)] += val
            W.out_proj.weight[w, minus(m)] -= val
        names.append("phi" if j < 0 else f"psi[{j},{k}]")
        c_w = sum(abs(cf) for _, cf in steps)
        bounds.append(_num(t1.sup_bound(max(j, 0), c_w, c.kappa, c.lam, sp.Integer(T))))
    readout = torch.zeros(n_out, d_model, dtype=torch.float64)
    readout[:, :n_out] = torch.eye(n_out, dtype=torch.float64)
    channels = [name for m in range(M) for name in (f"step[{m}]+", f"step[{m}]-", f"feat[{m}]")] + ["one"] + \
        [f"unused[{i}]" for i in range(di - n_used)]
    info = {"levels": levels, "seq_len": T, "outputs": names, "wavelets": [list(w) for w in ws],
            "eps": _num(eps), "sup_bounds": bounds, "kappa": _num(c.kappa), "lam": _num(c.lam),
            "inputs": "coordinate 0: signal x_i; coordinate 1: raw time i = 1..T"}
    proof = Proof("error", "|output_w - <x, psi_w>| <= 2^{j/2} c_w eps (kernel) and <= 2^{j/2} c_w eps mean|x| "
                           f"(signals) for every wavelet w up to level {levels}, T = {T}",
                  obligations_of(t1.obligations, c, T), error_bound=_num(eps))
    con = Construction(NAME, THEOREM, cfg, torch.zeros(1, d_model, dtype=torch.float64), sd, readout, channels,
                       info=info, proof=proof)
    con.constants = c  # exact: a check that derives the bound at a measured quantity uses these, not the defaults
    return con


TIME_NAME = "time-from-ones"
TIME_THEOREM = "Proposition 1 (Huang et al. 2025)"


def build_time_layer(d_conv: int = 4, constants: t1.Theorem1Constants = t1.DEFAULT) -> Construction:
    """Proposition 1: a one-channel Mamba layer fed ones outputs the time t (up to a relative 1 - e^{-lam T}).

    d_model = d_inner = d_state = dt_rank = 1. in_proj: x row 1, z row bias gate_pre; conv: identity tap; x_proj:
    B = C = 1 (1/silu(1) times the channel, which is silu(1)); dt_proj: weight 0, bias softplus^{-1}(1) (Delta = 1);
    A_log = a_log (lam = e^-40); out_proj 1/(gate silu(1)). So y_t = sum_{s<=t} e^{-lam (t-s)} ~ t (``proposition1_obligations``).
    """
    c = constants
    cfg = MambaConfig(d_model=1, d_state=1, d_conv=d_conv, expand=1, dt_rank=1)
    W = MambaWeights(cfg)
    s1 = _num(silu(sp.Integer(1)))
    W.in_proj.x.weight[0, 0] = 1.0
    W.in_proj.z.bias[0] = _num(c.gate_pre)
    W.conv.tap(0)[0] = 1.0
    W.x_proj.B.weight[0, 0] = W.x_proj.C.weight[0, 0] = 1.0 / s1
    W.dt_proj.bias[0] = _num(sp.log(sp.E - 1))
    W.A_log[0] = _num(c.a_log)
    W.out_proj.weight[0, 0] = 1.0 / (_num(c.gate) * s1)
    sd = W.state_dict()
    info = {"lam": _num(c.lam), "inputs": "ones", "output": "time t (coordinate 0)"}
    return Construction(TIME_NAME, TIME_THEOREM, cfg, torch.ones(1, 1, dtype=torch.float64), sd,
                        torch.ones(1, 1, dtype=torch.float64), ["time"], info=info)
