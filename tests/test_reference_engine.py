"""The reference engine against two independent interpreters.

1. A naive per-element loop written from the notes' equations for ``mamba_ssm.Mamba`` (random weights).
2. Theorem 2's exact symbolic read-out (``symbolic.theorem2``), evaluated for a hand-made sequence.
"""
import math

import numpy as np
import pytest
import sympy as sp
import torch

from constructions import mqar_mamba
from constructions.layout import MambaConfig
from symbolic import theorem2 as th
from verify.blocks.mamba import mamba_forward


def _naive_mamba(sd, x, cfg):
    """mamba_ssm.Mamba from its documented semantics, one scalar at a time (numpy float64)."""
    sd = {k: v.numpy() for k, v in sd.items()}
    L, di, N, r, K = x.shape[0], cfg.d_inner, cfg.d_state, cfg.rank, cfg.d_conv
    silu = lambda v: v / (1 + np.exp(-v))  # noqa: E731
    softplus = lambda v: v if v > 20 else math.log1p(math.exp(v))  # noqa: E731
    xz = x @ sd["in_proj.weight"].T + sd["in_proj.bias"]
    xs, z = xz[:, :di], xz[:, di:]
    u = np.zeros((L, di))
    for t in range(L):
        for c in range(di):
            acc = sd["conv1d.bias"][c]
            for k in range(K):  # tap K-1 multiplies x_t, tap K-1-j multiplies x_{t-j}
                if t - (K - 1 - k) >= 0:
                    acc += sd["conv1d.weight"][c, 0, k] * xs[t - (K - 1 - k), c]
            u[t, c] = silu(acc)
    A = -np.exp(sd["A_log"])
    h = np.zeros((di, N))
    out = np.zeros((L, cfg.d_model))
    for t in range(L):
        dbl = sd["x_proj.weight"] @ u[t]
        dt_low, B, C = dbl[:r], dbl[r:r + N], dbl[r + N:]
        y = np.zeros(di)
        for c in range(di):
            delta = softplus(sd["dt_proj.weight"][c] @ dt_low + sd["dt_proj.bias"][c])
            for n in range(N):
                h[c, n] = math.exp(delta * A[c, n]) * h[c, n] + delta * B[n] * u[t, c]
            y[c] = (h[c] @ C + sd["D"][c] * u[t, c]) * silu(z[t, c])
        out[t] = sd["out_proj.weight"] @ y + sd["out_proj.bias"]
    return out


@pytest.mark.parametrize("d_conv, d_state, expand", [(2, 3, 1), (4, 5, 2), (3, 1, 1)])
def test_reference_matches_naive_loop_on_random_weights(d_conv, d_state, expand):
    g = torch.Generator().manual_seed(d_conv * 10 + d_state)
    cfg = MambaConfig(d_model=6, d_state=d_state, d_conv=d_conv, expand=expand)
    sd = {k: torch.randn(v.shape, generator=g, dtype=torch.float64) * 0.5 for k, v in cfg.zeros().items()}
    x = torch.randn(1, 9, 6, generator=g, dtype=torch.float64)
    ours = mamba_forward(sd, x, cfg)[0].numpy()
    assert np.abs(ours - _naive_mamba(sd, x[0].numpy(), cfg)).max() < 1e-12


def test_reference_logits_equal_theorem2_symbolic_readout():
    """kappa=2, |V|=3, T=8: k0 v1 k1 v2 noise k1 k0 noise. Queries at t=5 (after noise) and t=6 (after key 1)."""
    con = mqar_mamba.build(2, 3, "one-hot", seq_len=8)
    tok = con.tokens
    seq = torch.tensor([[0, tok.values_start + 1, 1, tok.values_start + 2, tok.noise_start, 1, 0, tok.noise_start]])
    x = con.embedding[seq]
    logits = (mamba_forward(con.mixer, x, con.config) @ con.readout.T)[0]

    c, T = th.DEFAULT, 8
    rate = c.delta * c.decay_budget / (c.delta * T)  # delta * |A|
    decay = lambda steps: sp.exp(-rate * steps)  # noqa: E731
    base = c.gate * c.delta * c.s_prev * c.onehot_value
    expect5 = {2: base * c.s_cur * decay(5 - 3)}  # query key 1 at t=5: its value (2) written at t=3
    expect6 = {1: base * c.s_cur * decay(6 - 1), 2: base * c.s_prev * decay(6 - 3)}  # key 0 after key 1
    for t, expect in ((5, expect5), (6, expect6)):
        want = torch.tensor([float(expect.get(j, 0)) for j in range(3)], dtype=torch.float64)
        assert torch.allclose(logits[t], want, rtol=1e-12, atol=1e-13), (t, logits[t], want)


def test_readout_in_chunks_scores_like_one_block(monkeypatch):
    """``_recall`` splits the logits into chunks of READOUT_CHUNK; a tiny chunk must give the same counts and margin."""
    import verify.checks as checks
    from constructions import mqar_mamba
    from verify.checks import check_mqar
    from verify.engines import make_engine
    from verify.tasks.mqar import MQARConfig

    con = mqar_mamba.build(4, 16, "one-hot", seq_len=24)
    task = MQARConfig(4, 16, 24, num_examples=40)
    whole = check_mqar(con, task, make_engine("reference", "float64"), batch_size=16)
    monkeypatch.setattr(checks, "READOUT_CHUNK", 3 * con.readout.shape[0])  # 3 rows per chunk
    chunked = check_mqar(con, task, make_engine("reference", "float64"), batch_size=16)
    queries = 160 + 4 * (16 + 8) + 4 + 16  # 40 x 4 sampled; constructed: 4 rows packed (16), 4 alternating (8),
    # a decay row through noise (4 queries) and one through queries (16)
    assert (chunked.queries, chunked.correct) == (whole.queries, whole.correct) == (queries, queries)
    assert chunked.min_margin == whole.min_margin


def test_tfloat32_is_a_gpu_precision_only():
    import pytest

    from common.errors import RequirementError
    from verify.engines import make_engine

    with pytest.raises(RequirementError, match="tfloat32.*mamba_ssm engine"):
        make_engine("reference", "tfloat32")
