"""Theorem 3 (MQAR with the Mamba-2 mixer): the sympy proof obligations, exact recall with the proven margin on the
reference engine, the sequences the proof singles out (adjacent and repeated queries), and the rank bound."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from profiles import examples
from mqar_helpers import logits_at, run, sequence, single_thread  # noqa: F401 (autouse fixture)

from constructions import mqar_mamba2
from common.errors import RequirementError
from constructions.jl import coherence, hadamard_codes
from symbolic import theorem3 as th
from verify.checks import check_mqar
from verify.engines import make_engine
from verify.tasks.mqar import MQARConfig

TOL = {"float64": 1e-9, "float32": 1e-4}  # relative slack of measured vs proven margin (rounding of the weights)


# --- the proof --------------------------------------------------------------------------------------------------

def test_every_obligation_holds_exactly():
    failed = [o.name for o in th.obligations() if not o.holds]
    assert failed == []


def test_step2_margin_obligation_for_drawn_codes():
    con = mqar_mamba2.build(8, 64, "jl", seq_len=64)
    obs = th.obligations(n=con.info["key_dim"], p_v=con.info["value_dim"], mu_v=con.info["coherence"],
                         sigma_k=con.info["key_interference"])
    assert all(o.holds for o in obs)


def test_flag_cancellation_is_exact_for_every_n_and_fails_for_a_wrong_n():
    c = th.DEFAULT
    assert th.flag_cancellation(c) == 0  # symbolic N
    n = sp.Integer(16)
    wrong = n * c.key_b / 2 * c.key_tanh * c.key_c(n + 1) / 2 * c.key_c_tanh(n + 1) + \
        th.silu(c.key_b) * th.silu(-c.key_c(n + 1))  # c tuned for N + 1 used with N codes
    assert sp.simplify(wrong) != 0 and abs(float(wrong)) > 1e-3


@pytest.mark.parametrize("bad, failing", [
    (th.Theorem3Constants(gate_pre=sp.Integer(-2)), "gate is a positive constant"),
    (th.Theorem3Constants(onehot_b=sp.Integer(0)), "step 1 conv outputs are positive"),
    (th.Theorem3Constants(onehot_c=sp.Integer(-1)), "step 1 margin > 0"),
])
def test_bad_constants_fail_their_obligation(bad, failing):
    assert failing in [o.name for o in th.obligations(bad) if not o.holds]


def test_step2_margin_obligation_fails_when_keys_interfere_too_much():
    sigma = float(th.max_interference(th.DEFAULT, sp.Rational(1, 4))) + 0.01
    ob = th.obligations(n=16, p_v=32, mu_v=0.25, sigma_k=sigma)[-1]
    assert ob.name.startswith("step 2 margin") and not ob.holds


def test_hadamard_codes_have_no_interference():
    codes = hadamard_codes(13)
    assert codes.shape == (16, 13) and (codes.sum(0) == 0).all()
    assert mqar_mamba2.key_interference(codes) == 0 and coherence(codes) == 0


# --- exact recall on the reference engine ---------------------------------------------------------------------

@settings(max_examples=examples(50))
@given(kappa=st.integers(1, 10), vocab=st.integers(2, 40), extra=st.integers(0, 24), passes=st.integers(1, 3),
       variant=st.sampled_from(mqar_mamba2.VARIANTS), dtype=st.sampled_from(["float64", "float32"]),
       seed=st.integers(0, 2**16))
def test_exact_recall_on_every_query_with_proven_margin(kappa, vocab, extra, passes, variant, dtype, seed):
    T = (2 + passes) * kappa + extra
    con = mqar_mamba2.build(kappa, vocab, variant, seq_len=T, seed=seed)
    r = check_mqar(con, MQARConfig(kappa, vocab, T, num_examples=16, query_passes=passes),
                   make_engine("reference", dtype), seed=seed + 1)
    proven = con.proof.margin
    assert r.correct == r.queries, f"{r.correct}/{r.queries} queries recalled"
    assert r.min_margin >= proven * (1 - TOL[dtype]), f"measured margin {r.min_margin} < proven {proven}"


@pytest.mark.parametrize("variant", mqar_mamba2.VARIANTS)
def test_default_sizes_recall(variant):
    con = mqar_mamba2.build(32, 512, variant, seq_len=256)
    r = check_mqar(con, MQARConfig(32, 512, 256, num_examples=16, query_passes=2), make_engine("reference"), seed=3)
    assert r.correct == r.queries and r.min_margin >= con.proof.margin * (1 - 1e-9)


@pytest.mark.parametrize("variant", mqar_mamba2.VARIANTS)
def test_adjacent_and_repeated_queries(variant):
    """Queries of the same key back to back, of different keys back to back, and right after the KV section."""
    con = mqar_mamba2.build(4, 6, variant, seq_len=40)
    kv = [(2, 5), (0, 1), (3, 1), (1, 4)]
    tail = [1, 2, 2, 2, 0, 3, None, 3, 1, 0, None, None, 2]
    tokens, labels = sequence(con, kv, tail)
    q, correct, margin = run(con, make_engine("reference"), tokens, labels)
    assert (q, correct) == (len([t for t in tail if t is not None]),) * 2
    assert margin >= con.proof.margin * (1 - 1e-9)


def test_one_hot_read_is_exactly_the_stored_value():
    """Step 1 has no interference at all: every non-target logit is 0 up to float64 rounding."""
    con = mqar_mamba2.build(3, 5, "one-hot", seq_len=20)
    tokens, _ = sequence(con, [(0, 2), (1, 2), (2, 4)], [1, 1, 0])
    for pos, target in ((6, 2), (7, 2), (8, 2)):
        logits = logits_at(con, make_engine("reference"), tokens, pos)
        others = np.delete(logits, target)
        assert np.abs(others).max() < 1e-12 and logits[target] >= con.proof.margin


# --- N = O(log kappa): typical-case only ------------------------------------------------------------------------

def adversarial_sequence(con, a: int = 0, b: int = 1):
    """The rank-bound witness: query i is the key with the largest key interference; every other key l gets value
    ``a`` (the target's) if <k_l, k_i> < 0 and the competitor ``b`` otherwise."""
    keys = con.embedding[:con.tokens.kappa, :con.info["key_dim"]].numpy()
    gram = keys @ keys.T
    np.fill_diagonal(gram, 0)
    i = int(np.abs(gram).sum(1).argmax())
    kv = [(l, a if (l == i or gram[i, l] < 0) else b) for l in range(con.tokens.kappa) if l != i] + [(i, a)]
    return sequence(con, kv, [i]), i


def test_small_key_dim_has_no_proof_and_an_adversarial_sequence_breaks_it():
    """N < kappa: the proven margin is None, and the sequence built from the rank-bound argument is recalled wrong."""
    kappa = 16
    con = mqar_mamba2.build(kappa, 8, "jl", seq_len=64, key_dim=8)
    assert con.proof.margin is None and "rank bound" in con.proof.outside
    (tokens, labels), _ = adversarial_sequence(con)
    q, correct, margin = run(con, make_engine("reference"), tokens, labels)
    assert q == 1 and correct == 0 and margin < 0


def test_same_adversarial_sequence_is_recalled_with_hadamard_keys():
    con = mqar_mamba2.build(16, 8, "jl", seq_len=64)
    kv = [(l, 0 if l % 2 else 1) for l in range(16) if l != 5] + [(5, 0)]
    tokens, labels = sequence(con, kv, [5])
    q, correct, margin = run(con, make_engine("reference"), tokens, labels)
    assert q == correct == 1 and margin >= con.proof.margin * (1 - 1e-9)


def test_key_dim_requirements():
    with pytest.raises(RequirementError, match="even key_dim"):
        mqar_mamba2.build(8, 16, "jl", key_dim=7)
    with pytest.raises(RequirementError, match="raise key_dim"):
        mqar_mamba2.build(8, 16, "jl", key_dim=4)  # only 3 balanced codes in 4 dims that are not +-each other
    with pytest.raises(RequirementError, match="d_conv >= 2"):
        mqar_mamba2.build(8, 16, d_conv=1)


def test_export_round_trip(tmp_path):
    from verify.export import load, save

    con = mqar_mamba2.build(5, 12, "jl", seq_len=30)
    loaded = load(save(con, tmp_path, dtype=torch.float64))
    # the export records the block's arguments resolved (headdim, d_ssm): the same block, each default spelled out
    assert loaded.config.arguments() == con.config.arguments() and loaded.info == con.info
    assert con.config.headdim is None and loaded.config.headdim == con.config.head_dim
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in con.state_dict().items())
    r = check_mqar(loaded, MQARConfig(5, 12, 30, num_examples=8), make_engine("reference"), seed=1)
    assert r.correct == r.queries


def test_typical_case_key_dim_is_below_the_proven_one():
    """On typical sequences (a measurement, not a proof) fewer key dimensions than the Hadamard order suffice."""
    from verify.key_dim import empirical_key_dim

    n = empirical_key_dim(4, 128, seq_len=24, samples=64)
    assert n is not None and n < mqar_mamba2.key_dim_default(4)
