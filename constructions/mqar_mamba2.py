"""Theorem 3 (Huang et al. 2025) in ``mamba_ssm.Mamba2``: MQAR with the Mamba-2 mixer, both steps.

Theorem: a one-layer Mamba-2 block solves MQAR with kappa keys and |V| values with N = kappa, d = kappa + |V|
(step 1, ``variant="one-hot"``) or N = O(log kappa), d = O(log kappa + log |V|) (step 2, ``variant="jl"``).

Block: ``Mamba2(d_model, d_state, d_conv, expand=1, headdim=d_ssm, d_ssm=value width, ngroups=1, rmsnorm=False,
bias=True)``: one head whose x channels are the value channels; the remaining d_inner - d_ssm channels are Mamba2's
gated MLP, left at 0. Channels of d_model: step 1 ``key[i]`` (i < kappa), ``value[j]`` (j < |V|); step 2
``kcode[m]`` (m < N), ``keyflag``, ``vcode[m]`` (m < p_v).

==============  ===============================================================================================
embedding       step 1: key i -> e_{key[i]}, value j -> e_{value[j]}; step 2: key i -> k_i on kcode + 1 on
                keyflag, value j -> v_j on vcode (balanced ±1 codes); noise -> 0
in_proj         x rows <- value coordinates; B rows and C rows <- key coordinates (step 2: kcode and keyflag);
                z rows: weight 0, bias ``gate_pre``; dt rows 0; gated-MLP rows 0
conv1d          x: tap -1 = g; B: tap -2 = b1 (step 2: b on kcode and keyflag); C: tap -1 = c1 (step 2: c(N) on kcode,
                -c(N) on keyflag); bias 0; older taps 0 (any d_conv >= 2)
dt_bias         softplus^{-1}(delta)           A_log  log(decay_budget / (delta * seq_len))       D  0
out_proj        the SSM output (value channels) -> the value coordinates of d_model
readout         row j: e_{value[j]} (step 1) or v_j on vcode (step 2)
==============  ===============================================================================================

Constants, the SiLU fix for signed codes (the key-flag state coordinate) and the margin bound with the inequality
each constant satisfies: ``symbolic.theorem3``. Sizes: step 1 N = kappa, d_model = kappa + |V|; step 2
N = key_dim + 1 state coordinates (the flag), d_model = key_dim + 1 + p_v, p_v = ``jl_dim(|V|, jl_eps)``.

**Key codes in step 2 and the rank bound.** With ``key_dim=None`` the keys are the balanced columns of the
Sylvester-Hadamard matrix of order 2^ceil(log2(kappa+1)) (orthogonal: no key interference), and the margin is proven
for every sequence. No d_state < kappa can be proven for every sequence, whatever the key codes. At a query of key i
the logit difference between two values a and b is sum_l W_il (d_{j(l)}), with W_il = rho_l <B(key l), C(key i)>
(a kappa x kappa matrix of rank <= d_state that does not depend on the values) and d_a = -d_b > 0 (one-hot values,
or balanced codes read by their own rows). Give key i value a and every other key l value a if W_il < 0, b if
W_il > 0: the margin is d_a (W_ii - sum_{l != i} |W_il|). Exact recall on every sequence (|V| >= 2) thus needs W
strictly diagonally dominant, hence nonsingular, hence d_state >= kappa (``tests/test_theorem3.py`` builds this
witness and shows the recall failing at key_dim < kappa). The paper's N = O(log kappa) is a typical-case statement
(its Remark 7). ``key_dim=N`` builds that regime with balanced key codes of low coherence
(``jl.low_coherence_codes``); the proof's margin is then the bound of ``symbolic.theorem3.margin_lower_bound``
if it is positive; otherwise the proof says the parameters are outside it (``Proof.outside``: no worst-case
guarantee) and recall is only measured. Measured with
``verify.key_dim`` (smallest even key_dim with exact recall on all queries): kappa = 4, 8, 16, 32 need key_dim =
6, 10, 16, 26 at |V| = 128, T = 100 (1000 sequences) and 6, 10, 12, 20 at |V| = 512, T = 256 (500 sequences), i.e.
about 6-7.5 ln kappa (paper: log kappa in the theorem, 4 ln kappa in training, 8 ln kappa in Fig. 2's models).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import sympy as sp
import torch

from common.errors import require
from constructions.jl import (coherence, draw_codes, exact_ratio, hadamard_codes, hadamard_dim, jl_dim,
                              low_coherence_codes)
from constructions.proof import Proof, margin_obligation, obligations_of
from constructions.weights import Mamba2Weights
from constructions.layout import Construction, Mamba2Config, MQARTokens
from symbolic import theorem3 as th

NAME = "mqar-mamba2"
THEOREM = "Theorem 3 (Huang et al. 2025)"
VARIANTS = ("one-hot", "jl")


def key_dim_default(kappa: int) -> int:
    """Step 2's key code dimension without ``key_dim``: the Sylvester-Hadamard order with kappa balanced columns."""
    return hadamard_dim(kappa)


def sizes(kappa: int, vocab_size: int, variant: str = "one-hot", jl_eps: float = 0.5, key_dim: int | None = None):
    if variant == "one-hot":
        n_key, p, extra = kappa, vocab_size, 0
    else:
        n_key, p, extra = key_dim or key_dim_default(kappa), jl_dim(vocab_size, jl_eps), 1
    d_state = n_key + extra
    return {"d_model": n_key + extra + p, "d_inner": n_key + extra + p, "d_state": d_state, "value_dim": p,
            "key_dim": n_key, "state_size": p * d_state}


def key_interference(codes: np.ndarray) -> float:
    """sigma_k = max_i sum_{l != i} |<k_l, k_i>| / N over the columns of a (N, kappa) code matrix."""
    gram = np.abs(codes.T @ codes).astype(np.float64)
    np.fill_diagonal(gram, 0)
    return float(gram.sum(axis=1).max()) / codes.shape[0]


def _key_codes(kappa: int, key_dim: int | None, seed: int):
    if key_dim is None:
        return hadamard_codes(kappa), {"key_codes": "sylvester-hadamard"}
    require(key_dim >= 2 and key_dim % 2 == 0, f"MQAR Mamba-2 construction needs an even key_dim >= 2, got {key_dim}")
    codes = low_coherence_codes(key_dim, kappa, seed + 1000)
    mu = coherence(codes)
    require(mu < 1, f"MQAR Mamba-2 construction needs kappa key codes that are pairwise neither equal nor opposite; "
                    f"key_dim={key_dim} gave coherence 1 for kappa={kappa} (raise key_dim)")
    return codes, {"key_codes": "low-coherence balanced", "key_coherence": mu, "key_code_seed": seed + 1000}


def _check_args(kappa, vocab_size, variant, seq_len, d_conv, noise_vocab):
    require(kappa >= 1, f"MQAR Mamba-2 construction needs kappa >= 1, got kappa={kappa}")
    require(vocab_size >= 2, f"MQAR Mamba-2 construction needs |V| >= 2 values, got vocab_size={vocab_size}")
    require(variant in VARIANTS, f"MQAR Mamba-2 construction variant must be one of {VARIANTS}, got {variant!r}")
    require(seq_len >= 1, f"MQAR Mamba-2 construction needs seq_len >= 1, got seq_len={seq_len}")
    require(d_conv >= 2, f"MQAR Mamba-2 construction needs d_conv >= 2 (a size-2 conv), got d_conv={d_conv}")
    require(noise_vocab >= 1, f"MQAR Mamba-2 construction needs noise_vocab >= 1, got noise_vocab={noise_vocab}")


def build(kappa: int, vocab_size: int, variant: str = "one-hot", seq_len: int = 256, seed: int = 0,
          d_conv: int = 4, jl_eps: float = 0.5, noise_vocab: int = 1, key_dim: int | None = None,
          constants: th.Theorem3Constants = th.DEFAULT) -> Construction:
    """Weights of Theorem 3's construction, valid for every MQAR sequence of length <= seq_len."""
    _check_args(kappa, vocab_size, variant, seq_len, d_conv, noise_vocab)
    c, num = constants, (lambda e: float(sp.N(e, 30)))
    info: dict = {"variant": variant, "seq_len": seq_len}
    if variant == "one-hot":
        keys, values = np.eye(kappa, dtype=np.int64), np.eye(vocab_size, dtype=np.int64)
        n, flag = kappa, 0
        bound, obligations, outside = th.margin_lower_bound(c, 1), obligations_of(th.obligations, c), None
        b_gain = c_gain = None
    else:
        keys, key_info = _key_codes(kappa, key_dim, seed)
        n, flag = keys.shape[0], 1
        values, mu, used = draw_codes(jl_dim(vocab_size, jl_eps), vocab_size, seed, 1.0, "MQAR Mamba-2 JL values")
        sigma = key_interference(keys)
        mu, sigma_exact = exact_ratio(mu, values.shape[0]), exact_ratio(sigma, keys.shape[0])
        p_v = sp.Integer(values.shape[0])
        bound = th.margin_lower_bound(c, 2, sp.Integer(n), p_v, mu, sigma_exact)
        obligations = obligations_of(th.obligations, c, sp.Integer(n), p_v, mu, sigma_exact)
        info.update(key_info, jl_eps=jl_eps, coherence=float(mu), code_seed=used, key_interference=sigma,
                    key_interference_max=num(th.max_interference(c, mu)))
        outside = None if bound.is_positive else (
            f"key_dim={n} gives key interference {sigma:.3g} >= {info['key_interference_max']:.3g}: no margin for "
            f"every sequence (N >= kappa={kappa} is necessary, rank bound); recall is measured only")
        b_gain, c_gain = num(c.key_b), num(c.key_c(sp.Integer(n)))
    info.update(key_dim=n, value_dim=values.shape[0])
    proof = Proof("margin", "argmax = queried value at every query, logit margin >= the bound, every sequence of "
                            f"length <= {seq_len}",
                  _with_margin(obligations, bound) if outside is None else obligations_of(th.obligations, c),
                  margin=None if outside else num(bound), outside=outside)
    return replace(_assemble(keys, values, flag, b_gain, c_gain, seq_len, d_conv, noise_vocab, c, info), proof=proof)


def _with_margin(obligations, bound):
    return lambda: (*obligations(), margin_obligation(bound, "these constants and codes"))


def _assemble(keys, values, flag, b_gain, c_gain, seq_len, d_conv, noise_vocab, c, info) -> Construction:
    """Write the weights for key codes (n, kappa) and value codes (p, |V|); flag = 1 adds the key-flag coordinate."""
    n, kappa = keys.shape
    p, vocab_size = values.shape
    num = lambda e: float(sp.N(e, 30))  # noqa: E731
    t = lambda a: torch.from_numpy(np.asarray(a)).double()  # noqa: E731
    d, kc, vc = n + flag + p, slice(0, n + flag), slice(n + flag, n + flag + p)
    cfg = Mamba2Config(d_model=d, d_state=n + flag, d_conv=d_conv, d_ssm=p)
    tokens = MQARTokens(kappa, vocab_size, noise_vocab)

    embedding = torch.zeros(tokens.n_tokens, d, dtype=torch.float64)
    embedding[:kappa, :n] = t(keys.T)
    embedding[:kappa, n:n + flag] = 1.0
    embedding[kappa:kappa + vocab_size, vc] = t(values.T)

    W = Mamba2Weights(cfg)
    eye = lambda k: torch.eye(k, dtype=torch.float64)  # noqa: E731
    W.in_proj.x.weight[:, vc] = eye(p)
    W.in_proj.B.weight[:, kc] = eye(n + flag)
    W.in_proj.C.weight[:, kc] = eye(n + flag)
    W.in_proj.z.bias[:] = num(c.gate_pre)
    W.conv.tap(0, "x")[:] = num(c.value_gain)
    W.conv.tap(1, "B")[:] = num(c.onehot_b) if b_gain is None else b_gain
    W.conv.tap(0, "C")[:] = num(c.onehot_c) if c_gain is None else c_gain
    if flag:
        W.conv.tap(0, "C")[-1] = -c_gain  # C[flag] = silu(-c) at a key: cancels the codes' SiLU offset
    W.dt_bias[:] = num(c.dt_bias)
    W.A_log[:] = num(c.a_log(seq_len))
    W.out_proj.weight[vc, cfg.d_mlp:] = eye(p)
    sd = W.state_dict()

    readout = torch.zeros(vocab_size, d, dtype=torch.float64)
    readout[:, vc] = t(values.T)
    channels = ([f"key[{i}]" for i in range(n)] + [f"value[{j}]" for j in range(p)] if not flag else
                [f"kcode[{m}]" for m in range(n)] + ["keyflag"] + [f"vcode[{m}]" for m in range(p)])
    return Construction(NAME, THEOREM, cfg, embedding, sd, readout, channels, tokens, info)
