"""Theorem 2's proof obligations, decided exactly by sympy, and the paper's own conv tables."""
import sympy as sp

from symbolic import theorem2 as th
from symbolic.blocks import silu


def test_every_obligation_holds_for_the_default_constants():
    failed = [o.name for o in th.obligations(mu=sp.Rational(2, 5), p_=64) if not o.holds]
    assert failed == []


def test_paper_step1_table_matches_eq56():
    """(k,v) -> e_i + e_{k+j}; (v,k) -> 3 e_j; (k,k) -> e_i + 3 e_j; (v,v) -> e_{k+j}; pad -> 3 e_1 (paper, §4.4)."""
    t = th.paper_conv_table(1)
    assert t[("key", "value")] == {"key[prev]": 1, "value[cur]": 1}
    assert t[("value", "key")] == {"value[prev]": 0, "key[cur]": 3}
    assert t[("key", "key")] == {"key[prev]": 1, "key[cur]": 3}
    assert t[("value", "value")] == {"value[prev]": 0, "value[cur]": 1}
    assert t[("pad", "key")] == {"key[cur]": 3}
    assert all(th.paper_feasibility(1).values())


def test_paper_step2_table_matches_eq70():
    """conv(k_i, v_j) puts c0 k - b = 7 on key i; conv(v_i, k_j) = c1 k - b = 97 on key j (paper, §4.4 step 2)."""
    t = th.paper_conv_table(2)
    assert t[("key", "value")]["key[prev]"] == 7
    assert t[("value", "key")]["key[cur]"] == 97
    assert all(th.paper_feasibility(2).values())


def test_paper_broadcast_bias_leaks_under_silu():
    """Why the construction uses per-channel taps: every inactive channel would output silu(-b) != 0."""
    for step in (1, 2):
        assert th.paper_silu_leak(step).is_negative


def test_our_conv_outputs_are_exact_silu_values_with_no_leak():
    t = th.conv_table()
    assert t[("blank", "blank")] == {} and t[("value", "blank")] == {}
    assert t[("key", "value")] == {"key[prev]": silu(1), "value[cur]": silu(1)}
    assert t[("key", "key")] == {"key[prev]": silu(1), "key[cur]": silu(10)}
    assert "value[cur]" not in t[("value", "key")]


def test_state_after_kv_section_matches_paper_form_without_decay():
    """Paper eq. 63: column i = k_hat e_i + v_hat e_{k+j}, k_hat = c1k^2 + c0k^2, v_hat = c0k * c1v (here silu's)."""
    c = th.DEFAULT
    col = th.state_column_after_kv(c)
    assert sp.simplify(col["key i"] - c.delta * (silu(10) ** 2 + silu(1) ** 2)) == 0
    assert sp.simplify(col["value"] - c.delta * silu(1)) == 0


def test_obligations_fail_when_constants_break_the_proof():
    """The proof check can fail: previous-key weight above current-key weight breaks adjacent queries."""
    bad = th.Theorem2Constants(key_prev=sp.Integer(10), key_cur=sp.Integer(1))
    failed = {o.name for o in th.obligations(bad) if not o.holds}
    assert "conv: adjacent keys weigh the current key more" in failed
    assert "one-hot margin > 0 (adjacent query, worst decay)" in failed


def test_decay_budget_too_large_breaks_the_margin():
    bad = th.Theorem2Constants(decay_budget=sp.Integer(5))  # r_min = e^-5: silu(10) e^-5 < silu(1)
    assert not th.margin_lower_bound(bad, "one-hot").is_positive


def test_jl_margin_obligation_rejects_too_coherent_codes():
    mu_star = th.max_coherence()
    assert 0 < mu_star < 1
    ok = {o.name: o.holds for o in th.obligations(mu=sp.Rational(1, 2), p_=16)}
    bad = {o.name: o.holds for o in th.obligations(mu=sp.Rational(9, 10), p_=16)}
    assert ok["jl margin > 0 for the drawn codes"] and not bad["jl margin > 0 for the drawn codes"]


def test_jl_two_point_silu_is_affine():
    g = sp.Integer(3)
    c = th.Theorem2Constants(value_gain=g)
    for q in (-1, 1):
        assert sp.simplify((silu(g * q) - (c.jl_gamma + c.jl_alpha * q)).rewrite(sp.exp)) == 0
