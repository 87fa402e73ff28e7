"""Theorem 1 / Proposition 1 / Corollary 1 (Haar): sympy obligations, the discrete bound (attained, never exceeded),
the constructed layer against an independent implementation and against exact projections."""
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from profiles import examples

from constructions import haar
from common.errors import RequirementError
from verify.export import load, save
from symbolic import theorem1 as t1
from verify.engines import make_engine
from verify.specs.haar import HaarParams, build, check, outputs, prop1_time
from verify.tasks.piecewise import PiecewiseConfig, generate, projection
from verify_constructions.cli import main

REF64 = make_engine("reference", "float64")
REF32 = make_engine("reference", "float32")
RESULTS = Path(__file__).resolve().parents[1] / "results" / "corollary1_error_vs_N.json"


# --- symbolic ------------------------------------------------------------------------------------------------------

def test_every_obligation_holds():
    assert [o.name for o in t1.obligations() if not o.holds] == []


@pytest.mark.parametrize("bad, broken", [
    (t1.Theorem1Constants(kappa=sp.Integer(2)), "kappa >= 4 (so kappa/2 >= 2)"),
    (t1.Theorem1Constants(kappa=sp.Integer(8)), "eps(kappa=8, lam=e^-40, T=1024) < 1e-3"),
    (t1.Theorem1Constants(a_log=sp.Integer(-2)), "eps(kappa=24, lam=e^-2, T=1024) < 1e-3"),  # decay ruins the step
])
def test_obligations_fail_for_bad_constants(bad, broken):
    assert broken in {o.name for o in t1.discrete_obligations(bad) if not o.holds}


def test_eps_decreases_with_kappa_and_tends_to_zero():
    vals = [float(t1.eps(k, 0, 1)) for k in (4, 8, 16, 24, 32, 48)]
    assert all(a > b for a, b in zip(vals, vals[1:])) and vals[-1] < 1e-8


def naive_kernel(levels: int, T: int, c=t1.DEFAULT) -> np.ndarray:
    """T K_i for every wavelet, from the construction's equations alone (numpy float64): (T, W)."""
    kappa, lam = float(c.kappa), math.exp(float(c.a_log))
    silu = lambda z: z / (1 + np.exp(-z))  # noqa: E731
    softplus = lambda z: np.where(z > 20, z, np.log1p(np.exp(np.minimum(z, 20))))  # noqa: E731
    i = np.arange(1, T + 1)
    M = 2 ** (levels + 1)
    steps = []
    for m in range(M):
        delta = softplus(-silu(kappa * (m * T / M + 0.5 - i)))
        survive = np.exp(-lam * (np.cumsum(delta[::-1])[::-1] - delta))  # prod_{r > i} e^{-lam Delta_r}
        steps.append(delta * survive / math.log(2))
    out = []
    for j, k in haar.wavelets(levels):
        st_, scale = haar.wavelet_steps(j, k, levels)
        out.append(scale * sum(cf * steps[m] for m, cf in st_))
    return np.stack(out, axis=1)


@pytest.mark.parametrize("levels, T", [(0, 2), (2, 16), (3, 128)])
def test_layer_kernel_equals_independent_implementation_and_attains_the_bound(levels, T):
    con = haar.build(levels, T)
    kernel = outputs(con, np.eye(T), REF64) * T
    naive = naive_kernel(levels, T)
    assert np.abs(kernel - naive).max() <= 1e-11
    grid = np.stack([haar.grid_values(j, k, T) for j, k in haar.wavelets(levels)], axis=1)
    err = np.abs(naive - grid).max(axis=0)
    bound = np.array(con.info["sup_bounds"])
    assert (err <= bound * (1 + 1e-9)).all()  # sup over the grid <= 2^{j/2} c_w eps (numpy rounding of a tight bound)
    assert err[0] == pytest.approx(bound[0], rel=1e-9)  # phi: attained just after its single jump (tight)


def test_the_layer_is_exactly_linear_in_the_signal():
    con = haar.build(2, 32)
    x, y = generate(PiecewiseConfig(32, 3, 2), 1)
    a, b = 0.7, -2.3
    out = outputs(con, np.stack([x, y, a * x + b * y]), REF64)
    assert np.abs(out[2] - (a * out[0] + b * out[1])).max() < 1e-12


# --- generator -----------------------------------------------------------------------------------------------------

@given(T=st.integers(2, 200), jumps=st.integers(0, 20), seed=st.integers(0, 2**31))
def test_piecewise_signals_have_the_requested_jumps(T, jumps, seed):
    jumps = min(jumps, T - 1)
    x = generate(PiecewiseConfig(T, jumps, 5), seed)
    assert x.shape == (5, T) and np.abs(x).max() <= 1.0
    assert ((np.diff(x, axis=1) != 0).sum(axis=1) == jumps).all()  # values are iid continuous: all jumps real
    assert (generate(PiecewiseConfig(T, jumps, 5), seed) == x).all()


def test_projection_is_the_exact_inner_product():
    T = 8
    x = np.arange(T, dtype=float)[None, :]
    psi00 = haar.grid_values(0, 0, T)
    assert projection(x, psi00)[0] == pytest.approx((0 + 1 + 2 + 3 - 4 - 5 - 6 - 7) / 8)


# --- checks ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("engine", [REF64, REF32])
@pytest.mark.parametrize("time", ["input", "prop1"])
def test_haar_check_within_the_derived_bound(engine, time):
    p = HaarParams(levels=2, seq_len=64, samples=32, time=time)
    r = check(build(p), p, engine)
    assert r.passed and r.correct == r.queries == 8 + 32 * 8
    assert r.max_error <= r.error_bound + r.allowance
    assert engine is REF32 or r.allowance < 1e-6 * r.error_bound  # float64: the bound itself is what is checked
    assert r.info["kernel_max_error"] >= 0.99 * r.info["eps"]  # the bound is tight on the real layer


@settings(max_examples=examples(5))
@given(levels=st.integers(0, 3), mult=st.integers(1, 3), jumps=st.integers(0, 6), seed=st.integers(0, 2**31))
def test_property_haar_any_sizes(levels, mult, jumps, seed):
    T = 2 ** (levels + 1) * mult
    p = HaarParams(levels=levels, seq_len=T, jumps=min(jumps, T - 1), samples=6, seed=seed)
    r = check(build(p), p, REF64)
    assert r.passed, (r.max_error, r.error_bound)


def test_proposition1_layer_outputs_time():
    t = prop1_time(512, REF64)
    assert np.abs(t - np.arange(1, 513)).max() < 1e-9


@pytest.mark.parametrize("kw, needle", [
    ({"levels": 3, "seq_len": 100}, "multiple of 2^(levels+1) = 16"),
    ({"levels": -1}, "levels >= 0"),
])
def test_bad_inputs(kw, needle):
    with pytest.raises(RequirementError, match=re.escape(needle)):
        haar.build(**kw)


def test_cli_check_json_and_bad_time(capsys):
    assert main(["check", "haar", "--levels", "1", "--seq-len", "8", "--samples", "4", "--json"]) == 0
    assert '"passed": true' in capsys.readouterr().out
    assert main(["check", "haar", "--time", "nope"]) == 2


def test_export_roundtrip(tmp_path):
    con = haar.build(1, 8)
    save(con, tmp_path, dtype=torch.float64)
    back = load(tmp_path)
    x = generate(PiecewiseConfig(8, 2, 3), 0)
    assert np.abs(outputs(back, x, REF64) - outputs(con, x, REF64)).max() < 1e-15  # same weights; BLAS order may differ


# --- Corollary 1 measurement ------------------------------------------------------------------------------------------

def test_haar_coefficients_and_parseval():
    from verify.haar_rates import best_n_term_errors, fourier_coefficients, haar_coefficients, norm2, random_target

    u, v = random_target(2, np.random.default_rng(0))
    c = haar_coefficients(u, v)
    assert abs(np.sum(c**2) - norm2(u, v)) < 1e-10  # complete orthonormal basis, every nonzero coefficient found
    assert len(c) <= 1 + 2 * 41  # at most one nonzero wavelet per jump per level
    e = best_n_term_errors(c, 30)
    assert (np.diff(e) <= 1e-15).all()
    f = fourier_coefficients(u, v, 4000)
    assert abs(np.sum(f**2) - norm2(u, v)) < 2e-3  # Fourier tail ~ 1/n_max


@pytest.mark.skipif(not RESULTS.exists(), reason="results/corollary1_error_vs_N.json not generated")
def test_stored_curves_show_haar_beats_fourier_at_the_expected_rates():
    res = json.loads(RESULTS.read_text())
    for m, r in res["by_m"].items():
        m = int(m)
        haar_err, four = r["haar_exact"]["geomean"], r["s4d_fourier"]["geomean"]
        assert haar_err[39] < four[119] / 5, (m, haar_err[39], four[119])  # N = 120 states: 40 wavelets vs 120 modes
        assert abs(r["rates"]["fourier_loglog_slope_fitted"] + 0.5) < 0.15
        assert r["rates"]["haar_log2_error_per_N_fitted"] < -0.5 / (6 * m)
        assert r["haar_s6_layer"]["max_coefficient_error_vs_exact"] < 1e-4
