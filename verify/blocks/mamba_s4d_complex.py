"""Block kind ``mamba-s4d-complex``: Huang et al.'s Mamba-S4D block with the S4D mixer as the S4D paper defines it
(Gu, Gupta, Goel and Ré 2022, "On the Parameterization and Initialization of Diagonal State Space Models").

The block around the mixer is the ``mamba-s4d`` block's (``mamba_ssm.Mamba`` with its S6 mixer swapped out):
``in_proj`` (rows [x | z]) -> causal depthwise ``conv1d`` + SiLU on x -> S4D -> ``y + D x`` -> gate ``y * silu(z)``
-> ``out_proj``. The mixer, per channel c < d_inner and mode n < N/2 (N = d_state, even: N/2 complex modes, each
standing for a conjugate pair, so the state holds N real numbers per channel as in S4D):

* A[c, n] = -exp(log_A_real[c, n]) + i A_imag[c, n]: diagonal, complex, Re A < 0 (S4D's parameterization);
* Delta[c] = exp(log_dt[c]), trained (S4D's step size; Huang et al. fix Delta = 1 and fold it into A, the same
  family);
* zero-order hold on A and on B, as S4D discretises: A_bar = exp(Delta A), B_bar = (exp(Delta A) - 1) / A * B.
  ZOH, not bilinear, because it is S4D's default (its Vandermonde kernel) and Huang et al.'s eq. (5) states ZOH;
  Mamba's code writes Delta B (Euler on B), but for a time-invariant mixer the two differ only by a fixed factor per
  (channel, mode), which training absorbs into C;
* B[n]: N/2 complex numbers shared by every channel, trained (Huang et al.'s S4D takes Mamba's B in R^N, eq. 14d,
  input-independent: one vector for all channels; their parameter counts, Tables 1 and A.2/A.4, have exactly N
  trained numbers besides 2 d N + O(d), which this B accounts for; S4D's own code fixes B = 1 inside C);
* C[c, n]: complex, trained; y_t[c] = 2 Re sum_n C[c,n] h_t[c,n] (the conjugate pair's sum), h_t = A_bar h_{t-1} +
  B_bar x_t.

Trained numbers of the mixer: 2 d_inner N (A and C) + N (B) + d_inner (log_dt) + d_inner (D). The paper's KEEP FIFTH
counts fit ``2 |V| d + 2 d N + N + 4 d`` (- |V| with +PE) exactly at all 18 cells of Tables A.2/A.4 (rounded to 0.1k);
with the in/out projections, conv and gate frozen (the paper's architecture, the ``-bare`` KEEP grids) ours is that
less 2 d: 0.7% fewer at every cell (``tests/test_mamba_s4d_complex.py``).

The mixer is linear and time-invariant, so it runs as S4D runs it: the kernel K[c, l] = 2 Re sum_n C[c,n] B_bar[c,n]
A_bar[c,n]^l (a Vandermonde product), then a causal convolution of x with K by FFT. No mamba_ssm kernel is involved;
the same pure-torch code runs on the CPU and on CUDA (inside the training step's CUDA graph). Initialisation S4D-Lin:
log_A_real = log 1/2, A_imag = pi n, log_dt ~ U[log 1e-3, log 1e-1], B = 1, C ~ complex N(0, 1) (real and
imaginary parts N(0, 1/2)), D = 1 (mamba_ssm's, the block's skip).

The real-diagonal ``mamba-s4d`` (real A, B and C each (d_inner, N), Delta = softplus(dt_bias): 3 d N + 2 d) is kept as
a named ablation: it is not the S4D of the paper (its counts are about 1.4 x the paper's at N = 64).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.errors import require
from verify.blocks import BlockKind, Training
from verify.blocks.common import add_biases, freezer, lg, mamba_front, out_proj_packed, uniform

FLOAT32_PARAMS = frozenset({"log_dt", "log_A_real", "A_imag", "B", "C", "D"})
NONLINEAR_OPS = 4

UPDATE_RULE = (
    "Mamba-S4D with S4D's complex diagonal mixer, per channel c < d_inner and mode n < d_state/2: "
    "h_t[c,n] = exp(Delta[c] A[c,n]) h_{t-1}[c,n] + (exp(Delta[c] A[c,n]) - 1) / A[c,n] B[n] x_t[c] (zero-order hold "
    "on A and B), y_t[c] = 2 Re sum_n C[c,n] h_t[c,n] + D[c] x_t[c], out = out_proj(y * silu(z)); "
    "A = -exp(log_A_real) + i A_imag, Delta = exp(log_dt), B (d_state/2 complex, shared by the channels) and C "
    "(d_inner, d_state/2 complex) are parameters: nothing of the mixer depends on the input. Around it the Mamba "
    "block: [x | z] = in_proj(u), x = silu(causal depthwise conv1d(x)).")


@dataclass(frozen=True)
class MambaS4DComplexConfig:
    """The block's constructor arguments. State-dict names: ``in_proj.weight`` (2 d_inner, d_model), ``in_proj.bias``,
    ``conv1d.weight`` (d_inner, 1, d_conv), ``conv1d.bias``, ``log_dt`` (d_inner,), ``log_A_real`` and ``A_imag``
    (d_inner, d_state/2), ``B`` (d_state/2, 2) and ``C`` (d_inner, d_state/2, 2) as (real, imaginary) pairs, ``D``
    (d_inner,), ``out_proj.weight`` (d_model, d_inner), ``out_proj.bias``."""

    kind: ClassVar[str] = "mamba-s4d-complex"
    d_model: int
    d_state: int = 2
    d_conv: int = 4
    d_inner: int | None = None
    bias: bool = True
    conv_bias: bool = True

    def __post_init__(self):
        require(self.d_state >= 2 and self.d_state % 2 == 0,
                f"mamba-s4d-complex needs an even d_state >= 2 (d_state/2 complex modes, each a conjugate pair), "
                f"got {self.d_state}")

    @property
    def width(self) -> int:
        return self.d_model if self.d_inner is None else self.d_inner

    @property
    def modes(self) -> int:
        return self.d_state // 2

    def chain_length(self, seq_len: int) -> int:
        """in_proj, conv, SiLU, the kernel's exp and sum over modes, the convolution over seq_len, skip and gate,
        out_proj over the width and a readout over d_model."""
        return 2 * self.d_model + self.d_conv + self.modes + 2 * seq_len + self.width + 4 * NONLINEAR_OPS + 4

    def arguments(self) -> dict:
        return {"d_model": self.d_model, "d_state": self.d_state, "d_conv": self.d_conv, "d_inner": self.width,
                "bias": self.bias, "conv_bias": self.conv_bias}

    def zeros(self, dtype=torch.float64) -> dict[str, torch.Tensor]:
        di, m = self.width, self.modes
        sd = {"in_proj.weight": torch.zeros(2 * di, self.d_model, dtype=dtype),
              "conv1d.weight": torch.zeros(di, 1, self.d_conv, dtype=dtype),
              "log_dt": torch.zeros(di, dtype=dtype),
              "log_A_real": torch.zeros(di, m, dtype=dtype), "A_imag": torch.zeros(di, m, dtype=dtype),
              "B": torch.zeros(m, 2, dtype=dtype), "C": torch.zeros(di, m, 2, dtype=dtype),
              "D": torch.zeros(di, dtype=dtype),
              "out_proj.weight": torch.zeros(self.d_model, di, dtype=dtype)}
        if self.bias:
            sd["in_proj.bias"] = torch.zeros(2 * di, dtype=dtype)
            sd["out_proj.bias"] = torch.zeros(self.d_model, dtype=dtype)
        if self.conv_bias:
            sd["conv1d.bias"] = torch.zeros(di, dtype=dtype)
        return sd


def s4d_kernel(p: dict, L: int, work: torch.dtype) -> torch.Tensor:
    """K[..., c, l] = 2 Re sum_n C[c,n] B_bar[c,n] exp(Delta[c] A[c,n])^l, l < L, with B_bar = (exp(Delta A) - 1) / A B
    (ZOH); every parameter may carry leading (model) axes, B has the same leading axes as the others."""
    A = torch.complex(-torch.exp(p["log_A_real"].to(work)), p["A_imag"].to(work))  # (..., c, n)
    dtA = torch.exp(p["log_dt"].to(work))[..., None] * A
    B = torch.view_as_complex(p["B"].to(work).contiguous())[..., None, :]  # (..., 1, n)
    C = torch.view_as_complex(p["C"].to(work).contiguous())
    CB = C * B * torch.expm1(dtA) / A
    steps = torch.arange(L, device=A.device, dtype=work)
    return 2 * torch.einsum("...n,...nl->...l", CB, torch.exp(dtA[..., None] * steps)).real


def causal_convolution(u: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """y[b, c, t] = sum_{s <= t} kernel[c, t - s] u[b, c, s], u (b, c, L), kernel (c, L), by FFT of length 2L."""
    L = u.shape[-1]
    n = 2 * L
    y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(kernel, n=n), n=n)
    return y[..., :L]


def packed_forward(p: dict, hidden: torch.Tensor, config, scan=causal_convolution) -> torch.Tensor:
    """K blocks at once, hidden (K, b, L, d_model), every parameter with a leading K axis: the K models' channels
    folded into one (K * d_inner)-channel convolution (``scan``: u (b, c, L), kernel (c, L) -> y)."""
    K, b, L, _ = hidden.shape
    w = config.width
    x, z = mamba_front(p, hidden, w)  # (b, K w, L)
    work = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    kernel = s4d_kernel(p, L, work).reshape(K * w, L)
    x = x.to(work)
    y = scan(x, kernel) + x * p["D"].to(work).reshape(K * w, 1)
    y = (y * F.silu(z.to(work))).to(hidden.dtype)
    return out_proj_packed(y.view(b, K, w, L), p)


def forward(params: dict, hidden: torch.Tensor, config, scan=causal_convolution) -> torch.Tensor:
    """One block on hidden (batch, L, d_model)."""
    return packed_forward({k: v[None] for k, v in params.items()}, hidden[None], config, scan)[0]


class MambaS4DComplex(nn.Module):
    """The block as a module, with the state-dict names of ``MambaS4DComplexConfig`` (``load_state_dict(strict=True)``
    takes a state dict of ``MambaS4DComplexConfig.zeros``'s names and shapes)."""

    def __init__(self, d_model, d_state=2, d_conv=4, d_inner=None, bias=True, conv_bias=True, device=None,
                 dtype=None):
        super().__init__()
        self.config = c = MambaS4DComplexConfig(d_model, d_state, d_conv, d_inner, bias, conv_bias)
        kw, f32 = {"device": device, "dtype": dtype}, {"device": device, "dtype": torch.float32}
        di, m = c.width, c.modes
        self.in_proj = nn.Linear(d_model, 2 * di, bias=bias, **kw)
        self.conv1d = nn.Conv1d(di, di, d_conv, groups=di, padding=d_conv - 1, bias=conv_bias, **kw)
        self.log_dt = nn.Parameter(torch.zeros(di, **f32))
        self.log_A_real = nn.Parameter(torch.zeros(di, m, **f32))
        self.A_imag = nn.Parameter(torch.zeros(di, m, **f32))
        self.B = nn.Parameter(torch.zeros(m, 2, **f32))
        self.C = nn.Parameter(torch.zeros(di, m, 2, **f32))
        self.D = nn.Parameter(torch.zeros(di, **f32))
        self.out_proj = nn.Linear(di, d_model, bias=bias, **kw)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return forward(dict(self.named_parameters()), hidden, self.config)


def init(config: MambaS4DComplexConfig, gen: torch.Generator) -> dict:
    """A fresh state dict (float64): in_proj / conv1d / out_proj as mamba_ssm's nn.Linear / nn.Conv1d; the mixer
    S4D-Lin (the module docstring)."""
    d, di, m = config.d_model, config.width, config.modes
    log_dt = torch.rand(di, generator=gen, dtype=torch.float64) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)
    sd = {"in_proj.weight": uniform(gen, (2 * di, d), d ** -0.5),
          "conv1d.weight": uniform(gen, (di, 1, config.d_conv), config.d_conv ** -0.5),
          "log_dt": log_dt,
          "log_A_real": torch.full((di, m), math.log(0.5), dtype=torch.float64),
          "A_imag": (math.pi * torch.arange(m, dtype=torch.float64)).repeat(di, 1),
          "B": torch.stack([torch.ones(m, dtype=torch.float64), torch.zeros(m, dtype=torch.float64)], dim=-1),
          "C": torch.randn(di, m, 2, generator=gen, dtype=torch.float64) * 0.5 ** 0.5,
          "D": torch.ones(di, dtype=torch.float64),
          "out_proj.weight": uniform(gen, (d, di), di ** -0.5)}
    return add_biases(sd, config, gen, d, di)


def _run_config(s) -> MambaS4DComplexConfig:
    return MambaS4DComplexConfig(d_model=s.d_model, d_state=s.d_state, d_conv=s.d_conv, d_inner=s.expand * s.d_model)


_NO_MODULE = ("Mamba-S4D with S4D's complex diagonal mixer is this project's block "
              "(verify.blocks.mamba_s4d_complex.MambaS4DComplex, pure PyTorch on any device: S4D's Vandermonde kernel "
              "and an FFT convolution); {} has no such module")

KIND = BlockKind(
    name="mamba-s4d-complex", title="Mamba-S4D (complex S4D)", config=MambaS4DComplexConfig,
    update_rule=UPDATE_RULE, forward=forward, width=lambda c: c.width, state_size=lambda c: c.width * c.d_state,
    float32_params=FLOAT32_PARAMS, mamba_ssm=_NO_MODULE.format("mamba_ssm"),
    transformers=_NO_MODULE.format("transformers"),
    training=Training(
        _run_config, init, freezer(lambda c: slice(c.width, 2 * c.width), lambda c: slice(0, c.width)),
        packed_forward=packed_forward, reference_scan=causal_convolution,
        gate_default=True, d_bound=lambda kappa, vocab: kappa * lg(vocab),
        # Fig. 2's S4D panel has N = 4 (two complex modes); Fig. A.3's N = 1 is no complex S4D: its rule starts at
        # one conjugate pair, N = 2
        n_base={"fig2": lambda kappa, vocab: 4, "a3": lambda kappa, vocab: 2},
        note="Mamba-S4D with S4D's complex diagonal mixer (verify.blocks.mamba_s4d_complex); gate on in the paper's "
             "MQAR runs"),
)
