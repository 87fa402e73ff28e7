"""Theorem 2's claim on the reference engine: exact argmax recall at every query, margin >= the proven bound."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from constructions import mqar_mamba
from common.errors import RequirementError
from verify.checks import check_mqar
from verify.engines import make_engine
from verify.tasks.mqar import MQARConfig
from mqar_helpers import hard_case_queries

ENGINES = {d: make_engine("reference", d) for d in ("float64", "float32")}
RTOL = {"float64": 1e-9, "float32": 1e-4}


def _check(con, task, seed):
    for dtype, engine in ENGINES.items():
        r = check_mqar(con, task, engine, seed=seed)
        queries = task.num_examples * task.num_queries + hard_case_queries(task)
        assert r.correct == r.queries == queries, (dtype, r.as_dict())
        assert r.min_margin >= r.proven_margin * (1 - RTOL[dtype]), (dtype, r.min_margin, r.proven_margin)


@given(kappa=st.integers(1, 32), vocab=st.integers(2, 512), data=st.data(), seed=st.integers(0, 2**31))
@pytest.mark.parametrize("variant", ["one-hot", "jl"])
def test_exact_recall_every_query(variant, kappa, vocab, data, seed):
    T = data.draw(st.integers(3 * kappa, 512), label="seq_len")
    con = mqar_mamba.build(kappa, vocab, variant, seq_len=T, seed=seed)
    _check(con, MQARConfig(kappa, vocab, T, num_examples=3), seed)


@pytest.mark.parametrize("variant", ["one-hot", "jl"])
def test_keys_queried_several_times_and_all_adjacent(variant):
    """Gap §4.7: a key queried again still recalls (noise embeds at 0). At T = (2 + passes) kappa every query is
    adjacent to another key (the paper's (k_i, k_l) edge case)."""
    for passes, T in ((3, 5 * 12), (3, 200)):
        con = mqar_mamba.build(12, 40, variant, seq_len=T, noise_vocab=7)
        _check(con, MQARConfig(12, 40, T, num_examples=32, query_passes=passes, noise_vocab=7), 5)


@pytest.mark.parametrize("kw, message", [
    (dict(kappa=0, vocab_size=4), "kappa >= 1, got kappa=0"),
    (dict(kappa=2, vocab_size=1), r"\|V\| >= 2 values, got vocab_size=1"),
    (dict(kappa=2, vocab_size=4, variant="two-hot"), "variant must be one of"),
    (dict(kappa=2, vocab_size=4, d_conv=1), "d_conv >= 2"),
    (dict(kappa=2, vocab_size=4, variant="jl", jl_eps=1.5), "0 < eps < 1, got eps=1.5"),
])
def test_bad_parameters_raise_named_requirement(kw, message):
    with pytest.raises(RequirementError, match=message):
        mqar_mamba.build(**kw)


def test_check_refuses_a_task_with_other_token_ids():
    con = mqar_mamba.build(4, 8, seq_len=20)
    with pytest.raises(RequirementError, match="was built for tokens"):
        check_mqar(con, MQARConfig(4, 8, 20, noise_vocab=3), ENGINES["float64"])


def test_jl_codes_reported_and_below_required_coherence():
    con = mqar_mamba.build(8, 300, "jl", seed=11)
    info = con.info
    assert info["coherence"] < info["coherence_max"] and con.config.d_model == 8 + info["value_dim"]
    assert info["value_dim"] < 300  # the JL step is smaller than one-hot at this |V|
