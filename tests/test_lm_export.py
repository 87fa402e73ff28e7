"""Language-model export (``constructions.lm``): Theorems 2 and 3 inside transformers' ``MambaForCausalLM`` and
``Mamba2ForCausalLM``.

The export is written by the command line (``export mqar-mamba --format lm``, the same for ``mqar-mamba2``), loaded by
transformers' own ``from_pretrained`` (no missing, unexpected or mismatched key), and asked MQAR queries the way a
language model is asked: the prompt is the sequence up to and including a query key, and the next token must be the
queried value's. Every query of several sequences (each key once; each key three times, so that adjacent and repeated
queries occur) is checked with teacher-forced logits, and with greedy ``generate(max_new_tokens=1)``: every query of the
first sequence, the last query of the others. The measured margin is compared with the margin the proof keeps after
the norms (``config.json``). A changed stored weight and each broken condition of the wrapping fail their obligation.
"""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import sympy as sp
import torch
from safetensors.torch import load_file, save_file

pytest.importorskip("transformers", reason="the language-model export is loaded with the 'transformers' extra")

from constructions import lm, mqar_mamba, mqar_mamba2  # noqa: E402
from symbolic import theorem2 as th  # noqa: E402
from symbolic import theorem3 as th3  # noqa: E402
from verify.engines import make_engine  # noqa: E402
from verify.tasks.mqar import IGNORE, MQARConfig, generate  # noqa: E402
from verify_constructions.cli import main  # noqa: E402

KAPPA, VOCAB, T = 8, 128, 100  # T: the command line's default seq_len at kappa = 8


BUILD = {"mqar-mamba": mqar_mamba.build, "mqar-mamba2": mqar_mamba2.build}


@pytest.fixture(scope="module", params=[("mqar-mamba", "one-hot"), ("mqar-mamba", "jl"), ("mqar-mamba2", "one-hot"),
                                        ("mqar-mamba2", "jl")], ids=lambda p: "-".join(p))
def export(request, tmp_path_factory):
    name, variant = request.param
    out = tmp_path_factory.mktemp("lm") / variant
    assert main(["export", name, "--kappa", str(KAPPA), "--vocab", str(VOCAB), "--variant", variant,
                 "--out", str(out), "--format", "lm", "--quiet"]) == 0
    return out, BUILD[name](KAPPA, VOCAB, variant, seq_len=T)


@pytest.fixture(scope="module")
def wrapped():
    """Theorem 2's construction wrapped (exact), for the tests that break one condition of the wrapping."""
    return lm.wrap(mqar_mamba.build(KAPPA, VOCAB, seq_len=T))


@pytest.fixture(scope="module")
def model(export):
    return lm.load_transformers(export[0])


def prompts(query_passes: int, seed: int, n: int = 4):
    tokens, labels = generate(MQARConfig(KAPPA, VOCAB, T, num_examples=n, query_passes=query_passes), seed)
    return torch.from_numpy(tokens), labels


def test_transformers_loads_every_weight_and_nothing_else(export):
    import transformers

    folder, con = export
    cls = transformers.MambaForCausalLM if con.config.kind == "mamba" else transformers.Mamba2ForCausalLM
    with torch.random.fork_rng():
        m, info = cls.from_pretrained(str(folder), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert not info.get("error_msgs")
    assert not m.config.tie_word_embeddings
    assert m.lm_head.weight.data_ptr() != m.backbone.embeddings.weight.data_ptr()
    stored = load_file(str(export[0] / "model.safetensors"))
    assert set(stored) == set(m.state_dict())
    assert all(torch.equal(stored[k], v) for k, v in m.state_dict().items())


def test_the_proof_is_in_the_config_and_holds(export):
    proof = lm.read_config(export[0])["construction"]["proof"]
    assert proof["holds"] and proof["held"] == proof["total"] == len(proof["obligations"])
    assert all(o["holds"] for o in proof["obligations"])
    assert 0 < proof["margin_after_norm"] and proof["final_factor"][0] > 0


def test_the_mamba_ssm_sibling_holds_the_same_weights_proof_and_only_its_config_fields(export):
    sibling = export[0] / lm.MAMBA_SSM_FOLDER
    if export[1].config.kind != "mamba":
        assert not sibling.exists()  # written for Theorem 2's Mamba model only
        return
    assert json.loads((sibling / "proof.json").read_text()) == lm.read_config(export[0])["construction"]
    fields = {"d_model", "d_intermediate", "n_layer", "vocab_size", "ssm_cfg", "attn_layer_idx", "attn_cfg",
              "rms_norm", "residual_in_fp32", "fused_add_norm", "pad_vocab_size_multiple", "tie_embeddings"}
    config = json.loads((sibling / "config.json").read_text())  # mamba_ssm 2.3.2's MambaConfig(**config) fields
    assert set(config) <= fields and config["pad_vocab_size_multiple"] == 1 and not config["tie_embeddings"]
    assert config["d_intermediate"] == 0 and config["n_layer"] == 1 and config["ssm_cfg"]["layer"] == "Mamba1"
    theirs = torch.load(sibling / "pytorch_model.bin", weights_only=True)
    ours = load_file(str(export[0] / "model.safetensors"))
    renamed = {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in ours.items()}
    assert set(theirs) == set(renamed) and all(torch.equal(theirs[k], v) for k, v in renamed.items())


@pytest.mark.parametrize("query_passes", [1, 3])
def test_next_token_is_the_queried_value_at_every_query(export, model, query_passes):
    folder, con = export
    tokens, labels = prompts(query_passes, seed=query_passes)
    values_start = con.tokens.values_start
    with torch.no_grad():
        logits = model(tokens).logits
    rows, cols = np.nonzero(labels != IGNORE)
    want = torch.from_numpy(labels[rows, cols] + values_start)
    at = logits[rows, cols]
    assert torch.equal(at.argmax(-1), want), "a query's next-token argmax is not its value"
    others = at.clone()
    others[torch.arange(len(want)), want] = -torch.inf
    margin = (at[torch.arange(len(want)), want] - others.max(-1).values).min().item()
    bound = lm.read_config(folder)["construction"]["proof"]["margin_after_norm"]
    print(f"\n{con.name} {con.info['variant']}, {len(want)} queries: min margin {margin:.4g} >= proven {bound:.4g}")
    assert margin >= bound
    non_values = torch.cat([at[:, :values_start], at[:, con.tokens.noise_start:]], 1)
    assert torch.equal(non_values, torch.zeros_like(non_values)), "keys and noise must get the logit 0 exactly"

    asked = [(b, q) for b, q in zip(rows, cols) if b < 1 or q == cols[rows == b].max()]  # all, then the last ones
    for b, q in asked:
        out = model.generate(tokens[b:b + 1, :q + 1], max_new_tokens=1, do_sample=False)
        assert out.shape == (1, q + 2) and torch.equal(out[0, :q + 1], tokens[b, :q + 1])
        assert out[0, -1].item() == labels[b, q] + values_start, f"sequence {b}, query at {q}"
    assert len(want) == 4 * KAPPA * query_passes and len(asked) == KAPPA * query_passes + 3


def test_the_pre_norm_hands_the_mixer_the_construction_embedding_bit_for_bit(export, model):
    folder, con = export
    tokens, _ = prompts(1, seed=5, n=2)
    seen = []
    hook = model.backbone.layers[0].mixer.register_forward_pre_hook(lambda mod, args, kw: seen.append(args[0]),
                                                                    with_kwargs=True)
    try:
        with torch.no_grad():
            model(tokens)
    finally:
        hook.remove()
    d = con.config.d_model
    assert torch.equal(seen[0][..., :d], con.embedding.float()[tokens])
    assert not seen[0][..., d:].any()


def test_the_theorem_bounds_hold_on_measured_sequences(export):
    """The bounds the wrapping takes from the theorem's module, measured (float64 reference engine): Theorem 2, the
    mixer output |y_t| <= mixer_output_bound at every position; Theorem 3, the gated SSM output (out_proj maps it
    isometrically onto the value coordinates) <= gated_output_bound; both, the queried value's logit >=
    target_logit_lower_bound at every query."""
    _, con = export
    info = con.info
    if con.config.kind == "mamba":
        p_ = sp.Integer(info["value_dim"]) if info["variant"] == "jl" else None
        mu = sp.nsimplify(info["coherence"]) if info["variant"] == "jl" else None
        y_bound = th.mixer_output_bound(th.DEFAULT, info["variant"], p_, T)
        z_bound = th.target_logit_lower_bound(th.DEFAULT, info["variant"], p_, mu)
    else:
        args = (th3.DEFAULT, 1) if info["variant"] == "one-hot" else (
            th3.DEFAULT, 2, sp.Integer(info["key_dim"]), sp.Integer(info["value_dim"]),
            sp.nsimplify(info["coherence"]), sp.nsimplify(info["key_interference"]))
        y_bound = th3.gated_output_bound(*args[:4], seq_len=T)
        z_bound = th3.target_logit_lower_bound(*args)
    tokens, labels = prompts(3, seed=11, n=8)
    hidden = make_engine("reference", "float64").hidden(con, tokens)
    rows, cols = np.nonzero(labels != IGNORE)
    target = (hidden[rows, cols] @ con.readout.T)[np.arange(len(rows)), labels[rows, cols]].min().item()
    y_max = hidden.norm(dim=-1).max().item()
    print(f"\n{con.name} {info['variant']}: max |y_t| {y_max:.4g} <= {float(y_bound):.4g}, min target logit "
          f"{target:.4g} >= {float(z_bound):.4g}")
    assert y_max <= float(y_bound) and target >= float(z_bound)


def test_a_changed_stored_weight_fails_the_stored_weights_obligation(wrapped, tmp_path):
    folder = lm.save_lm(wrapped.con, tmp_path / "lm")
    assert lm.stored_obligation(folder, wrapped).holds
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    sd = load_file(str(copy / "model.safetensors"))
    sd["backbone.layers.0.norm.weight"][3] = 1.0  # the pre-norm no longer undoes the scale on coordinate 3
    save_file(sd, str(copy / "model.safetensors"), metadata={"format": "pt"})
    ob = lm.stored_obligation(copy, wrapped)
    assert not ob.holds and "backbone.layers.0.norm.weight[3]" in ob.statement and "transformers" in ob.statement

    shutil.copy(folder / "model.safetensors", copy / "model.safetensors")
    bin_path = copy / lm.MAMBA_SSM_FOLDER / "pytorch_model.bin"
    sd = torch.load(bin_path, weights_only=True)
    sd["lm_head.weight"][0, KAPPA] = 1.0  # key 0's row reads a value coordinate
    torch.save(sd, bin_path)
    ob = lm.stored_obligation(copy, wrapped)
    assert not ob.holds and "mamba_ssm lm_head.weight[0, 8]" in ob.statement


def _broken(wrapped, **changes):
    return dataclasses.replace(wrapped, _decided=None, **changes)


def _tensor_with(t, index, value):
    t = t.clone()
    t[index] = value
    return t


@pytest.mark.parametrize("break_it, failing", [
    (lambda w: {"embedding": _tensor_with(w.embedding, (KAPPA + 3, w.d + 1), w.embedding[KAPPA + 3, w.d + 1] + 1)},
     {"RMSNorm is one scale for every token: embedding rows of equal norm"}),
    (lambda w: {"prenorm": (sp.Integer(16),) + w.prenorm[1:]},
     {"pre-norm weight undoes the scale on the construction's coordinates"}),
    (lambda w: {"prenorm": w.prenorm[:-1] + (sp.Integer(1),)},
     {"pre-norm weight closes the pads: the mixer sees exactly the construction's embedding"}),
    (lambda w: {"lm_head": _tensor_with(w.lm_head, (0, 0), 1.0)},
     {"LM head: value tokens' rows are the construction's readout, every other row 0",
      "head blind to the residual at every scored token"}),
    (lambda w: {"final_norm": w.final_norm[:w.d - 1] + (sp.Integer(-1),) + w.final_norm[w.d:]},
     {"final norm weight is one positive constant on the head's coordinates"}),
    (lambda w: {"final_norm": (sp.Integer(-1),) * w.d_lm},
     {"final norm weight is one positive constant on the head's coordinates", "final norm factor positive and bounded",
      "margin after the norm > 0"}),
    (lambda w: {"mixer": {**w.mixer, "out_proj.weight": _tensor_with(w.mixer["out_proj.weight"], (w.d, 0), 1.0)}},
     {"the LM's mixer is the construction's padded with zeros"}),
])
def test_each_broken_condition_fails_its_obligation(wrapped, break_it, failing):
    assert all(o.holds for o in wrapped.decide())
    failed = {o.name for o in _broken(wrapped, **break_it(wrapped)).decide() if not o.holds}
    assert failed == failing


def test_a_broken_gated_norm_fails_its_obligation():
    wrapped = lm.wrap(mqar_mamba2.build(KAPPA, VOCAB, seq_len=T))
    assert all(o.holds for o in wrapped.decide())
    uneven = (sp.Integer(2),) + wrapped.gated[1:]
    mixer = {**wrapped.mixer, "norm.weight": _tensor_with(wrapped.mixer["norm.weight"], 0, 2.0)}
    failed = {o.name for o in _broken(wrapped, gated=uneven, mixer=mixer).decide() if not o.holds}
    assert failed == {"gated norm weight is one positive constant on the channels out_proj reads"}


def test_broken_theorem_bounds_fail_their_obligation():
    bad = th.Theorem2Constants(key_prev=sp.Integer(-1))  # silu(-1) < 0: B_t, C_t entries leave [0, beta]
    assert "B_t and C_t entries lie in [0, beta]" in {o.name for o in th.lm_obligations(bad) if not o.holds}
    bad3 = th3.Theorem3Constants(onehot_b=sp.Integer(-3))
    assert "|<B_s, C_t>| <= the read bound" in {o.name for o in th3.lm_obligations(bad3, 1) if not o.holds}


def test_constants_the_construction_was_not_built_with_are_refused(wrapped):
    from common.errors import RequirementError

    with pytest.raises(RequirementError, match="not those the construction was built with"):
        lm.wrap(wrapped.con, th.Theorem2Constants(key_cur=sp.Integer(9)))


def test_parameters_outside_the_proof_are_refused():
    from common.errors import RequirementError

    con = mqar_mamba2.build(KAPPA, VOCAB, "jl", seq_len=T, key_dim=6)  # key_dim < kappa: no proof for every sequence
    with pytest.raises(RequirementError, match="outside the construction's proof"):
        lm.wrap(con)


@pytest.mark.parametrize("argv, needle", [
    (["export", "mqar-mamba", "--format", "safetensors"], "--format safetensors: one of mixer, lm"),
    (["export", "haar", "--format", "lm"], "--format lm: a language-model export is proven for mqar-mamba, "
                                           "mqar-mamba2, not haar"),
])
def test_bad_format_is_one_line_and_exit_2(tmp_path, capsys, argv, needle):
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_four_squares():
    for n in [0, 1, 2, 3, 7, 15, 28, 35839, 35840, 4 ** 9 * 7]:
        a, b, c, e = lm.four_squares(n)
        assert a * a + b * b + c * c + e * e == n and a >= b >= c >= e >= 0
