"""Theorem 4 (MQAR with the Mamba-S4D block): the sympy proof obligations, exact recall with the proven margin on the
reference engine, repeated adjacent keys (the paper's edge case), and the export into the project's block."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from profiles import examples
from mqar_helpers import logits_at, run, sequence, single_thread  # noqa: F401 (autouse fixture)

from constructions import mqar_s4d
from common.errors import RequirementError
from symbolic import theorem4 as th
from verify.checks import check_mqar
from verify.engines import make_engine
from verify.blocks.mamba_s4d import MambaS4D
from verify.tasks.mqar import MQARConfig

TOL = {"float64": 1e-9, "float32": 1e-4}


# --- the proof --------------------------------------------------------------------------------------------------

def test_every_obligation_holds_exactly():
    assert [o.name for o in th.obligations(seq_len=256, p=78, mu=0.5) if not o.holds] == []


def test_conv_table_matches_the_paper_numbers():
    """Eq. 87: (k_i, v_j) -> 100 + 1 - 100 = 1, (k_i, k_i) -> 10 (the repeated-key edge case), the rest <= 0."""
    t1 = th.conv_table(step=1)
    assert t1[("key", "value+")] == (1, "signal") and t1[("key", "key")] == (10, "uniform")
    assert t1[("key", "blank")] == (0, "zero") and th.leak_gap(th.DEFAULT, 1) == 80
    t2 = th.conv_table(step=2)
    assert t2[("key", "value+")] == (2, "signal") and t2[("key", "value-")] == (0, "zero")
    assert th.leak_gap(th.DEFAULT, 2) == 70


@pytest.mark.parametrize("bad, failing", [
    (th.Theorem4Constants(threshold=sp.Integer(99)), "step 1: (key i, anything else) writes exactly 0"),
    (th.Theorem4Constants(key=sp.Integer(-10), c_prev=sp.Integer(-10)), "gate is exact"),
    (th.Theorem4Constants(c_cur=sp.Integer(-1)), "step 1: conv signal is positive"),
    (th.Theorem4Constants(c_cur=sp.Integer(9)), "step 1: every other pair leaks at most L e^-L"),  # (v, k) -> 0
])
def test_bad_constants_fail_their_obligation(bad, failing):
    assert failing in [o.name for o in th.obligations(bad) if not o.holds]


def test_margin_obligation_fails_when_leaks_outweigh_the_signal():
    weak = th.Theorem4Constants(c_prev=sp.Rational(11, 9), threshold=sp.Rational(110, 9))  # L = 1: leaks up to 1/e
    assert th.leak_gap(weak, 1) == 1
    ob = th.obligations(weak, seq_len=64)[-1]
    assert ob.name == "step 1 margin > 0" and not ob.holds


# --- exact recall on the reference engine ---------------------------------------------------------------------

@settings(max_examples=examples(50))
@given(kappa=st.integers(1, 8), vocab=st.integers(2, 24), extra=st.integers(0, 24), passes=st.integers(1, 3),
       variant=st.sampled_from(mqar_s4d.VARIANTS), dtype=st.sampled_from(["float64", "float32"]),
       seed=st.integers(0, 2**16))
def test_exact_recall_on_every_query_with_proven_margin(kappa, vocab, extra, passes, variant, dtype, seed):
    T = (2 + passes) * kappa + extra
    con = mqar_s4d.build(kappa, vocab, variant, seq_len=T, seed=seed)
    r = check_mqar(con, MQARConfig(kappa, vocab, T, num_examples=16, query_passes=passes),
                   make_engine("reference", dtype), seed=seed + 1)
    proven = con.proof.margin
    assert r.correct == r.queries, f"{r.correct}/{r.queries} queries recalled"
    assert r.min_margin >= proven * (1 - TOL[dtype]), f"measured margin {r.min_margin} < proven {proven}"


@pytest.mark.parametrize("variant", mqar_s4d.VARIANTS)
def test_default_sizes_recall(variant):
    con = mqar_s4d.build(16, 256, variant, seq_len=256)
    r = check_mqar(con, MQARConfig(16, 256, 256, num_examples=8, query_passes=2), make_engine("reference"), seed=3)
    assert r.correct == r.queries and r.min_margin >= con.proof.margin * (1 - 1e-9)


@pytest.mark.parametrize("variant", mqar_s4d.VARIANTS)
def test_repeated_adjacent_keys_and_queries(variant):
    """(k_i, k_i) writes the same value on every slot of block i: it must not change any margin."""
    con = mqar_s4d.build(4, 6, variant, seq_len=40)
    kv = [(2, 5), (0, 1), (3, 1), (1, 4)]
    tail = [1, 1, 1, 2, 0, 3, None, 3, 1, 0, None, 2, 2]
    tokens, labels = sequence(con, kv, tail)
    engine = make_engine("reference")
    q, correct, margin = run(con, engine, tokens, labels)
    assert (q, correct) == (len([t for t in tail if t is not None]),) * 2
    assert margin >= con.proof.margin * (1 - 1e-9)
    # The uniform write shifts the logits of block i together: the first query of key 1 and the third (after two
    # (k_1, k_1) pairs) have the same margins up to decay.
    first, third = (logits_at(con, engine, tokens, 8 + k) for k in (0, 2))
    gap = lambda z: np.sort(z)[-1] - np.sort(z)[-2]  # noqa: E731
    assert abs(gap(first) - gap(third)) <= 0.05 * gap(first)


def test_other_keys_values_reach_a_query_only_through_leaks():
    """At a query of key i the gate is silu(0) = 0 on every other block, so other keys' values change the logits only
    through SiLU's leaks on block i, which the proof bounds by (T - 1) L e^{-L} per logit (here ~1e-32)."""
    con = mqar_s4d.build(3, 4, "one-hot", seq_len=20)
    a, _ = sequence(con, [(0, 1), (1, 2), (2, 3)], [0])
    b, _ = sequence(con, [(0, 1), (1, 3), (2, 0)], [0])
    engine = make_engine("reference")
    diff = np.abs(logits_at(con, engine, a, 6) - logits_at(con, engine, b, 6)).max()
    bound = float(th.DEFAULT.gate * th.DEFAULT.delta) * 6 * con.info["leak_bound"]
    assert 0 < diff <= bound, f"logit change {diff:.3e} vs leak bound {bound:.3e}"


def test_requirements():
    with pytest.raises(RequirementError, match="kappa >= 1"):
        mqar_s4d.build(0, 4)
    with pytest.raises(RequirementError, match="variant must be one of"):
        mqar_s4d.build(2, 4, "dense")


def test_export_round_trip_and_strict_load_into_the_block(tmp_path):
    from verify.export import load, save

    con = mqar_s4d.build(4, 10, "jl", seq_len=30)
    path = save(con, tmp_path, dtype=torch.float32)
    loaded = load(path)
    assert loaded.config == con.config and loaded.info == con.info
    block = MambaS4D(**loaded.config.arguments())
    block.load_state_dict(loaded.mixer, strict=True)
    tokens, labels = sequence(con, [(0, 3), (1, 9), (2, 3), (3, 0)], [2, 0, 3, None, 1])
    with torch.no_grad():
        hidden = block(loaded.embedding[tokens])
    ref = make_engine("reference", "float32").hidden(loaded, tokens)
    assert (hidden - ref).abs().max().item() < 1e-5
    mask = labels[0] >= 0
    logits = hidden[0, mask] @ loaded.readout.T
    assert torch.equal(logits.argmax(1), labels[0, mask])
