"""Reference forward of Koren et al.'s simplified linear Mamba (``constructions.layout.LinearMambaConfig``).

One layer, one head (the paper's analysis model, ``ssm_mode="attention"`` of its ``mamba_tiny``)::

    z_t = P_in u_t;  x_t = sum_j W[:, K-1-j] * z_{t-j}  (causal depthwise conv, zero left padding, no activation)
    B_t = S_B x_t,  C_t = S_C x_t;   h_t = h_{t-1} + x_t B_t^T  (A = 1, Delta = 1: a running sum)
    y_t = P_out (h_t C_t + D * x_t) = P_out (sum_{tau <= t} <C_t, B_tau> x_tau + D * x_t)

With ``config.silu`` the conv gets a bias and a SiLU (x_t = silu(conv + b)); with ``config.gate`` the output is gated
as Mamba-1's, y_t <- y_t * silu(P_z u_t), before P_out: the rows A and B of the paper's circuit-minimality ablation.

``mode="attention"`` computes the masked scores alpha[t, tau] = <C_t, B_tau> (tau <= t, diagonal included);
``mode="recurrent"`` runs the state explicitly (and can return it); ``mode="chunked"`` is the attention form within
chunks of at most ``CHUNK`` tokens and the state between them (the same sum, O(L Q (N + P) + L N P) instead of
O(L^2 (N + P)) a sequence; the training forward; at L <= CHUNK the attention form's very computation). Several heads (H, P = d_inner / H) follow the
paper's ``head_pattern`` (Mamba-2 terminology):

=======  =============  =============  ==========================================================================
pattern  B (key)        C (query)      X (value)
=======  =============  =============  ==========================================================================
MHA      per head       per head       per head: X_h = W_contract[:, h, :] x  (W_contract: P x H x d_inner)
MQA      shared         per head       shared: sum_h W_contract[:, h] * chunk_h(x)  (W_contract: P x H)
MKA      per head       shared         shared (as MQA)
MVA      shared         shared         per head (as MHA)
=======  =============  =============  ==========================================================================

and the heads are mixed back by ``W_heads`` (d_inner x P x H): x_out = sum_h W_heads[:, :, h] y_h. Every parameter
may carry extra leading dimensions (a stack of G models): the hidden input is then (G..., batch, L, d_model). This is
how the recall grid runs many constructions in one call.
"""
from __future__ import annotations

import torch

CHUNK = 128  # at most this many tokens a chunk of the chunked form (at L <= CHUNK it is the attention form itself)


def _lin(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x (..., S, L, i) times w (..., o, i)^T -> (..., S, L, o), broadcasting the leading model dims."""
    return torch.einsum("...sli,...oi->...slo", x, w)


def _conv(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Causal depthwise conv: x (..., S, L, C), w (..., C, 1, K); tap K-1 multiplies the current token."""
    K, L = w.shape[-1], x.shape[-2]
    out = torch.zeros_like(x)
    for j in range(min(K, L)):
        tap = w[..., 0, K - 1 - j][..., None, None, :]
        if j == 0:
            out = out + tap * x
        else:
            out[..., j:, :] = out[..., j:, :] + tap * x[..., :-j, :]
    return out


def _heads(p: dict, x: torch.Tensor, config):
    """B (..., S, hB, L, N), C (..., S, hC, L, N), X (..., S, hX, L, P) of one layer."""
    n, h = config.d_state, config.n_heads
    if h == 1:
        bc = _lin(x, p["x_proj.weight"])
        return bc[..., None, :, :n], bc[..., None, :, n:], x[..., None, :, :]
    B = _lin(x, p["B_proj.weight"])
    C = _lin(x, p["C_proj.weight"])
    B = B.unflatten(-1, (-1, n)).movedim(-2, -3)
    C = C.unflatten(-1, (-1, n)).movedim(-2, -3)
    W = p["W_contract"]
    if W.dim() - (x.dim() - 3) == 3:  # per-head value: (P, H, d_inner)
        X = torch.einsum("...sli,...phi->...shlp", x, W)
    else:  # shared value: chunks weighted and summed, (P, H)
        chunks = x.unflatten(-1, (h, config.head_dim))  # (..., S, L, H, P)
        X = torch.einsum("...slhp,...ph->...slp", chunks, W)[..., None, :, :]
    return B, C, X


def _mix(p: dict, Y: torch.Tensor, config) -> torch.Tensor:
    """Y (..., S, H, L, P) -> (..., S, L, d_inner)."""
    if config.n_heads == 1:
        return Y[..., 0, :, :]
    return torch.einsum("...shlp,...dph->...sld", Y, p["W_heads"])


def _chunked(B: torch.Tensor, C: torch.Tensor, X: torch.Tensor, chunk: int) -> torch.Tensor:
    """Y = (C B^T, causally masked) X of the attention form, chunk by chunk: B (..., L, N), C (..., L, N), X (..., L, P)
    (leading dims broadcast) -> (..., L, P). Within a chunk the masked scores; across chunks the state
    S = sum_tau B_tau^T X_tau (N, P) of every earlier chunk, read as C_t S. L is padded to whole chunks with zeros
    (a padded token adds nothing to the state and its output is dropped); the chunks are balanced, ceil(L / nc) tokens
    for the nc = ceil(L / chunk) of them, so that at most nc - 1 tokens are padding (L = 161, chunk 128: two of 81)."""
    L = X.shape[-2]
    nc = -(-L // chunk)
    if nc == 1:  # one chunk: the attention form itself
        return _attention(B, C, X)
    Q = -(-L // nc)

    def split(t):  # (..., L, c) -> (..., nc, Q, c)
        return torch.nn.functional.pad(t, (0, 0, 0, nc * Q - L)).unflatten(-2, (nc, Q))

    Bc, Cc, Xc = split(B), split(C), split(X)
    Y = _attention(Bc, Cc, Xc)  # (..., nc, Q, P)
    states = (Bc.transpose(-1, -2) @ Xc).cumsum(-3)  # (..., nc, N, P): the state after each chunk
    Y = torch.cat([Y[..., :1, :, :], Y[..., 1:, :, :] + Cc[..., 1:, :, :] @ states[..., :-1, :, :]], dim=-3)
    return Y.flatten(-3, -2)[..., :L, :]


def _attention(B: torch.Tensor, C: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Y = alpha X with the causally masked scores alpha[t, tau] = <C_t, B_tau> (tau <= t): (..., L, P)."""
    L = X.shape[-2]
    mask = torch.ones(L, L, dtype=torch.bool, device=X.device).tril()
    return (C @ B.transpose(-1, -2)).masked_fill(~mask, 0) @ X  # alpha: (..., L, L)


def layer_forward(p: dict, hidden: torch.Tensor, config, mode: str = "attention", return_states: bool = False):
    """One layer: hidden (..., S, L, d_model) -> (..., S, L, d_model) [, states (..., S, H, L, P, N)]."""
    x = _conv(_lin(hidden, p["in_proj.weight"]), p["conv1d.weight"])
    if config.silu:
        x = torch.nn.functional.silu(x + p["conv1d.bias"][..., None, None, :])
    B, C, X = _heads(p, x, config)
    states = None
    if mode == "attention":
        Y = _attention(B, C, X)
    elif mode == "chunked":
        Y = _chunked(B, C, X, CHUNK)
    elif mode == "recurrent":
        H = max(B.shape[-3], C.shape[-3], X.shape[-3])
        shape = torch.broadcast_shapes(B.shape[:-3], X.shape[:-3]) + (H, X.shape[-1], B.shape[-1])
        h = x.new_zeros(shape)
        ys, hs = [], []
        for t in range(x.shape[-2]):
            h = h + X[..., t, :, None] * B[..., t, None, :]  # h_t = h_{t-1} + x_t B_t^T
            ys.append(torch.einsum("...pn,...n->...p", h, C[..., t, :]))
            if return_states:
                hs.append(h)
        Y = torch.stack(ys, dim=-2)
        states = torch.stack(hs, dim=-3) if return_states else None
    else:
        raise ValueError(f"mode must be 'attention', 'chunked' or 'recurrent', got {mode!r}")
    y = _mix(p, Y, config) + x * p["D"][..., None, None, :]
    if config.gate:
        y = y * torch.nn.functional.silu(_lin(hidden, p["z_proj.weight"]))
    out = _lin(y, p["out_proj.weight"])
    return (out, states) if return_states else out


def layer_params(params: dict, layer: int) -> dict:
    prefix = f"layers.{layer}."
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def linear_mamba_forward(params: dict, hidden: torch.Tensor, config, mode: str = "attention") -> torch.Tensor:
    """The stack: h <- h + layer(h) with ``config.residual``, else h <- layer(h)."""
    h = hidden
    for layer in range(config.n_layers):
        y = layer_forward(layer_params(params, layer), h, config, mode)
        h = h + y if config.residual else y
    return h
