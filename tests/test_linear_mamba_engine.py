"""The simplified linear Mamba block in the reference engine, against a naive loop written from the paper's notes,
and the designed circuit: analysis block == real Mamba block (reference engine), decay as derived."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from constructions import hash_recall
from common.errors import RequirementError
from constructions.layout import HEAD_PATTERNS, LinearMambaConfig
from verify.engines import linear, make_engine
from verify.engines.linear import layer_params, linear_mamba_forward


def naive_layer(p, u, cfg):
    """Loops over t, tau and heads; u (L, d_model) float64 numpy."""
    L, H, P, n = u.shape[0], cfg.n_heads, cfg.head_dim, cfg.d_state
    p = {k: v.numpy() for k, v in p.items()}
    z = u @ p["in_proj.weight"].T
    K = cfg.d_conv
    x = np.zeros_like(z)
    for t in range(L):
        for j in range(K):
            if t - j >= 0:
                x[t] += p["conv1d.weight"][:, 0, K - 1 - j] * z[t - j]
    if cfg.silu:  # Mamba-1's conv path: bias, then SiLU
        x = x + p["conv1d.bias"]
        x = x / (1 + np.exp(-x))
    y = np.zeros_like(x)
    if H == 1:
        B, C, X = x @ p["x_proj.weight"][:n].T, x @ p["x_proj.weight"][n:].T, x
        for t in range(L):
            for tau in range(t + 1):
                y[t] += (C[t] @ B[tau]) * X[tau]
    else:
        pat = cfg.head_pattern
        Bh = (x @ p["B_proj.weight"].T).reshape(L, -1, n)
        Ch = (x @ p["C_proj.weight"].T).reshape(L, -1, n)
        for h in range(H):
            b = Bh[:, h if pat in ("MHA", "MKA") else 0]
            c = Ch[:, h if pat in ("MHA", "MQA") else 0]
            if pat in ("MHA", "MVA"):
                Xh = x @ p["W_contract"][:, h, :].T
            else:
                Xh = sum(p["W_contract"][:, g] * x[:, g * P:(g + 1) * P] for g in range(H))
            for t in range(L):
                yh = sum((c[t] @ b[tau]) * Xh[tau] for tau in range(t + 1))
                y[t] += p["W_heads"][:, :, h] @ yh
    y = y + x * p["D"]
    if cfg.gate:  # Mamba-1's gate: y * silu(z), z from the block's input
        zg = u @ p["z_proj.weight"].T
        y = y * zg / (1 + np.exp(-zg))
    return y @ p["out_proj.weight"].T


@pytest.mark.parametrize("pattern", HEAD_PATTERNS)
@pytest.mark.parametrize("heads", [1, 2, 4])
@pytest.mark.parametrize("layers", [1, 2])
def test_engine_matches_naive(pattern, heads, layers):
    cfg = LinearMambaConfig(8, 3, d_conv=3, n_heads=heads, head_pattern=pattern, n_layers=layers, residual=layers > 1)
    g = torch.Generator().manual_seed(heads * 10 + layers)
    params = {k: 0.4 * torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in cfg.zeros().items()}
    u = torch.randn(2, 9, 8, generator=g, dtype=torch.float64)
    out = linear_mamba_forward(params, u, cfg)
    rec = linear_mamba_forward(params, u, cfg, mode="recurrent")
    for b in range(2):
        h = u[b].numpy()
        for l in range(layers):
            y = naive_layer(layer_params(params, l), h, cfg)
            h = h + y if cfg.residual else y
        np.testing.assert_allclose(out[b].numpy(), h, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out, rec, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("silu, gate", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("heads", [1, 2])
def test_silu_and_gate_variants_match_naive(silu, gate, heads):
    """The ablation's rows A (silu and gate) and B (silu): the engine against the loop, both forms."""
    cfg = LinearMambaConfig(8, 3, d_conv=4, n_heads=heads, silu=silu, gate=gate, n_layers=2, residual=True)
    g = torch.Generator().manual_seed(7)
    params = {k: 0.4 * torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in cfg.zeros().items()}
    assert ("layers.0.conv1d.bias" in params, "layers.1.z_proj.weight" in params) == (silu, gate)
    u = torch.randn(2, 9, 8, generator=g, dtype=torch.float64)
    out = linear_mamba_forward(params, u, cfg)
    for b in range(2):
        h = u[b].numpy()
        for l in range(2):
            h = h + naive_layer(layer_params(params, l), h, cfg)
        np.testing.assert_allclose(out[b].numpy(), h, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out, linear_mamba_forward(params, u, cfg, mode="recurrent"), rtol=1e-10, atol=1e-10)
    plain = LinearMambaConfig(8, 3, d_conv=4, n_heads=heads, n_layers=2, residual=True)
    assert not torch.allclose(out, linear_mamba_forward(params, u, plain))  # the options change the model


def test_row_a_is_mamba1_without_delta_and_decay():
    """Row A (silu and gate) is mamba_ssm.Mamba's reference forward with Delta = 1 (dt_proj 0, bias softplus^-1(1)),
    A = 0 (A_log = -inf: no decay), D = 0, in_proj = [in_proj; z_proj], x_proj = [0 (dt rows); S_B; S_C]."""
    from constructions.layout import MambaConfig
    from verify.blocks.mamba import mamba_forward

    d, n, K = 8, 3, 4
    cfg = LinearMambaConfig(d, n, d_conv=K, silu=True, gate=True)
    g = torch.Generator().manual_seed(3)
    p = {k[len("layers.0."):]: 0.4 * torch.randn(v.shape, generator=g, dtype=torch.float64)
         for k, v in cfg.zeros().items()}
    p["D"].zero_()
    m = MambaConfig(d_model=d, d_state=n, d_conv=K, expand=2, bias=False)
    di, r = m.d_inner, m.rank
    mp = {"in_proj.weight": torch.cat([p["in_proj.weight"], p["z_proj.weight"]]),
          "conv1d.weight": p["conv1d.weight"], "conv1d.bias": p["conv1d.bias"],
          "x_proj.weight": torch.cat([torch.zeros(r, di, dtype=torch.float64), p["x_proj.weight"]]),
          "dt_proj.weight": torch.zeros(di, r, dtype=torch.float64),
          "dt_proj.bias": torch.full((di,), math.log(math.e - 1), dtype=torch.float64),
          "A_log": torch.full((di, n), -math.inf, dtype=torch.float64), "D": p["D"],
          "out_proj.weight": p["out_proj.weight"]}
    u = torch.randn(2, 9, d, generator=g, dtype=torch.float64)
    torch.testing.assert_close(linear_mamba_forward({f"layers.0.{k}": v for k, v in p.items()}, u, cfg),
                               mamba_forward(mp, u, m), rtol=1e-10, atol=1e-10)


def test_stacked_models_equal_separate_calls():
    """Leading model dimensions (how the grid vectorises) compute each model exactly as a separate call."""
    cfg = LinearMambaConfig(6, 4)
    g = torch.Generator().manual_seed(0)
    ps = [{k: torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in cfg.zeros().items()} for _ in range(3)]
    u = torch.randn(3, 2, 5, 6, generator=g, dtype=torch.float64)
    stacked = {k: torch.stack([p[k] for p in ps]) for k in ps[0]}
    out = linear_mamba_forward(stacked, u, cfg)
    for i in range(3):
        torch.testing.assert_close(out[i], linear_mamba_forward(ps[i], u[i], cfg))


def test_config_requirements():
    with pytest.raises(RequirementError, match="head_pattern"):
        LinearMambaConfig(8, 2, n_heads=2, head_pattern="GQA")
    with pytest.raises(RequirementError, match="n_heads dividing"):
        LinearMambaConfig(8, 2, n_heads=3)


def test_designed_analysis_logits_are_the_hash_formula():
    """logit_u(t) = sum_{tau<=t} <F e_{x_t}, F e_{x_{tau-1}}> <e_u, e_{x_tau}> (x_{-1} = padding)."""
    con = hash_recall.build_analysis(32, 16, 4, seed=2)
    E, F = con.embedding.numpy(), con.hashes[0]
    tok = np.array([[3, 9, 4, 17, 3, 30, 9, 1]])
    y = make_engine("reference").hidden(con, torch.from_numpy(tok))[0].numpy()
    for t in range(tok.shape[1]):
        expect = sum((F @ E[tok[0, t]]) @ (F @ E[tok[0, tau - 1]]) * E[tok[0, tau]] for tau in range(1, t + 1))
        np.testing.assert_allclose(y[t] @ E.T, np.asarray(expect) @ E.T if t else np.zeros(32), atol=1e-12)
    assert np.allclose(F @ F.T, 16 / 4 * np.eye(4))


def test_real_block_equals_analysis_block():
    """silu(y) - silu(-y) = y makes the circuit exact in mamba_ssm.Mamba (reference engine), gate and Delta divided
    out; float32 agrees to float32 precision."""
    tok = torch.randint(0, 64, (4, 24), generator=torch.Generator().manual_seed(1))
    a = hash_recall.build_analysis(64, 16, 8, seed=5)
    b = hash_recall.build_mamba_block(64, 16, 8, seed=5, gate_pre=2.0, delta=0.5)
    ya, yb = make_engine("reference").hidden(a, tok), make_engine("reference").hidden(b, tok)
    torch.testing.assert_close(ya, yb, rtol=0, atol=1e-12)
    yb32 = make_engine("reference", "float32").hidden(b, tok)
    torch.testing.assert_close(yb32.double(), ya, rtol=0, atol=1e-5)


def test_real_block_decay_as_derived():
    """With A = -exp(A_log) each write is weighted by rho^(t - tau), rho = exp(-delta exp(A_log))."""
    a_log, delta = -2.0, 1.0
    b = hash_recall.build_mamba_block(32, 8, 8, seed=0, a_log=a_log, delta=delta)
    E, F = b.embedding.numpy(), b.hashes[0]
    rho = math.exp(-delta * math.exp(a_log))
    tok = np.array([[5, 7, 9, 5, 2, 11]])
    y = make_engine("reference").hidden(b, torch.from_numpy(tok))[0].numpy()
    for t in range(1, 6):
        expect = sum(rho ** (t - tau) * (F @ E[tok[0, t]]) @ (F @ E[tok[0, tau - 1]]) * E[tok[0, tau]]
                     for tau in range(1, t + 1))
        np.testing.assert_allclose(y[t], expect, atol=1e-12)


def test_hash_recall_requirements():
    with pytest.raises(RequirementError, match="N <= D"):
        hash_recall.build_analysis(64, 8, 16)
    with pytest.raises(RequirementError, match="V >= 3"):
        hash_recall.build_analysis(2, 8, 4)
    with pytest.raises(RequirementError, match="d_conv >= 2"):
        hash_recall.build_mamba_block(64, 8, 4, d_conv=1)


@pytest.mark.parametrize("pattern", HEAD_PATTERNS)
@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("L, chunk", [(9, 4), (12, 4), (13, 5), (11, 5), (9, 9), (9, 64), (1, 4)])
def test_chunked_form_is_the_attention_form(pattern, heads, L, chunk, monkeypatch):
    """The training forward (chunks of ``CHUNK`` tokens, the state between them) against the attention and recurrent
    forms: whole chunks, a ragged last chunk, one chunk, L below the chunk; outputs and gradients in float64."""
    monkeypatch.setattr(linear, "CHUNK", chunk)
    cfg = LinearMambaConfig(8, 3, d_conv=3, n_heads=heads, head_pattern=pattern, n_layers=2, residual=True)
    g = torch.Generator().manual_seed(L * 100 + chunk)
    params = {k: (0.4 * torch.randn(v.shape, generator=g, dtype=torch.float64)).requires_grad_()
              for k, v in cfg.zeros().items()}
    u = torch.randn(2, L, 8, generator=g, dtype=torch.float64)
    att = linear_mamba_forward(params, u, cfg)
    chk = linear_mamba_forward(params, u, cfg, mode="chunked")
    torch.testing.assert_close(chk, att, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(chk, linear_mamba_forward(params, u, cfg, mode="recurrent"), rtol=1e-10, atol=1e-10)
    w = torch.randn(att.shape, generator=g, dtype=torch.float64)
    ga = torch.autograd.grad((att * w).sum(), list(params.values()))
    gc = torch.autograd.grad((chk * w).sum(), list(params.values()))
    for a, c in zip(ga, gc):
        torch.testing.assert_close(c, a, rtol=1e-10, atol=1e-10)


def test_chunked_form_carries_the_state_across_chunks(monkeypatch):
    """A fact stated in the first chunk is read in the last: dropping the state between chunks changes the output
    (the test above would pass for a form that only kept chunk-local sums if the inputs never crossed chunks)."""
    monkeypatch.setattr(linear, "CHUNK", 3)
    cfg = LinearMambaConfig(8, 3, d_conv=2)
    g = torch.Generator().manual_seed(3)
    params = {k: 0.4 * torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in cfg.zeros().items()}
    u = torch.zeros(1, 9, 8, dtype=torch.float64)
    u[0, 0] = torch.randn(8, generator=g, dtype=torch.float64)
    u[0, 8] = torch.randn(8, generator=g, dtype=torch.float64)
    out = linear_mamba_forward(params, u, cfg, mode="chunked")
    alone = u.clone()
    alone[0, 0] = 0
    assert (out[0, 8] - linear_mamba_forward(params, alone, cfg, mode="chunked")[0, 8]).abs().max() > 1e-3
    torch.testing.assert_close(out, linear_mamba_forward(params, u, cfg), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("L", [1, 64, linear.CHUNK])
def test_chunked_form_is_the_attention_forms_computation_up_to_one_chunk(L):
    """At L <= CHUNK the training forward is the attention form's very computation (bitwise, float32): the grids of
    up to 128 tokens train as they did in the attention form."""
    cfg = LinearMambaConfig(16, 4, d_conv=2, n_heads=2, n_layers=2, residual=True)
    g = torch.Generator().manual_seed(L)
    params = {k: 0.4 * torch.randn(v.shape, generator=g) for k, v in cfg.zeros().items()}
    u = torch.randn(3, L, 16, generator=g)
    assert torch.equal(linear_mamba_forward(params, u, cfg, mode="chunked"), linear_mamba_forward(params, u, cfg))


def test_forward_names_the_modes():
    cfg = LinearMambaConfig(8, 3)
    with pytest.raises(ValueError, match="'attention', 'chunked' or 'recurrent'"):
        linear_mamba_forward(cfg.zeros(), torch.zeros(1, 4, 8, dtype=torch.float64), cfg, mode="scan")
