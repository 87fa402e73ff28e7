"""Koren et al.'s trained models (verify.train.recall_models, verify.blocks.linear_mamba's Training) and recipes
(the koren-* protocols): packed forwards equal K separate forwards; the full model's wiring is transformers'
MambaForCausalLM (code written outside this project) logit for logit; the recipe's optimizer, schedule, clipping and
label smoothing are torch's own; the best-validation state is the one tested; a tiny linear model learns AR; the
grids expand to the paper's cells and a CPU slice of each trains; no stored run key moves."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from common.errors import RequirementError
from verify.blocks.linear_mamba import init_linear, packed_linear_forward
from verify.engines.linear import linear_mamba_forward
from verify.train import recall_models as rm
from verify.train import registry
from verify.train.loop import build_model, datasets, evaluate, initial_state, train_pack
from verify.train.spec import ADDED, RunSpec, protocol, run_key
from verify.train.step import Adam, learning_rate, pack_loss

pytestmark = pytest.mark.usefixtures("one_thread")

TIED = (("wiring", "tied"),)
LM = (("wiring", "lm"),)


def linear_spec(model=TIED, **kw) -> RunSpec:
    base = dict(task="mqar-zoology", mixer="linear-mamba", vocab=32, kappa=4, seq_len=16, d_model=8, d_state=4,
                d_conv=2, expand=2, seed=0, lr=1e-2, protocol=protocol("koren-smoke"), model=model)
    return RunSpec(**{**base, **kw})


def full_spec(model=LM, **kw) -> RunSpec:
    return linear_spec(model=model, **{"mixer": "mamba", "gate": True, **kw})


@pytest.mark.parametrize("model", [TIED, TIED + (("layers", 2),), TIED + (("layers", 2), ("residual", False)),
                                   *[(("head_pattern", p), ("heads", 4), ("wiring", "tied")) for p in
                                     ("MHA", "MQA", "MKA", "MVA")]])
def test_packed_linear_forward_equals_k_separate_forwards(model):
    """K models with their own draws and inputs: the packed forward and its gradients are the reference forward's,
    model by model (float64)."""
    spec = linear_spec(model=model)
    cfg = registry.mixer("linear-mamba").block_config(spec)
    gen = torch.Generator().manual_seed(1)
    sds = [init_linear(cfg, gen) for _ in range(3)]
    p = {k: torch.stack([sd[k] for sd in sds]).requires_grad_(True) for k in sds[0]}
    p = {k: (v + 0.1 * torch.randn(v.shape, generator=gen, dtype=v.dtype)).detach().requires_grad_(True)
         for k, v in p.items()}  # D moved off 0 too: the skip is part of the forward
    h = torch.randn(3, 2, 9, spec.d_model, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 9, spec.d_model, generator=gen, dtype=torch.float64)
    out = packed_linear_forward(p, h, cfg)
    want = torch.stack([linear_mamba_forward({k: v[i] for k, v in p.items()}, h[i], cfg) for i in range(3)])
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)
    got = torch.autograd.grad((out * w).sum(), [h, *p.values()])
    exp = torch.autograd.grad((want * w).sum(), [h, *p.values()])
    for a, b in zip(got, exp):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert cfg.n_layers == dict(model).get("layers", 1) and cfg.n_heads == dict(model).get("heads", 1)


def _wired_logits_pack(spec, K=3):
    """A pack of K wired models (distinct seeds) and their logits (K, b, L, V) on distinct tokens, float64."""
    specs = [replace(spec, seed=s) for s in range(K)]
    model = build_model(specs, "cpu")
    model.params = {k: v.detach().double().requires_grad_(False) for k, v in model.params.items()}
    gen = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, spec.vocab, (K, 2, spec.seq_len), generator=gen)
    h = model.hidden(tokens)
    return model, tokens, torch.einsum("kbld,kvd->kblv", h, model.readout)


@pytest.mark.parametrize("make", [lambda: linear_spec(), lambda: linear_spec(model=TIED + (("layers", 3),)),
                                  lambda: full_spec(), lambda: full_spec(model=LM + (("layers", 2),))])
def test_packed_wired_models_equal_each_model_alone(make):
    spec = make()
    model, tokens, logits = _wired_logits_pack(spec)
    for k, sd in enumerate(model.state_dicts()):
        torch.testing.assert_close(rm.logits(replace(spec, seed=k), sd, tokens[k]), logits[k], rtol=0, atol=1e-10)
        assert torch.equal(sd["readout.weight"], sd["embedding.weight"])  # the tied head


def test_tied_linear_model_is_the_papers_definition():
    """logits_t = E^T y_t, y = the reference stack of E[x], with D = 0 (§2.1)."""
    spec = linear_spec()
    sd, masks = initial_state(spec)
    cfg = registry.mixer("linear-mamba").block_config(spec)
    assert torch.equal(sd["mixer.layers.0.D"], torch.zeros(cfg.d_inner)) and masks["mixer.layers.0.D"].sum() == 0
    tokens = torch.randint(0, spec.vocab, (2, spec.seq_len), generator=torch.Generator().manual_seed(0))
    E = sd["embedding.weight"]
    mixer = {k[len("mixer."):]: v for k, v in sd.items() if k.startswith("mixer.")}
    want = linear_mamba_forward(mixer, E[tokens], cfg) @ E.T
    torch.testing.assert_close(rm.logits(spec, sd, tokens), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n_layers", [1, 2])
def test_full_model_is_transformers_mamba_for_causal_lm(n_layers):
    """The lm wiring's logits are transformers' MambaForCausalLM's (tied head, RMSNorm eps 1e-5, bias off) on the
    same weights, to float32 rounding; and its initial state has MambaLMHeadModel's init rules."""
    transformers = pytest.importorskip("transformers")
    from transformers import MambaForCausalLM

    spec = full_spec(model=LM + (("layers", n_layers),), d_model=16, d_state=4)
    sd, masks = initial_state(spec)
    assert masks == {} and 0.015 < float(sd["embedding.weight"].std()) < 0.025
    assert "layers.0.mixer.in_proj.bias" not in sd and "layers.0.mixer.conv1d.bias" in sd
    bound = 1 / math.sqrt(2 * spec.d_model) / math.sqrt(n_layers)  # U(+-1/sqrt(d_inner)) / sqrt(Lambda)
    assert float(sd["layers.0.mixer.out_proj.weight"].abs().max()) <= bound
    gen = torch.Generator().manual_seed(2)
    sd = {k: v + 0.1 * torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in sd.items()}  # norms off 1
    cfg = transformers.MambaConfig(vocab_size=spec.vocab, hidden_size=spec.d_model, state_size=spec.d_state,
                                   num_hidden_layers=n_layers, conv_kernel=2, expand=2, use_bias=False,
                                   use_conv_bias=True, layer_norm_epsilon=1e-5, tie_word_embeddings=True,
                                   residual_in_fp32=True, use_mambapy=False, pad_token_id=0)
    hf = MambaForCausalLM(cfg).eval()
    theirs = {"backbone.embeddings.weight": sd["embedding.weight"], "backbone.norm_f.weight": sd["norm_f.weight"],
              "lm_head.weight": sd["embedding.weight"]}
    theirs.update({f"backbone.{k}": v for k, v in sd.items() if k.startswith("layers.")})
    hf.load_state_dict({k: v.float() for k, v in theirs.items()}, strict=True)
    tokens = torch.randint(0, spec.vocab, (2, spec.seq_len), generator=gen)
    with torch.no_grad():
        want = hf(tokens).logits.double()
    got = rm.logits(spec, sd, tokens, dtype=torch.float32).double()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert float((got - want).abs().max()) < 1e-3 * float(want.abs().max())


def test_recipe_optimizer_is_torch_adamw_with_clipping():
    """One packed step with weight decay and clipping = torch's clip_grad_norm_ + AdamW(betas (0.9, 0.95)) per
    model; a frozen entry is neither updated nor decayed."""
    gen = torch.Generator().manual_seed(0)
    params = {"a": torch.randn(2, 3, 4, generator=gen, dtype=torch.float64),
              "b": torch.randn(2, 5, generator=gen, dtype=torch.float64)}
    grads = {"a": torch.randn(2, 3, 4, generator=gen, dtype=torch.float64) * torch.tensor([10.0, 0.01])[:, None, None],
             "b": torch.randn(2, 5, generator=gen, dtype=torch.float64)}
    mask = torch.ones(2, 5, dtype=torch.float64)
    mask[:, 0] = 0
    lr = torch.tensor([0.01, 0.003], dtype=torch.float64)
    p = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    for k in p:
        p[k].grad = grads[k].clone()
    Adam(p, {"b": mask}, stacked=True, betas=(0.9, 0.95), weight_decay=0.1, clip=1.5).step(lr, torch.tensor(1.0, dtype=torch.float64))
    for i in range(2):
        q = {k: v[i].clone().requires_grad_(True) for k, v in params.items()}
        for k in q:
            q[k].grad = grads[k][i].clone() * (mask[i] if k == "b" else 1)
        torch.nn.utils.clip_grad_norm_(list(q.values()), 1.5)
        torch.optim.AdamW(list(q.values()), lr=float(lr[i]), betas=(0.9, 0.95), weight_decay=0.1, eps=1e-8).step()
        torch.testing.assert_close(p["a"][i].detach(), q["a"].detach(), rtol=0, atol=1e-12)
        torch.testing.assert_close(p["b"][i, 1:].detach(), q["b"][1:].detach(), rtol=0, atol=1e-12)
        assert float(p["b"][i, 0].detach()) == float(params["b"][i, 0])  # frozen: no update, no decay


def test_recipe_schedule_is_warmup_flat_cosine_to_zero():
    """koren-linear (100 / 400 / 1500 steps): (s+1)/100 of the peak while warming up, the peak for 400 steps, then
    0.5 (1 + cos(pi (s - 500)/1500)) of it."""
    p, lr0 = protocol("koren-linear"), torch.tensor([1e-2], dtype=torch.float64)
    lr = lambda s: float(learning_rate(p, lr0, torch.tensor(float(s), dtype=torch.float64)))  # noqa: E731
    assert lr(0) == pytest.approx(1e-4) and lr(49) == pytest.approx(5e-3) and lr(99) == pytest.approx(1e-2)
    assert lr(100) == lr(499) == pytest.approx(1e-2)
    assert lr(500) == pytest.approx(1e-2) and lr(1250) == pytest.approx(5e-3) and lr(2000) == pytest.approx(0.0)
    assert lr(1999) == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * 1499 / 1500)))
    old = protocol("budgeted")  # the protocols without a warm-up keep the plain cosine
    s = torch.tensor(1000.0, dtype=torch.float64)
    assert float(learning_rate(old, lr0, s)) == pytest.approx(1e-6 + 0.5 * (1e-2 - 1e-6) * (1 + math.cos(math.pi / 4)))


def test_training_loss_is_label_smoothed_cross_entropy():
    spec = linear_spec()
    model = build_model([spec], "cpu")
    tok, lab = datasets(spec)["train"]
    idx = torch.arange(8)[None]
    from verify.train.step import scored_positions

    got = pack_loss(model, tok, lab, scored_positions(lab), idx, label_smoothing=0.1)
    h = model.hidden(tok[:8].long()[None])[0]
    mask = lab[:8] != -100
    want = F.cross_entropy(h[mask] @ model.readout[0].T, lab[:8][mask].long(), label_smoothing=0.1)
    torch.testing.assert_close(got[0], want)


def test_tiny_linear_model_learns_ar_and_the_best_validation_state_is_tested():
    """The paper's recipe at a test size (koren-smoke): the simplified linear Mamba learns AR (V = 32, N_f = 4) to
    >= 95% test accuracy in a few seconds; the returned weights are the best-validation state (their validation
    accuracy is the best recorded) and D stays 0."""
    spec = linear_spec(task_args=(("ar", True),), d_model=16, d_state=16)
    (rec,) = train_pack([spec])
    r = rec["result"]
    assert r["test_acc"] >= 0.95, r
    best = max(h[2] for h in r["history"])
    assert r["best_val_acc"] == best and [h[0] for h in r["history"] if h[2] == best][0] == r["tested_step"]
    sd = rec["_weights"]
    assert torch.equal(sd["mixer.layers.0.D"], torch.zeros_like(sd["mixer.layers.0.D"]))
    model = build_model([spec], "cpu")
    with torch.no_grad():
        for k, v in model.params.items():
            v.copy_(sd[k][None])
    _, va, _, _ = evaluate(model, *datasets(spec)["val"], "cpu")
    assert float(va[0]) == pytest.approx(best, abs=1e-12)


def test_full_model_trains_on_cpu():
    """One pack of two full models (lm wiring) trains a few steps: the loop runs it; the loss falls."""
    spec = full_spec(protocol=protocol("koren-smoke", max_steps=60, warmup_steps=5, flat_steps=20, eval_every=30))
    recs = train_pack([spec, replace(spec, seed=1)])
    for rec in recs:
        h = rec["result"]["history"]
        assert len(h) == 2 and h[-1][1] < h[0][1] + 1.0 and rec["result"]["tested_step"] in (30, 60)
        assert {"layers.0.norm.weight", "norm_f.weight", "layers.0.mixer.A_log"} <= set(rec["_weights"])


@pytest.mark.parametrize("change, expect", [
    (dict(model=()), "wiring 'tied'"),
    (dict(model=(("wiring", "lm"),)), "takes wiring 'tied'"),
    (dict(model=TIED + (("depth", 2),)), "unknown key 'depth'"),
    (dict(model=TIED + (("layers", 0),)), "layers must be an integer >= 1"),
    (dict(model=TIED + (("silu", 1),)), "silu must be true or false"),
    (dict(mixer="mamba", gate=True, model=LM + (("silu", True),)), "silu is an option of the linear Mamba"),
    (dict(mixer="mamba", gate=True), "takes wiring 'lm'"),
    (dict(mixer="mamba", gate=True, model=LM + (("heads", 2),)), "heads is an option of the linear Mamba"),
    (dict(mixer="mamba", gate=False, model=LM), "keeps the gate"),
])
def test_invalid_models_are_refused(change, expect):
    with pytest.raises(RequirementError, match=expect):
        spec = linear_spec(**change)
        registry.validate(spec)
        build_model([spec], "cpu")


def test_new_fields_leave_every_earlier_run_key_alone():
    """A spec at the new fields' defaults writes none of them (its key is the one it had before they existed); a
    koren protocol writes them, so its runs cannot collide with another protocol's."""
    spec = RunSpec(task="mqar", mixer="mamba", vocab=8, d_model=8, d_state=4, seed=0, lr=0.03)
    d = spec.as_dict()
    assert "model" not in d and not set(ADDED) & set(d["protocol"])
    assert RunSpec.from_dict(d) == spec
    k = linear_spec(protocol=protocol("koren-linear")).as_dict()
    assert k["model"] == [["wiring", "tied"]] and k["protocol"]["select"] == "best_val"
    assert RunSpec.from_dict(k) == linear_spec(protocol=protocol("koren-linear"))
    assert run_key(linear_spec()) != run_key(linear_spec(model=TIED + (("layers", 1),)))


def test_recall_grids_expand_to_the_papers_cells():
    from verify.train.sweep import grid

    lin, full, mech = grid("recall-linear-regime0"), grid("recall-full-regime0"), grid("recall-mechinterp")
    cells = {(s.d_model, s.d_state) for s in lin.runs()}
    assert len(cells) == 752 and all(n <= d for d, n in cells)
    assert {d for d, _ in cells} == set(range(2, 65, 2)) and {n for _, n in cells} == set(range(2, 33))
    assert len(lin.runs()) == 3 * 752 and len(full.runs()) == 5 * 752 and len(mech.runs()) == 200
    for g, wiring, proto in ((lin, "tied", "koren-linear"), (full, "lm", "koren-full"), (mech, "tied", "koren-mech")):
        s = g.runs()[0]
        assert (s.vocab, s.seq_len, s.kappa, s.d_conv, s.expand) == ((256 if g is mech else 512), 64, 16, 2, 2)
        assert s.model_arg("wiring") == wiring and s.protocol.name == proto
    p = full.runs()[0].protocol
    assert (p.batch_size, p.max_steps, p.warmup_steps, p.flat_steps, p.clip, p.stop, p.stop_value) == \
        (128, 20_000, 100, 5900, 0.75, "val_acc_above", 0.999)
    assert mech.runs()[0].protocol.keep_weights


@pytest.mark.parametrize("name", ["recall-linear-regime0", "recall-full-regime0", "recall-mechinterp"])
def test_a_cpu_slice_of_each_recall_grid_trains(name, tmp_path):
    """One cell of the grid, its protocol cut to a few steps and small sets, through the sweep runner (inline)."""
    from verify.train.runner import run_sweep
    from verify.train.store import ResultStore, read_weights, weights_path
    from verify.train.sweep import grid

    g = grid(name)
    cut = (("max_steps", 20), ("train_samples", 20 * 16), ("batch_size", 16), ("val_samples", 64),
           ("test_samples", 64), ("eval_every", 10), ("warmup_steps", 2), ("flat_steps", 8))
    g = replace(g, d_models=(8,), d_states=(4,), seeds=(0,), protocol_overrides=g.protocol_overrides + cut)
    store = ResultStore(tmp_path / f"{name}.jsonl")
    out = run_sweep(g.runs(), store, executor="inline")
    assert out.counts()["finished_now"] == 1 and not out.failed
    (rec,) = store.records()
    assert rec["result"]["steps"] == 20 and rec["spec"]["model"][0][0] == "wiring"
    path = weights_path(store.path, rec["key"])
    assert path.exists() == bool(g.runs()[0].protocol.keep_weights)
    if path.exists():
        sd, spec = read_weights(path)
        assert spec == rec["spec"] and torch.equal(sd["readout.weight"], sd["embedding.weight"])


def test_cells_take_the_best_of_seeds_with_the_mean_beside_it():
    def rec(d, n, seed, acc):
        return {"spec": linear_spec(d_model=d, d_state=n, seed=seed).as_dict(),
                "result": {"best_val_acc": acc, "test_acc": acc / 2}}

    cells = rm.cell_accuracy([rec(8, 4, 0, 0.5), rec(8, 4, 1, 0.9), rec(8, 4, 2, 0.1), rec(16, 4, 0, 0.7)])
    key = ("linear-mamba", 32, 4, 16, 8, 4, (("wiring", "tied"),))
    assert cells[key] == {"best": 0.9, "mean": pytest.approx(0.5), "runs": 3}
    assert cells[key[:4] + (16,) + key[5:]]["best"] == 0.7
    assert rm.cell_accuracy([rec(8, 4, 0, 0.5)], "test_acc")[key]["best"] == 0.25


def test_cli_train_takes_the_model_and_refuses_a_bad_one(capsys):
    import json

    from verify_constructions.cli import main

    args = ["train", "--task", "mqar-zoology", "--mixer", "linear-mamba", "--vocab", "32", "--kappa", "4",
            "--seq-len", "16", "--d-model", "8", "--d-state", "4", "--d-conv", "2", "--expand", "2",
            "--protocol", "koren-smoke", "--max-steps", "20", "--json"]
    assert main([*args, "--model-arg", "wiring=tied", "--model-arg", "layers=2"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["spec"]["model"] == [["layers", 2], ["wiring", "tied"]] and rec["spec"]["d_conv"] == 2
    assert main([*args, "--model-arg", "wiring=lm"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "takes wiring 'tied'" in err
