"""The pieces of the Mamba block that constructions use, as exact sympy functions.

These mirror ``mamba_ssm.modules.mamba_simple.Mamba`` (and ``selective_scan_ref``):

* ``conv2``: one channel of the depthwise causal convolution of kernel size 2 followed by the activation,
  ``act(c_prev * x_{t-1} + c_cur * x_t + bias)`` with ``x_0 = 0`` (left zero padding).
* ``s6_step``: one step of the S6 recurrence as mamba_ssm computes it, ZOH on A and Euler on B:
  ``h_t = exp(delta * A) * h_{t-1} + delta * B_t * u_t``.
* ``gate``: ``y * silu(z)``.
"""
from __future__ import annotations

import sympy as sp


def sigmoid(x):
    return 1 / (1 + sp.exp(-x))


def silu(x):
    """SiLU(x) = x * sigmoid(x), the activation after mamba_ssm's conv and in its gate."""
    return x * sigmoid(x)


def relu(x):
    """ReLU, the activation the paper's proofs use in place of SiLU."""
    return sp.Max(0, x)


def softplus(x):
    """softplus(x) = log(1 + e^x), mamba_ssm's map from dt_proj output to the step size Delta."""
    return sp.log(1 + sp.exp(x))


def softplus_inverse(y):
    """The dt_proj bias that makes Delta = y when dt_proj's weight is zero."""
    return sp.log(sp.exp(y) - 1)


def conv2(x_prev, x_cur, c_prev, c_cur, bias=0, act=silu):
    """One channel of the size-2 causal conv and its activation (tap -2 = c_prev, tap -1 = c_cur)."""
    return act(c_prev * x_prev + c_cur * x_cur + bias)


def s6_step(h, delta, a, b, u):
    """One S6 step for one (channel, state) entry: ZOH on A (exp(delta*A)), Euler on B (delta*B*u)."""
    return sp.exp(delta * a) * h + delta * b * u


def gate(y, z):
    return y * silu(z)


class ConstantStepDecay:
    """Mixin for a construction's constants with a constant step ``delta`` and a decay budget.

    ``dt_proj.weight = 0`` and ``dt_bias = softplus^{-1}(delta)`` give the constant step; ``A_log = log(budget /
    (delta T))`` makes every decay factor within a sequence of length <= T at least ``r_min = exp(-budget)``.
    Subclasses (frozen dataclasses) define the fields ``delta`` and ``decay_budget``.
    """

    @property
    def r_min(self):
        """Lower bound on every decay factor exp(delta * A * (t - s)) within a sequence of length <= T."""
        return sp.exp(-self.decay_budget)

    @property
    def dt_bias(self):
        return softplus_inverse(self.delta)

    def a_log(self, seq_len):
        """A_log such that delta * exp(A_log) * seq_len = decay_budget."""
        return sp.log(self.decay_budget / (self.delta * seq_len))
