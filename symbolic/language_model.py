"""A one-layer construction inside a real language model's block, exactly, in sympy.

**The construction** (every ``constructions`` module): width d, ``z_t = R y_t`` with ``y = M(E[x_1..x_T])``, no norm and
no residual; its proof gives, at every scored position t (an MQAR query), ``z_t[target] - z_t[c] >= margin`` for every
other class c, and the construction-specific bounds ``z_t[target] >= target_logit`` and ``|y_t| <= output_bound``.

**The language model** (``transformers.MambaForCausalLM`` and ``mamba_ssm``'s ``MambaLMHeadModel``, one layer, no MLP),
width d' = d + pads, RMSNorm ``N_w(h) = w * h / sqrt(|h|^2 / d' + eps)``::

    h0_t = E'[x_t],   h1_t = h0_t + M'(N_w(h0)_t),   logits_t = H N_wf(h1_t)

**The wrapping** and why the LM's argmax is the construction's at every scored position:

1. Embedding ``E'[x] = [E[x] ; P[x]]`` with pads P chosen so that ``|E'[x]|^2 = d' m`` for every token: RMSNorm divides
   every token by the same ``sqrt(m + eps)`` (``prenorm_lemma``).
2. Pre-norm weight ``w = sqrt(m + eps)`` on the construction's d coordinates and 0 on the pads:
   ``N_w(E'[x]) = [E[x] ; 0]``, the construction's own input.
3. The mixer ``M'`` is the construction's padded with zeros (it reads and writes the first d coordinates only), so
   ``M'([u ; 0]) = [M(u) ; 0]`` and ``h1_t = E'[x_t] + [y_t ; 0]``.
4. Head: the row of the token of class c is ``[R_c ; 0]``, every other token's row is 0; at a scored token x the head is
   blind to the residual (``H E'[x] = 0``), and the final norm's weight is one positive constant ``c_f`` on the
   coordinates the head reads. Then ``logits_t = f_t [z_t ; 0]`` with ``f_t = c_f / sqrt(|h1_t|^2 / d' + eps)``
   (``final_norm_lemma``).
5. ``f_t > 0``: the argmax is the construction's (class tokens), and the other tokens' logit 0 lies below
   ``f_t z_t[target]``; the LM's margin at t is at least ``f_t min(margin, target_logit)``.
**Mamba-2's gated norm.** transformers' ``Mamba2Mixer`` always normalizes the gated SSM output g_t = y_t * silu(z_t)
before out_proj (``w_g * g / sqrt(|g|^2 / D_g + eps)`` over groups of D_g channels; one group here). With ``w_g`` one
positive constant on the channels out_proj reads, the mixer's output is ``phi_t`` times the construction's,
``phi_t = w_g / sqrt(|g_t|^2 / D_g + eps) >= phi_min = w_g / sqrt(G^2 / D_g + eps)`` for a bound G on |g_t|
(``gated_lemma``): the logits become ``f_t phi_t [z_t ; 0]``, the argmax is the same and the margin keeps the factor
``phi_min``. The same norm bounds the mixer's output for step 6: ``|out_proj(phi_t g_t)| <= |out_proj| w_g sqrt(D_g)``.

6. ``f_t`` is bounded: ``|h1_t| <= |E'[x_t]| + |y_t| <= sqrt(d' m) + output_bound`` gives
   ``f_t >= f_min = c_f / sqrt((sqrt(d' m) + output_bound)^2 / d' + eps)``, and the pads, which the mixer never
   writes, give ``|h1_t| >= |P[x_t]|`` and ``f_t <= f_max = c_f / sqrt(min |P|^2 / d' + eps)``. The margin the LM keeps
   is ``margin_after_norm = f_min phi_min min(margin, target_logit)`` (phi_min = 1 without a gated norm).

``Wrapping`` holds the exact numbers of one wrapped construction; ``obligations`` decides each step at them.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from symbolic.proofs import Obligation, identity, positive


@dataclass(frozen=True)
class Wrapping:
    """The exact (sympy) numbers of a construction wrapped as a language model.

    d, d_lm: the construction's width and the LM's (d' = d + pads); eps: both RMSNorms' epsilon; mean_square: m;
    row_sq_norms: |E'[x]|^2 for every token x; prenorm: w, every coordinate; final_norm: w_f on ``head_support``, the
    coordinates some head row reads; head_on_scored: every entry of H E'[x] for every scored token x; pad_sq_min:
    min |P[x]|^2 over the scored tokens; margin, target_logit: the construction's proven bounds; output_bound: a bound
    on the construction's mixer output |y_t|. Mamba-2 (``gated`` not empty): ``gated`` is w_g on the channels out_proj
    reads, ``gated_group`` D_g, ``gated_input_bound`` G >= |g_t| and ``out_proj_norm`` a bound on out_proj's spectral
    norm; the mixer output is then bounded through the gated norm instead of by ``output_bound``.
    """

    d: int
    d_lm: int
    eps: sp.Expr
    mean_square: sp.Expr
    row_sq_norms: tuple
    prenorm: tuple
    final_norm: tuple
    head_support: tuple
    head_on_scored: tuple
    pad_sq_min: sp.Expr
    margin: sp.Expr
    target_logit: sp.Expr
    output_bound: sp.Expr = sp.Integer(0)
    gated: tuple = ()
    gated_group: int = 0
    gated_input_bound: sp.Expr = sp.Integer(0)
    out_proj_norm: sp.Expr = sp.Integer(1)

    @property
    def final_weight(self):
        """c_f, the final norm's weight on the head's coordinates (its first value; obligations check they agree)."""
        return self.final_norm[0] if self.final_norm else sp.Integer(0)


def rmsnorm(h, d_lm, sq_norm, eps, weight=1):
    """One coordinate of RMSNorm: ``weight * h / sqrt(|h|^2 / d' + eps)`` with |h|^2 = ``sq_norm``."""
    return weight * h / sp.sqrt(sq_norm / d_lm + eps)


def prenorm_lemma() -> Obligation:
    """For every d' >= 1, m > 0, eps >= 0 and every coordinate e of a row with |E'[x]|^2 = d' m: the pre-norm with
    weight sqrt(m + eps) returns e (steps 1-2)."""
    e = sp.Symbol("e", real=True)
    d_lm, m = sp.symbols("d_lm m", positive=True)
    eps = sp.Symbol("eps", nonnegative=True)
    holds = identity(rmsnorm(e, d_lm, d_lm * m, eps, sp.sqrt(m + eps)), e)
    return Obligation("lemma: RMSNorm of an equal-norm row, weighted sqrt(m + eps), is the identity",
                      "sqrt(m + eps) e / sqrt(d' m / d' + eps) = e for all e, d', m > 0, eps >= 0", holds)


def final_norm_lemma() -> Obligation:
    """Step 4: with weight c_f on the head's coordinates and a head that reads only those, the head's output is
    c_f / s times the head applied to h1 (checked on two symbolic coordinates and one head row)."""
    h1, h2, r1, r2, c_f, s = sp.symbols("h1 h2 r1 r2 c_f s", positive=True)
    holds = identity(r1 * (c_f * h1 / s) + r2 * (c_f * h2 / s), (c_f / s) * (r1 * h1 + r2 * h2))
    return Obligation("lemma: a constant final-norm weight on the head's coordinates scales every logit by c_f / s",
                      "sum_k R_k (c_f h_k / s) = (c_f / s) sum_k R_k h_k", holds)


def gated_lemma() -> Obligation:
    """For every r = |g| >= 0, D >= 1, eps > 0, w > 0: |w g / sqrt(r^2 / D + eps)| <= w sqrt(D) (the gated norm
    bounds the mixer's output whatever g is)."""
    r = sp.Symbol("r", nonnegative=True)
    dg, w, eps = sp.symbols("D_g w eps", positive=True)
    slack = sp.simplify((w * sp.sqrt(dg)) ** 2 - (w * r) ** 2 / (r**2 / dg + eps))
    return Obligation("lemma: the gated norm's output has norm at most w_g sqrt(D_g)",
                      "w^2 D - w^2 r^2 / (r^2 / D + eps) >= 0 for all r >= 0, D, w, eps > 0",
                      bool(slack.is_nonnegative))


def gated_factor_min(w: Wrapping):
    """phi_min: the gated norm's per-position factor is at least this (1 without a gated norm)."""
    if not w.gated:
        return sp.Integer(1)
    return w.gated[0] / sp.sqrt(w.gated_input_bound**2 / w.gated_group + w.eps)


def mixer_output_bound(w: Wrapping):
    """A bound on the LM mixer's output |M'(...)_t|: the construction's, or through the gated norm."""
    if not w.gated:
        return w.output_bound
    return w.out_proj_norm * w.gated[0] * sp.sqrt(w.gated_group)


def factor_bounds(w: Wrapping):
    """(f_min, f_max): the final norm's per-position factor f_t = c_f / sqrt(|h1_t|^2 / d' + eps) lies in between."""
    c_f, d_lm = w.final_weight, sp.Integer(w.d_lm)
    top = (sp.sqrt(d_lm * w.mean_square) + mixer_output_bound(w)) ** 2
    f_min = c_f / sp.sqrt(top / d_lm + w.eps)
    low = w.pad_sq_min / d_lm + w.eps
    f_max = c_f / sp.sqrt(low) if positive(low) else sp.oo  # no pads and eps = 0: h1_t = 0 is possible (0 / 0)
    return f_min, f_max


def margin_after_norm(w: Wrapping):
    """The margin the LM keeps at every scored position: f_min * phi_min * min(margin, target_logit)."""
    return factor_bounds(w)[0] * gated_factor_min(w) * sp.Min(w.margin, w.target_logit)


def obligations(w: Wrapping) -> list[Obligation]:
    """Every step of the wrapping (module docstring), decided exactly at the wrapping's numbers."""
    m, eps = w.mean_square, w.eps
    scale = sp.sqrt(m + eps)
    target = w.d_lm * m
    unequal = [i for i, n in enumerate(w.row_sq_norms) if not identity(n, target)]
    wrong_w = [k for k in range(w.d) if not identity(w.prenorm[k], scale)]
    open_pads = [k for k in range(w.d, w.d_lm) if not identity(w.prenorm[k], 0)]
    leaks = [v for v in w.head_on_scored if not identity(v, 0)]
    c_f = w.final_weight
    uneven = [k for k, v in zip(w.head_support, w.final_norm) if not identity(v, c_f)]
    f_min, f_max = factor_bounds(w)
    bound = margin_after_norm(w)
    gated = []
    if w.gated:
        phi, w_g = gated_factor_min(w), w.gated[0]
        gated = [
            gated_lemma(),
            Obligation("gated norm weight is one positive constant on the channels out_proj reads",
                       f"w_g = {sp.N(w_g, 8)} > 0 on {len(w.gated)} channels, one group of D_g = {w.gated_group}, "
                       f"eps > 0", positive(w_g) and all(identity(v, w_g) for v in w.gated) and w.gated_group >= 1
                       and positive(w.eps)),
            Obligation("gated norm factor positive", f"phi_t >= phi_min = w_g / sqrt(G^2 / D_g + eps) = "
                       f"{sp.N(phi, 8)} > 0 (G = {sp.N(w.gated_input_bound, 8)})", positive(phi)),
        ]
    return [*gated,
        prenorm_lemma(),
        final_norm_lemma(),
        Obligation("RMSNorm is one scale for every token: embedding rows of equal norm",
                   f"|E'[x]|^2 = d' m = {target} for every token (rows differing: {unequal[:5] or 'none'})",
                   positive(m) and not unequal),
        Obligation("pre-norm weight undoes the scale on the construction's coordinates",
                   f"w[k] = sqrt(m + eps) = {sp.N(scale, 12)} for k < d = {w.d} (differing: {wrong_w[:5] or 'none'})",
                   not wrong_w),
        Obligation("pre-norm weight closes the pads: the mixer sees exactly the construction's embedding",
                   f"w[k] = 0 for d <= k < d' = {w.d_lm} (nonzero: {open_pads[:5] or 'none'})", not open_pads),
        Obligation("head blind to the residual at every scored token",
                   f"H E'[x] = 0 for every scored token x ({len(leaks)} nonzero entries)", not leaks),
        Obligation("final norm weight is one positive constant on the head's coordinates",
                   f"w_f[k] = c_f = {sp.N(c_f, 8)} > 0 on the {len(w.head_support)} coordinates the head reads "
                   f"(differing: {uneven[:5] or 'none'})",
                   bool(w.head_support) and positive(c_f) and not uneven),
        Obligation("the queried class's logit bound is positive (other tokens' logit 0 stays below)",
                   f"target logit >= {sp.N(w.target_logit, 8)} > 0", positive(w.target_logit)),
        Obligation("final norm factor positive and bounded",
                   f"{sp.N(f_min, 8)} <= f_t <= {sp.N(f_max, 8)}",
                   positive(f_min) and f_max != sp.oo),
        Obligation("margin after the norm > 0",
                   f"f_min * phi_min * min(margin, target logit) = {sp.N(bound, 8)} > 0", positive(bound)),
    ]
