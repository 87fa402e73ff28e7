"""Lemma 3 (induction heads, Mamba-Delta-transpose) on mamba_ssm's CUDA ``selective_scan_fn`` via the exact reduction
of ``verify.blocks.mamba_delta_t``, against the reference engine.

Run on a GPU machine:  python -m pytest -q -s -m cuda tests/test_induction_heads_cuda.py
"""
import pytest
import torch

from constructions import induction_heads
from verify.engines import make_engine
from verify.blocks.mamba_delta_t import selective_scan_delta_t_via_s6
from verify.engines.scan import selective_scan_delta_t_ref
from verify.specs.induction_heads import InductionHeadsParams, build, check
from verify.tasks.induction_heads import InductionHeadsConfig, generate

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("V, T, samples", [(5, 100, 256), (10, 100, 256), (20, 100, 256), (40, 100, 256),
                                          (10, 10_000, 16), (40, 10_000, 8)])
def test_mamba_ssm_exact_recall_at_every_position(V, T, samples):
    p = InductionHeadsParams(vocab=V, seq_len=T, samples=samples)
    r = check(build(p), p, make_engine("mamba_ssm", "float32"))
    print(f"\ninduction heads mamba_ssm fp32 |V|={V} T={T}: {r.correct}/{r.queries} exact, min margin "
          f"{r.min_margin:.6g} (proven {r.proven_margin:.6g}), {r.seconds:.2f}s")
    assert r.correct == r.queries == samples * T, f"{r.correct}/{r.queries}"
    assert r.min_margin >= r.proven_margin * (1 - 1e-5), f"measured {r.min_margin} < proven {r.proven_margin}"


@pytest.mark.parametrize("V, T", [(10, 100), (40, 2000)])
def test_mamba_ssm_matches_reference_engine(V, T):
    con = induction_heads.build(V, T)
    tokens = torch.from_numpy(generate(InductionHeadsConfig(V, T, num_examples=4), 3)[0])
    ref = make_engine("reference", "float64").hidden(con, tokens)
    got = make_engine("mamba_ssm", "float32").hidden(con, tokens).double().cpu()
    err = float((got - ref).abs().max())
    print(f"\ninduction heads |V|={V} T={T}: max |mamba_ssm fp32 - reference fp64| = {err:.3e}")
    assert err <= 1e-5, f"max abs diff {err:.3e}"


@pytest.mark.parametrize("b, d, N, L", [(3, 16, 24, 300), (2, 512, 160, 20)])
def test_flattened_selective_scan_fn_equals_delta_t_scan_on_random_inputs(b, d, N, L):
    """The second shape has N * d = 81920 channels, beyond the kernel's launch limit of 65535 (a pack of
    Mamba-Delta-top models at |V| = 40 has more): the scan runs in pieces (one call would fail with "CUDA error:
    invalid argument")."""
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    g = torch.Generator().manual_seed(0)
    u = torch.randn(b, d, L, generator=g)
    delta = torch.randn(b, N, L, generator=g) * 3
    A = -torch.rand(d, N, generator=g) * 2
    B = torch.randn(b, N, L, generator=g) * (torch.rand(b, N, L, generator=g) < 0.6)
    C = torch.randn(b, N, L, generator=g)
    want = selective_scan_delta_t_ref(u.double(), delta.double(), A.double(), B.double(), C.double(),
                                      delta_softplus=True)
    got = selective_scan_delta_t_via_s6(u.cuda(), delta.cuda(), A.cuda(), B.cuda(), C.cuda(), delta_softplus=True,
                                        scan_fn=selective_scan_fn).double().cpu()
    err = float((got - want).abs().max() / want.abs().max())
    print(f"\nDelta-transpose via selective_scan_fn ({N * d} channels) vs float64 reference: max relative error "
          f"{err:.3e}")
    assert err <= 1e-5
