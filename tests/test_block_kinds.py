"""The block kinds (``verify.blocks``): one object per kind that every other place asks, one name per kind.

A toy kind registered in this module alone (a Mamba block under another name, and one whose forward negates
Mamba's) runs through the reference engine, the check, the export and the size formulas: adding a kind touches one
module. The kinds' own entries agree with their config classes and with each construction that uses them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from common.errors import RequirementError
from constructions.layout import MambaConfig
from verify import blocks
from verify.blocks import ALIASES, KINDS, BlockKind, register
from verify.engines import make_engine
from verify.registry import SPECS
from verify.specs import mqar as M
from verify_constructions.listing import engine_support

# One small construction per block kind (the kind each one builds is asserted below).
BUILT = {
    "mamba": ("mqar-mamba", M.MQARParams(kappa=2, vocab=4, seq_len=8, samples=4)),
    "mamba2": ("mqar-mamba2", M.MQARMamba2Params(kappa=2, vocab=4, seq_len=8, samples=4)),
    "mamba-s4d": ("mqar-s4d", M.MQARParams(kappa=2, vocab=4, seq_len=8, samples=4)),
    "mamba-delta-t": ("induction-heads", None),
    "linear-mamba": ("hash-recall", None),
}


def _built(kind: str):
    name, params = BUILT[kind]
    spec = SPECS[name]
    if params is None:
        params = spec.defaults[0] if name == "induction-heads" else spec.params(vocab=16, facts=2, d_model=8,
                                                                                 d_state=4, samples=4)
    return spec, params, spec.build(params)


# --- a kind of one module ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TwinConfig(MambaConfig):
    """``mamba_ssm.Mamba``'s arguments under another kind's name."""

    kind: ClassVar[str] = "mamba-twin"


@dataclass(frozen=True)
class NegatedConfig(MambaConfig):
    kind: ClassVar[str] = "mamba-negated"


def _twin(name, config, forward):
    mamba = KINDS["mamba"]
    return BlockKind(name=name, title=name, config=config, update_rule=f"{name}: as Mamba's", forward=forward,
                     width=mamba.width, state_size=mamba.state_size, float32_params=mamba.float32_params,
                     mamba_ssm="a kind of the tests", transformers="a kind of the tests")


TWIN = _twin("mamba-twin", TwinConfig, KINDS["mamba"].forward)
NEGATED = _twin("mamba-negated", NegatedConfig, lambda p, h, c: -KINDS["mamba"].forward(p, h, c))


@pytest.fixture
def toy_kinds():
    register(TWIN), register(NEGATED)
    yield
    KINDS.pop(TWIN.name), KINDS.pop(NEGATED.name)


def _as(con, config_class):
    return dataclasses.replace(con, config=config_class(**con.config.arguments()))


def test_a_kind_registered_in_one_module_runs_through_the_engine_the_check_and_the_export(toy_kinds, tmp_path):
    from verify.export import load, save

    spec, params, con = _built("mamba")
    twin = _as(con, TwinConfig)
    tokens = torch.randint(0, con.embedding.shape[0], (3, 8), generator=torch.Generator().manual_seed(0))
    ref = make_engine("reference", "float64")
    assert torch.equal(ref.hidden(twin, tokens), make_engine("reference", "float64").hidden(con, tokens))
    result = spec.check(twin, params, make_engine("reference", "float64"))
    assert result.passed and result.correct == result.queries
    assert blocks.mixer_sizes(twin.config) == blocks.mixer_sizes(con.config)
    save(twin, tmp_path / "e", torch.float64)
    back = load(tmp_path / "e")
    assert back.config == twin.config and torch.equal(ref.hidden(back, tokens), ref.hidden(twin, tokens))
    assert engine_support("mamba-twin") == {"reference": None, "mamba_ssm": "a kind of the tests",
                                            "transformers": "a kind of the tests"}


def test_the_engine_runs_the_kinds_own_forward(toy_kinds):
    """A kind whose forward negates Mamba's: same weights, every logit negated, so the exact recall is lost."""
    spec, params, con = _built("mamba")
    negated = _as(con, NegatedConfig)
    tokens = torch.randint(0, con.embedding.shape[0], (3, 8), generator=torch.Generator().manual_seed(1))
    ref = make_engine("reference", "float64")
    assert torch.equal(ref.hidden(negated, tokens), -make_engine("reference", "float64").hidden(con, tokens))
    result = spec.check(negated, params, make_engine("reference", "float64"))
    assert not result.passed and result.correct < result.queries


def test_register_refuses_a_taken_name_an_old_name_and_a_config_of_another_kind(toy_kinds):
    with pytest.raises(RequirementError, match="registered already"):
        register(_twin("mamba-twin", TwinConfig, KINDS["mamba"].forward))
    with pytest.raises(RequirementError, match="is an alias of 'mamba-s4d'"):
        register(_twin("s4d", TwinConfig, KINDS["mamba"].forward))
    with pytest.raises(RequirementError, match="config class TwinConfig has kind 'mamba-twin'"):
        register(_twin("mamba-other", TwinConfig, KINDS["mamba"].forward))


# --- the project's kinds ------------------------------------------------------------------------------------------

def test_one_name_per_kind_and_old_names_only_through_the_alias_table():
    assert set(KINDS) == {"mamba", "mamba2", "mamba-s4d", "mamba-delta-t", "linear-mamba", "mamba-s4d-complex",
                          "transformer"}
    assert ALIASES == {"mamba_s4d": "mamba-s4d", "s4d": "mamba-s4d", "delta-top": "mamba-delta-t"}
    assert set(blocks.trainable()) == {"mamba", "mamba2", "mamba-s4d", "mamba-delta-t", "mamba-s4d-complex",
                                       "transformer", "linear-mamba"}
    for old, new in ALIASES.items():
        assert blocks.canonical(old) == new and old not in KINDS
        with pytest.raises(RequirementError, match=f"'{old}' is an alias of '{new}'"):
            blocks.kind(old)
    assert blocks.canonical("mamba2") == "mamba2"


@pytest.mark.parametrize("name", list(BUILT))
def test_each_kind_agrees_with_its_config_and_its_construction(name):
    kind = KINDS[name]
    _, _, con = _built(name)
    cfg = con.config
    assert type(cfg) is kind.config and cfg.kind == name and blocks.of(cfg) is kind
    again = kind.config(**cfg.arguments())  # the resolved arguments are the same block
    assert again.arguments() == cfg.arguments()
    shapes = {k: tuple(v.shape) for k, v in cfg.zeros().items()}
    assert {k: tuple(v.shape) for k, v in again.zeros().items()} == shapes == {k: tuple(v.shape)
                                                                               for k, v in con.mixer.items()}
    assert kind.parameter_count(cfg) == sum(v.numel() for v in con.mixer.values())
    assert kind.float32_params <= set(shapes)
    sizes = kind.sizes(cfg)
    assert set(sizes) == {"d_model", "d_inner", "d_state", "state_size"} and sizes["d_model"] == cfg.d_model
    assert all(isinstance(v, int) for v in sizes.values())


def test_size_formulas_are_the_blocks():
    _, _, s4d = _built("mamba-s4d")  # kappa |V| S4D channels behind an in_proj of d_model = kappa + |V|
    assert blocks.mixer_sizes(s4d.config) == {"d_model": 6, "d_inner": 8, "d_state": 1, "state_size": 8}
    _, _, m2 = _built("mamba2")
    c = m2.config
    assert blocks.mixer_sizes(c)["state_size"] == c.nheads * c.head_dim * c.d_state


@pytest.mark.parametrize("name", [n for n in BUILT if n != "linear-mamba"])
def test_each_trainable_kind_builds_its_config_from_a_run(name):
    from verify.train.spec import RunSpec

    spec = RunSpec(task="mqar", mixer=name, vocab=4, kappa=2, d_model=8, d_state=3, seed=0, lr=0.01)
    training = KINDS[name].training
    cfg = training.block_config(spec)
    assert type(cfg) is KINDS[name].config
    sd = training.init(cfg, torch.Generator().manual_seed(0))
    assert {k: tuple(v.shape) for k, v in sd.items()} == {k: tuple(v.shape) for k, v in cfg.zeros().items()}
    assert training.d_bound(8, 128) >= 1 and set(training.n_base) == {"fig2", "a3"}


def test_real_modules_say_why_they_are_missing():
    linear = KINDS["linear-mamba"]
    for where in ("mamba_ssm", "transformers"):
        with pytest.raises(RequirementError, match=f"{where} has no module for block 'linear-mamba'"):
            linear.real(where)
    assert isinstance(KINDS["mamba-s4d"].transformers, str) and isinstance(KINDS["mamba-delta-t"].transformers, str)
    assert "MambaS4D" in KINDS["mamba-s4d"].mamba_ssm.loads
    assert "MambaDeltaT" in KINDS["mamba-delta-t"].mamba_ssm.loads
