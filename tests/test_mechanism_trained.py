"""The mechanism tool (experiments.mechanism, verify.hash_operators.trained_model) on trained checkpoints: the kept
weights of a training run (its spec in the file's metadata). On the designed one-hot circuit saved as such a file every
answer is known (operators = identity, decoded state = fact table); on a tiny CPU-trained linear model the claims
that hold for any weights (the pair operators describe the model exactly, G_kq and G_vv are invariant under the
model's reparametrisations, the tool's logits are the model's); on a full model the folding through its norms is the
whole model's forward. The trained model's numbers are printed (``-s``), not asserted: they are measurements."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from constructions import hash_recall
from experiments import mechanism
from verify import cli_support as cli
from verify import hash_operators as ho
from verify.train import recall_models as rm
from verify.train.loop import train_pack
from verify.train.spec import RunSpec, protocol, run_key
from verify.train.store import write_weights
from verify.tasks.mqar import MQARConfig, generate

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(capsys, argv):
    rc = cli.run_main(mechanism.main, argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _spec(**kw) -> RunSpec:
    base = dict(task="mqar-zoology", mixer="linear-mamba", vocab=32, kappa=4, seq_len=16, d_model=16, d_state=8,
                d_conv=2, expand=2, seed=0, lr=1e-2, protocol=protocol("koren-smoke", keep_weights=True),
                model=(("wiring", "tied"),))
    return RunSpec(**{**base, **kw})


def _save(tmp_path, spec, sd) -> str:
    return str(write_weights(tmp_path / "s.jsonl", {"key": run_key(spec), "spec": spec.as_dict(), "_weights": sd}))


@pytest.fixture(scope="module")
def trained():
    """A tiny simplified linear Mamba trained on zoology MQAR (V = 32, N_f = 4) by the paper's recipe (koren-smoke)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec = _spec()
        (rec,) = train_pack([spec])
    finally:
        torch.set_num_threads(n)
    return spec, rec


def test_designed_one_hot_circuit_as_a_trained_checkpoint(tmp_path, capsys):
    """The paper's non-compressive circuit (E = I, F = I) written as a run's kept weights: G_kq's key block and
    G_vv's value block are the identity, H'' is the fact table, alpha's largest entry is at the ideal position."""
    V = 32
    spec = _spec(d_model=V, d_state=V)
    layer = hash_recall.analysis_layer(np.eye(V), V)
    eye = torch.eye(V, dtype=torch.float64)
    sd = {"embedding.weight": eye, "readout.weight": eye.clone(), **{f"mixer.layers.0.{k}": v for k, v in layer.items()}}
    path = _save(tmp_path, spec, sd)
    rc, out, err = _run(capsys, [path, "--facts", "4", "--samples", "8", "--json", "--quiet"])
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["model"]["run"]["model"] == [["wiring", "tied"]]
    for block in ("key_block", "value_block"):
        assert rep[block]["relative_frobenius_distance"] == 0 and rep[block]["diagonal_is_column_max"] == 1
    assert rep["decoded_state"]["facts_decoded"] == 1 and rep["decoded_state"]["relative_frobenius_distance"] == 0
    assert rep["attention"]["alpha_sign"] == 1 and rep["attention"]["argmax_at_ideal"] == 1
    assert max(rep["pair_additivity_error"].values()) == 0


def _reparametrised(sd: dict, n: int, gen) -> dict:
    """The same model in other bases: an orthogonal Q on the N-dim state (S_B, S_C -> Q S_B, Q S_C) and a positive
    diagonal S on the d_inner channels (in_proj -> S in_proj, x_proj -> x_proj S^-1, out_proj -> out_proj S^-1)."""
    out = {k: v.clone() for k, v in sd.items()}
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    W = out["mixer.layers.0.x_proj.weight"]
    s = torch.rand(W.shape[1], generator=gen, dtype=torch.float64) + 0.5
    out["mixer.layers.0.in_proj.weight"] = s[:, None] * out["mixer.layers.0.in_proj.weight"]
    out["mixer.layers.0.x_proj.weight"] = torch.cat([Q @ W[:n], Q @ W[n:]]) / s[None, :]
    out["mixer.layers.0.out_proj.weight"] = out["mixer.layers.0.out_proj.weight"] / s[None, :]
    return out


def test_trained_linear_model_numbers_and_the_claims_that_hold(trained, tmp_path, capsys):
    spec, rec = trained
    sd = {k: v.double() for k, v in rec["_weights"].items()}
    path = _save(tmp_path, spec, sd)
    rc, out, err = _run(capsys, [path, "--facts", "4", "--samples", "64", "--json", "--quiet"])
    assert rc == 0, err
    rep = json.loads(out)
    print(f"\ntrained linear V=32 D=16 N=8 N_f=4 (test acc {rec['result']['test_acc']:.4f}): recall {rep['recall']:.4f}; "
          f"key block distance {rep['key_block']['relative_frobenius_distance']:.3f} (effective dim "
          f"{rep['key_block']['effective_dim']:.2f}, diagonal max {rep['key_block']['diagonal_is_column_max']:.3f}); "
          f"value block distance {rep['value_block']['relative_frobenius_distance']:.3f}; facts decoded "
          f"{rep['decoded_state']['facts_decoded']:.3f}; alpha argmax at ideal {rep['attention']['argmax_at_ideal']:.3f}"
          f" (sign {rep['attention']['alpha_sign']:+.0f}); a logits {rep['a_logits']['a']:.3f}, a recall "
          f"{rep['a_recall']}")
    # the linear model with d_conv 2 is exactly additive in the (previous, current) pair
    assert max(rep["pair_additivity_error"].values()) < 1e-10
    # the tool's logits are the trained model's
    con, fn = mechanism.load(path)
    tokens, labels = generate(MQARConfig(4, 32, 16, num_examples=8, layout="zoology"), 1)
    tok = torch.from_numpy(tokens)
    torch.testing.assert_close(fn(tok), rm.logits(spec, sd, tok), rtol=0, atol=0)
    logits, targets, _ = ho.query_logits(con, tokens, labels)
    want = rm.logits(spec, sd, tok)[torch.from_numpy(labels != -100)].numpy()
    np.testing.assert_allclose(logits, want, rtol=0, atol=1e-10)
    # G_kq and G_vv do not see the state's or the channels' basis
    G = ho.invariant_operators(ho.effective_operators(con))
    other = _reparametrised(sd, spec.d_state, torch.Generator().manual_seed(3))
    con2, _ = ho.trained_model(spec, other)
    torch.testing.assert_close(rm.logits(spec, other, tok), rm.logits(spec, sd, tok), rtol=0, atol=1e-9)
    G2 = ho.invariant_operators(ho.effective_operators(con2))
    for name in ("G_kq", "G_vv"):
        np.testing.assert_allclose(G2[name], G[name], rtol=0, atol=1e-9 * np.abs(G[name]).max())
    assert not np.allclose(ho.effective_operators(con2).Pi_k, ho.effective_operators(con).Pi_k)


def test_full_model_is_measured_on_its_block_and_its_logits_are_the_models(tmp_path, capsys):
    """A full model (wiring lm): the folded embedding is exactly what the block reads, and the whole model's logits
    are the folded readout of (e_x + block output) divided by the final norm's rms, position by position."""
    spec = _spec(mixer="mamba", gate=True, model=(("wiring", "lm"),),
                 protocol=protocol("koren-smoke", max_steps=20, warmup_steps=2, flat_steps=8, eval_every=10,
                                   keep_weights=True))
    (rec,) = train_pack([spec])
    sd = {k: v.double() for k, v in rec["_weights"].items()}
    path = _save(tmp_path, spec, sd)
    con, fn = mechanism.load(path)
    tokens, _ = generate(MQARConfig(4, 32, 16, num_examples=4, layout="zoology"), 2)
    tok = torch.from_numpy(tokens)
    E = sd["embedding.weight"]
    from verify.blocks.mamba import mamba_forward

    y = mamba_forward(con.mixer, con.embedding[tok], con.config)  # the block on the folded embedding
    y_model = mamba_forward(con.mixer, rm.rms_norm(E[tok], sd["layers.0.norm.weight"]), con.config)
    torch.testing.assert_close(y, y_model, rtol=0, atol=0)
    h = E[tok] + y
    rms = torch.sqrt(h.pow(2).mean(-1, keepdim=True) + rm.NORM_EPS)
    torch.testing.assert_close(fn(tok), (h @ con.readout.T) / rms, rtol=1e-10, atol=1e-10)
    rc, out, err = _run(capsys, [path, "--facts", "4", "--samples", "8", "--json", "--quiet"])
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["model"]["kind"] == "mamba" and 0 <= rep["recall"] <= 1


@pytest.mark.parametrize("case, expect", [("heads", "heads; the tool measures one"),
                                          ("layers", "the tool measures one layer's block"),
                                          ("tensor", "not those of its run spec's model")])
def test_trained_checkpoints_that_the_tool_cannot_measure_are_refused(tmp_path, capsys, case, expect):
    spec = {"heads": _spec(model=(("heads", 2), ("wiring", "tied"))),
            "layers": _spec(mixer="mamba", gate=True, model=(("layers", 2), ("wiring", "lm"))),
            "tensor": _spec()}[case]
    sd, _ = rm.initial_state(spec, torch.Generator().manual_seed(0), spec.vocab)
    sd["readout.weight"] = sd["embedding.weight"].clone()
    if case == "tensor":
        sd["extra.weight"] = torch.zeros(2, dtype=torch.float64)
    rc, out, err = _run(capsys, [_save(tmp_path, spec, sd), "--facts", "4"])
    assert rc == 2 and out == "" and expect in err and "Traceback" not in err, err
