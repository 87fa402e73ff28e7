"""The reference Mamba2 and Mamba-S4D blocks against independent per-step loops written from the notes' equations.

``naive_mamba2`` / ``naive_mamba_s4d`` use Python scalars and loops over (time, head, channel, state), with no shared
code with ``verify.engines``: in_proj rows [z0 | x0 | z | x | B | C | dt]; causal conv tap ``w[k, -1-s]`` on
``x_{t-s}``; Delta = softplus(dt + dt_bias); state update ``exp(Delta A) h + Delta x B`` per (head, channel, state)
with the head's group ``h // (nheads / ngroups)``; ``y = C.h + D x``; gate ``silu(z)`` or RMSNormGated per group.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from constructions.layout import Mamba2Config, MambaS4DConfig
from verify.blocks.mamba_s4d import MambaS4D
from verify.blocks import KINDS


def silu(v: float) -> float:
    return v / (1 + math.exp(-v))


def softplus(v: float) -> float:
    return v if v > 20 else math.log1p(math.exp(v))


def _conv(seq, w, bias):
    """Causal depthwise conv + SiLU on a list of per-step channel lists."""
    K, out = len(w[0]), []
    for t in range(len(seq)):
        row = []
        for k in range(len(seq[0])):
            pre = (bias[k] if bias is not None else 0.0) + sum(
                w[k][K - 1 - s] * seq[t - s][k] for s in range(K) if t - s >= 0)
            row.append(silu(pre))
        out.append(row)
    return out


def _linear(v, W, b):
    return [sum(W[r][c] * v[c] for c in range(len(v))) + (b[r] if b is not None else 0.0) for r in range(len(W))]


def naive_mamba2(sd: dict, u: list, c: Mamba2Config) -> list:
    """One sequence u (L lists of d_model floats) -> L lists of d_model floats."""
    g = {k: v.tolist() for k, v in sd.items()}
    w = [row[0] for row in g["conv1d.weight"]]
    P, H, G, N, S, M = c.head_dim, c.nheads, c.ngroups, c.d_state, c.ssm_width, c.d_mlp
    proj = [_linear(ut, g["in_proj.weight"], g.get("in_proj.bias")) for ut in u]
    xbc = _conv([p[2 * M + S:2 * M + 2 * S + 2 * G * N] for p in proj], w, g.get("conv1d.bias"))
    h = [[[0.0] * N for _ in range(P)] for _ in range(H)]
    out = []
    for t, p in enumerate(proj):
        z0, x0, z, dt = p[:M], p[M:2 * M], p[2 * M:2 * M + S], p[2 * M + 2 * S + 2 * G * N:]
        x, B, C = xbc[t][:S], xbc[t][S:S + G * N], xbc[t][S + G * N:]
        y = []
        for head in range(H):
            grp = head // (H // G)
            delta = softplus(dt[head] + g["dt_bias"][head])
            a = -math.exp(g["A_log"][head])
            for q in range(P):
                ch = head * P + q
                d_skip = g["D"][ch] if c.D_has_hdim else g["D"][head]
                for n in range(N):
                    h[head][q][n] = math.exp(delta * a) * h[head][q][n] + delta * x[ch] * B[grp * N + n]
                y.append(sum(h[head][q][n] * C[grp * N + n] for n in range(N)) + d_skip * x[ch])
        if not c.rmsnorm:
            y = [y[k] * silu(z[k]) for k in range(S)]
        else:
            gs = S // G
            if not c.norm_before_gate:
                y = [y[k] * silu(z[k]) for k in range(S)]
            normed = []
            for grp in range(G):
                blk = y[grp * gs:(grp + 1) * gs]
                r = 1 / math.sqrt(sum(v * v for v in blk) / gs + 1e-5)
                normed += [v * r for v in blk]
            y = [normed[k] * g["norm.weight"][k] for k in range(S)]
            if c.norm_before_gate:
                y = [y[k] * silu(z[k]) for k in range(S)]
        y = [silu(z0[k]) * x0[k] for k in range(M)] + y
        out.append(_linear(y, g["out_proj.weight"], g.get("out_proj.bias")))
    return out


def naive_mamba_s4d(sd: dict, u: list, c: MambaS4DConfig) -> list:
    g = {k: v.tolist() for k, v in sd.items()}
    di, N = c.width, c.d_state
    proj = [_linear(ut, g["in_proj.weight"], g.get("in_proj.bias")) for ut in u]
    x = _conv([p[:di] for p in proj], [row[0] for row in g["conv1d.weight"]], g.get("conv1d.bias"))
    h = [[0.0] * N for _ in range(di)]
    out = []
    for t, p in enumerate(proj):
        y = []
        for k in range(di):
            delta = softplus(g["dt_bias"][k])
            for n in range(N):
                h[k][n] = math.exp(-delta * math.exp(g["A_log"][k][n])) * h[k][n] + delta * g["B"][k][n] * x[t][k]
            yk = sum(g["C"][k][n] * h[k][n] for n in range(N)) + g["D"][k] * x[t][k]
            y.append(yk * silu(p[di + k]))
        out.append(_linear(y, g["out_proj.weight"], g.get("out_proj.bias")))
    return out


def _random_sd(config, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64) * 0.5 for k, v in config.zeros().items()}
    sd["A_log"] = sd["A_log"] - 1.0  # moderate decay
    return sd


MAMBA2_CONFIGS = [
    Mamba2Config(d_model=8, d_state=3, headdim=4, ngroups=1, rmsnorm=False),
    Mamba2Config(d_model=8, d_state=3, headdim=2, ngroups=2, rmsnorm=True),
    Mamba2Config(d_model=6, d_state=2, headdim=2, ngroups=3, rmsnorm=True, norm_before_gate=True, d_conv=3),
    Mamba2Config(d_model=6, d_state=4, expand=2, headdim=4, d_ssm=8, ngroups=2, rmsnorm=False, D_has_hdim=True),
    Mamba2Config(d_model=5, d_state=2, d_conv=2, bias=False, conv_bias=False, rmsnorm=True),
]


@pytest.mark.parametrize("config", MAMBA2_CONFIGS, ids=lambda c: f"G{c.ngroups}-H{c.nheads}-rms{int(c.rmsnorm)}")
def test_reference_mamba2_matches_naive_loop(config):
    sd = _random_sd(config, seed=MAMBA2_CONFIGS.index(config))
    u = torch.randn(2, 7, config.d_model, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = KINDS["mamba2"].forward(sd, u, config)
    want = torch.tensor([naive_mamba2(sd, seq.tolist(), config) for seq in u], dtype=torch.float64)
    err = (got - want).abs().max().item()
    assert err < 1e-12, f"reference Mamba2 vs naive loop: max abs diff {err:.3e}"


@pytest.mark.parametrize("config", [MambaS4DConfig(d_model=5, d_state=3), MambaS4DConfig(d_model=4, d_state=1,
                                    d_inner=9, d_conv=2, bias=False)], ids=["N3", "N1-wide"])
def test_reference_mamba_s4d_matches_naive_loop(config):
    sd = _random_sd(config, seed=7)
    u = torch.randn(2, 6, config.d_model, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    got = KINDS["mamba-s4d"].forward(sd, u, config)
    want = torch.tensor([naive_mamba_s4d(sd, seq.tolist(), config) for seq in u], dtype=torch.float64)
    err = (got - want).abs().max().item()
    assert err < 1e-12, f"reference Mamba-S4D vs naive loop: max abs diff {err:.3e}"


@given(d_model=st.integers(2, 6), d_state=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_reference_mamba2_single_head_matches_naive_loop_property(d_model, d_state, seed):
    config = Mamba2Config(d_model=d_model, d_state=d_state)
    sd = _random_sd(config, seed)
    u = torch.randn(1, 5, d_model, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    got = KINDS["mamba2"].forward(sd, u, config)
    want = torch.tensor([naive_mamba2(sd, u[0].tolist(), config)], dtype=torch.float64)
    assert (got - want).abs().max().item() < 1e-12


def test_mamba_s4d_module_has_config_names_and_loads_strict():
    config = MambaS4DConfig(d_model=6, d_state=2)
    m = MambaS4D(**config.arguments())
    sd = _random_sd(config, 3)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == {k: tuple(v.shape) for k, v in sd.items()}
    m.load_state_dict(sd, strict=True)
    u = torch.randn(2, 5, 6, dtype=torch.float32)
    with torch.no_grad():
        got = m(u)
    want = KINDS["mamba-s4d"].forward({k: v.float() for k, v in sd.items()}, u, config)
    assert (got - want).abs().max().item() < 1e-6


def test_mamba2_config_rejects_bad_shapes():
    from common.errors import RequirementError

    with pytest.raises(RequirementError, match="headdim to divide d_ssm"):
        Mamba2Config(d_model=6, d_state=2, headdim=4)
    with pytest.raises(RequirementError, match="ngroups to divide"):
        Mamba2Config(d_model=6, d_state=2, headdim=2, ngroups=2)
    with pytest.raises(RequirementError, match="d_conv >= 2"):
        Mamba2Config(d_model=6, d_state=2, d_conv=1)
