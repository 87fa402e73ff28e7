"""Corollary 2 (KEEP n-TH): sympy obligations, the paper's generator, and exact argmax at every t >= n on the
reference engine, against an independent numpy implementation of the construction's recurrence."""
import math
import re

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from profiles import examples

from constructions import keep_nth
from common.errors import RequirementError
from verify.export import load, save
from symbolic import corollary2 as c2
from symbolic.blocks import silu
from verify.checks import check_labelled
from verify.engines import make_engine
from verify.specs.keep_nth import KeepNthParams, build, check
from verify.tasks.keep_nth import IGNORE, KeepNthConfig, generate
from verify_constructions.cli import main

REF64 = make_engine("reference", "float64")
REF32 = make_engine("reference", "float32")


# --- symbolic ------------------------------------------------------------------------------------------------------

def test_every_obligation_holds_for_the_default_constants():
    for n in (1, 100):
        assert [o.name for o in c2.obligations(n=n) if not o.holds] == []


def test_margin_bound_is_independent_of_T_and_about_30():
    bound = c2.margin_lower_bound(c2.DEFAULT, sp.Integer(5))
    assert not bound.free_symbols
    assert 30.1 < float(bound) < 30.2


@pytest.mark.parametrize("bad, broken", [
    (c2.Corollary2Constants(w=sp.Integer(10)), "margin > 0 for n = 5, every T"),  # slow switch: the tail leaks
    (c2.Corollary2Constants(dt_bias=sp.Integer(-5), w=sp.Integer(20)), "margin > 0 for n = 5, every T"),  # no wipe
    (c2.Corollary2Constants(gate_pre=sp.Integer(-3)), "gate, B and C are positive constants"),
])
def test_obligations_fail_when_constants_break_the_proof(bad, broken):
    assert broken in {o.name for o in c2.obligations(bad) if not o.holds}


def test_delta_interval_covers_the_softplus_threshold():
    assert c2.delta_lo(sp.Integer(30)) == 30  # thresholded softplus: identity above 20
    assert sp.simplify(c2.delta_lo(sp.Integer(3)) - sp.log(1 + sp.exp(3))) == 0


# --- generator -----------------------------------------------------------------------------------------------------

@given(vocab=st.integers(2, 300), n=st.integers(1, 30), extra=st.integers(0, 60), seed=st.integers(0, 2**31))
def test_generator_labels_are_x_n_from_n_on(vocab, n, extra, seed):
    cfg = KeepNthConfig(vocab, n, n + extra, 7)
    tokens, labels = generate(cfg, seed)
    assert tokens.shape == labels.shape == (7, n + extra)
    assert tokens.min() >= 0 and tokens.max() < vocab
    assert (labels[:, :n - 1] == IGNORE).all()
    assert (labels[:, n - 1:] == tokens[:, n - 1:n]).all()
    t2, l2 = generate(cfg, seed)
    assert (t2 == tokens).all() and (l2 == labels).all()


def test_generator_matches_the_paper_defaults_and_is_uniform():
    cfg = KeepNthConfig()
    assert (cfg.vocab_size, cfg.n, cfg.seq_len) == (128, 5, 50)
    tokens, _ = generate(KeepNthConfig(num_examples=4000), 0)
    counts = np.bincount(tokens.ravel(), minlength=128)
    expected = tokens.size / 128
    assert ((counts - expected) ** 2 / expected).sum() < 128 + 6 * math.sqrt(2 * 128)  # chi-square, 6 sigma


@pytest.mark.parametrize("cfg, needle", [
    (KeepNthConfig(n=0), "n >= 1"), (KeepNthConfig(seq_len=4), "seq_len >= n"), (KeepNthConfig(vocab_size=1), "|V| >= 2"),
])
def test_generator_rejects_bad_configs(cfg, needle):
    with pytest.raises(RequirementError, match=re.escape(needle)):
        generate(cfg, 0)


# --- construction on the reference engine --------------------------------------------------------------------------

def naive_keep_nth(tokens: np.ndarray, vocab: int, n: int, c=c2.DEFAULT) -> np.ndarray:
    """Value-channel outputs of the construction, from its equations alone (numpy float64, no torch)."""
    num = lambda e: float(sp.N(e, 30))  # noqa: E731
    s_v, gate = num(silu(c.value_gain)), num(silu(c.gate_pre))
    B, C, lam, w, b = num(c.beta) * s_v, num(c.gamma) * s_v, num(c.lam), num(c.w), num(c.dt_bias)
    S, T = tokens.shape
    h = np.zeros((S, vocab))
    out = np.zeros((S, T, vocab))
    for t in range(1, T + 1):
        z = t - n - 0.5
        pre = b - w * z / (1 + math.exp(-z))
        delta = pre if pre > 20 else math.log1p(math.exp(pre))
        write = np.zeros((S, vocab))
        write[np.arange(S), tokens[:, t - 1]] = s_v
        h = math.exp(-lam * delta) * h + delta * B * write
        out[:, t - 1] = gate * C * h
    return out


@pytest.mark.parametrize("vocab, n, T", [(128, 5, 50), (7, 1, 40), (16, 12, 30)])
def test_reference_engine_equals_the_independent_recurrence(vocab, n, T):
    con = keep_nth.build(vocab, n)
    tokens, _ = generate(KeepNthConfig(vocab, n, T, 16), 3)
    ref = REF64.hidden(con, torch.from_numpy(tokens))[..., :vocab].numpy()
    naive = naive_keep_nth(tokens, vocab, n)
    err = np.abs(ref - naive).max()
    assert err <= 1e-12 * np.abs(naive).max(), f"reference vs naive max abs diff {err:.3e}"


@pytest.mark.parametrize("engine, rel", [(REF64, 1e-12), (REF32, 1e-5)])
def test_exact_argmax_at_every_position_paper_setting(engine, rel):
    p = KeepNthParams()  # |V| = 128, n = 5, T = 50, 256 sequences
    r = check(build(p), p, engine)
    assert r.queries == 256 * 46 and r.correct == r.queries, f"{r.correct}/{r.queries}"
    assert r.min_margin >= r.proven_margin * (1 - rel), f"measured {r.min_margin} < proven {r.proven_margin}"
    assert r.passed


def test_exact_argmax_at_every_position_long_sequence():
    p = KeepNthParams(seq_len=3000, samples=4)
    r = check(build(p), p, REF32)
    assert r.correct == r.queries == 4 * 2996
    assert r.min_margin >= r.proven_margin * (1 - 1e-5)


@settings(max_examples=examples(30))
@given(vocab=st.integers(2, 40), n=st.integers(1, 25), extra=st.integers(0, 150), seed=st.integers(0, 2**31))
def test_property_exact_argmax_any_sizes(vocab, n, extra, seed):
    con = keep_nth.build(vocab, n)
    tokens, labels = generate(KeepNthConfig(vocab, n, n + extra, 8), seed)
    r = check_labelled(con, tokens, labels, REF64, config={}, summary="")
    assert r.correct == r.queries == 8 * (extra + 1)
    assert r.min_margin >= r.proven_margin * (1 - 1e-12)


def test_construction_has_the_papers_shape_and_paper_lambda():
    con = keep_nth.build()
    assert (con.config.d_model, con.config.d_state, con.position_channel) == (129, 1, 128)
    assert float(con.mixer["A_log"].abs().max()) == 0.0  # A = -1: the paper's lambda = 1
    assert float(con.embedding[:, 128].abs().max()) == 0.0  # the last coordinate is replaced by the position


def test_export_roundtrip_keeps_the_position_channel(tmp_path):
    con = keep_nth.build(16, 3)
    save(con, tmp_path, dtype=torch.float64)
    back = load(tmp_path)
    assert back.position_channel == con.position_channel
    tokens = torch.from_numpy(generate(KeepNthConfig(16, 3, 20, 4), 0)[0])
    assert torch.equal(REF64.hidden(back, tokens), REF64.hidden(con, tokens))


def test_bad_inputs_raise_requirement_errors_and_cli_exits_2(capsys):
    with pytest.raises(RequirementError, match="n >= 1"):
        keep_nth.build(8, 0)
    assert main(["check", "keep-nth", "--seq-len", "3"]) == 2
    assert "seq_len >= n" in capsys.readouterr().err


def test_cli_check_json_passes(capsys):
    assert main(["check", "keep-nth", "--seq-len", "200", "--samples", "8", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"passed": true' in out and '"recall": 1.0' in out


@pytest.mark.parametrize("name, change", [("out_proj.weight", lambda t: 0.9 * t), ("x_proj.weight", lambda t: 0.9 * t),
                                          ("in_proj.weight", lambda t: 1.05 * t), ("dt_proj.bias", lambda t: t - 5)])
def test_weights_that_fall_short_of_the_proven_margin_fail(name, change):
    """Every position is still recalled, but the margin falls below the proof's (a readout or projection scaled, or
    Delta's bias moved so that the kept token leaks): the check FAILS; the weights as built PASS."""
    p = KeepNthParams()
    assert check(build(p), p, REF64).passed
    con = build(p)
    con.mixer[name] = change(con.mixer[name])
    r = check(con, p, REF64)
    assert r.correct == r.queries and r.min_margin < r.proven_margin and not r.passed
