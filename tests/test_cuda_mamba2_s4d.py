"""GPU tests of Theorems 3 and 4 on mamba_ssm (skipped without a CUDA GPU and mamba_ssm).

Run on the GPU machine (mamba_ssm 2.3.x; causal_conv1d not needed) with the numbers printed:

    python -m pytest -q -s -m cuda tests/test_cuda_mamba2_s4d.py

* the reference engine (float64, on the GPU) against ``mamba_ssm.Mamba2`` (``use_mem_eff_path=False``: Triton SSD
  kernels) and against the Mamba-S4D block on mamba_ssm's CUDA ``selective_scan_fn``, on random weights (ngroups > 1,
  rmsnorm on/off, d_ssm < d_inner, several chunks) and on the constructions: max abs difference of outputs/logits;
* exact recall on every query with mamba_ssm in float32 and bfloat16, margins against the proven bound;
* exports load with ``load_state_dict(strict=True)`` into ``mamba_ssm.Mamba2`` / ``MambaS4D``.

Tolerances: the SSD kernels use TF32 for float32 matmuls (10-bit mantissa), so float32 outputs are compared with a
relative tolerance of 5e-3 of the output scale; constructions additionally require every logit to stay within 5% of
the proven margin of the float64 reference, so no argmax can flip.
"""
from __future__ import annotations

import functools

import pytest
import torch

from constructions import mqar_mamba2, mqar_s4d
from constructions.layout import Mamba2Config, MambaS4DConfig
from verify.checks import check_mqar
from verify.engines import make_engine
from verify.blocks import KINDS
from verify.tasks.mqar import MQARConfig, generate

pytestmark = pytest.mark.cuda
DEVICE = "cuda"

RANDOM_MAMBA2 = [
    Mamba2Config(d_model=64, d_state=16, headdim=16, ngroups=1, rmsnorm=False),
    Mamba2Config(d_model=64, d_state=16, headdim=16, ngroups=2, rmsnorm=True),
    Mamba2Config(d_model=48, d_state=8, expand=2, headdim=16, d_ssm=64, ngroups=2, rmsnorm=False, d_conv=2),
    Mamba2Config(d_model=32, d_state=8, headdim=8, ngroups=4, rmsnorm=True, norm_before_gate=True, bias=False,
                 chunk_size=64),
]


def _random_sd(config, seed):
    gen = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64) * 0.3 for k, v in config.zeros().items()}
    sd["A_log"] = sd["A_log"] - 2.0
    if "norm.weight" in sd:
        sd["norm.weight"] = sd["norm.weight"] + 1.0
    return sd


def _compare(name, got, want):
    err, scale = (got.double() - want).abs().max().item(), want.abs().max().item()
    print(f"\n[{name}] max |mamba_ssm - reference| = {err:.3e} (output scale {scale:.3e}, relative {err / scale:.3e})")
    return err, scale


@pytest.mark.parametrize("config", RANDOM_MAMBA2,
                         ids=lambda c: f"G{c.ngroups}-H{c.nheads}-rms{int(c.rmsnorm)}-mlp{c.d_mlp}")
def test_mamba2_module_matches_reference_on_random_weights(config):
    from mamba_ssm import Mamba2

    from verify.engines.cuda import mamba2_module

    sd = _random_sd(config, 0)
    m = mamba2_module(config, DEVICE, torch.float32)  # mamba_ssm.Mamba2, torch conv where causal_conv1d can't
    assert isinstance(m, Mamba2)
    m.load_state_dict(sd, strict=True)
    gen = torch.Generator().manual_seed(1)
    u = torch.randn(3, 300, config.d_model, generator=gen, dtype=torch.float64).to(DEVICE)
    with torch.no_grad():
        got = m(u.float())
    want = KINDS["mamba2"].forward({k: v.to(DEVICE) for k, v in sd.items()}, u, config)
    err, scale = _compare(f"Mamba2 random G{config.ngroups} H{config.nheads} rmsnorm={config.rmsnorm} "
                          f"d_mlp={config.d_mlp}", got, want)
    assert err <= 5e-3 * max(scale, 1.0)


def test_mamba_s4d_cuda_scan_matches_reference_on_random_weights():
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    from verify.blocks.mamba_s4d import MambaS4D

    config = MambaS4DConfig(d_model=24, d_state=4, d_inner=96)
    sd = _random_sd(config, 2)
    m = MambaS4D(**config.arguments(), scan=selective_scan_fn, device=DEVICE, dtype=torch.float32)
    m.load_state_dict(sd, strict=True)
    u = torch.randn(3, 200, 24, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(DEVICE)
    with torch.no_grad():
        got = m(u.float())
    want = KINDS["mamba-s4d"].forward({k: v.to(DEVICE) for k, v in sd.items()}, u, config)
    err, scale = _compare("Mamba-S4D random", got, want)
    assert err <= 1e-3 * max(scale, 1.0)


CASES = [(mod, variant, k, v, t) for mod in (mqar_mamba2, mqar_s4d) for variant in ("one-hot", "jl")
         for k, v, t in ((8, 128, 100), (32, 512, 256))]


@functools.cache
def _build(mod, kappa, vocab, variant, T):
    """One construction per case and worker, shared by the tests of that case (read-only)."""
    return mod.build(kappa, vocab, variant, seq_len=T)


def _ids(case):
    mod, variant, k, v, t = case
    return f"{mod.NAME}-{variant}-k{k}-V{v}-T{t}"


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_construction_engines_agree(case):
    mod, variant, kappa, vocab, T = case
    con = _build(mod, kappa, vocab, variant, T)
    tokens, labels = generate(MQARConfig(kappa, vocab, T, num_examples=16, query_passes=2), seed=11)
    tokens = torch.from_numpy(tokens)
    want = make_engine("reference", "float64", device=DEVICE).hidden(con, tokens)
    got = make_engine("mamba_ssm", "float32").hidden(con, tokens)
    _compare(f"{_ids(case)} hidden", got, want)
    readout = con.readout.to(DEVICE)
    err, _ = _compare(f"{_ids(case)} logits", got.double() @ readout.T, want @ readout.T)
    assert err <= 0.05 * con.proof.margin


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_construction_recalls_exactly_on_mamba_ssm(case, dtype):
    mod, variant, kappa, vocab, T = case
    con = _build(mod, kappa, vocab, variant, T)
    r = check_mqar(con, MQARConfig(kappa, vocab, T, num_examples=1024, query_passes=2),
                   make_engine("mamba_ssm", dtype), seed=7, batch_size=64)
    print(f"\n[{_ids(case)} {dtype}] recall {r.correct}/{r.queries}, min margin {r.min_margin:.5g}, "
          f"proven {r.proven_margin:.5g}, d_model={con.config.d_model} d_state={con.config.d_state}, {r.seconds:.2f}s")
    assert r.correct == r.queries
    assert r.min_margin >= r.proven_margin * (0.99 if dtype == "float32" else 0.9)


@pytest.mark.parametrize("mod", [mqar_mamba2, mqar_s4d], ids=lambda m: m.NAME)
def test_export_loads_strict_into_the_real_module(mod, tmp_path):
    import json

    import safetensors.torch as st

    from verify.export import mamba_ssm_mixer, save

    path = save(mod.build(8, 64, "jl", seq_len=64), tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    sd = st.load_file(str(path / "model.safetensors"))
    if cfg["block"]["kind"] == "mamba2":
        from mamba_ssm import Mamba2

        from verify.engines.cuda import _Mamba2

        Mamba2(**cfg["block"]["arguments"]).load_state_dict(  # the export loads strictly into mamba_ssm's own class
            {k[len("mixer."):]: v for k, v in sd.items() if k.startswith("mixer.")}, strict=True)
        m = _Mamba2(**cfg["block"]["arguments"], use_mem_eff_path=False).to(DEVICE)  # and runs with any causal_conv1d
    else:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        from verify.blocks.mamba_s4d import MambaS4D

        m = MambaS4D(**cfg["block"]["arguments"], scan=selective_scan_fn).to(DEVICE)
    m.load_state_dict({k[len("mixer."):]: v for k, v in sd.items() if k.startswith("mixer.")}, strict=True)
    tokens, labels = generate(MQARConfig(8, 64, 64, num_examples=32), seed=3)
    loaded = mamba_ssm_mixer(path, device=DEVICE)  # the export's own loader builds the same module
    assert type(loaded) is type(m)
    mask = torch.from_numpy(labels).to(DEVICE) >= 0
    for module in (m, loaded):
        with torch.no_grad():
            hidden = module(sd["embedding.weight"].to(DEVICE)[torch.from_numpy(tokens).to(DEVICE)])
            logits = hidden @ sd["readout.weight"].to(DEVICE).T
        assert torch.equal(logits[mask].argmax(-1), torch.from_numpy(labels).to(DEVICE)[mask])
