"""Language-model export (``constructions.lm``): Theorem 2's construction inside transformers' ``MambaForCausalLM``.

The export is written by the command line (``export mqar-mamba --format lm``), loaded by transformers' own
``from_pretrained`` (no missing, unexpected or mismatched key), and asked MQAR queries the way a language model is
asked: the prompt is the sequence up to and including a query key, and the next token must be the queried value's.
Every query of several sequences (each key once; each key three times, so that adjacent and repeated queries occur) is
checked with teacher-forced logits, and each one again with greedy ``generate(max_new_tokens=1)``. The measured
margin is compared with the margin the proof keeps after the final norm (``config.json``). A changed stored weight and
each broken condition of the wrapping fail their obligation.
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

from constructions import lm, mqar_mamba  # noqa: E402
from symbolic import theorem2 as th  # noqa: E402
from verify.engines import make_engine  # noqa: E402
from verify.tasks.mqar import IGNORE, MQARConfig, generate  # noqa: E402
from verify_constructions.cli import main  # noqa: E402

KAPPA, VOCAB, T = 8, 128, 100  # T: the command line's default seq_len at kappa = 8


@pytest.fixture(scope="module", params=["one-hot", "jl"])
def export(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("lm") / request.param
    assert main(["export", "mqar-mamba", "--kappa", str(KAPPA), "--vocab", str(VOCAB), "--variant", request.param,
                 "--out", str(out), "--format", "lm", "--quiet"]) == 0
    return out, mqar_mamba.build(KAPPA, VOCAB, request.param, seq_len=T)


@pytest.fixture(scope="module")
def model(export):
    return lm.load_transformers(export[0])


def prompts(query_passes: int, seed: int, n: int = 4):
    tokens, labels = generate(MQARConfig(KAPPA, VOCAB, T, num_examples=n, query_passes=query_passes), seed)
    return torch.from_numpy(tokens), labels


def test_transformers_loads_every_weight_and_nothing_else(export):
    from transformers import MambaForCausalLM

    m, info = MambaForCausalLM.from_pretrained(str(export[0]), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"] and not info.get("error_msgs")
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
    sibling = export[0] / lm.MAMBA_SSM_FOLDER
    assert json.loads((sibling / "proof.json").read_text()) == lm.read_config(export[0])["construction"]


def test_the_mamba_ssm_sibling_holds_the_same_weights_and_only_its_config_fields(export):
    sibling = export[0] / lm.MAMBA_SSM_FOLDER
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
    print(f"\n{con.info['variant']}, {len(want)} queries: min margin {margin:.4g} >= proven {bound:.4g}")
    assert margin >= bound
    non_values = torch.cat([at[:, :values_start], at[:, con.tokens.noise_start:]], 1)
    assert torch.equal(non_values, torch.zeros_like(non_values)), "keys and noise must get the logit 0 exactly"

    emitted = 0
    for b, q in zip(rows, cols):
        out = model.generate(tokens[b:b + 1, :q + 1], max_new_tokens=1, do_sample=False)
        assert out.shape == (1, q + 2) and torch.equal(out[0, :q + 1], tokens[b, :q + 1])
        assert out[0, -1].item() == labels[b, q] + values_start, f"sequence {b}, query at {q}"
        emitted += 1
    assert emitted == len(want) == 4 * KAPPA * query_passes


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


def test_the_theorem2_bounds_hold_on_measured_sequences(export):
    """The bounds the wrapping takes from symbolic.theorem2: |y_t| <= mixer_output_bound at every position, the
    queried value's logit >= target_logit_lower_bound at every query (float64 reference engine)."""
    _, con = export
    variant, p = con.info["variant"], sp.Integer(con.info["value_dim"])
    p_, mu = (p, sp.nsimplify(con.info["coherence"])) if variant == "jl" else (None, None)
    tokens, labels = prompts(3, seed=11, n=32)
    hidden = make_engine("reference", "float64").hidden(con, tokens)
    y_max = hidden.norm(dim=-1).max().item()
    rows, cols = np.nonzero(labels != IGNORE)
    target = (hidden[rows, cols] @ con.readout.T)[np.arange(len(rows)), labels[rows, cols]].min().item()
    assert y_max <= float(th.mixer_output_bound(th.DEFAULT, variant, p_, T))
    assert target >= float(th.target_logit_lower_bound(th.DEFAULT, variant, p_, mu))


def test_a_changed_stored_weight_fails_the_stored_weights_obligation(export, tmp_path):
    folder, con = export
    wrapped = lm.wrap(con)
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
def test_each_broken_condition_fails_its_obligation(export, break_it, failing):
    wrapped = lm.wrap(export[1])
    assert all(o.holds for o in wrapped.decide())
    failed = {o.name for o in _broken(wrapped, **break_it(wrapped)).decide() if not o.holds}
    assert failed == failing


def test_constants_the_construction_was_not_built_with_are_refused(export):
    from constructions.errors import RequirementError

    with pytest.raises(RequirementError, match="not those the construction was built with"):
        lm.wrap(export[1], th.Theorem2Constants(key_cur=sp.Integer(9)))


@pytest.mark.parametrize("argv, needle", [
    (["export", "mqar-mamba", "--format", "safetensors"], "--format safetensors: one of mixer, lm"),
    (["export", "haar", "--format", "lm"], "--format lm: a language-model export is proven for mqar-mamba, not haar"),
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
