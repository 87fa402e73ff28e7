"""The designed ("hand-set") hashing circuit of Koren et al. 2026, in the analysis model and in ``mamba_ssm.Mamba``.

Claim (the paper's Theorem 2 as the reviews describe it, and its law): with a JL token embedding E (random unit
columns), a key/query hash F with F F^T = (D/N) I_N and the value read back through the tied embedding, one layer
solves MQAR with high probability at D, N = O(log V) scale, with per-query accuracy ~ Phi(1/sigma - m_V)
(``symbolic.recall_scaling``). The claim is probabilistic: checks compare the measured accuracy with the law, and ask
for exact recall only where the rigorous bound or the certificate (``verify.recall_law``) says it must hold.

**Analysis model** (``build_analysis``; ``LinearMambaConfig``, expand 2, d_conv 2; the paper's §2.5 table):

==========  =====================================================================================================
E (V x D)   rows e_x: standard Gaussian rows normalised to unit norm (readout tied: logits = E y)
P_in        [I_D ; I_D] (duplicate)
conv        channels 0..D-1: (prev, cur) = (1, 0); channels D..2D-1: (0, 1)  ->  x_t = [u_{t-1}; u_t]
S_B, S_C    [F, 0] and [0, F]: key = F u_{t-1}, query = F u_t; F = sqrt(D/N) (first N rows of a Haar orthogonal Q)
P_out       [0, I_D]; D-skip 0
==========  =====================================================================================================

so logit_u(t) = sum_{tau <= t} <F e_{x_t}, F e_{x_{tau-1}}> <e_u, e_{x_tau}>.

**Several layers** (``build_residual_stack``): the paper's residual form h <- h + layer(h) with N_eff = Lambda N
exactly: model width 2D (embedding subspace read by every B, C and value; output subspace written by every layer and
read by an untied readout), hashes from disjoint row blocks of one orthogonal matrix. ``build_analysis(n_layers > 1)``
is the paper's layer stacked as it is, which loses recall with depth (its docstring says why).

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

from common.errors import require
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
    """The designed circuit in the simplified linear Mamba; ``n_layers`` > 1 stacks the paper's layer as it is
    (independent hashes F_l, each writing 1/Lambda of its retrieval) with the residual connection: the *naive*
    stack, kept as the measured counter-example (``build_residual_stack`` is the designed one).

    Why it loses recall with depth (``verify.hash_operators.stack_ablation``, ``symbolic.recall_scaling.
    naive_stack_moments``; ``python -m experiments.residual_stack``): (1) layer l > 1 reads e_x plus the earlier
    layers' retrievals, whose off-fact part has power n_w / (Lambda^2 N) against the embedding's 1 (> 1 at the end
    of an MQAR sequence when N is small), and the queries sit at the end: their polluted hashes dominate at small N;
    (2) the tied readout sees the residual e_q with weight 1, as large as the retrieved fact's (Lambda layers of
    1/Lambda), so the query token ties with the answer: it dominates once N is large enough for the hashes to work."""
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


def stack_layer(F: np.ndarray, d_embed: int, gain: float) -> dict[str, torch.Tensor]:
    """One layer of ``build_residual_stack`` (``LinearMambaConfig`` names, d_model = 2 d_embed, expand 2).

    The residual stream is [embedding subspace (d_embed) | output subspace (d_embed)]. in_proj copies the embedding
    subspace into channels 0..d-1 and d..2d-1 (channels 2d..4d-1 unused), the conv makes them [u_{t-1}; u_t],
    B = F u_{t-1}, C = F u_t, and out_proj writes gain * (the retrieved current half) into the output subspace. No
    weight reads the output subspace, so no layer sees another's retrieval."""
    d, n = d_embed, F.shape[0]
    eye = torch.eye(d, dtype=torch.float64)
    Ft = torch.from_numpy(np.ascontiguousarray(F)).double()
    in_proj = torch.zeros(4 * d, 2 * d, dtype=torch.float64)
    in_proj[:d, :d] = eye
    in_proj[d:2 * d, :d] = eye
    conv = torch.zeros(4 * d, 1, 2, dtype=torch.float64)
    conv[:d, 0, 0] = 1  # previous token
    conv[d:2 * d, 0, 1] = 1  # current token
    x_proj = torch.zeros(2 * n, 4 * d, dtype=torch.float64)
    x_proj[:n, :d] = Ft  # B = F u_{t-1}
    x_proj[n:, d:2 * d] = Ft  # C = F u_t
    out = torch.zeros(2 * d, 4 * d, dtype=torch.float64)
    out[d:, d:2 * d] = gain * eye
    return {"in_proj.weight": in_proj, "conv1d.weight": conv, "x_proj.weight": x_proj,
            "D": torch.zeros(4 * d, dtype=torch.float64), "out_proj.weight": out}


def build_residual_stack(vocab: int, d_model: int, d_state: int, n_layers: int, seed: int = 0) -> Construction:
    """The designed Lambda-layer circuit in the paper's residual form h <- h + layer(h), realising N_eff = Lambda N.

    ``d_model`` is the embedding dimension D of the law; the model's width is 2D (``stack_layer``): the embedding
    e_x in the first D coordinates, every layer's retrieval written into the other D, which no layer's B, C or value
    reads, and an untied readout [0, E] that reads only them, so it is blind to the residual e_q (the paper ties the
    readout to the embedding; a tied readout would see e_q). Layer l hashes with F_l = sqrt(D/N) Q_l, Q_l the rows
    lN..(l+1)N-1 of one Haar orthogonal matrix (Lambda N <= D), and writes 1/Lambda of its retrieval, so

        logit_u(t) = sum_{tau <= t} (1/Lambda) sum_l <F_l e_{x_t}, F_l e_{x_{tau-1}}> <e_u, e_{x_tau}>
                   = sum_{tau <= t} <F e_{x_t}, F e_{x_{tau-1}}> <e_u, e_{x_tau}>,   F = sqrt(D/(Lambda N)) Q_{1..Lambda N}:

    the one-layer circuit with state Lambda N (the same logits as ``build_analysis(vocab, D, Lambda N, seed)``),
    hence exactly the law at N_eff = Lambda N (``symbolic.recall_scaling.stacked_hash_moments``). Independent draws
    F_l would overlap through the shared embedding and give N_eff = Lambda N D / (D + (Lambda - 1) N) instead
    (``build_parallel``). Total state Lambda x N x d_inner, as the paper counts it."""
    require(n_layers >= 1, f"hash-recall needs n_layers >= 1, got {n_layers}")
    require(n_layers * d_state <= d_model, f"the residual stack's orthogonal hashes need Lambda N <= D, got "
                                           f"Lambda={n_layers}, N={d_state}, D={d_model}")
    E, (F,) = draw_codes(vocab, d_model, n_layers * d_state, seed)
    blocks = [math.sqrt(n_layers) * F[l * d_state:(l + 1) * d_state] for l in range(n_layers)]  # sqrt(D/N) Q_l
    cfg = LinearMambaConfig(d_model=2 * d_model, d_state=d_state, n_layers=n_layers, residual=True)
    mixer = {}
    for l, Fl in enumerate(blocks):
        mixer.update({f"layers.{l}.{k}": v for k, v in stack_layer(Fl, d_model, 1.0 / n_layers).items()})
    zeros = torch.zeros(vocab, d_model, dtype=torch.float64)
    emb = torch.from_numpy(E).double()
    channels = ([f"prev[{i}]" for i in range(d_model)] + [f"cur[{i}]" for i in range(d_model)]
                + [f"unused[{i}]" for i in range(2 * d_model)])
    info = {"block": "analysis-residual-stack", "seed": seed, "vocab": vocab, "n_layers": n_layers,
            "d_embed": d_model}
    con = Construction(NAME, THEOREM, cfg, torch.cat([emb, zeros], 1), mixer, torch.cat([zeros, emb], 1), channels,
                       None, info)
    con.hashes = blocks
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
