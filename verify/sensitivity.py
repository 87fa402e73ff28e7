"""Lemmas 1-2 measured: the sensitivity dh_t/dx_j by torch autograd against ``symbolic.sensitivity``'s closed form,
and the KEEP n-TH memory measurements (our S6 construction keeps x_n; an S4D layer of the same size cannot). The
measurement functions; ``python -m experiments.sensitivity`` runs them into ``results/keep_nth_memory.json``.

* ``s6_construction_sensitivity``: |d logit[x_n]_t / d u_n| (u_n = the model input at position n) of Corollary 2's
  construction for every t up to T, next to the most any other input position moves that logit; Lemma 2's constant
  c and the retention bound e^{-c}.
* ``s4d_sensitivity``: the paper's S4D(+PE) model (embedding -> S4D with Delta = 1, B = C = 1 -> linear): dh_t/du_n
  by autograd against Lemma 1's B exp(-lam (t - n)), for several lam.
* ``s4d_least_squares``: the best an S4D(+PE) layer can do on KEEP n-TH with a given decay spectrum: its whole state
  (d N features per position) with a least-squares (ridge) linear readout fitted on fresh data, exact-argmax
  accuracy on test data.
"""
from __future__ import annotations

import math

import numpy as np
import sympy as sp
import torch
import torch.nn.functional as F

from constructions import keep_nth
from constructions.layout import embed
from symbolic import corollary2 as c2
from verify.blocks.mamba import mamba_forward
from verify.engines.scan import selective_scan_ref
from verify.tasks.keep_nth import KeepNthConfig, generate

# ---------------------------------------------------------------------------------------------------------------
# Lemma 1: closed form (sympy expressions, evaluated in numpy) and autograd through the reference scan
# ---------------------------------------------------------------------------------------------------------------


def lemma1_numeric(x: np.ndarray, lam: float, delta_expr, b_expr) -> np.ndarray:
    """J[t-1, j-1] = Lemma 1's dh_t/dx_j (eq. 38) for Delta(v) = delta_expr(v), B(v) = b_expr(v) (sympy lambdas)."""
    v = sp.Symbol("v", real=True)
    f = lambda e: sp.lambdify(v, e, "numpy")  # noqa: E731
    D, dD, Bn = f(delta_expr(v)), f(sp.diff(delta_expr(v), v)), f(b_expr(v))
    dW = f(sp.diff(b_expr(v) * delta_expr(v) * v, v))
    x = np.asarray(x, dtype=np.float64)
    T = len(x)
    d = np.broadcast_to(D(x), (T,)).astype(np.float64)
    cum = np.concatenate([[0.0], np.cumsum(d)])  # cum[t] = sum_{r <= t} Delta_r
    w = np.broadcast_to(Bn(x), (T,)) * d * x  # B_s Delta_s x_s
    J = np.zeros((T, T))
    for j in range(1, T + 1):
        s = np.arange(1, j)
        prefix = np.sum(np.exp(-lam * (cum[j] - cum[s])) * w[s - 1])
        c = float(np.broadcast_to(dW(x[j - 1]), ())) - lam * float(np.broadcast_to(dD(x[j - 1]), ())) * prefix
        t = np.arange(j, T + 1)
        J[t - 1, j - 1] = np.exp(-lam * (cum[t] - cum[j])) * c
    return J


def autograd_jacobian(x: np.ndarray, lam: float, a: float, b: float, beta1: float, beta0: float,
                      s4d: bool = False) -> np.ndarray:
    """dh_t/dx_j by torch autograd through ``selective_scan_ref`` (one channel, N = 1, C = 1 so y_t = h_t).

    S6: Delta_t = softplus(a x_t + b), B_t = beta1 x_t + beta0. S4D: Delta = 1, B = beta0."""
    xt = torch.tensor(np.asarray(x, dtype=np.float64))
    L = xt.numel()
    A = torch.tensor([[-lam]], dtype=torch.float64)

    def h(xv):
        u = xv[None, None, :]
        if s4d:
            delta, B, soft = torch.ones_like(u), torch.full((1, 1, L), beta0, dtype=torch.float64), False
        else:
            delta, B, soft = a * u + b, beta1 * u + beta0, True
        return selective_scan_ref(u, delta, A, B, torch.ones(1, 1, L, dtype=torch.float64), delta_softplus=soft)[0, 0]

    return torch.autograd.functional.jacobian(h, xt).numpy()


# ---------------------------------------------------------------------------------------------------------------
# KEEP n-TH: Corollary 2's construction vs the paper's S4D(+PE) model
# ---------------------------------------------------------------------------------------------------------------


def _state_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The scan with C = 1, no D, no gate: returns the state h_t itself (N = 1)."""
    return selective_scan_ref(u, delta, A, B, torch.ones_like(C), None, None, delta_bias, delta_softplus)


def s6_construction_sensitivity(vocab: int = 128, n: int = 5, T: int = 10_000, ts=None, seed: int = 0) -> dict:
    """dh_t/du_j of Corollary 2's construction (reference engine, float64): the state of x_n's value channel.

    Forward mode (one JVP along u_n's value coordinate) gives dh_t/du_n for every t; one backward pass from h_T
    gives dh_T/du_j for every j."""
    con = keep_nth.build(vocab, n)
    tokens, _ = generate(KeepNthConfig(vocab, n, T, 1), seed)
    target = int(tokens[0, n - 1])
    params = {k: v.to(torch.float64) for k, v in con.mixer.items()}
    x = embed(con, con.embedding, torch.from_numpy(tokens)).detach()
    f = lambda inp: mamba_forward(params, inp, con.config, scan=_state_scan)[0, :, target]  # noqa: E731
    tangent = torch.zeros_like(x)
    tangent[0, n - 1, target] = 1.0
    _, dh_du_n = torch.func.jvp(f, (x,), (tangent,))
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(xr)[T - 1], xr)
    per_j = g[0].norm(dim=1)
    ts = sorted({t for t in (ts or [n, n + 1, n + 10, 100, 1000, T]) if n <= t <= T})
    c = float(sp.N(c2.lemma2_constant(c2.DEFAULT), 30))
    at_n = float(dh_du_n[n - 1])
    return {"vocab": vocab, "n": n, "T": T, "seed": seed,
            "dh_t_du_n": [{"t": t, "value": float(dh_du_n[t - 1])} for t in ts],
            "min_over_t_ge_n_ratio_to_t_eq_n": float((dh_du_n[n - 1:] / at_n).min()),
            "dh_T_du_n_norm": float(per_j[n - 1]),
            "max_j_ne_n_dh_T_du_j_norm": float(torch.cat([per_j[:n - 1], per_j[n:]]).max()),
            "lemma2_c": c, "retention_lower_bound": math.exp(-c),
            "note": "h = state of x_n's value channel; u_j = model input at position j"}


def s4d_sensitivity(lams=(1.0, 0.1, 0.01), d: int = 2, n: int = 5, T: int = 1000, seed: int = 0) -> list[dict]:
    """dh_t/du_n of the paper's S4D (Delta = 1, B = C = 1, A = -lam) by forward-mode autograd, for every t, against
    Lemma 1's exp(-lam (t - n)); the channels are independent, so d = 2 shows it."""
    rng = np.random.default_rng(seed)
    out = []
    for lam in lams:
        u = torch.tensor(rng.standard_normal((1, d, T)))
        f = lambda v: selective_scan_ref(v, torch.ones(1, d, T, dtype=torch.float64),  # noqa: E731
                                         torch.full((d, 1), -lam, dtype=torch.float64),
                                         torch.ones(d, 1, dtype=torch.float64), torch.ones(d, 1, dtype=torch.float64))[0, 0]
        tangent = torch.zeros_like(u)
        tangent[0, 0, n - 1] = 1.0
        _, dh = torch.func.jvp(f, (u,), (tangent,))
        t = torch.arange(n, T + 1)
        pred = torch.exp(-lam * (t - n).double())
        meas = dh[n - 1:]
        keep = pred > 1e-300
        dev = float(((meas[keep] - pred[keep]).abs() / pred[keep]).max())
        slope = float(np.polyfit(t[keep].numpy(), np.log(np.maximum(meas[keep].numpy(), 1e-300)), 1)[0])
        ts = sorted({n, n + 1, n + 10, n + 100, T})
        out.append({"lam": lam, "points": [{"t": s, "measured": float(dh[s - 1]), "lemma1": math.exp(-lam * (s - n))}
                                           for s in ts],
                    "max_relative_deviation": dev, "fitted_log_slope": slope, "lemma1_log_slope": -lam})
    return out


def _s4d_features(tokens: np.ndarray, lams: np.ndarray, vocab: int) -> torch.Tensor:
    """Full S4D(+PE) state per position: (S, L, (vocab + 1) * N) + a constant 1, float64."""
    S, L = tokens.shape
    u = F.one_hot(torch.from_numpy(tokens), vocab + 1).double()  # (S, L, vocab + 1); last coordinate replaced:
    u[..., vocab] = torch.arange(1, L + 1, dtype=torch.float64)  # "+PE", raw position
    # h_t[c, k] = sum_{s <= t} exp(-lam_k (t - s)) u_s[c]: a causal convolution with kernel exp(-lam_k tau)
    tau = torch.arange(L, dtype=torch.float64)
    feats = []
    for lam in lams:
        kern = torch.exp(-float(lam) * tau)  # (L,)
        K = torch.tril(kern[(torch.arange(L)[:, None] - torch.arange(L)[None, :]).clamp(min=0)])  # (L, L)
        feats.append(torch.einsum("ts,bsc->btc", K, u))
    return torch.cat(feats + [torch.ones(S, L, 1, dtype=torch.float64)], dim=-1)


def s4d_least_squares(T: int, lams: np.ndarray, vocab: int = 128, n: int = 5, train: int = 2000, test: int = 500,
                      seed: int = 0, ridge: float = 1e-6) -> float:
    """Exact-argmax accuracy of the best linear readout (ridge least squares) of the S4D(+PE) state on KEEP n-TH."""
    p = (vocab + 1) * len(lams) + 1
    G = torch.zeros(p, p, dtype=torch.float64)
    R = torch.zeros(p, vocab, dtype=torch.float64)
    cfg = KeepNthConfig(vocab, n, T, train)
    tok, _ = generate(cfg, seed)
    for i in range(0, train, 250):
        X = _s4d_features(tok[i:i + 250], lams, vocab)[:, n - 1:].reshape(-1, p)
        Y = F.one_hot(torch.from_numpy(np.repeat(tok[i:i + 250, n - 1], T - n + 1)), vocab).double()
        G += X.T @ X
        R += X.T @ Y
    G += ridge * torch.trace(G) / p * torch.eye(p, dtype=torch.float64)
    W = torch.linalg.solve(G, R)
    tok_te, _ = generate(KeepNthConfig(vocab, n, T, test), seed + 1)
    X = _s4d_features(tok_te, lams, vocab)[:, n - 1:].reshape(-1, p)
    pred = (X @ W).argmax(dim=1).numpy()
    return float(np.mean(pred == np.repeat(tok_te[:, n - 1], T - n + 1)))
