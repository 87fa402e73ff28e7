"""Lemma 3 (induction heads, Mamba-Delta-transpose): sympy obligations, the paper's generator, the exact reduction
to an S6 scan, and exact recall (blank included) at every position on the reference engine."""
import math
import re

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from profiles import examples

from constructions import induction_heads
from common.errors import RequirementError
from verify.export import load, save
from symbolic import lemma3 as l3
from symbolic.blocks import silu
from verify.checks import check_labelled
from verify.engines import make_engine
from verify.blocks.mamba_delta_t import MambaDeltaT, selective_scan_delta_t_via_s6
from verify.engines.scan import selective_scan_delta_t_ref, selective_scan_ref
from verify.specs.induction_heads import InductionHeadsParams, build, check
from verify.tasks.induction_heads import InductionHeadsConfig, generate, labels_for
from verify.tasks.mqar import IGNORE
from verify_constructions.cli import main

REF64 = make_engine("reference", "float64")
REF32 = make_engine("reference", "float32")


# --- symbolic ------------------------------------------------------------------------------------------------------

def test_every_obligation_holds_for_the_default_constants():
    assert [o.name for o in l3.obligations() if not o.holds] == []


def test_margin_bound_value_and_its_dependence_on_T():
    m = lambda T: float(l3.margin_lower_bound(l3.DEFAULT, sp.Integer(T)))  # noqa: E731
    K = float(l3.DEFAULT.K)
    assert m(100) == pytest.approx(K / 2, rel=1e-12)  # r_min ~ 1: the blank threshold K/2 is the binding term
    assert m(10**9) > 0.2 and m(10**20) < 0  # the fix needs lam T e^{-w} small: w = 40 covers T <= 10^9


def test_the_literal_lemma3_decays_by_half_per_step_and_has_no_margin():
    assert l3.paper_decay_after(10) == sp.Rational(1, 1024)
    assert float(l3.margin_lower_bound(l3.DEFAULT, sp.Integer(2), "paper")) < 0


@pytest.mark.parametrize("bad, broken", [
    (l3.Lemma3Constants(w=sp.Integer(0)), "wipe factor a < 1/2"),
    (l3.Lemma3Constants(w=sp.Integer(8)), "margin > 0 for every sequence of length <= 100000"),  # T e^{-8} too big
    (l3.Lemma3Constants(gate_pre=sp.Integer(-2)), "gate, B and C scales are positive"),
])
def test_obligations_fail_when_constants_break_the_proof(bad, broken):
    assert broken in {o.name for o in l3.obligations(bad) if not o.holds}


# --- generator -----------------------------------------------------------------------------------------------------

def naive_labels(seq, V):
    out = []
    for t, x in enumerate(seq):
        js = [j for j in range(t) if seq[j] == x]
        out.append(seq[js[-1] + 1] if js else V)
    return out


def test_papers_example():
    x = np.array([[2, 1, 3, 2, 4, 3, 2, 4]])
    blank = 9
    assert labels_for(x, 9).tolist() == [[blank, blank, blank, 1, blank, 2, 4, 3]]


@given(V=st.integers(2, 12), extra=st.integers(0, 40), p=st.floats(0, 1), seed=st.integers(0, 2**31))
def test_generator_labels_and_hard_case_structure(V, extra, p, seed):
    T = 2 * V + 2 + extra
    cfg = InductionHeadsConfig(V, T, p, 0.1 if T >= 20 else 0.3, 6)
    tokens, labels = generate(cfg, seed)
    assert tokens.shape == labels.shape == (6, T) and tokens.min() >= 0 and tokens.max() < V
    for s in range(6):
        assert labels[s].tolist() == naive_labels(tokens[s].tolist(), V)
    t2, l2 = generate(cfg, seed)
    assert (t2 == tokens).all() and (l2 == labels).all()


def _is_hard(seq, r_max):
    """Some token occurs exactly at the 1-based positions r and T - r, 1 <= r <= r_max, and nowhere else."""
    T = len(seq)
    for v in np.unique(seq):
        pos = np.flatnonzero(seq == v) + 1
        if len(pos) == 2 and 1 <= pos[0] <= r_max and pos[1] == T - pos[0]:
            return True
    return False


def test_hard_case_places_the_special_token_exactly_twice_at_r_and_T_minus_r():
    tokens, labels = generate(InductionHeadsConfig(10, 100, 1.0, 0.1, 300), 0)
    assert all(_is_hard(t, 10) for t in tokens)
    # its second occurrence must recall the token after the first: a (1 - 2 gamma) T-step dependency at least
    for t, y in zip(tokens, labels):
        v = next(v for v in np.unique(t) if (t == v).sum() == 2 and _is_hard(t, 10))
        i, j = np.flatnonzero(t == v)
        assert y[j] == t[i + 1] and j - i >= 80


def test_hard_case_rate_is_p():
    tokens, _ = generate(InductionHeadsConfig(20, 100, 0.75, 0.1, 3000), 1)
    rate = np.mean([_is_hard(t, 10) for t in tokens])
    assert abs(rate - 0.75) < 5 * math.sqrt(0.75 * 0.25 / 3000) + 0.005, rate


@pytest.mark.parametrize("cfg, needle", [
    (InductionHeadsConfig(10, 21), "T > 2|V| + 1"), (InductionHeadsConfig(1, 100), "|V| >= 2"),
    (InductionHeadsConfig(10, 100, p_hard=1.5), "0 <= p <= 1"), (InductionHeadsConfig(10, 100, gamma=0.001), "gamma"),
])
def test_generator_rejects_bad_configs(cfg, needle):
    with pytest.raises(RequirementError, match=re.escape(needle)):
        generate(cfg, 0)


# --- the exact reduction to an S6 scan (what the mamba_ssm engine runs) ---------------------------------------------

@given(d=st.integers(1, 5), N=st.integers(1, 5), L=st.integers(1, 12), seed=st.integers(0, 2**31))
def test_delta_t_scan_equals_flattened_s6_scan(d, N, L, seed):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(2, d, L, generator=g, dtype=torch.float64)
    delta = torch.randn(2, N, L, generator=g, dtype=torch.float64) * 3
    A = -torch.rand(d, N, generator=g, dtype=torch.float64) * 2
    B = torch.randn(2, N, L, generator=g, dtype=torch.float64) * (torch.rand(2, N, L, generator=g) < 0.6)
    C = torch.randn(2, N, L, generator=g, dtype=torch.float64)
    D, z = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(2, d, L, generator=g, dtype=torch.float64)
    bias = torch.randn(N, generator=g, dtype=torch.float64)
    want = selective_scan_delta_t_ref(u, delta, A, B, C, D, z, bias, True)
    got = selective_scan_delta_t_via_s6(u, delta, A, B, C, D, z, bias, True, scan_fn=selective_scan_ref)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12), float((got - want).abs().max())


@given(limit=st.integers(1, 40), G=st.sampled_from([1, 2, 3]), seed=st.integers(0, 2**31))
def test_scan_in_pieces_of_whole_groups_equals_one_scan(limit, G, seed):
    """CUDA's 65535-channel launch limit (lowered here): the scan in pieces of whole S6 groups equals one scan."""
    from verify.blocks import mamba_delta_t as delta_t

    g = torch.Generator().manual_seed(seed)
    b, d, N, L = 2, 2 * G, 5, 7
    u, z = (torch.randn(b, d, L, generator=g, dtype=torch.float64) for _ in range(2))
    delta = torch.randn(b, G, N, L, generator=g, dtype=torch.float64)
    A = -torch.rand(d, N, generator=g, dtype=torch.float64) * 2
    B, C = (torch.randn(b, G, N, L, generator=g, dtype=torch.float64) for _ in range(2))
    want = selective_scan_delta_t_via_s6(u, delta, A, B, C, None, z, None, True, scan_fn=selective_scan_ref)
    widths = []

    def scan(u, *args):
        widths.append(u.shape[1])
        return selective_scan_ref(u, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(delta_t, "S6_MAX_CHANNELS", limit)
        got = selective_scan_delta_t_via_s6(u, delta, A, B, C, None, z, None, True, scan_fn=scan)
    assert sum(widths) == N * d and max(widths) <= max(limit, d // G) and all(w % (d // G) == 0 for w in widths)
    assert (len(widths) > 1) == (N * d > max(limit // (d // G), 1) * (d // G))
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12), float((got - want).abs().max())


def test_reduction_refuses_an_underflowed_delta_where_b_is_nonzero():
    u, A = torch.ones(1, 1, 2), -torch.ones(1, 1)
    with pytest.raises(RequirementError, match="Delta > 0 wherever B != 0"):
        selective_scan_delta_t_via_s6(u, torch.full((1, 1, 2), -200.0), A, torch.ones(1, 1, 2), torch.ones(1, 1, 2),
                                      delta_softplus=True, scan_fn=selective_scan_ref)


def test_the_module_the_cuda_engine_uses_equals_the_reference_engine_on_cpu():
    con = induction_heads.build(6, 60)
    m = MambaDeltaT(con.config, scan_fn=selective_scan_ref, dtype=torch.float64)
    m.load_state_dict(con.mixer, strict=True)
    tokens = torch.from_numpy(generate(InductionHeadsConfig(6, 60, num_examples=8), 2)[0])
    with torch.no_grad():
        got = m(con.embedding[tokens])
    want = REF64.hidden(con, tokens)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12), float((got - want).abs().max())


# --- construction ---------------------------------------------------------------------------------------------------

def naive_induction_head_outputs(tokens: np.ndarray, V: int, c=l3.DEFAULT) -> np.ndarray:
    """Mixer outputs of the construction from Lemma 3's equations alone (numpy float64)."""
    num = lambda e: float(sp.N(e, 30))  # noqa: E731
    s_p, s_c, gate, w, lam = num(c.s_p), num(c.s_c), num(silu(c.gate_pre)), num(c.w), num(c.lam)
    beta, gamma = num(c.beta), num(c.gamma)
    sp_ = lambda x: x if x > 20 else math.log1p(math.exp(x))  # noqa: E731  (torch's thresholded softplus)
    S, T = tokens.shape
    out = np.zeros((S, T, 2 * V))
    for s in range(S):
        h = np.zeros((2 * V, V))
        for t in range(T):
            prev = tokens[s, t - 1] if t > 0 else None
            xh = np.zeros(2 * V)
            if prev is not None:
                xh[prev] = s_p
            xh[V + tokens[s, t]] = s_c
            delta = np.array([sp_(w) if k == prev else sp_(-w) for k in range(V)])
            Bv = np.array([beta if k == prev else 0.0 for k in range(V)])
            Cv = np.array([gamma if k == tokens[s, t] else 0.0 for k in range(V)])
            h = np.exp(-lam * delta)[None, :] * h + np.outer(xh, Bv)
            y = gate * (h @ Cv)
            out[s, t, V:] = y[V:]
            out[s, t, 0] = 1.0
    return out


@pytest.mark.parametrize("V, T", [(5, 40), (10, 100)])
def test_reference_engine_equals_the_independent_recurrence(V, T):
    con = induction_heads.build(V, T)
    tokens, _ = generate(InductionHeadsConfig(V, T, num_examples=6), 5)
    ref = REF64.hidden(con, torch.from_numpy(tokens)).numpy()
    naive = naive_induction_head_outputs(tokens, V)
    assert np.abs(ref - naive).max() <= 1e-12


@pytest.mark.parametrize("V", [5, 10, 20, 40])
def test_exact_recall_at_every_position_paper_settings(V):
    p = InductionHeadsParams(vocab=V, samples=12)
    for engine, rel in ((REF64, 1e-12), (REF32, 1e-5)):
        r = check(build(p), p, engine)
        assert r.correct == r.queries == 12 * 100, f"{engine.dtype_name}: {r.correct}/{r.queries}"
        assert r.min_margin >= r.proven_margin * (1 - rel), f"measured {r.min_margin} < proven {r.proven_margin}"


@pytest.mark.parametrize("V, T", [(5, 4000), (40, 500)])
def test_exact_recall_long_sequences_hard_cases(V, T):
    p = InductionHeadsParams(vocab=V, seq_len=T, p_hard=1.0, samples=3)
    r = check(build(p), p, REF32)
    assert r.correct == r.queries == 3 * T and r.min_margin >= r.proven_margin * (1 - 1e-5)


@settings(max_examples=examples(30))
@given(V=st.integers(2, 9), extra=st.integers(0, 80), p=st.floats(0, 1), seed=st.integers(0, 2**31))
def test_property_exact_recall_any_sizes(V, extra, p, seed):
    T = 2 * V + 2 + extra
    cfg = InductionHeadsConfig(V, T, p, 0.1 if T >= 20 else 0.3, 8)
    tokens, labels = generate(cfg, seed)
    r = check_labelled(induction_heads.build(V, T), tokens, labels, REF64, config={}, summary="")
    assert r.correct == r.queries == 8 * T and r.min_margin >= r.proven_margin * (1 - 1e-12)


def test_literal_lemma3_fails_without_the_fix():
    """softplus(0) = ln 2: against the blank threshold at T = 100, and, scoring only answers, by underflow
    (2^-gap) on hard cases with gaps of ~1600 steps."""
    p = InductionHeadsParams(vocab=10, variant="paper", samples=16)
    r = check(build(p), p, REF64)
    assert r.correct < r.queries and r.proven_margin < 0
    cfg = InductionHeadsConfig(10, 2000, 1.0, 0.1, 4)
    tokens, labels = generate(cfg, 0)
    answers_only = np.where(labels == 10, IGNORE, labels)
    lit = check_labelled(induction_heads.build(10, 2000, "paper"), tokens, answers_only, REF32, config={}, summary="")
    ours = check_labelled(induction_heads.build(10, 2000), tokens, answers_only, REF32, config={}, summary="")
    assert lit.correct < lit.queries and ours.correct == ours.queries


def test_construction_sizes_are_the_lemmas():
    con = induction_heads.build(20)
    assert (con.config.d_model, con.config.d_state, con.config.kind) == (40, 20, "mamba-delta-t")
    assert tuple(con.mixer["dt_proj.weight"].shape) == (20, 20) and tuple(con.mixer["A_log"].shape) == (40, 20)


def test_export_roundtrip(tmp_path):
    con = induction_heads.build(6, 50)
    save(con, tmp_path, dtype=torch.float64)
    back = load(tmp_path)
    assert back.config == con.config
    tokens = torch.from_numpy(generate(InductionHeadsConfig(6, 50, num_examples=3), 0)[0])
    assert torch.equal(REF64.hidden(back, tokens), REF64.hidden(con, tokens))


def test_bad_inputs(capsys):
    with pytest.raises(RequirementError, match="dstate"):
        induction_heads.build(300)
    assert main(["check", "induction-heads", "--vocab", "60"]) == 2
    assert "T > 2|V| + 1" in capsys.readouterr().err
    assert main(["check", "induction-heads", "--variant", "nope"]) == 2
