"""Mechanistic tools of Koren et al. 2026 for a one-head hash-recall model, designed or trained: the simplified linear
Mamba (``LinearMambaConfig``, any layer of a stack) or the Mamba block (``MambaConfig``, S6).

**Pair probes.** With a width-2 conv, a layer's key B_t, query C_t, written value and gate at position t depend only
on the token pair (x_{t-1}, x_t). The paper's effective operators act on the 2V-dim one-hot of that pair; we read
them off the layer itself by feeding it two-token inputs [e_w, 0] (previous token w), [0, e_c] (current token c) and
[0, 0] (the constant part), e = the embedding row (``pair_probe``):

* E_in: column w = x([e_w, 0]) - x([0, 0]), column V + c = x([0, e_c]) - x([0, 0]), x the value the layer writes
  (d_inner): x_hat for the linear model, Delta * x_hat for the Mamba block (its write is Delta_t B_t x_hat_t);
* Pi_k = the same differences of B (N x 2V), Pi_q of C; Pi_v_in = E_in; Pi_v_out = R P_out diag(g) (V x d_inner),
  R the readout and g the gate (1 for the linear model; silu(z) of the Mamba block averaged over the key tokens).

For the linear model (no bias, no nonlinearity) this *is* the paper's closed form E_in = [diag(W_prev) P_in E,
diag(W_curr) P_in E], Pi_k = S_B E_in, Pi_q = S_C E_in (older conv taps read the zero padding). For the Mamba block
it is the additive part of a nonlinear map: ``pair_additivity`` measures what it leaves out on real sequences (0 for
the designed block, whose SiLU pairs cancel exactly). The operators of layer l > 0 of a stack are those of its
embedding path (exact for ``build_residual_stack``, whose layers read only the embedding subspace).

**Invariant operators** (``invariant_operators``): G_kq = Pi_k^T Pi_q (2V x 2V) and G_vv = Pi_v_out Pi_v_in (V x 2V),
unchanged by any orthogonal change of the N-dim state basis and any invertible one of the d_inner basis. Blocks:
G_E = G_kq[:V, V:] (previous token written x current token read; (F E)^T (F E) for the designed circuit) and
G_Ev = G_vv[:, V:] (output token x current token written; E^T E). Each is oriented by the sign of its mean diagonal
(B, C -> -B, -C is a symmetry of trained models).

**Maps.** ``attention_map``: alpha[t, tau] = <C_t, B_tau> (tau <= t; the hash match, without the Mamba block's decay
and Delta), against ``ideal_attention`` (1 iff x_{tau-1} = x_t). ``decoded_state``: the state h_t (d_inner x N,
decay included) projected to vocabulary space, H''[v, k] = Pi_v_out(k) h_t C(k), C(k) = C([0, e_k]) the query token k
makes and Pi_v_out(k) with k's own gate: the logit of v when k queries the state. It recovers the fact table
H[v, k] = 1 iff (k, v) was written (``fact_table``) when the circuit works.

**Numbers** (``identity_closeness``, ``decoded_metrics``, ``attention_metrics``, ``a_from_logits``,
``a_from_recall``; ``mechanism_report`` gathers them): the paper's figures are visual, these make them measurable.
A block divided by its mean diagonal (the paper's orientation, and scale) has relative Frobenius distance to I
sqrt((n - 1) E c^2 + Var c_self) for n tokens, and effective dimension 1 / mean(off-diagonal^2): for the designed
circuit's key block sqrt((n - 1)/N + 2(D - N)/(N (D + 2))) and N (``symbolic.recall_scaling.hash_moments``), for its
value block sqrt((n - 1)/D) and D. The effective a: the law's sigma^2 = a N_f/(N_eff D) + 1/D solved for a, with
sigma^2 measured on the logits (variance of the competitors that are not in the context, relative to the squared
mean signal) or from the recall (inverting Phi(1/sigma - m_V)).

**Trained checkpoints** (``trained_model``): a run of ``verify.train`` under one of Koren et al.'s wirings
(``verify.train.recall_models``), from its spec and state dict. The tied linear model is measured as it is (readout =
E). The full model (wiring lm, one layer) is measured on its block as the block sees it: the embedding folded through
the first RMSNorm (row x: w_0 * e_x / rms(e_x), exactly the block's input) and the readout E diag(w_f) (the final
norm's weight); the operators, G_kq, G_vv, H'' and alpha are those of this folded model, which leaves out the final
norm's positive per-position scale and the residual's own token e_{x_t}; the logits, the recall and the effective a
are the whole model's (``logits_fn``).

``stack_ablation`` runs a residual stack with chosen paths fed the clean embedding, to measure what makes the naive
stack (``constructions.hash_recall.build_analysis(n_layers > 1)``) lose recall with depth.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as Fn

from common.errors import require
from constructions.layout import Construction
from verify import recall_law as rl
from verify.engines.linear import _conv, _lin, layer_forward, layer_params

IGNORE = -100
KINDS = ("linear-mamba", "mamba")


# ---------------------------------------------------------------------------------------------------------------------
# What a layer computes at each position
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Features:
    """Per position (..., L, .): the written value x (d_inner), key B and query C (N), the read gate (d_inner; None:
    1), Delta (d_inner; None: no decay) and the skip input x_hat."""

    x: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    gate: torch.Tensor | None
    delta: torch.Tensor | None
    x_hat: torch.Tensor


def _check(con: Construction, layer: int) -> dict:
    cfg = con.config
    kind = getattr(cfg, "kind", None)
    require(kind in KINDS, f"hash operators need a model of kind {KINDS}, got {kind!r}")
    if kind == "linear-mamba":
        require(cfg.n_heads == 1, f"hash operators are defined for one head, got n_heads={cfg.n_heads}")
        require(not (cfg.silu or cfg.gate), "hash operators are defined for the simplified linear Mamba, not its "
                                            "silu / gate variants (the ablation's rows A and B)")
        require(0 <= layer < cfg.n_layers, f"layer must be in 0..{cfg.n_layers - 1}, got {layer}")
        p = layer_params(con.mixer, layer)
    else:
        require(layer == 0, f"the Mamba block is one layer, got layer={layer}")
        p = con.mixer
    require(cfg.d_conv >= 2, f"hash operators need a conv with a previous-token tap, got d_conv={cfg.d_conv}")
    return {k: v.double() for k, v in p.items()}


def features(con: Construction, hidden: torch.Tensor, layer: int = 0) -> Features:
    """The layer's per-position quantities for its input ``hidden`` (batch, L, d_model)."""
    p = _check(con, layer)
    n = con.config.d_state
    if con.config.kind == "linear-mamba":
        x = _conv(_lin(hidden, p["in_proj.weight"]), p["conv1d.weight"])
        bc = _lin(x, p["x_proj.weight"])
        return Features(x, bc[..., :n], bc[..., n:], None, None, x)
    xz = Fn.linear(hidden, p["in_proj.weight"], p.get("in_proj.bias"))
    x, z = xz.chunk(2, dim=-1)
    x = _conv(x, p["conv1d.weight"])
    x = Fn.silu(x + p["conv1d.bias"] if "conv1d.bias" in p else x)
    r = con.config.rank
    dt, B, C = torch.split(Fn.linear(x, p["x_proj.weight"]), [r, n, n], dim=-1)
    delta = Fn.softplus(Fn.linear(dt, p["dt_proj.weight"]) + p["dt_proj.bias"])
    return Features(delta * x, B, C, Fn.silu(z), delta, x)


def layer_input(con: Construction, tokens: torch.Tensor, layer: int = 0) -> torch.Tensor:
    """The residual stream a layer reads (batch, L, d_model): the embedding, after the layers below it."""
    h = con.embedding.double()[tokens]
    cfg = con.config
    for l in range(layer):
        y = layer_forward({k: v.double() for k, v in layer_params(con.mixer, l).items()}, h, cfg)
        h = h + y if cfg.residual else y
    return h


def _out_map(con: Construction, layer: int) -> torch.Tensor:
    """R P_out (V x d_inner): the readout of what the layer's SSM returns (before any gate)."""
    p = _check(con, layer)
    return con.readout.double() @ p["out_proj.weight"]


# ---------------------------------------------------------------------------------------------------------------------
# Effective and invariant operators
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class HashOperators:
    E_in: np.ndarray  # (d_inner, 2V): the written value of (previous, current) token
    Pi_k: np.ndarray  # (N, 2V)
    Pi_q: np.ndarray  # (N, 2V)
    Pi_v_out: np.ndarray  # (V, d_inner), the gate averaged over key tokens
    constant: dict  # the [0, 0] probe: B, C and x of no token (norms), 0 for a model without biases

    @property
    def vocab(self) -> int:
        return self.Pi_v_out.shape[0]


def pair_probe(con: Construction, layer: int = 0) -> dict[str, torch.Tensor]:
    """Features of the probes [e_w, 0] (rows 0..V-1), [0, e_c] (rows V..2V-1) and [0, 0] (row 2V), at position 1."""
    emb = con.embedding.double()
    V, d = emb.shape
    probes = torch.zeros(2 * V + 1, 2, d, dtype=torch.float64)
    probes[:V, 0] = emb
    probes[V:2 * V, 1] = emb
    f = features(con, probes, layer)
    out = {"x": f.x[:, 1], "B": f.B[:, 1], "C": f.C[:, 1]}
    if f.gate is not None:
        out["gate"] = f.gate[:, 1]
    return out


def effective_operators(con: Construction, layer: int = 0, key_tokens=None) -> HashOperators:
    """The paper's E_in, Pi_k, Pi_q, Pi_v_in = E_in and Pi_v_out, by ``pair_probe`` (see the module docstring);
    ``key_tokens`` (token ids) are the tokens over which the Mamba block's read gate is averaged (default all)."""
    pr = pair_probe(con, layer)
    V = con.embedding.shape[0]

    def diff(m):
        return (m[:2 * V] - m[2 * V]).T.numpy()

    out = _out_map(con, layer)
    if "gate" in pr:
        keys = slice(None) if key_tokens is None else torch.as_tensor(key_tokens)
        out = out * pr["gate"][V:2 * V][keys].mean(0)[None, :]
    constant = {k: float(pr[k][2 * V].norm()) for k in ("B", "C", "x")}
    return HashOperators(diff(pr["x"]), diff(pr["B"]), diff(pr["C"]), out.numpy(), constant)


def _orient(m: np.ndarray) -> np.ndarray:
    s = np.sign(np.mean(np.diag(m)))
    return m * (s if s != 0 else 1.0)


def invariant_operators(ops: HashOperators) -> dict[str, np.ndarray]:
    V = ops.vocab
    G_kq = ops.Pi_k.T @ ops.Pi_q
    G_vv = ops.Pi_v_out @ ops.E_in
    return {"G_kq": G_kq, "G_vv": G_vv, "G_E": _orient(G_kq[:V, V:]), "G_Ev": _orient(G_vv[:, V:])}


def pair_additivity(con: Construction, tokens: torch.Tensor, layer: int = 0) -> dict[str, float]:
    """How much of the layer's B, C and written value on real sequences the additive pair operators leave out:
    ||f_t - (constant + column x_{t-1} + column V + x_t)|| / ||f_t|| over positions t >= 1 (0 for a linear model with
    d_conv = 2, and for the designed Mamba block; for a layer of a stack, the residual stream's earlier outputs
    count as left out)."""
    pr = pair_probe(con, layer)
    V = con.embedding.shape[0]
    f = features(con, layer_input(con, tokens, layer), layer)
    prev, cur = tokens[:, :-1], tokens[:, 1:]
    out = {}
    for name, actual in (("B", f.B), ("C", f.C), ("x", f.x)):
        m = pr[name]
        approx = m[2 * V] + (m[prev] - m[2 * V]) + (m[V + cur] - m[2 * V])
        err = (actual[:, 1:] - approx).norm() / actual[:, 1:].norm().clamp_min(1e-300)
        out[name] = float(err)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Maps on sequences
# ---------------------------------------------------------------------------------------------------------------------


def attention_map(con: Construction, tokens: torch.Tensor, layer: int = 0) -> np.ndarray:
    """alpha[b, t, tau] = <C_t, B_tau> for tau <= t, 0 above the diagonal; tokens (batch, L)."""
    f = features(con, layer_input(con, tokens, layer), layer)
    return torch.tril(f.C @ f.B.transpose(-1, -2)).numpy()


def ideal_attention(tokens: np.ndarray) -> np.ndarray:
    """1 iff x_{tau-1} = x_t (tau >= 1, tau <= t): write tau's key is the token read at t."""
    tokens = np.asarray(tokens)
    prev = np.concatenate([np.full(tokens.shape[:-1] + (1,), -1), tokens[..., :-1]], axis=-1)
    ideal = (tokens[..., :, None] == prev[..., None, :]).astype(float)
    L = tokens.shape[-1]
    return ideal * np.tril(np.ones((L, L)))


def state_at(con: Construction, tokens: torch.Tensor, t: int, layer: int = 0) -> torch.Tensor:
    """The layer's state after position t (batch, d_inner, N): sum over tau <= t of x_tau B_tau^T, each write decayed
    by prod_{s = tau+1..t} exp(Delta_s A) in the Mamba block."""
    f = features(con, layer_input(con, tokens, layer), layer)
    if f.delta is None:
        return torch.einsum("bsd,bsn->bdn", f.x[:, :t + 1], f.B[:, :t + 1])
    A = -torch.exp(con.mixer["A_log"].double())
    h = torch.zeros(tokens.shape[0], f.x.shape[-1], f.B.shape[-1], dtype=torch.float64)
    for s in range(t + 1):
        h = torch.exp(f.delta[:, s, :, None] * A) * h + f.x[:, s, :, None] * f.B[:, s, None, :]
    return h


def decoded_state(con: Construction, tokens: torch.Tensor, t: int, layer: int = 0, columns=None) -> np.ndarray:
    """H''[b, v, j] = Pi_v_out(k) h_t C(k), k = columns[b, j] (default every token: H''[b, v, k]), from the state after
    position t; C(k) = C([0, e_k]) and, in the Mamba block, k's own read gate."""
    h = state_at(con, tokens, t, layer)
    pr = pair_probe(con, layer)
    V = con.embedding.shape[0]
    cols = torch.arange(V).expand(tokens.shape[0], V) if columns is None else torch.as_tensor(columns)
    C = pr["C"][V:2 * V][cols]  # (batch, m, N)
    read = torch.einsum("bdn,bmn->bmd", h, C)
    if "gate" in pr:
        read = read * pr["gate"][V:2 * V][cols]
    return torch.einsum("vd,bmd->bvm", _out_map(con, layer), read).numpy()


def fact_table(tokens: np.ndarray, t: int, vocab: int) -> np.ndarray:
    """H[b, v, k] = 1 iff some write tau <= t has key token k (x_{tau-1}) and value token v (x_tau)."""
    tokens = np.asarray(tokens)
    H = np.zeros((tokens.shape[0], vocab, vocab))
    for b in range(tokens.shape[0]):
        for tau in range(1, t + 1):
            H[b, tokens[b, tau], tokens[b, tau - 1]] = 1
    return H


# ---------------------------------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------------------------------


def identity_closeness(G: np.ndarray, idx) -> dict[str, float]:
    """G restricted to idx x idx and divided by its mean diagonal (orientation and scale): the relative Frobenius
    distance to I, the effective dimension 1 / mean(off-diagonal^2), and the fraction of columns (tokens read, or
    written) whose diagonal entry is the column's maximum."""
    idx = np.asarray(idx)
    B = G[np.ix_(idx, idx)]
    scale = np.diag(B).mean()
    if not np.isfinite(scale) or scale == 0:
        return {"relative_frobenius_distance": float("nan"), "effective_dim": float("nan"),
                "diagonal_is_column_max": 0.0, "mean_diagonal": float(scale)}
    B = B / scale
    n = len(idx)
    off = B[~np.eye(n, dtype=bool)]
    return {"relative_frobenius_distance": float(np.linalg.norm(B - np.eye(n)) / np.sqrt(n)),
            "effective_dim": float(1 / np.mean(off**2)) if off.size and np.any(off) else float("inf"),
            "diagonal_is_column_max": float(np.mean(B.argmax(0) == np.arange(n))), "mean_diagonal": float(scale)}


def decoded_metrics(con: Construction, tokens: np.ndarray, facts: int, layer: int = 0) -> dict[str, float]:
    """H'' at the end of the context (t = 2 N_f - 1) against the fact table, on each sequence's N_f keys: the fraction
    of facts (k, v) whose decoded entry H''[v, k] is the maximum over all V tokens of what k decodes to, and the
    relative Frobenius distance between H'' on (value tokens x the context's keys), divided by its mean fact entry,
    and the fact table there."""
    tokens = np.asarray(tokens)
    keys, vals = tokens[:, 0:2 * facts:2], tokens[:, 1:2 * facts:2]
    H2 = decoded_state(con, torch.from_numpy(tokens), 2 * facts - 1, layer, columns=keys)  # (b, V, N_f)
    V = H2.shape[1]
    rows, j = np.arange(len(tokens))[:, None], np.arange(facts)[None, :]
    fact = H2[rows, vals, j]
    hit = H2.argmax(1) == vals
    Hv = H2[:, V // 2:, :]
    H = np.zeros_like(Hv)
    H[rows, vals - V // 2, j] = 1
    scale = fact.mean()
    dist = np.linalg.norm(Hv / scale - H) / np.linalg.norm(H) if scale != 0 else float("nan")
    return {"facts_decoded": float(hit.mean()), "relative_frobenius_distance": float(dist),
            "mean_fact_entry": float(scale)}


def attention_metrics(con: Construction, tokens: np.ndarray, labels: np.ndarray, layer: int = 0) -> dict[str, float]:
    """At the query rows of alpha: the mean match at ideal positions (x_{tau-1} = x_t), the RMS elsewhere
    (1 <= tau <= t), their squared ratio (an effective hash dimension: N for the designed circuit) and the fraction of
    query rows whose largest alpha is at an ideal position. alpha is first oriented by the sign of its mean match
    (``alpha_sign``): flipping B (or C) together with the value path (E_in or P_out) is a symmetry of the model that
    flips alpha, and trained models land on either sign."""
    alpha = attention_map(con, torch.from_numpy(np.asarray(tokens)), layer)
    ideal = ideal_attention(tokens)
    b, t = np.nonzero(np.asarray(labels) != IGNORE)
    A, I = alpha[b, t], ideal[b, t]
    sign = -1.0 if A[I == 1].mean() < 0 else 1.0
    A = sign * A
    L = A.shape[-1]
    allowed = (np.arange(L)[None, :] <= t[:, None]) & (np.arange(L)[None, :] >= 1)
    match = A[I == 1].mean()
    leak = np.sqrt(np.mean(A[(I == 0) & allowed] ** 2))
    best = np.where(allowed, A, -np.inf).argmax(1)
    return {"alpha_sign": sign, "alpha_match": float(match), "alpha_leak_rms": float(leak),
            "effective_hash_dim": float((match / leak) ** 2) if leak > 0 else float("inf"),
            "argmax_at_ideal": float(np.mean(I[np.arange(len(b)), best] == 1))}


def query_logits(con: Construction, tokens: np.ndarray, labels: np.ndarray, logits_fn=None):
    """The model's logits (queries, V) at the labelled positions, the targets, and per query the tokens seen so far
    (queries, V; True = occurs in x_0..x_t). The reference engine runs the linear model in float64 and the Mamba block
    in float32 (its float64 depthwise conv is orders of magnitude slower on CPU; float32 moves a logit by ~1e-6).
    ``logits_fn`` (tokens (b, L) -> logits (b, L, V)) replaces the construction's own forward (a trained wired
    model: ``trained_model``)."""
    from verify.engines import make_engine

    tok = torch.from_numpy(np.asarray(tokens))
    b, t = np.nonzero(np.asarray(labels) != IGNORE)
    if logits_fn is not None:
        logits = logits_fn(tok).double()[b, t].numpy()
    else:
        dtype = "float64" if con.config.kind == "linear-mamba" else "float32"
        hidden = make_engine("reference", dtype).hidden(con, tok).double()
        logits = (hidden[b, t] @ con.readout.double().T).numpy()
    V = logits.shape[1]
    seen = np.zeros((len(b), V), dtype=bool)
    L = tokens.shape[1]
    upto = np.arange(L)[None, :] <= t[:, None]
    rows = np.repeat(np.arange(len(b)), L)
    seen[rows[upto.ravel()], np.asarray(tokens)[b].ravel()[upto.ravel()]] = True
    return logits, np.asarray(labels)[b, t], seen


def a_from_logits(logits: np.ndarray, targets: np.ndarray, seen: np.ndarray, d: float, n_eff: float,
                  facts: int) -> dict[str, float]:
    """The law's a from the logits: sigma^2 = mean over queries of Var_u(logit_u) over the tokens u not in the
    context, divided by the squared mean signal (target logit minus the competitors' mean); a = (sigma^2 - 1/D)
    N_eff D / N_f."""
    out = np.where(seen, np.nan, logits)
    mean = np.nanmean(out, 1)
    var = np.nanvar(out, 1)
    signal = logits[np.arange(len(targets)), targets] - mean
    sigma2 = var.mean() / signal.mean() ** 2
    return {"sigma2": float(sigma2), "a": float((sigma2 - 1 / d) * n_eff * d / facts),
            "signal_mean": float(signal.mean())}


def a_from_recall(recall: float, d: float, n_eff: float, vocab: int, facts: int) -> float:
    """a such that the law Phi(1/sigma - m_V), sigma^2 = a N_f/(N_eff D) + 1/D, equals ``recall``; NaN where no
    a >= 0 does (recall 0 or 1, or above what the 1/D term allows)."""
    from statistics import NormalDist

    if not 0 < recall < 1:
        return float("nan")
    inv_sigma = NormalDist().inv_cdf(recall) + float(rl.m_v_num(vocab))
    if inv_sigma <= 0:
        return float("nan")
    a = (1 / inv_sigma**2 - 1 / d) * n_eff * d / facts
    return float(a) if a >= 0 else float("nan")


def fit_a(cells) -> float:
    """The a minimising sum (recall - law(a))^2 over cells (recall, D, N_eff, V, N_f) (the collapse curves' fit)."""
    from scipy.optimize import minimize_scalar

    cells = list(cells)
    require(len(cells) >= 1, "fit_a needs at least one cell")

    def loss(a):
        return sum((r - float(rl.law_num(d, n, v, nf, a))) ** 2 for r, d, n, v, nf in cells)

    return float(minimize_scalar(loss, bounds=(1e-6, 1e3), method="bounded", options={"xatol": 1e-6}).x)


def law_sizes(con: Construction) -> tuple[float, float]:
    """(D, N_eff) the law is evaluated at: the embedding width (``info["d_embed"]`` for the designed residual stack,
    whose model width is 2D) and Lambda N."""
    cfg = con.config
    layers = getattr(cfg, "n_layers", 1)
    return float(con.info.get("d_embed", cfg.d_model)), float(layers * cfg.d_state)


def mechanism_report(con: Construction, tokens: np.ndarray, labels: np.ndarray, facts: int, layer: int = 0,
                     on_step=None, logits_fn=None) -> dict:
    """Every number of the module docstring for one model on MQAR sequences of the zoology layout (keys 1..V/2-1,
    values V/2..V-1), and under ``maps`` the maps themselves (the key and value blocks, and for the first sequence
    H'' and H on values x keys at the end of the context, alpha and its ideal). ``on_step(name)`` after each step;
    ``logits_fn``: the whole model's logits where the construction is a folded view of it (``trained_model``)."""
    step = on_step or (lambda name: None)
    tokens, labels = np.asarray(tokens), np.asarray(labels)
    V = con.embedding.shape[0]
    keys, values = np.arange(1, V // 2), np.arange(V // 2, V)
    ops = effective_operators(con, layer, key_tokens=keys)
    G = invariant_operators(ops)
    step("operators")
    logits, targets, seen = query_logits(con, tokens, labels, logits_fn)
    recall = float(np.mean(logits.argmax(1) == targets))
    d, n_eff = law_sizes(con)
    step("logits")
    decoded = decoded_metrics(con, tokens, facts, layer)
    t = 2 * facts - 1
    H2 = decoded_state(con, torch.from_numpy(tokens[:1]), t, layer)[0]
    H = fact_table(tokens[:1], t, V)[0]
    step("decoded state")
    attention = attention_metrics(con, tokens, labels, layer)
    step("attention")
    return {
        "recall": recall, "law_D": d, "law_N_eff": n_eff,
        "key_block": identity_closeness(G["G_E"], keys),
        "value_block": identity_closeness(G["G_Ev"], values),
        "constant_part": ops.constant,
        "pair_additivity_error": pair_additivity(con, torch.from_numpy(tokens[:8]), layer),
        "decoded_state": decoded, "attention": attention,
        "a_logits": a_from_logits(logits, targets, seen, d, n_eff, facts),
        "a_recall": a_from_recall(recall, d, n_eff, V, facts),
        "maps": {"G_E_keys": G["G_E"][np.ix_(keys, keys)], "G_Ev_values": G["G_Ev"][np.ix_(values, values)],
                 "H2_values_keys": H2[np.ix_(values, keys)], "H_values_keys": H[np.ix_(values, keys)],
                 "alpha": attention_map(con, torch.from_numpy(tokens[:1]), layer)[0],
                 "alpha_ideal": ideal_attention(tokens[:1])[0], "tokens": tokens[0]},
    }


# ---------------------------------------------------------------------------------------------------------------------
# Trained checkpoints (Koren et al.'s wirings, verify.train.recall_models)
# ---------------------------------------------------------------------------------------------------------------------


def trained_model(spec, state_dict: dict) -> tuple[Construction, object]:
    """(the construction the tools measure, the whole model's logits function) of a trained wired run (``spec`` a
    ``RunSpec``; see the module docstring): the tied linear model as it is, the full model (lm, one layer) folded."""
    from verify.train import recall_models as rm

    w = rm.wiring(spec)
    require(w in rm.WIRINGS, f"a trained checkpoint of the hash operators has one of the wirings {rm.WIRINGS}, "
                             f"got model {spec.model!r}")
    sd = {k: v.double() for k, v in state_dict.items()}
    cfg, E = rm.block_config(spec), sd["embedding.weight"]

    def logits_fn(tokens):
        return rm.logits(spec, sd, tokens)

    info = {"run": spec.as_dict()}
    if w == "tied":
        mixer = {k[len("mixer."):]: v for k, v in sd.items() if k.startswith("mixer.")}
        return Construction("trained", "", cfg, E, mixer, E, [], None, info), logits_fn
    require(rm.layers(spec) == 1, f"the full model is measured with one layer, this one has {rm.layers(spec)}")
    folded = rm.rms_norm(E, sd["layers.0.norm.weight"])
    mixer = {k[len("layers.0.mixer."):]: v for k, v in sd.items() if k.startswith("layers.0.mixer.")}
    return Construction("trained", "", cfg, folded, mixer, E * sd["norm_f.weight"], [], None, info), logits_fn


# ---------------------------------------------------------------------------------------------------------------------
# The naive residual stack, path by path
# ---------------------------------------------------------------------------------------------------------------------


def stack_ablation(con: Construction, tokens: torch.Tensor, clean_keys: bool = False, clean_queries: bool = False,
                   clean_values: bool = False, drop_embedding: bool = False) -> torch.Tensor:
    """The output (batch, L, d_model) of a one-head linear residual stack in which every layer's key (B), query (C)
    and value paths read the clean embedding instead of the residual stream when asked, and, with
    ``drop_embedding``, without the residual's embedding term at the readout. All False: the model itself."""
    cfg = con.config
    require(cfg.kind == "linear-mamba" and cfg.n_heads == 1, "stack_ablation needs a one-head linear Mamba")
    e = con.embedding.double()[tokens]
    h, n = e, cfg.d_state
    for layer in range(cfg.n_layers):
        p = {k: v.double() for k, v in layer_params(con.mixer, layer).items()}

        def xhat(inp, p=p):
            return _conv(_lin(inp, p["in_proj.weight"]), p["conv1d.weight"])

        x_res, x_emb = xhat(h), xhat(e)
        B = _lin(x_emb if clean_keys else x_res, p["x_proj.weight"][:n])
        C = _lin(x_emb if clean_queries else x_res, p["x_proj.weight"][n:])
        X = x_emb if clean_values else x_res
        y = _lin(torch.tril(C @ B.transpose(-1, -2)) @ X + X * p["D"], p["out_proj.weight"])
        h = h + y if cfg.residual else y
    return h - e if drop_embedding and cfg.residual else h
