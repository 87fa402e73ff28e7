"""config.json says what the file is (``verify.export``): one source per field, the wiring and the update rule in
words, the sizes of the kind's formulas, the module that loads each block; the loaders do the layout work; exports
written before (format 1, ``tests/data/exports-v1``: written by the exporter of that format) still load and check.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from common.errors import RequirementError
from constructions.layout import MambaDeltaTConfig
from verify import blocks
from verify.blocks.mamba_delta_t import MambaDeltaT
from verify.blocks.mamba_s4d import MambaS4D
from verify.engines import make_engine
from verify.engines.scan import selective_scan_ref
from verify.export import load, mamba_ssm_mixer, mixer_state_dict, save, transformers_mixer
from verify.registry import SPECS
from verify.specs import mqar as M
from verify_constructions.cli import main

OLD = Path(__file__).resolve().parent / "data" / "exports-v1"
CASES = {  # construction -> parameters (small); one per block kind, keep-nth for the +PE position channel
    "mqar-mamba": M.MQARParams(kappa=2, vocab=4, seq_len=8, samples=4),
    "mqar-mamba2": M.MQARMamba2Params(kappa=2, vocab=4, seq_len=8, samples=4),
    "mqar-s4d": M.MQARParams(kappa=2, vocab=4, seq_len=8, samples=4),
    "induction-heads": None,
    "keep-nth": "vocab=4 n=2 seq_len=6",
    "hash-recall": "vocab=16 facts=2 d_model=8 d_state=4",
}
KIND = {"mqar-mamba": "mamba", "mqar-mamba2": "mamba2", "mqar-s4d": "mamba-s4d", "induction-heads": "mamba-delta-t",
        "keep-nth": "mamba", "hash-recall": "linear-mamba"}


def _build(name: str):
    spec, p = SPECS[name], CASES[name]
    if p is None:
        p = spec.defaults[0]
    elif isinstance(p, str):
        p = spec.params(**{k: int(v) for k, v in (kv.split("=") for kv in p.split())})
    return spec.build(p)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """name -> (construction, folder, config.json) of a float64 export of each case."""
    out = {}
    for name in CASES:
        con = _build(name)
        folder = save(con, tmp_path_factory.mktemp(name) / "e", torch.float64)
        out[name] = (con, folder, json.loads((folder / "config.json").read_text(encoding="utf-8")))
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_config_json_says_each_fact_once(exported, name):
    con, folder, cfg = exported[name]
    kind = KIND[name]
    assert cfg["format"] == "mamba-constructions mixer export" and cfg["format_version"] == 2
    assert not {"mamba_kwargs", "block_config", "sizes", "token_counts", "position_channel"} & set(cfg)
    block = cfg["block"]
    assert block["kind"] == kind and block["arguments"] == con.config.arguments()
    assert blocks.KINDS[kind].config(**block["arguments"]).arguments() == block["arguments"]
    assert None not in block["arguments"].values()  # every default resolved (mamba_ssm's "auto" dt_rank included)
    tensors = load_file(str(folder / "model.safetensors"))
    assert cfg["model"]["tensors"] == {k: list(v.shape) for k, v in tensors.items()}
    mixer = mixer_state_dict(tensors)
    assert block["sizes"]["parameters"] == sum(v.numel() for v in mixer.values())
    assert block["sizes"]["d_model"] == tensors["embedding.weight"].shape[1] == tensors["readout.weight"].shape[1]
    assert set(block["sizes"]) == {"d_model", "d_inner", "d_state", "state_size", "parameters"}
    assert cfg["model"]["n_classes"] == tensors["readout.weight"].shape[0]
    assert "no normalisation, no residual connection" in cfg["model"]["wiring"]
    assert ("+PE" in cfg["model"]["wiring"]) == (con.position_channel is not None) == (name == "keep-nth")
    assert cfg["model"]["position_channel"] == con.position_channel
    assert block["update_rule"] == blocks.KINDS[kind].update_rule and "_{t-1}" in block["update_rule"]
    assert set(block["modules"]) == {"mamba_ssm", "transformers", "mamba-constructions"}


def test_the_sizes_are_the_kinds_formulas_not_a_ratio(exported):
    """Mamba-S4D: d_inner = kappa |V| S4D channels behind in_proj (no ``expand`` = d_inner / d_model = 1.33...)."""
    _, _, cfg = exported["mqar-s4d"]
    assert cfg["block"]["arguments"] == {"d_model": 6, "d_state": 1, "d_conv": 4, "d_inner": 8, "bias": False,
                                         "conv_bias": True}
    assert cfg["block"]["sizes"] == {"d_model": 6, "d_inner": 8, "d_state": 1, "state_size": 8,
                                     "parameters": 16 * 6 + 8 * 4 + 8 + 8 * 5 + 6 * 8}


def test_update_rules_name_what_sets_each_block_apart(exported):
    rule = {name: exported[name][2]["block"]["update_rule"] for name in ("mqar-mamba", "mqar-s4d", "induction-heads")}
    assert "Euler Delta*B" in rule["mqar-s4d"] and "B and C are parameters" in rule["mqar-s4d"]
    assert "Delta-free writes" in rule["induction-heads"] and "+ B_t[k] x_t[c]" in rule["induction-heads"]
    assert "Delta_t[c] B_t[k] x_t[c]" in rule["mqar-mamba"]


def test_blocks_mamba_ssm_lacks_name_this_projects_module(exported):
    for name, module in (("mqar-s4d", "MambaS4D"), ("induction-heads", "MambaDeltaT")):
        modules = exported[name][2]["block"]["modules"]
        text = modules["mamba_ssm"]["module"]
        assert text.startswith("mamba_ssm has no") and module in text
        assert "none" in modules["transformers"]
    modules = exported["hash-recall"][2]["block"]["modules"]
    assert "none" in modules["mamba_ssm"] and "none" in modules["transformers"]
    assert exported["mqar-mamba"][2]["block"]["modules"]["mamba_ssm"]["module"].startswith("mamba_ssm.Mamba(**arguments)")


@pytest.mark.parametrize("name", list(CASES))
def test_an_export_loads_back_to_the_same_construction(exported, name):
    con, folder, _ = exported[name]
    back = load(folder)
    assert type(back.config) is type(con.config) and back.config.arguments() == con.config.arguments()
    assert back.position_channel == con.position_channel and back.tokens == con.tokens
    assert all(torch.equal(back.state_dict()[k], v.double()) for k, v in con.state_dict().items())


@pytest.mark.parametrize("name, module", [("mqar-s4d", "s4d"), ("induction-heads", "delta-t")])
def test_this_projects_modules_load_the_file_as_config_json_says(exported, name, module):
    """``MambaS4D(**arguments)`` and ``MambaDeltaT(MambaDeltaTConfig(**arguments), scan_fn=...)`` load the stored
    mixer strictly, and their forward (on the reference scan) is the reference engine's."""
    con, folder, cfg = exported[name]
    args = cfg["block"]["arguments"]
    m = (MambaS4D(**args, dtype=torch.float64) if module == "s4d"
         else MambaDeltaT(MambaDeltaTConfig(**args), scan_fn=selective_scan_ref, dtype=torch.float64))
    m.load_state_dict(mixer_state_dict(load_file(str(folder / "model.safetensors"))), strict=True)
    x = torch.randn(2, 7, args["d_model"], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = m.double()(x)
    want = make_engine("reference", "float64").mixer(con, x)
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-12), float((got - want).abs().max())


@pytest.mark.parametrize("name", ["mqar-mamba", "mqar-mamba2"])
def test_transformers_loader_does_the_layout_work(exported, name):
    pytest.importorskip("transformers", reason="the transformers loader needs the 'transformers' extra")
    con, folder, _ = exported[name]
    m = transformers_mixer(folder, dtype=torch.float64)
    assert type(m).__name__ == ("MambaMixer" if name == "mqar-mamba" else "Mamba2Mixer")
    x = torch.randn(2, 7, con.config.d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = m(x)
    want = make_engine("reference", "float64").mixer(con, x)
    # transformers computes the scan in float32 whatever the module dtype (verify.engines.hf, "Precision")
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5), float((got - want).abs().max())


def test_loaders_refuse_a_block_their_code_base_lacks_with_the_reason(exported):
    folder = exported["hash-recall"][1]
    with pytest.raises(RequirementError, match="mamba_ssm has no module for block 'linear-mamba'"):
        mamba_ssm_mixer(folder)
    pytest.importorskip("transformers", reason="the transformers loader needs the 'transformers' extra")
    with pytest.raises(RequirementError, match="transformers has no module for block 'mamba-s4d'"):
        transformers_mixer(exported["mqar-s4d"][1])


def test_the_mamba_ssm_loader_names_what_is_missing(exported):
    try:
        import mamba_ssm  # noqa: F401
    except ImportError:
        with pytest.raises(RequirementError, match="needs the mamba_ssm package"):
            mamba_ssm_mixer(exported["mqar-mamba"][1])
    else:
        pytest.skip("mamba_ssm is installed: tests/test_cuda_*.py load exports into it")


# --- exports of format 1 -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("folder", sorted(p.name for p in OLD.iterdir()))
def test_an_export_of_format_1_still_loads(folder):
    old = json.loads((OLD / folder / "config.json").read_text())
    assert "mamba_kwargs" in old and isinstance(old["block"], str)  # what the fixture is
    con = load(OLD / folder)
    assert con.config.kind == blocks.canonical(old["block"]) and con.name == folder
    assert con.position_channel == old["position_channel"]
    tensors = load_file(str(OLD / folder / "model.safetensors"))
    assert all(torch.equal(con.state_dict()[k], v) for k, v in tensors.items())


@pytest.mark.parametrize("folder", ["mqar-mamba", "mqar-mamba2", "mqar-s4d", "induction-heads", "keep-nth"])
def test_an_export_of_format_1_still_checks(folder, capsys):
    """``check --from-export`` rebuilds the construction from the format-1 file's record and finds the stored weights
    equal to it (mqar-s4d: the block stored as ``mamba_s4d``)."""
    assert main(["check", folder, "--from-export", str(OLD / folder), "--samples", "8", "--quiet"]) == 0
