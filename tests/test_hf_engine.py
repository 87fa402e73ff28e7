"""The transformers engine: Hugging Face's MambaMixer / Mamba2Mixer (pure PyTorch on the CPU) run every construction
whose block transformers has, recall exactly, and agree with the float64 reference engine within a float32 rounding
bound; a perturbed weight and an unsupported block are caught.

The bound on |logit difference| is the project's rounding model (``verify.rounding``) for one logit, in the dtype of
the engine's arithmetic, ``TransformersEngine.rounding_dtype`` = float32 (transformers computes part of each block in
float32 whatever the module dtype): ``relative_error(chain_length(L), float32, weights dtype) * logit_bound(h)``,
gamma of the roundings on the path to a logit times sum_i max_c |r_ci| |h_i| of the reference's hidden state
(``verify.checks.logit_bound``). The check's margin allowance is twice this (a margin is a difference of two
logits). It is derived, not fitted to the measured differences, which ``-s`` prints next to it.

``.ci/run`` installs the ``transformers`` extra (and stops if it cannot), so in CI these tests run; elsewhere
without the package they are skipped with that reason.
"""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers", reason="the transformers engine needs the 'transformers' extra")

from common.errors import RequirementError  # noqa: E402
from constructions.layout import Construction, Mamba2Config, MambaConfig  # noqa: E402
from verify import registry as R  # noqa: E402
from verify.specs import mqar as M  # noqa: E402
from verify.engines import make_engine  # noqa: E402
from verify import rounding  # noqa: E402
from verify.checks import logit_bound, weights_dtype  # noqa: E402
from verify.engines.compare import max_logit_difference, scored_logits  # noqa: E402
from verify.blocks import KINDS  # noqa: E402
from verify.engines.hf import TransformersEngine  # noqa: E402
from verify.engines.reference import ReferenceEngine  # noqa: E402
from verify.specs.hash_recall import HashRecallParams  # noqa: E402
from verify.specs.keep_nth import KeepNthParams  # noqa: E402
from verify.tasks import keep_nth as keep_nth_task  # noqa: E402
from verify.tasks import mqar as mqar_task  # noqa: E402
from verify.tasks.mqar import IGNORE  # noqa: E402

REF = ReferenceEngine("float64")

# Every construction whose block transformers has, at small sizes (mqar-mamba2's d_ssm < d_model: padded layout).
CASES = {
    "mqar-mamba-onehot": ("mqar-mamba", M.MQARParams(kappa=4, vocab=16, seq_len=32, samples=16)),
    "mqar-mamba-jl": ("mqar-mamba", M.MQARParams(kappa=4, vocab=16, seq_len=32, samples=16, variant="jl")),
    "mqar-mamba2-onehot": ("mqar-mamba2", M.MQARMamba2Params(kappa=4, vocab=16, seq_len=32, samples=16)),
    "mqar-mamba2-jl": ("mqar-mamba2", M.MQARMamba2Params(kappa=4, vocab=16, seq_len=32, samples=16, variant="jl")),
    "keep-nth": ("keep-nth", KeepNthParams(vocab=16, seq_len=40, samples=16)),
    "hash-recall-mamba": ("hash-recall", HashRecallParams(block="mamba", vocab=64, facts=4, d_model=32, d_state=16,
                                                          samples=16)),
}
_BUILT: dict = {}


def _case(case: str):
    """(spec, params, construction, tokens, labels): the tokens and labels are the ones the spec's check scores."""
    if case not in _BUILT:
        name, p = CASES[case]
        spec = R.SPECS[name]
        con = spec.build(p)
        if name.startswith("mqar"):
            tokens, labels = mqar_task.generate(p.task(), p.seed + 1)
        elif name == "keep-nth":
            tokens, labels = keep_nth_task.generate(p.task(), p.seed)
        else:
            tokens, labels = mqar_task.generate(p.task_config(), p.seed + 1)
        _BUILT[case] = spec, p, con, torch.from_numpy(tokens), torch.from_numpy(labels)
    return _BUILT[case]


def logit_difference_bound(con: Construction, tokens, labels) -> float:
    """The rounding model's bound on one logit of the transformers engine (module docstring), at the scored rows of
    the float64 reference's hidden state."""
    hidden = REF.hidden(con, tokens)[labels != IGNORE]
    engine = TransformersEngine(TransformersEngine.rounding_dtype)
    k = con.config.chain_length(tokens.shape[-1])
    return rounding.relative_error(k, engine.rounding_dtype, weights_dtype(con, engine)) * \
        float(logit_bound(con, hidden))


def _reference(case: str):
    """(the spec's check on the float64 reference engine, ``logit_difference_bound``) of a case, computed once."""
    key = ("reference", case)
    if key not in _BUILT:
        spec, p, con, tokens, labels = _case(case)
        _BUILT[key] = spec.check(con, p, REF), logit_difference_bound(con, tokens, labels)
    return _BUILT[key]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", list(CASES))
def test_recall_and_logits_match_reference(case, dtype):
    spec, p, con, tokens, labels = _case(case)
    engine = TransformersEngine(dtype)
    result = spec.check(con, p, engine)
    assert result.engine == "transformers" and result.dtype == dtype
    assert result.queries > 0 and result.correct == result.queries, f"{case}: {result.correct}/{result.queries}"
    assert result.min_margin > 0
    diff = max_logit_difference(con, engine, REF, tokens, labels)
    reference, bound = _reference(case)
    print(f"\n{case} {dtype}: max |logit difference| vs float64 reference {diff:.3e}, bound {bound:.3e}; "
          f"min margin {result.min_margin:.6g} (reference {reference.min_margin:.6g})")
    assert diff <= bound
    # margins are comparable (Mamba-2's gated norm made exactly the identity): each logit moves by at most the bound
    assert abs(result.min_margin - reference.min_margin) <= 2 * bound


def _one_bias_moved(con: Construction, logit_change: float) -> Construction:
    """``con`` with one weight changed, out_proj.bias[j] (j where class 0 reads most), so that class c's logit moves
    by logit_change * R[c, j] / R[0, j] at every position (class 0's by exactly logit_change)."""
    j = int(con.readout[0].abs().argmax())
    mixer = {k: v.clone() for k, v in con.mixer.items()}
    mixer["out_proj.bias"][j] += logit_change / float(con.readout[0, j])
    return dataclasses.replace(con, mixer=mixer)


@pytest.mark.parametrize("case", list(CASES))
def test_one_weight_perturbed_is_detected(case):
    spec, p, con, tokens, labels = _case(case)
    engine = TransformersEngine("float32")
    _, bound = _reference(case)
    scale = float(scored_logits(con, REF, tokens, labels).abs().max())
    # 1e-3 of the logit scale on one bias: the logits move by at least that, minus the engine's own rounding (<= bound)
    moved = _one_bias_moved(con, 1e-3 * scale)
    diff = float((scored_logits(moved, engine, tokens, labels) - scored_logits(con, REF, tokens, labels)).abs().max())
    print(f"\n{case}: one bias moved by 1e-3 of the logit scale {scale:.3g}: difference {diff:.3e} > bound {bound:.3e}")
    assert 1e-3 * scale > 2 * bound, "the perturbation must exceed the bound for this test to show anything"
    assert diff > bound
    # the same bias moved by 10 x the logit scale: the class that reads it wins everywhere, recall fails
    broken = _one_bias_moved(con, 10 * scale)
    result = spec.check(broken, p, engine)
    assert result.correct < result.queries


UNSUPPORTED_CASES = {
    "mamba-s4d": ("mqar-s4d", M.MQARParams(kappa=2, vocab=4, seq_len=8, samples=2)),
    "linear-mamba": ("hash-recall", HashRecallParams(vocab=16, facts=2, d_model=8, d_state=4, samples=2)),
    "mamba-delta-t": ("induction-heads", None),
}


@pytest.mark.parametrize("kind", list(UNSUPPORTED_CASES))
def test_unsupported_block_raises_with_reason(kind):
    name, p = UNSUPPORTED_CASES[kind]
    spec = R.SPECS[name]
    con = spec.build(p if p is not None else spec.defaults[0])
    assert con.config.kind == kind
    with pytest.raises(RequirementError, match="engine transformers cannot run block") as err:
        TransformersEngine("float32").hidden(con, torch.zeros(1, 4, dtype=torch.long))
    reason = KINDS[kind].transformers
    assert isinstance(reason, str) and repr(kind) in str(err.value) and reason in str(err.value)


def test_the_kinds_transformers_has_are_mamba_and_mamba2():
    has = {name for name, k in KINDS.items() if not isinstance(k.transformers, str)}
    # the kinds no construction builds (trained only) have no case here, only their reason
    trained_only = {"mamba-s4d-complex", "transformer"}
    assert has == {"mamba", "mamba2"} and set(UNSUPPORTED_CASES) == set(KINDS) - has - trained_only
    assert all("has no such module" in KINDS[k].transformers for k in trained_only)


def test_bad_dtype_and_device_are_requirement_errors():
    with pytest.raises(RequirementError, match="float64 or float32"):
        make_engine("transformers", "float16")
    with pytest.raises(RequirementError, match="CPU"):
        make_engine("transformers", "float32", device="cuda")
    assert make_engine("transformers", "float64").name == "transformers"


def test_mamba2_gated_mlp_rows_must_be_zero():
    _, _, con, tokens, _ = _case("mqar-mamba2-onehot")
    mixer = {k: v.clone() for k, v in con.mixer.items()}
    mixer["in_proj.weight"][con.config.in_proj_rows()["x0"].start, 0] = 1.0
    with pytest.raises(RequirementError, match="x0 of in_proj.weight"):
        TransformersEngine("float64").hidden(dataclasses.replace(con, mixer=mixer), tokens[:1])


def _random_construction(config, seed: int) -> Construction:
    """Random weights (mamba_ssm names) for ``config``, Mamba-2's gated-MLP rows zero, readout = identity."""
    g = torch.Generator().manual_seed(seed)
    sd = {k: 0.5 * torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in config.zeros().items()}
    sd["A_log"] = torch.rand(sd["A_log"].shape, generator=g, dtype=torch.float64) - 2
    if config.kind == "mamba2":
        for block in ("z0", "x0"):
            sd["in_proj.weight"][config.in_proj_rows()[block]] = 0
            sd["in_proj.bias"][config.in_proj_rows()[block]] = 0
    emb = torch.randn(11, config.d_model, generator=g, dtype=torch.float64)
    return Construction("random", "-", config, emb, sd, torch.eye(config.d_model, dtype=torch.float64), [])


LAYOUTS = {
    "mamba expand 2 dt_rank 3": MambaConfig(d_model=6, d_state=4, d_conv=3, expand=2, dt_rank=3),
    "mamba2 two heads two groups": Mamba2Config(d_model=6, d_state=4, d_conv=3, expand=2, headdim=3, ngroups=2,
                                                chunk_size=64),
    "mamba2 d_ssm < d_inner, multiple of d_model": Mamba2Config(d_model=6, d_state=4, d_conv=3, expand=2, d_ssm=6,
                                                                chunk_size=64),
    "mamba2 d_ssm padded, chunked scan": Mamba2Config(d_model=6, d_state=4, d_conv=3, expand=2, d_ssm=8,
                                                      chunk_size=8),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_random_weights_every_layout(layout):
    """Layouts the constructions do not reach (several heads and groups, no padding, chunks shorter than L), on
    random weights: every hidden coordinate (readout = identity) within the bound of the reference."""
    con = _random_construction(LAYOUTS[layout], seed=len(layout))
    tokens = torch.randint(0, 11, (4, 40), generator=torch.Generator().manual_seed(9))
    labels = torch.zeros_like(tokens)
    bound = logit_difference_bound(con, tokens, labels)
    for dtype in ("float64", "float32"):
        diff = max_logit_difference(con, TransformersEngine(dtype), REF, tokens, labels)
        print(f"\n{layout} {dtype}: max |hidden difference| {diff:.3e}, bound {bound:.3e}")
        assert diff <= bound


def test_project_imports_without_transformers():
    """transformers is imported only when the engine is made: the engines and this engine's module load without it."""
    code = ("import sys, verify.engines, verify.engines.hf, verify.engines.compare, verify.checks; "
            "assert 'transformers' not in sys.modules, 'transformers imported at module load'")
    subprocess.run([sys.executable, "-c", code], check=True)
