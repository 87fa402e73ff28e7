"""The designed ("hand-set") hashing circuit of Koren et al. 2026, in the analysis model and in ``mamba_ssm.Mamba``.

Claim (the paper's Theorem 2 as the reviews describe it, and its law): with a JL token embedding E (random unit
columns), a key/query hash F with F F^T = (D/N) I_N and the value read back through the tied embedding, one layer
solves MQAR with high probability at D, N = O(log V) scale, with per-query accuracy ~ Phi(1/sigma - m_V)
(``symbolic.recall_scaling``). The claim is probabilistic: checks compare the measured accuracy with the law, and ask
for exact recall only where ``symbolic.recall_scaling``'s rigorous bound or certificate says it must hold.

**Analysis model** (``build_analysis``; ``LinearMambaConfig``, expand 2, d_conv 2; the paper's §2.5 table):

==========  =====================================================================================================
E (V x D)   rows e_x: standard Gaussian rows normalised to unit norm (readout tied: logits = E y)
P_in        [I_D ; I_D] (duplicate)
conv        channels 0..D-1: (prev, cur) = (1, 0); channels D..2D-1: (0, 1)  ->  x_t = [u_{t-1}; u_t]
S_B, S_C    [F, 0] and [0, F]: key = F u_{t-1}, query = F u_t; F = sqrt(D/N) (first N rows of a Haar orthogonal Q)
P_out       [0, I_D]; D-skip 0
==========  =====================================================================================================

so logit_u(t) = sum_{tau <= t} <F e_{x_t}, F e_{x_{tau-1}}> <e_u, e_{x_tau}>.

**Real block** (``build_mamba_block``; ``mamba_ssm.Mamba(d_model=D, d_state=N, d_conv=2, expand=4, bias=True)``).
The paper never put its circuit into the real block. What the real block adds, and what we do about it:

* SiLU after the conv. ``silu(y) - silu(-y) = y`` for every y (``symbolic.recall_scaling`` obligation), so we give
  the conv four groups of D channels, ``prev+ = silu(u_{t-1})``, ``prev- = silu(-u_{t-1})``, ``cur+``, ``cur-``
  (in_proj x rows [I; -I; I; -I]), and take differences in x_proj (B = F (prev+ - prev-) = F u_{t-1}, C likewise) and
  in out_proj. The circuit is then *exact* in the real block; the price is expand 4 instead of 2. Without the pairing
  (expand 2) the even part silu(y) + silu(-y) = y tanh(y/2) ~ y^2/2 adds a token-independent common mode to every key,
  query and value, which changes the law (not used here).
* Gate ``y * silu(z)``: z rows of in_proj are 0 with bias ``gate_pre``, a positive constant scale; out_proj divides it
  out (no change to the argmax, so none to the law).
* softplus Delta: dt_proj weight 0, bias softplus^{-1}(delta): a constant step, which only scales B (divided out).
* A = -exp(A_log): never 0, so every write decays by rho = exp(-delta exp(A_log)) per step, which *does* change the
  law (``symbolic.recall_scaling.decayed_leak``: the fact decays by rho^{t - tau*} and a write at tau weighs
  rho^{t - tau}). ``a_log`` (default -100) makes rho = 1 to float64 precision; larger values show the decayed law.
"""
from __future__ import annotations

import math

import numpy as np
import sympy as sp
import torch

from constructions.errors import require
from constructions.weights import MambaWeights
from constructions.layout import Construction, LinearMambaConfig, MambaConfig
from symbolic.blocks import silu, softplus_inverse

NAME = "hash-recall"
THEOREM = "Recall scaling law (Koren et al. 2026)"
BLOCKS = ("analysis", "mamba")


def _check_sizes(vocab: int, d_model: int, d_state: int) -> None:
    require(d_model >= 2, f"hash-recall needs D >= 2, got D={d_model}")
    require(d_state >= 1, f"hash-recall needs N >= 1, got N={d_state}")
    require(d_state <= d_model, f"hash-recall needs N <= D (F F^T = (D/N) I_N needs N orthonormal rows in R^D), "
                                f"got N={d_state} > D={d_model}")
    require(vocab >= 3, f"hash-recall needs V >= 3 tokens, got V={vocab}")


def draw_codes(vocab: int, d_model: int, d_state: int, seed: int = 0, n_hashes: int = 1):
    """E (V, D) with unit rows (uniform on the sphere) and ``n_hashes`` F's (N, D), F F^T = (D/N) I_N (Haar)."""
    _check_sizes(vocab, d_model, d_state)
    rng = np.random.default_rng(seed)
    E = rng.standard_normal((vocab, d_model))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    Fs = []
    for _ in range(n_hashes):
        G = rng.standard_normal((d_model, d_model))
        # The first N columns of the Q of QR(G) (sign-fixed: Haar) depend only on G's first N columns: reduced QR.
        Q, R = np.linalg.qr(G[:, :d_state])
        Q = Q * np.sign(np.diag(R))[None, :]
        Fs.append(math.sqrt(d_model / d_state) * Q.T)
    return E, Fs


def analysis_layer(F: np.ndarray, d_model: int, out_gain: float = 1.0) -> dict[str, torch.Tensor]:
    """The designed layer's parameters (one head) in ``LinearMambaConfig`` names, without the ``layers.l.`` prefix."""
    Dm, n = d_model, F.shape[0]
    eye = torch.eye(Dm, dtype=torch.float64)
    Ft = torch.from_numpy(np.ascontiguousarray(F)).double()
    conv = torch.zeros(2 * Dm, 1, 2, dtype=torch.float64)
    conv[:Dm, 0, 0] = 1  # previous token
    conv[Dm:, 0, 1] = 1  # current token
    x_proj = torch.zeros(2 * n, 2 * Dm, dtype=torch.float64)
    x_proj[:n, :Dm] = Ft  # B = F u_{t-1}
    x_proj[n:, Dm:] = Ft  # C = F u_t
    out = torch.zeros(Dm, 2 * Dm, dtype=torch.float64)
    out[:, Dm:] = out_gain * eye
    return {"in_proj.weight": torch.cat([eye, eye]), "conv1d.weight": conv, "x_proj.weight": x_proj,
            "D": torch.zeros(2 * Dm, dtype=torch.float64), "out_proj.weight": out}


def build_analysis(vocab: int, d_model: int, d_state: int, seed: int = 0, n_layers: int = 1) -> Construction:
    """The designed circuit in the simplified linear Mamba; ``n_layers`` > 1 stacks independent hashes F_l with the
    residual connection (the paper's multi-layer model), each layer writing 1/Lambda of its retrieval.

    Measured (``verify.recall_grid.multilayer_table``): this naive residual stack does *not* realise
    N_eff = Lambda N. Layer l > 1 reads e_x plus the earlier layers' retrievals, whose norm^2 ~ 1 + n_w/N pollutes its
    keys, queries and values, and the readout sees the residual e_q (logit 1 for the query token itself).
    ``build_parallel`` is the composition the law's N_eff = Lambda N describes."""
    require(n_layers >= 1, f"hash-recall needs n_layers >= 1, got {n_layers}")
    E, Fs = draw_codes(vocab, d_model, d_state, seed, n_hashes=n_layers)
    cfg = LinearMambaConfig(d_model=d_model, d_state=d_state, n_layers=n_layers, residual=n_layers > 1)
    mixer = {}
    for l, F in enumerate(Fs):
        mixer.update({f"layers.{l}.{k}": v for k, v in analysis_layer(F, d_model, 1.0 / n_layers).items()})
    emb = torch.from_numpy(E).double()
    channels = [f"prev[{i}]" for i in range(d_model)] + [f"cur[{i}]" for i in range(d_model)]
    info = {"block": "analysis", "seed": seed, "vocab": vocab, "n_layers": n_layers}
    con = Construction(NAME, THEOREM, cfg, emb, mixer, emb, channels, None, info)
    con.hashes = Fs  # numpy F's, for the mechanistic tools and bounds (not exported)
    return con


def build_parallel(vocab: int, d_model: int, d_state: int, n_hashes: int, seed: int = 0) -> Construction:
    """Lambda independent hashes F_l read in parallel and averaged: one layer whose state stacks them,
    S_B = [F_1; ...; F_L] / sqrt(L) on the previous half, S_C likewise on the current half (state Lambda N), so
    <C_t, B_tau> = (1/L) sum_l <F_l e_{x_t}, F_l e_{x_{tau-1}}>. This is what N_eff = Lambda N describes
    (``symbolic.recall_scaling.averaged_hash_moments``)."""
    require(n_hashes >= 1, f"hash-recall needs n_hashes >= 1, got {n_hashes}")
    require(n_hashes * d_state <= d_model, f"parallel hashes need Lambda N <= D, got Lambda={n_hashes}, "
                                           f"N={d_state}, D={d_model}")
    E, Fs = draw_codes(vocab, d_model, d_state, seed, n_hashes=n_hashes)
    F = np.concatenate(Fs) / math.sqrt(n_hashes)
    cfg = LinearMambaConfig(d_model=d_model, d_state=n_hashes * d_state)
    mixer = {f"layers.0.{k}": v for k, v in analysis_layer(F, d_model).items()}
    emb = torch.from_numpy(E).double()
    channels = [f"prev[{i}]" for i in range(d_model)] + [f"cur[{i}]" for i in range(d_model)]
    con = Construction(NAME, THEOREM, cfg, emb, mixer, emb, channels, None,
                       {"block": "analysis-parallel", "seed": seed, "vocab": vocab, "n_hashes": n_hashes})
    con.hashes = [F]
    return con


def build_multihead(vocab: int, d_model: int, d_state: int, n_heads: int, pattern: str, seed: int = 0) -> Construction:
    """The designed circuit with ``n_heads`` heads of the paper's ``pattern`` (total state N x d_inner for any M).

    * MHA: head h hashes with its own F_h (B_h = F_h u_{t-1}, C_h = F_h u_t) and carries block h (D/M coordinates)
      of the current embedding as its value; W_heads puts each block back.
    * MVA: shared B = F u_{t-1}, C = F u_t, value blocks per head as in MHA: the heads share one score matrix, so
      this is algebraically the one-head circuit.
    * MQA / MKA: the shared value is P = d_inner / M dims: the current half is folded into it (X[p] = sum of the
      current coordinates at offset p of every chunk) and unfolded by W_heads from head 0; every head uses the same
      hash F (a per-head key or query would not match the shared other side). Value cross-talk becomes 1/min(D, P).
    """
    from constructions.layout import HEAD_PATTERNS

    require(pattern in HEAD_PATTERNS, f"head pattern must be one of {HEAD_PATTERNS}, got {pattern!r}")
    require(n_heads >= 2, f"build_multihead needs n_heads >= 2 (one head: build_analysis), got {n_heads}")
    require(d_model % n_heads == 0, f"multi-head hash-recall needs M dividing D, got M={n_heads}, D={d_model}")
    D, N, H = d_model, d_state, n_heads
    cfg = LinearMambaConfig(d_model=D, d_state=N, n_heads=H, head_pattern=pattern)
    P, di = cfg.head_dim, cfg.d_inner
    E, Fs = draw_codes(vocab, D, N, seed, n_hashes=H if pattern == "MHA" else 1)
    base = analysis_layer(Fs[0], D)
    sd = {k: v for k, v in base.items() if k != "x_proj.weight"}
    per_b, per_c = pattern in ("MHA", "MKA"), pattern in ("MHA", "MQA")
    B = torch.zeros((H if per_b else 1) * N, di, dtype=torch.float64)
    C = torch.zeros((H if per_c else 1) * N, di, dtype=torch.float64)
    for h in range(B.shape[0] // N):
        B[h * N:(h + 1) * N, :D] = torch.from_numpy(Fs[h if pattern == "MHA" else 0])
    for h in range(C.shape[0] // N):
        C[h * N:(h + 1) * N, D:] = torch.from_numpy(Fs[h if pattern == "MHA" else 0])
    sd["B_proj.weight"], sd["C_proj.weight"] = B, C
    W_heads = torch.zeros(di, P, H, dtype=torch.float64)
    if pattern in ("MHA", "MVA"):
        b = D // H
        W_contract = torch.zeros(P, H, di, dtype=torch.float64)
        for h in range(H):
            for j in range(b):
                W_contract[j, h, D + h * b + j] = 1.0
                W_heads[D + h * b + j, j, h] = 1.0
    else:
        W_contract = torch.zeros(P, H, dtype=torch.float64)
        for i in range(D, di):  # current-half coordinate i sits at offset i % P of chunk i // P
            W_contract[i % P, i // P] = 1.0
            W_heads[i, i % P, 0] = 1.0
    sd["W_contract"], sd["W_heads"] = W_contract, W_heads
    mixer = {f"layers.0.{k}": v for k, v in sd.items()}
    emb = torch.from_numpy(E).double()
    con = Construction(NAME, THEOREM, cfg, emb, mixer, emb, [], None,
                       {"block": f"analysis-{pattern}", "seed": seed, "vocab": vocab, "n_heads": H})
    con.hashes = Fs
    return con


def mamba_block_weights(E: np.ndarray, F: np.ndarray, gate_pre: float = 1.0, delta: float = 1.0,
                        a_log: float = -100.0, d_conv: int = 2):
    """The designed circuit in ``mamba_ssm.Mamba`` names (expand 4: prev+, prev-, cur+, cur- channel groups)."""
    Dm, n = E.shape[1], F.shape[0]
    cfg = MambaConfig(d_model=Dm, d_state=n, d_conv=d_conv, expand=4, bias=True, conv_bias=True)
    W = MambaWeights(cfg)
    eye = torch.eye(Dm, dtype=torch.float64)
    Ft = torch.from_numpy(np.ascontiguousarray(F)).double()
    g = [slice(k * Dm, (k + 1) * Dm) for k in range(4)]  # prev+, prev-, cur+, cur-
    W.in_proj.x.weight[:] = torch.cat([eye, -eye, eye, -eye])
    W.in_proj.z.bias[:] = gate_pre  # z = gate_pre, gate silu(gate_pre)
    for k in (0, 1):
        W.conv.tap(1)[g[k]] = 1.0  # previous token
    for k in (2, 3):
        W.conv.tap(0)[g[k]] = 1.0  # current token
    W.x_proj.B.weight[:, g[0]] = Ft
    W.x_proj.B.weight[:, g[1]] = -Ft  # B = F (silu(u) - silu(-u)) = F u_{t-1}
    W.x_proj.C.weight[:, g[2]] = Ft
    W.x_proj.C.weight[:, g[3]] = -Ft  # C = F u_t
    W.dt_proj.bias[:] = float(softplus_inverse(sp.nsimplify(delta)).evalf(30))
    W.A_log[:] = a_log
    scale = 1.0 / (delta * float(silu(sp.nsimplify(gate_pre)).evalf(30)))
    W.out_proj.weight[:, g[2]] = scale * eye
    W.out_proj.weight[:, g[3]] = -scale * eye
    sd = W.state_dict()
    return cfg, sd


def build_mamba_block(vocab: int, d_model: int, d_state: int, seed: int = 0, gate_pre: float = 1.0,
                      delta: float = 1.0, a_log: float = -100.0, d_conv: int = 2) -> Construction:
    """The designed circuit in the real ``mamba_ssm.Mamba`` block (same codes as ``build_analysis`` for a seed)."""
    require(d_conv >= 2, f"hash-recall in mamba_ssm needs d_conv >= 2 (a previous-token tap), got {d_conv}")
    require(delta > 0, f"hash-recall needs delta > 0, got {delta}")
    E, (F,) = draw_codes(vocab, d_model, d_state, seed)
    cfg, sd = mamba_block_weights(E, F, gate_pre, delta, a_log, d_conv)
    emb = torch.from_numpy(E).double()
    channels = [f"{grp}[{i}]" for grp in ("prev+", "prev-", "cur+", "cur-") for i in range(d_model)]
    info = {"block": "mamba", "seed": seed, "vocab": vocab, "gate_pre": gate_pre, "delta": delta, "a_log": a_log,
            "decay_per_step": math.exp(-delta * math.exp(a_log))}
    con = Construction(NAME, THEOREM, cfg, emb, sd, emb, channels, None, info)
    con.hashes = [F]
    return con
