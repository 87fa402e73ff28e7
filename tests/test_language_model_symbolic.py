"""symbolic.language_model: the wrapping of a construction as a language model, decided exactly on small hand-made
numbers whose bounds are worked out here by hand; each broken condition fails its own obligation."""
from __future__ import annotations

import dataclasses

import pytest
import sympy as sp

from symbolic import language_model as L

# d = 2 construction coordinates, d' = 3, m = 1, eps = 0: rows of squared norm 3, pre-norm weight sqrt(1 + 0) = 1;
# the head reads coordinate 1 with final-norm weight c_f = 2; |y_t| <= 1; pads of the scored tokens |P|^2 >= 2.
BASE = L.Wrapping(d=2, d_lm=3, eps=sp.Integer(0), mean_square=sp.Integer(1), row_sq_norms=(3, 3, 3),
                  prenorm=(1, 1, 0), final_norm=(2,), head_support=(1,), head_on_scored=(0, 0),
                  pad_sq_min=sp.Integer(2), margin=sp.Integer(1), target_logit=sp.Integer(3),
                  output_bound=sp.Integer(1))
# Mamba-2: eps = 1/4 (so the pre-norm weight is sqrt(5)/2), a gated norm of weight 1 over D_g = 4 channels, G = 2.
GATED = dataclasses.replace(BASE, eps=sp.Rational(1, 4), prenorm=(sp.sqrt(5) / 2,) * 2 + (0,), gated=(1, 1),
                            gated_group=4, gated_input_bound=sp.Integer(2), out_proj_norm=sp.Integer(1),
                            output_bound=sp.Integer(0))


def failing(w) -> set[str]:
    return {o.name for o in L.obligations(w) if not o.holds}


def test_every_obligation_holds_and_the_bounds_are_the_hand_computed_ones():
    assert failing(BASE) == set()
    f_min, f_max = L.factor_bounds(BASE)
    # |h1| <= sqrt(d' m) + |y| = sqrt(3) + 1, so f >= 2 / sqrt((sqrt(3) + 1)^2 / 3); |h1|^2 >= 2, so f <= 2 / sqrt(2/3)
    assert sp.simplify(f_min - 2 * sp.sqrt(3) / (sp.sqrt(3) + 1)) == 0
    assert sp.simplify(f_max - sp.sqrt(6)) == 0
    assert sp.simplify(L.margin_after_norm(BASE) - f_min * 1) == 0  # min(margin 1, target 3) = 1


def test_the_gated_norm_adds_its_factor_and_bounds_the_mixer_output():
    assert failing(GATED) == set()
    phi = L.gated_factor_min(GATED)
    assert sp.simplify(phi - 2 / sp.sqrt(5)) == 0  # 1 / sqrt(G^2 / D_g + eps) = 1 / sqrt(1 + 1/4)
    assert L.mixer_output_bound(GATED) == 2  # w_g sqrt(D_g) |out_proj|
    f_min = 2 / sp.sqrt((sp.sqrt(3) + 2) ** 2 / 3 + sp.Rational(1, 4))
    assert sp.simplify(L.factor_bounds(GATED)[0] - f_min) == 0
    assert sp.simplify(L.margin_after_norm(GATED) - f_min * phi) == 0


def test_the_lemmas_hold_for_all_values():
    assert L.prenorm_lemma().holds and L.final_norm_lemma().holds and L.gated_lemma().holds


@pytest.mark.parametrize("change, names", [
    ({"row_sq_norms": (3, 4, 3)}, {"RMSNorm is one scale for every token: embedding rows of equal norm"}),
    ({"prenorm": (1, 2, 0)}, {"pre-norm weight undoes the scale on the construction's coordinates"}),
    ({"prenorm": (1, 1, 1)}, {"pre-norm weight closes the pads: the mixer sees exactly the construction's embedding"}),
    ({"head_on_scored": (0, 1)}, {"head blind to the residual at every scored token"}),
    ({"final_norm": (-2,)}, {"final norm weight is one positive constant on the head's coordinates",
                             "final norm factor positive and bounded", "margin after the norm > 0"}),
    ({"target_logit": sp.Integer(-1)}, {"the queried class's logit bound is positive (other tokens' logit 0 stays "
                                        "below)", "margin after the norm > 0"}),
    ({"margin": sp.Integer(0)}, {"margin after the norm > 0"}),
    ({"pad_sq_min": sp.Integer(0)}, {"final norm factor positive and bounded"}),  # eps = 0 and no pad: 0 / 0
])
def test_each_broken_condition_fails_its_obligation(change, names):
    assert failing(dataclasses.replace(BASE, **change)) == names


@pytest.mark.parametrize("change, names", [
    ({"gated": (1, 2)}, {"gated norm weight is one positive constant on the channels out_proj reads"}),
    ({"gated": (-1, -1)}, {"gated norm weight is one positive constant on the channels out_proj reads",
                           "gated norm factor positive", "margin after the norm > 0"}),
])
def test_a_broken_gated_norm_fails_its_obligation(change, names):
    assert names <= failing(dataclasses.replace(GATED, **change))
    assert "gated norm weight is one positive constant on the channels out_proj reads" in failing(
        dataclasses.replace(GATED, eps=sp.Integer(0), prenorm=(1, 1, 0)))  # no eps: the gated norm may divide by 0
