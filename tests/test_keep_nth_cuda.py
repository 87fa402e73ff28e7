"""KEEP n-TH (Corollary 2) on mamba_ssm's CUDA ``Mamba`` (selective_scan_fn), against the reference engine.

Run on a GPU machine:  python -m pytest -q -s -m cuda tests/test_keep_nth_cuda.py
"""
import pytest
import torch

from constructions import keep_nth
from verify.engines import make_engine
from verify.specs.keep_nth import KeepNthParams, build, check
from verify.tasks.keep_nth import KeepNthConfig, generate

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("T, samples", [(50, 256), (1000, 64), (10_000, 32)])
def test_mamba_ssm_exact_argmax_at_every_position(T, samples):
    p = KeepNthParams(seq_len=T, samples=samples)
    r = check(build(p), p, make_engine("mamba_ssm", "float32"))
    print(f"\nKEEP 5-TH mamba_ssm fp32 T={T}: {r.correct}/{r.queries} exact, min margin {r.min_margin:.6g} "
          f"(proven {r.proven_margin:.6g}), {r.seconds:.2f}s")
    assert r.correct == r.queries == samples * (T - 4), f"{r.correct}/{r.queries}"
    assert r.min_margin >= r.proven_margin * (1 - 1e-5), f"measured {r.min_margin} < proven {r.proven_margin}"


@pytest.mark.parametrize("T", [50, 10_000])
def test_mamba_ssm_matches_reference_engine(T):
    con = keep_nth.build()
    tokens = torch.from_numpy(generate(KeepNthConfig(seq_len=T, num_examples=4), 7)[0])
    ref = make_engine("reference", "float64").hidden(con, tokens)
    got = make_engine("mamba_ssm", "float32").hidden(con, tokens).double().cpu()
    scale = float(ref.abs().max())
    err = float((got - ref).abs().max())
    print(f"\nKEEP 5-TH T={T}: max |mamba_ssm fp32 - reference fp64| = {err:.3e} (max |output| {scale:.3g})")
    assert err <= 1e-5 * scale, f"max abs diff {err:.3e} > 1e-5 * {scale:.3g}"
