"""The designed hashing circuit in mamba_ssm.Mamba on the GPU (skipped without CUDA and mamba_ssm).

Run on a GPU machine:  python -m pytest -q -m cuda tests/test_hash_recall_cuda.py
"""
from __future__ import annotations

import pytest
import torch

from constructions import hash_recall
from verify.export import load, save
from verify.engines import make_engine
from verify.recall_grid import REGIMES
from verify.specs.hash_recall import HashRecallParams
from verify.registry import SPECS
from verify.tasks.mqar import generate

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("d,n,d_conv", [(16, 8, 2), (64, 32, 2), (32, 16, 4)])
def test_mamba_ssm_equals_analysis_model(d, n, d_conv):
    """mamba_ssm's kernels on the real-block circuit == the reference engine's analysis model (float32)."""
    r = REGIMES["regime_0"]
    tokens, _ = generate(r.task_config(64), 0)
    tok = torch.from_numpy(tokens)
    a = hash_recall.build_analysis(r.vocab, d, n, seed=1)
    b = hash_recall.build_mamba_block(r.vocab, d, n, seed=1, d_conv=d_conv)
    ya = make_engine("reference", "float64").hidden(a, tok)
    yb = make_engine("mamba_ssm", "float32").hidden(b, tok).double().cpu()
    torch.testing.assert_close(yb, ya, rtol=0, atol=5e-4 * max(1.0, float(ya.abs().max())))


def test_mamba_ssm_decay_matches_reference():
    b = hash_recall.build_mamba_block(128, 16, 8, seed=2, a_log=-3.0)
    tok = torch.randint(0, 128, (8, 40), generator=torch.Generator().manual_seed(0))
    ref = make_engine("reference", "float64").hidden(b, tok)
    gpu = make_engine("mamba_ssm", "float32").hidden(b, tok).double().cpu()
    torch.testing.assert_close(gpu, ref, rtol=0, atol=1e-4)


def test_check_on_mamba_ssm_matches_reference_accuracy():
    p = HashRecallParams(block="mamba", d_model=48, d_state=16, samples=256)
    spec = SPECS["hash-recall"]
    con = spec.build(p)
    gpu = spec.check(con, p, make_engine("mamba_ssm", "float32"))
    ref = spec.check(con, p, make_engine("reference", "float64"))
    assert gpu.passed and abs(gpu.recall - ref.recall) <= 2 / gpu.queries


def test_export_loads_into_mamba_ssm(tmp_path):
    import mamba_ssm

    con = hash_recall.build_mamba_block(64, 16, 8, seed=0)
    save(con, tmp_path)
    back = load(tmp_path)
    m = mamba_ssm.Mamba(**back.config.arguments()).cuda()
    m.load_state_dict(back.mixer, strict=True)
    tok = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        y = m(back.embedding.cuda()[tok.cuda()])
    ref = make_engine("reference", "float64").hidden(con, tok)
    torch.testing.assert_close(y.double().cpu(), ref, rtol=0, atol=1e-4)
