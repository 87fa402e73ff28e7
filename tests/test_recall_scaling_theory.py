"""The recall scaling law's derivation (symbolic.recall_scaling): exact identities, and every prediction of the
theory against a plain numeric evaluation or a Monte-Carlo of the quantity it describes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings, strategies as st
from profiles import examples

from common.errors import RequirementError
from symbolic import recall_scaling as rs
from verify import recall_law as rl
from verify.tasks.mqar import MQARConfig, generate


def test_obligations_hold_exactly():
    failed = [o.name for o in rs.obligations() if not o.holds]
    assert not failed, failed


def test_law_sigma2_is_derived_not_typed():
    """The law's sigma^2 = a N_f/(N D) + 1/D is the derived competitor variance up to the self-match fluctuation:
    equal at N = D, and within a relative 2/(a N_f + N) otherwise."""
    exact = rs.logit_moments()["out_var"].subs(rs.n_w, rs.a * rs.N_f)
    law = rs.SIGMA2_LAW.subs(rs.Lam, 1)
    assert sp.simplify((exact - law).subs(rs.N, rs.D)) == 0
    rel = sp.simplify((exact - law) / law)
    assert sp.simplify(rel - 2 * (rs.D - rs.N) / ((rs.D + 2) * (rs.a * rs.N_f + rs.N))) == 0
    assert sp.simplify(2 / (rs.a * rs.N_f + rs.N) - rel).is_positive


def _sphere(rng, n, d):
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("d,n", [(16, 4), (32, 32), (64, 8)])
def test_hash_moments_monte_carlo(d, n):
    """E c(q,q) = 1, Var c(q,q) = 2(D-N)/(N(D+2)), E c(w,q)^2 = 1/N, E g^2 = 1/D, against sampled codes."""
    rng = np.random.default_rng(d * 100 + n)
    h = {k: float(v.subs({rs.D: d, rs.N: n})) for k, v in rs.hash_moments().items()}
    M = 4000
    q, w = _sphere(rng, M, d), _sphere(rng, M, d)
    c_self = d / n * (q[:, :n] ** 2).sum(1)  # F e =d sqrt(D/N) e[:N] by rotation invariance
    c_cross = d / n * (q[:, :n] * w[:, :n]).sum(1)
    g = (q * w).sum(1)
    assert abs(c_self.mean() - h["self_mean"]) < 5 * math.sqrt(h["self_var"] / M) + 1e-12
    assert abs(c_self.var() - h["self_var"]) < 0.15 * h["self_var"] + 1e-12
    assert abs((c_cross**2).mean() - h["cross_second"]) < 0.1 * h["cross_second"]
    assert abs((g**2).mean() - h["value_second"]) < 0.1 * h["value_second"]


def test_logit_variances_against_the_circuit():
    """Signal and out-of-context competitor logits of the designed circuit: mean and variance as derived."""
    from constructions.hash_recall import draw_codes

    d, n, V, nw = 32, 8, 64, 20
    sig, comp, comp_in = [], [], []
    for s in range(300):
        E, (F,) = draw_codes(V, d, n, seed=s)
        H = E @ F.T
        q, ans = 0, 1
        keys, vals = np.arange(2, 2 + nw), np.arange(2 + nw, 2 + 2 * nw)  # distinct tokens, 22 competitors unused
        y = (H[q] @ H[q]) * E[ans] + ((H[keys] @ H[q])[:, None] * E[vals]).sum(0)
        sig.append(E[ans] @ y)
        comp.append(E[V - 1] @ y)  # a token not in the context
        comp_in.append(E[vals[0]] @ y)  # a wrong value in the context: the direct hash collision
    m = {k: float(v.subs({rs.D: d, rs.N: n, rs.n_w: nw, rs.s_u: 1})) for k, v in rs.logit_moments().items()}
    assert abs(np.mean(sig) - 1) < 4 * math.sqrt(m["signal_var"] / 300)
    assert abs(np.var(sig) / m["signal_var"] - 1) < 0.25
    assert abs(np.var(comp) / m["out_var"] - 1) < 0.25
    assert abs(np.var(comp_in) / m["in_var"] - 1) < 0.25 and m["in_var"] > 2 * m["out_var"]


@pytest.mark.parametrize("circuit,task,nf,L,fillers", [
    ("designed", "mqar", 16, 64, True), ("designed", "mqar", 8, 48, True), ("designed", "ar", 16, None, True),
    ("fact-selective", "mqar", 16, 64, True), ("fact-selective", "mqar", 16, 64, False),
    ("fact-selective", "mqar", 8, 48, True), ("fact-selective", "ar", 16, None, True)])
def test_a_from_the_generator(circuit, task, nf, L, fillers):
    """E[n_w] of symbolic.recall_scaling.leaking_writes equals the mean count on the generator's own sequences."""
    V = 512
    ar = task == "ar"
    cfg = MQARConfig(nf, V, 2 * nf + 1 if ar else L, num_examples=400, layout="zoology", random_fillers=fillers,
                     reduce_to_ar=ar)
    tokens, labels = generate(cfg, 3)
    prof = rl.collision_profile(tokens, labels, circuit=circuit, key_range=(1, V // 2), value_range=(V // 2, V))
    counted = prof.n_w + prof.exact  # exact collisions are leaking writes too (rare: a filler equal to the query)
    predicted = float(rs.leaking_writes(circuit, task, nf, None if ar or L == 4 * nf else L, fillers, V))
    assert abs(counted.mean() - predicted) < 4 * counted.std() / math.sqrt(len(counted)) + 0.02


def test_unknown_circuit_or_task_is_refused_by_name():
    """symbolic raises a plain ValueError naming the requirement; the numeric layer a RequirementError (exit 2)."""
    with pytest.raises(ValueError, match="circuit must be one of .*got 'trained'"):
        rs.leaking_writes("trained", "mqar")
    with pytest.raises(ValueError, match="task must be one of .*got 'mqa'"):
        rs.a_coefficient("designed", "mqa")
    with pytest.raises(RequirementError, match="circuit must be one of"):
        rl.collision_profile(np.zeros((1, 4), np.int64), np.full((1, 4), -100), circuit="trained")


def test_paper_a_and_filler_dependence():
    assert rs.a_coefficient("designed", "mqar", nf=16) == sp.Rational(23, 8)  # 3 - 2/16
    assert rs.a_coefficient("fact-selective", "mqar", nf=16, vocab=512) == sp.Rational(75, 64)  # 5/4 * 15/16
    assert rs.a_coefficient("fact-selective", "mqar", nf=16, random_fillers=False) == sp.Rational(15, 16)
    # the designed circuit writes everywhere: fillers do not change its a; a sparser query section raises it
    assert rs.a_coefficient("designed", "mqar", nf=16, random_fillers=False) == rs.a_coefficient("designed", "mqar", nf=16)
    assert rs.a_coefficient("designed", "mqar", nf=16, seq_len=128) > rs.a_coefficient("designed", "mqar", nf=16)


@settings(max_examples=examples(60))
@given(d=st.integers(2, 256), n=st.integers(1, 256), v=st.integers(3, 10**6), nf=st.integers(1, 500),
       a=st.floats(0.1, 5), lam=st.integers(1, 6))
def test_sympy_law_matches_plain_numeric(d, n, v, nf, a, lam):
    expr = rs.LAW.subs({rs.D: d, rs.N: n, rs.V: v, rs.N_f: nf, rs.a: sp.nsimplify(a), rs.Lam: lam})
    s2 = a * nf / (lam * n * d) + 1 / d
    lv = math.log(v)
    m = math.sqrt(2 * lv) - (math.log(lv) + math.log(4 * math.pi)) / (2 * math.sqrt(2 * lv)) if v > 2 else None
    plain = 0.5 * math.erfc(-(1 / math.sqrt(s2) - m) / math.sqrt(2))
    assert abs(float(expr.evalf(20)) - plain) < 1e-12
    assert abs(float(rl.law_num(d, n, v, nf, a, lam)) - plain) < 1e-6


def test_m_v_values_of_the_notes():
    for v, m in [(128, 2.455), (256, 2.693), (512, 2.915), (1024, 3.123), (4096, 3.509), (50000, 4.124)]:
        assert abs(float(rl.m_v_num(v)) - m) < 1e-3


def test_required_sizes_and_largest_vocab():
    """The notes' worked numbers, and that the law equals the target exactly at the computed sizes."""
    req = rl.required_sizes_num(1024, 16, 1.25, 0.99)
    assert [math.ceil(req["N_min"](d)) for d in (44, 48, 64)] == [42, 33, 18]
    for d in (40, 64, 200):
        assert abs(float(rl.law_num(d, req["N_min"](d), 1024, 16, 1.25)) - 0.99) < 1e-6
    assert req["N_min"](20) == math.inf  # D below D_min: no N suffices
    vmax = rl.largest_vocab_num(64, 32, 16, 1.25, 0.5)
    assert 5.0e9 < vmax < 6.0e9 and 2.0e4 < rl.largest_vocab_num(64, 32, 16, 1.25, 0.99) < 2.8e4
    assert abs(float(rl.law_num(64, 32, vmax, 16, 1.25)) - 0.5) < 1e-6
    with pytest.raises(RequirementError):
        rl.z_of(1.0)


def test_bounds_are_ordered_and_monotone():
    """The rigorous bound is never below the Gaussian-tail union bound's scale of validity at large sizes, shrinks
    with D, and certifies exactness only where the margin algebra allows it."""
    b1 = rl.rigorous_failure_bound(512, 512, 16, 3, 5, 1)["bound"]
    b2 = rl.rigorous_failure_bound(2048, 2048, 16, 3, 5, 1)["bound"]
    assert b2 < b1 < 1 and b2 < 1e-9
    assert rl.rigorous_failure_bound(64, 32, 512, 47, 64, 2)["bound"] == 1.0  # paper-size cells: no guarantee
    assert rl.gaussian_union_bound(2048, 1024, 512, 47) < rl.gaussian_union_bound(256, 128, 512, 47) < 1


def test_sphere_tail_exact_cases():
    assert abs(float(rl.sphere_tail(0.5, 3)) - 0.25) < 1e-7  # uniform on [-1, 1] in R^3
    assert abs(float(rl.sphere_tail(0.0, 17)) - 0.5) < 1e-7
    rng = np.random.default_rng(0)
    x = _sphere(rng, 200000, 16)[:, 0]
    for t in (0.3, 0.6):
        assert abs(float(rl.sphere_tail(t, 16)) - (x > t).mean()) < 3e-3
