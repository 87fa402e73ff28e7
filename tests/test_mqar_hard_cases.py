"""The MQAR checks score constructed sequences beside the random sample (``verify.tasks.mqar.hard_cases``). Each
test breaks a construction where only such sequences can see it, at a sample size where the random sequences miss
it, and the check must FAIL; the unbroken construction must PASS at the same size."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from verify.engines import make_engine
from verify.registry import SPECS
from verify.tasks.mqar import IGNORE, generate

ENGINE = make_engine("reference", "float64")


def _run(name, p, breakage=None):
    spec = SPECS[name]
    con = spec.build(p)
    if breakage is not None:
        breakage(con, p)
    return spec.check(con, p, ENGINE)


@pytest.mark.parametrize("name", ["mqar-mamba", "mqar-mamba2", "mqar-s4d"])
def test_noise_that_writes_a_value_after_a_query_fails(name):
    """Noise embedded as value 0 writes value 0 into the slot of the key queried just before it: only a key queried
    again after noise sees it. The random sample queries each key once and passes."""
    p = replace(SPECS[name].defaults[0], samples=8)

    def noise_as_value(con, p):
        con.embedding[con.tokens.noise_start:] = con.embedding[con.tokens.values_start]

    assert _run(name, p).passed
    r = _run(name, p, noise_as_value)
    assert not r.passed and r.correct < r.queries


@pytest.mark.parametrize("name", ["mqar-mamba", "mqar-mamba2"])
def test_a_value_the_sample_never_draws_is_still_checked(name):
    """One value token's embedding made a copy of another's: the random sample never draws it, the constructed
    sequences make every value an answer."""
    p = replace(SPECS[name].defaults[0], samples=4)
    tokens, _ = generate(p.task(), p.seed + 1)
    drawn = set((tokens[:, 1:2 * p.kappa:2] - p.task().tokens.values_start).ravel().tolist())
    missing = min(set(range(p.vocab)) - drawn)

    def copy_value(con, p):
        vs = con.tokens.values_start
        con.embedding[vs + missing] = con.embedding[vs + (missing + 1) % p.vocab]

    r = _run(name, p, copy_value)
    assert not r.passed and r.correct < r.queries


@pytest.mark.parametrize("name, factor", [("mqar-mamba", 1.14), ("mqar-s4d", 1.03)])
def test_faster_decay_than_the_proof_assumes_fails(name, factor):
    """A decays faster: every query is still recalled, but the oldest key queried last has a margin below the
    proven one, which only the constructed decay sequence reaches at these sizes."""
    p = replace(SPECS[name].defaults[0], samples=8)

    def faster(con, p):
        con.mixer["A_log"] = con.mixer["A_log"] + math.log(factor)

    r = _run(name, p, faster)
    assert r.correct == r.queries and r.min_margin < r.proven_margin and not r.passed


def test_the_typical_case_measurement_scores_the_random_sequences_alone():
    """``verify.key_dim`` measures typical sequences: ``constructed=False`` leaves the constructed ones out; the
    check proper scores them too."""
    from constructions import mqar_mamba2
    from verify.checks import check_mqar
    from verify.tasks.mqar import MQARConfig

    con = mqar_mamba2.build(8, 16, "jl", seq_len=40, key_dim=8)
    task = MQARConfig(8, 16, 40, num_examples=4)
    typical = check_mqar(con, task, ENGINE, seed=1, constructed=False)
    full = check_mqar(con, task, ENGINE, seed=1)
    assert typical.queries == 4 * 8 and typical.config["hard_cases"] == 0
    assert full.queries > typical.queries and full.config["hard_cases"] > 0
