"""Mechanistic tools of Koren et al. 2026 for any one-layer, one-head simplified linear Mamba (designed or trained).

For a model with embedding E (D x V as columns), P_in, conv taps W (prev = tap K-2, curr = tap K-1), S_B, S_C,
P_out and tied readout, acting on the 2V-dim one-hot of a (previous, current) token pair:

* ``effective_operators``: E_in = [diag(W_prev) P_in E, diag(W_curr) P_in E] (d_inner x 2V); key hash
  Pi_k = S_B E_in, query hash Pi_q = S_C E_in (N x 2V); Pi_v_in = E_in, Pi_v_out = E^T P_out (V x d_inner).
* ``invariant_operators``: G_kq = Pi_k^T Pi_q (2V x 2V) and G_vv = Pi_v_out Pi_v_in (V x 2V), unchanged by any
  invertible reparametrisation of the N-dim state basis that is orthogonal, and of the d_inner basis. Their blocks
  G_E = G_kq[:V, V:] (previous token written x current token read) and G_Ev = G_vv[:, V:] (current half) are, for the
  designed circuit, (F E)^T (F E) and E^T E. Each is oriented by the sign of its mean diagonal (B, C -> -B, -C is a
  symmetry of trained models).
* ``attention_map``: alpha[t, tau] = <C_t, B_tau> (tau <= t), against ``ideal_attention`` (1 iff x_{tau-1} = x_t).
* ``decoded_state``: the state h_t (recurrent mode) projected to vocabulary space,
  H''[v, k] = Pi_v_out h_t Pi_q[:, V + k], the logit of v when token k queries the state; for a working circuit it
  recovers the fact table H[v, k] = 1 iff (k, v) was written (``fact_table``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from constructions.errors import require
from constructions.layout import Construction
from verify.engines.linear import _conv, _lin, layer_forward, layer_params


@dataclass
class HashOperators:
    E_in: np.ndarray  # (d_inner, 2V)
    Pi_k: np.ndarray  # (N, 2V)
    Pi_q: np.ndarray  # (N, 2V)
    Pi_v_out: np.ndarray  # (V, d_inner)

    @property
    def vocab(self) -> int:
        return self.Pi_v_out.shape[0]


def _single(con: Construction, layer: int = 0) -> dict:
    cfg = con.config
    require(getattr(cfg, "kind", None) == "linear-mamba", f"hash operators need a linear-mamba model, got "
                                                          f"{getattr(cfg, 'kind', None)!r}")
    require(cfg.n_heads == 1, f"hash operators are defined for one head, got n_heads={cfg.n_heads}")
    require(cfg.d_conv >= 2, f"hash operators need a conv with a previous-token tap, got d_conv={cfg.d_conv}")
    return {k: v.double() for k, v in layer_params(con.mixer, layer).items()}


def effective_operators(con: Construction, layer: int = 0) -> HashOperators:
    p = _single(con, layer)
    E = con.embedding.double().T  # (D, V)
    w = p["conv1d.weight"][:, 0, :]
    prev, curr = w[:, -2], w[:, -1]
    z = p["in_proj.weight"] @ E  # (d_inner, V)
    E_in = torch.cat([prev[:, None] * z, curr[:, None] * z], dim=1)
    n = con.config.d_state
    S_B, S_C = p["x_proj.weight"][:n], p["x_proj.weight"][n:]
    Pi_v_out = con.readout.double() @ p["out_proj.weight"]
    return HashOperators(E_in.numpy(), (S_B @ E_in).numpy(), (S_C @ E_in).numpy(), Pi_v_out.numpy())


def _orient(m: np.ndarray) -> np.ndarray:
    s = np.sign(np.mean(np.diag(m)))
    return m * (s if s != 0 else 1.0)


def invariant_operators(ops: HashOperators) -> dict[str, np.ndarray]:
    V = ops.vocab
    G_kq = ops.Pi_k.T @ ops.Pi_q
    G_vv = ops.Pi_v_out @ ops.E_in
    return {"G_kq": G_kq, "G_vv": G_vv, "G_E": _orient(G_kq[:V, V:]), "G_Ev": _orient(G_vv[:, V:])}


def attention_map(con: Construction, tokens: torch.Tensor, layer: int = 0) -> np.ndarray:
    """alpha[b, t, tau] = <C_t, B_tau> for tau <= t, 0 above the diagonal; tokens (batch, L)."""
    p = _single(con, layer)
    x = _conv(_lin(con.embedding.double()[tokens], p["in_proj.weight"]), p["conv1d.weight"])
    n = con.config.d_state
    bc = _lin(x, p["x_proj.weight"])
    B, C = bc[..., :n], bc[..., n:]
    alpha = C @ B.transpose(-1, -2)
    return torch.tril(alpha).numpy()


def ideal_attention(tokens: np.ndarray) -> np.ndarray:
    """1 iff x_{tau-1} = x_t (tau >= 1, tau <= t): write tau's key is the token read at t."""
    tokens = np.asarray(tokens)
    prev = np.concatenate([np.full(tokens.shape[:-1] + (1,), -1), tokens[..., :-1]], axis=-1)
    ideal = (tokens[..., :, None] == prev[..., None, :]).astype(float)
    L = tokens.shape[-1]
    return ideal * np.tril(np.ones((L, L)))


def decoded_state(con: Construction, tokens: torch.Tensor, t: int, layer: int = 0) -> np.ndarray:
    """H''[b, v, k] = Pi_v_out h_t Pi_q[:, V + k] from the recurrent state after position t."""
    p = _single(con, layer)
    emb = con.embedding.double()[tokens]
    _, states = layer_forward(p, emb, con.config, mode="recurrent", return_states=True)
    h = states[..., 0, t, :, :].numpy()  # (batch, d_inner, N)
    ops = effective_operators(con, layer)
    V = ops.vocab
    return (ops.Pi_v_out @ h) @ ops.Pi_q[:, V:]  # (batch, V, V)


def fact_table(tokens: np.ndarray, t: int, vocab: int) -> np.ndarray:
    """H[b, v, k] = 1 iff some write tau <= t has key token k (x_{tau-1}) and value token v (x_tau)."""
    tokens = np.asarray(tokens)
    H = np.zeros((tokens.shape[0], vocab, vocab))
    for b in range(tokens.shape[0]):
        for tau in range(1, t + 1):
            H[b, tokens[b, tau], tokens[b, tau - 1]] = 1
    return H
