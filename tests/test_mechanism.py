"""The mechanism tool (verify.hash_operators, experiments.mechanism) on designed circuits whose every answer is known:
the one-hot circuit (operators = identity, decoded state = fact table, exactly), the JL circuit (the hash's known
deviation from the identity, a = 3 - 2/N_f), the same circuit in the real Mamba block; corrupted hashes move every
number; the command reads checkpoints and refuses bad ones."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from constructions import hash_recall
from constructions.layout import Construction, LinearMambaConfig
from experiments import mechanism
from symbolic import recall_scaling as rs
from verify import export
from verify import cli_support as cli
from verify import hash_operators as ho
from verify import recall_law as rl
from verify.recall_grid import REGIMES
from verify.tasks.mqar import MQARConfig, generate

R = REGIMES["regime_0"]  # V=512, N_f=16, L=64


def one_hot_circuit(V: int) -> Construction:
    """The paper's non-compressive circuit (its Theorem 1): E = I, F = I (D = N = V)."""
    cfg = LinearMambaConfig(d_model=V, d_state=V)
    eye = torch.eye(V, dtype=torch.float64)
    mixer = {f"layers.0.{k}": v for k, v in hash_recall.analysis_layer(np.eye(V), V).items()}
    return Construction("one-hot", "", cfg, eye, mixer, eye, [])


def small_task(V=64, facts=8, samples=6, seed=3):
    return generate(MQARConfig(facts, V, 4 * facts, num_examples=samples, layout="zoology"), seed)


def _swap_query_rows(con: Construction, a: int, b: int) -> Construction:
    """The query hash of tokens a and b exchanged (S_C's columns a, b of the current half)."""
    mixer = {k: v.clone() for k, v in con.mixer.items()}
    W = mixer["layers.0.x_proj.weight"]
    V, n = con.config.d_model, con.config.d_state
    W[n:, V + a], W[n:, V + b] = W[n:, V + b].clone(), W[n:, V + a].clone()
    return Construction(con.name, con.theorem, con.config, con.embedding, mixer, con.readout, [])


def test_one_hot_circuit_is_the_identity_and_decodes_the_fact_table_exactly():
    V, facts = 64, 8
    con = one_hot_circuit(V)
    tokens, labels = small_task(V, facts)
    G = ho.invariant_operators(ho.effective_operators(con))
    assert np.array_equal(G["G_E"], np.eye(V)) and np.array_equal(G["G_Ev"], np.eye(V))
    keys = np.arange(1, V // 2)
    close = ho.identity_closeness(G["G_E"], keys)
    assert close["relative_frobenius_distance"] == 0 and close["diagonal_is_column_max"] == 1
    t = 2 * facts - 1
    np.testing.assert_array_equal(ho.decoded_state(con, torch.from_numpy(tokens), t), ho.fact_table(tokens, t, V))
    dec = ho.decoded_metrics(con, tokens, facts)
    assert dec["facts_decoded"] == 1 and dec["relative_frobenius_distance"] == 0
    np.testing.assert_array_equal(ho.attention_map(con, torch.from_numpy(tokens)), ho.ideal_attention(tokens))

    a, b = int(tokens[0, 0]), int(tokens[0, 2])  # two keys of the first sequence's context
    bad = _swap_query_rows(con, a, b)
    Gb = ho.invariant_operators(ho.effective_operators(bad))
    close = ho.identity_closeness(Gb["G_E"], keys)
    assert close["relative_frobenius_distance"] > 0.2 and close["diagonal_is_column_max"] < 1
    assert ho.decoded_metrics(bad, tokens[:1], facts)["facts_decoded"] == 1 - 2 / facts


def test_probe_operators_are_the_papers_closed_form():
    """E_in = [diag(W_prev) P_in E, diag(W_curr) P_in E], Pi_k = S_B E_in, Pi_q = S_C E_in, Pi_v_out = E^T P_out,
    written out from the weights (here with d_conv 3 and random weights: older taps read the padding)."""
    g = torch.Generator().manual_seed(0)
    V, D, N = 20, 6, 3
    cfg = LinearMambaConfig(d_model=D, d_state=N, d_conv=3)
    mixer = {f"layers.0.{k}": torch.randn(*s, generator=g, dtype=torch.float64) for k, s in cfg.layer_shapes().items()}
    E, R_ = torch.randn(V, D, generator=g, dtype=torch.float64), torch.randn(V, D, generator=g, dtype=torch.float64)
    con = Construction("random", "", cfg, E, mixer, R_, [])
    ops = ho.effective_operators(con)
    w, P = mixer["layers.0.conv1d.weight"][:, 0, :], mixer["layers.0.in_proj.weight"]
    E_in = torch.cat([w[:, 1, None] * (P @ E.T), w[:, 2, None] * (P @ E.T)], 1)
    S = mixer["layers.0.x_proj.weight"]
    np.testing.assert_allclose(ops.E_in, E_in.numpy(), atol=1e-12)
    np.testing.assert_allclose(ops.Pi_k, (S[:N] @ E_in).numpy(), atol=1e-12)
    np.testing.assert_allclose(ops.Pi_q, (S[N:] @ E_in).numpy(), atol=1e-12)
    np.testing.assert_allclose(ops.Pi_v_out, (R_ @ mixer["layers.0.out_proj.weight"]).numpy(), atol=1e-12)
    tokens, _ = small_task(V=20, facts=2, samples=3)
    err = ho.pair_additivity(con, torch.from_numpy(tokens))
    assert max(err.values()) > 0.05  # the third tap reads x_{t-2}: not a function of the pair
    cfg2 = LinearMambaConfig(d_model=D, d_state=N, d_conv=2)
    con2 = Construction("random", "", cfg2, E, {k: (v[..., 1:] if "conv1d" in k else v) for k, v in mixer.items()},
                        R_, [])
    assert max(ho.pair_additivity(con2, torch.from_numpy(tokens)).values()) < 1e-12


@pytest.fixture(scope="module")
def jl():
    tokens, labels = generate(R.task_config(16), 5)
    con = hash_recall.build_analysis(R.vocab, 64, 32, seed=2)
    return con, tokens, labels, ho.mechanism_report(con, tokens, labels, R.facts)


def test_jl_circuit_deviates_from_the_identity_as_the_hash_moments_say(jl):
    """Key block: distance sqrt((n-1)/N + Var c_self), effective dim N; value block: sqrt((n-1)/D), D (symbolic
    hash_moments); the decoded state and alpha pick the facts; the mechanism is exactly additive."""
    con, tokens, labels, rep = jl
    D, N, V = 64, 32, R.vocab
    h = {k: float(v.subs({rs.D: D, rs.N: N})) for k, v in rs.hash_moments().items()}
    nk, nv = V // 2 - 1, V // 2
    k, v = rep["key_block"], rep["value_block"]
    assert abs(k["relative_frobenius_distance"] / np.sqrt((nk - 1) * h["cross_second"] + h["self_var"]) - 1) < 0.03
    assert abs(v["relative_frobenius_distance"] / np.sqrt((nv - 1) * h["value_second"]) - 1) < 0.03
    assert abs(k["effective_dim"] / N - 1) < 0.1 and abs(v["effective_dim"] / D - 1) < 0.1
    assert k["diagonal_is_column_max"] == 1 and v["diagonal_is_column_max"] == 1
    assert abs(rep["attention"]["effective_hash_dim"] / N - 1) < 0.15 and rep["attention"]["argmax_at_ideal"] > 0.98
    assert rep["decoded_state"]["facts_decoded"] > 0.98
    assert max(rep["pair_additivity_error"].values()) == 0 and max(rep["constant_part"].values()) == 0
    assert set(rep["maps"]) >= {"G_E_keys", "H2_values_keys", "H_values_keys", "alpha", "alpha_ideal"}


def test_effective_a_of_the_designed_circuit_is_3_minus_2_over_n_f():
    """At N = D (self-match exactly 1) the a measured on the logits is E[n_w]/N_f = 3 - 2/N_f (the generator's count,
    symbolic.recall_scaling.a_coefficient), up to the few exact collisions the profile counts."""
    tokens, labels = generate(R.task_config(32), 1)
    prof = rl.collision_profile(tokens, labels)
    D = N = 64
    a = []
    for s in range(3):
        con = hash_recall.build_analysis(R.vocab, D, N, seed=s)
        a.append(ho.a_from_logits(*ho.query_logits(con, tokens, labels), D, N, R.facts)["a"])
    a_gen = float(rs.a_coefficient("designed", "mqar", nf=R.facts))
    assert a_gen == 3 - 2 / R.facts
    with_collisions = (prof.n_sq.mean() + N * prof.exact.mean()) / R.facts
    assert abs(np.mean(a) - with_collisions) < 0.12 and abs(np.mean(a) - a_gen) < 0.15, (a, a_gen, with_collisions)


def _edit_hash(con, rows=None, query_hash=None):
    mixer = {k: v.clone() for k, v in con.mixer.items()}
    W = mixer["layers.0.x_proj.weight"]
    n, D = con.config.d_state, con.config.d_model
    if rows is not None:  # zero these state rows of both B and C
        W[rows] = 0
        W[[n + r for r in rows]] = 0
    if query_hash is not None:
        W[n:, D:] = torch.from_numpy(query_hash)
    return Construction(con.name, con.theorem, con.config, con.embedding, mixer, con.readout, [])


def test_corrupted_hashes_move_the_numbers(jl):
    """Half the state zeroed: effective dims halve and a doubles; an independent query hash: nothing is recalled."""
    con, tokens, labels, rep = jl
    N = 32
    half = ho.mechanism_report(_edit_hash(con, rows=list(range(N // 2, N))), tokens, labels, R.facts)
    assert abs(half["key_block"]["effective_dim"] / (N / 2) - 1) < 0.15
    assert abs(half["attention"]["effective_hash_dim"] / (N / 2) - 1) < 0.2
    assert 1.6 < half["a_logits"]["a"] / rep["a_logits"]["a"] < 2.4
    assert half["recall"] < rep["recall"] - 0.1
    _, (F2,) = hash_recall.draw_codes(R.vocab, 64, N, seed=99)
    other = ho.mechanism_report(_edit_hash(con, query_hash=F2), tokens, labels, R.facts)
    assert other["key_block"]["diagonal_is_column_max"] < 0.05 and other["key_block"]["effective_dim"] < 1
    assert other["decoded_state"]["facts_decoded"] < 0.1 and other["attention"]["argmax_at_ideal"] < 0.2
    assert other["recall"] < 0.1


def test_mamba_block_circuit_has_the_analysis_circuits_mechanism():
    """The designed circuit in the real block: the same operators, decoded state and a as in the analysis model (the
    SiLU pairs cancel exactly, the gate and Delta are divided out); a conv bias breaks the additivity, measured."""
    V, D, N, facts = 128, 32, 16, 8
    tokens, labels = small_task(V, facts, samples=8)
    lin = hash_recall.build_analysis(V, D, N, seed=1)
    blk = hash_recall.build_mamba_block(V, D, N, seed=1)
    gl, gb = (ho.invariant_operators(ho.effective_operators(c)) for c in (lin, blk))
    for name in ("G_E", "G_Ev"):
        np.testing.assert_allclose(gb[name], gl[name], atol=1e-10)
    rl, rb = (ho.mechanism_report(c, tokens, labels, facts) for c in (lin, blk))
    assert max(rb["pair_additivity_error"].values()) < 1e-12
    for key in ("decoded_state", "attention"):
        for k in rl[key]:
            assert abs(rb[key][k] - rl[key][k]) < 1e-8 * max(1, abs(rl[key][k])), (key, k)
    assert rb["recall"] == rl["recall"] and abs(rb["a_logits"]["a"] - rl["a_logits"]["a"]) < 1e-3  # float32 logits
    np.testing.assert_allclose(rb["maps"]["H2_values_keys"], rl["maps"]["H2_values_keys"], atol=1e-10)
    mixer = {k: v.clone() for k, v in blk.mixer.items()}
    mixer["conv1d.bias"][:D] = 0.5  # prev+ only: the pairs no longer cancel a constant
    mixer["conv1d.weight"][:2 * D, 0, -1] = 0.5  # the previous-token channels also read the current token
    mixed = Construction(blk.name, blk.theorem, blk.config, blk.embedding, mixer, blk.readout, [])
    assert ho.pair_additivity(mixed, torch.from_numpy(tokens[:2]))["B"] > 1e-3  # designed: < 1e-12
    assert ho.effective_operators(mixed).constant["B"] > 0


def test_state_with_decay_gives_the_blocks_output():
    """state_at (decay included) read as the block reads it, (h_t C_t + D x_t) * gate_t through out_proj, is the
    reference engine's output at t, for a block that forgets (A_log = 0: rho = exp(-1) per step)."""
    from verify.engines import make_engine

    V, D, N = 64, 16, 8
    blk = hash_recall.build_mamba_block(V, D, N, seed=2, a_log=0.0)
    tokens, _ = small_task(V, 8, samples=3)
    tok = torch.from_numpy(tokens)
    f = ho.features(blk, blk.embedding.double()[tok])
    p = blk.mixer
    for t in (3, 20):
        h = ho.state_at(blk, tok, t)
        y = (torch.einsum("bdn,bn->bd", h, f.C[:, t]) + p["D"] * f.x_hat[:, t]) * f.gate[:, t]
        out = y @ p["out_proj.weight"].T + p["out_proj.bias"]
        ref = make_engine("reference", "float32").hidden(blk, tok)[:, t].double()
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_a_from_recall_inverts_the_law_and_fit_a_recovers_it():
    for d, n, a in ((64, 32, 3.0), (32, 8, 1.25), (48, 16, 0.625)):
        p = float(rl.law_num(d, n, 512, 16, a))
        assert abs(ho.a_from_recall(p, d, n, 512, 16) - a) < 1e-6
    assert np.isnan(ho.a_from_recall(1.0, 64, 32, 512, 16)) and np.isnan(ho.a_from_recall(0.0, 64, 32, 512, 16))
    cells = [(float(rl.law_num(d, n, 1024, 16, 1.25)), d, n, 1024, 16) for d, n in ((16, 8), (32, 16), (64, 8))]
    assert abs(ho.fit_a(cells) - 1.25) < 1e-4


# --- the command --------------------------------------------------------------------------------------------------


def _run(capsys, argv):
    rc = cli.run_main(mechanism.main, argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_command_on_an_export_and_on_bare_state_dicts(tmp_path, capsys):
    V, D, N = 64, 16, 8
    con = hash_recall.build_residual_stack(V, D, N, 2, seed=0)
    export.save(con, tmp_path / "stack", dtype=torch.float64)
    rc, out, _ = _run(capsys, [str(tmp_path / "stack"), "--facts", "8", "--samples", "4", "--json", "--quiet",
                               "--out", str(tmp_path / "r.json"), "--arrays", str(tmp_path / "m.npz")])
    assert rc == 0
    rep = json.loads(out)
    assert rep == json.loads((tmp_path / "r.json").read_text())
    assert rep["model"]["layers"] == 2 and rep["law_D"] == D and rep["law_N_eff"] == 2 * N
    assert abs(rep["key_block"]["effective_dim"] / N - 1) < 0.35  # one layer's hash (V/2 keys only at V = 64)
    assert set(np.load(tmp_path / "m.npz").files) >= {"G_E_keys", "H2_values_keys", "alpha"}
    rc, _, err = _run(capsys, [str(tmp_path / "stack"), "--facts", "8", "--out", str(tmp_path / "r.json")])
    assert rc == 2 and "--overwrite" in err

    blk = hash_recall.build_mamba_block(V, D, N, seed=0)
    save_file({k: v.clone() for k, v in blk.state_dict().items()}, str(tmp_path / "blk.safetensors"))
    assert mechanism.load_checkpoint(str(tmp_path / "blk.safetensors")).config.arguments() == blk.config.arguments()
    lin = hash_recall.build_analysis(V, D, N, seed=0)
    torch.save(lin.state_dict(), tmp_path / "lin.pt")
    assert mechanism.load_checkpoint(str(tmp_path / "lin.pt")).config == lin.config
    rc, out, _ = _run(capsys, [str(tmp_path / "blk.safetensors"), "--facts", "8", "--samples", "2", "--quiet"])
    assert rc == 0 and "G_kq key block" in out and "effective a" in out


@pytest.mark.parametrize("case,expect", [
    ("missing", "no such file"),
    ("norm", "unexpected tensor 'norm.weight'"),
    ("heads", "one head"),
    ("silu", "SiLU or gate"),
    ("shape", "has shape"),
    ("facts", "V > L"),
    ("layer", "--layer 1"),
    ("flag", "--samples"),
])
def test_command_refuses_bad_input(tmp_path, capsys, case, expect):
    V = 64
    lin = hash_recall.build_analysis(V, 16, 8, seed=0)
    sd = {k: v.clone() for k, v in lin.state_dict().items()}
    path, extra = tmp_path / "m.safetensors", ["--facts", "8"]
    if case == "norm":
        sd["norm.weight"] = torch.ones(16, dtype=torch.float64)
    elif case == "heads":
        sd = {k: v.clone() for k, v in hash_recall.build_multihead(V, 16, 8, 2, "MHA").state_dict().items()}
    elif case == "silu":  # the ablation's row B: the hash operators do not describe it
        sd["mixer.layers.0.conv1d.bias"] = torch.zeros(32, dtype=torch.float64)
    elif case == "shape":
        sd["readout.weight"] = sd["readout.weight"][:-1]
    elif case == "facts":
        extra = ["--facts", "16"]
    elif case == "layer":
        extra += ["--layer", "1"]
    elif case == "flag":
        extra += ["--samples", "0"]
    save_file(sd, str(path))
    rc, out, err = _run(capsys, [str(tmp_path / "nothing" if case == "missing" else path), *extra])
    assert rc == 2 and out == "" and err.count("\n") == 1 and expect in err and "Traceback" not in err, err
