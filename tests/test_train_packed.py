"""Packed forwards of Mamba-S4D, Mamba-Delta-top and Mamba-2 (verify.train.models): K models in one scan call equal K
single-block engine forwards (outputs and gradients, float64), and a pack trains each model as if alone.

CUDA tests (``-m cuda``) compare the packed forwards on mamba_ssm's kernels (``selective_scan_fn``,
``mamba_chunk_scan_combined``) with the packed reference and with the real ``mamba_ssm.Mamba2`` module.
"""
from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from constructions.layout import Mamba2Config
from verify.blocks.mamba import mamba_forward
from verify.blocks.mamba2 import init_mamba2, mamba2_forward, packed_mamba2_forward, ssd_chunk_scan_ref
from verify.blocks.mamba_delta_t import MambaDeltaT, packed_delta_t_forward
from verify.blocks.mamba_s4d import mamba_s4d_forward, packed_s4d_forward
from verify.engines.scan import selective_scan_delta_t_ref, selective_scan_ref
from verify.train import registry
from verify.train.loop import build_model, initial_state, train_pack
from verify.train.spec import RunSpec, protocol

SHAPE = dict(task="mqar", kappa=2, vocab=4, seq_len=8, d_model=8, d_state=3)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: threads only add overhead


def _single(mixer, cfg):
    """The engines' own single-block forward of a mixer: (params, hidden (b, L, d)) -> (b, L, d)."""
    if mixer == "mamba-s4d":
        return lambda p, h: mamba_s4d_forward(p, h, cfg, selective_scan_ref)
    if mixer == "mamba-delta-t":
        module = MambaDeltaT(cfg, scan_fn=selective_scan_ref, device="meta")
        return lambda p, h: functional_call(module, p, (h,))
    return lambda p, h: mamba2_forward(p, h, cfg)


def _stacked(sds: list[dict], masks: dict, gen: torch.Generator) -> dict:
    """The K state dicts stacked, every trainable entry (mask 1) moved by N(0, 0.1^2) so that no two models share a
    parameter (the registry's init gives every model the same A_log, B, D ...); frozen entries (gate / conv off)
    kept."""
    out = {}
    for k in sds[0]:
        v = torch.stack([sd[k] for sd in sds])
        m = masks.get(k, torch.ones_like(v[0]))
        out[k] = (v + 0.1 * torch.randn(v.shape, generator=gen, dtype=v.dtype) * m).requires_grad_(True)
    return out


def _check_packed_against_single(packed_forward, single, p: dict, d_model: int, gen, extra_single=()):
    K = next(iter(p.values())).shape[0]
    h = torch.randn(K, 2, 7, d_model, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(K, 2, 7, d_model, generator=gen, dtype=torch.float64)
    out = packed_forward(p, h)
    grads = torch.autograd.grad((out * weight).sum(), [h, *p.values()])
    want = torch.stack([single({k: v[i] for k, v in p.items()}, h[i]) for i in range(K)])
    torch.testing.assert_close(out, want, rtol=0, atol=1e-10)
    want_grads = torch.autograd.grad((want * weight).sum(), [h, *p.values()])
    for name, g, w in zip(["hidden", *p], grads, want_grads):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-10, msg=lambda m, name=name: f"d/d {name}: {m}")
    for other in extra_single:  # further independent per-model references (outputs only)
        with torch.no_grad():
            torch.testing.assert_close(out, torch.stack([other({k: v[i] for k, v in p.items()}, h[i])
                                                         for i in range(K)]), rtol=0, atol=1e-10)


CASES = [("mamba-s4d", True, True, ()), ("mamba-s4d", False, False, ()),
         ("mamba-delta-t", False, True, ()), ("mamba-delta-t", True, False, ()),
         ("mamba2", False, True, (("headdim", 2),)), ("mamba2", True, False, (("headdim", 4),)),
         ("mamba2", False, True, ())]


@pytest.mark.parametrize("K", [1, 3])
@pytest.mark.parametrize("mixer,gate,conv,task_args", CASES,
                         ids=[f"{m}-gate{int(g)}-conv{int(c)}-{dict(a)}" for m, g, c, a in CASES])
def test_packed_forward_and_gradients_are_the_engines_per_model(mixer, gate, conv, task_args, K):
    specs = [RunSpec(mixer=mixer, gate=gate, conv=conv, seed=s, lr=0.01, task_args=task_args, **SHAPE)
             for s in range(K)]
    m = registry.mixer(mixer)
    cfg = m.block_config(specs[0])
    states = [initial_state(s) for s in specs]
    strip = lambda d: {k[len("mixer."):]: v for k, v in d.items() if k.startswith("mixer.")}  # noqa: E731
    gen = torch.Generator().manual_seed(K)
    p = _stacked([strip(sd) for sd, _ in states], strip(states[0][1]), gen)
    if mixer == "mamba2" and dict(task_args):
        assert cfg.nheads > 1
    extra = ()
    if mixer == "mamba-delta-t":  # the Delta-top recurrence itself, not through the S6 reduction
        extra = (lambda q, h: mamba_forward(q, h, cfg, scan=selective_scan_delta_t_ref),)
    _check_packed_against_single(lambda q, h: m.packed_forward(q, h, cfg), _single(mixer, cfg), p, cfg.d_model, gen,
                                 extra)


MAMBA2_CONFIGS = [
    Mamba2Config(d_model=8, d_state=3, headdim=2, ngroups=2),
    Mamba2Config(d_model=8, d_state=3, headdim=2, ngroups=4, rmsnorm=True),
    Mamba2Config(d_model=8, d_state=2, headdim=2, ngroups=2, rmsnorm=True, norm_before_gate=True, D_has_hdim=True,
                 bias=False, conv_bias=False),
    Mamba2Config(d_model=6, d_state=2, expand=2, headdim=2, d_ssm=8, ngroups=2, rmsnorm=True, d_conv=2),
]


@pytest.mark.parametrize("K", [1, 3])
@pytest.mark.parametrize("cfg", MAMBA2_CONFIGS, ids=lambda c: f"G{c.ngroups}-H{c.nheads}-rms{int(c.rmsnorm)}-"
                                                             f"mlp{c.d_mlp}-Dh{int(c.D_has_hdim)}")
def test_packed_mamba2_groups_rmsnorm_and_mlp_fold_per_model(cfg, K):
    gen = torch.Generator().manual_seed(10 + K)
    sds = [init_mamba2(cfg, torch.Generator().manual_seed(s)) for s in range(K)]
    p = _stacked(sds, {}, gen)  # moves norm.weight off 1 and D off 1 too
    _check_packed_against_single(lambda q, h: packed_mamba2_forward(q, h, cfg), _single("mamba2", cfg), p,
                                 cfg.d_model, gen)


def test_each_mixer_packs_with_its_own_scans():
    spec = RunSpec(mixer="mamba2", seed=0, lr=0.01, task_args=(("headdim", 4),), **SHAPE)
    assert build_model([spec], "cpu").scan is ssd_chunk_scan_ref
    assert registry.mixer("mamba2").packed_cuda_scan.__name__ == "cuda_ssd_scan"
    for name, fwd in (("mamba-s4d", packed_s4d_forward), ("mamba-delta-t", packed_delta_t_forward)):
        assert registry.mixer(name).packed_forward is fwd
        assert build_model([RunSpec(mixer=name, seed=0, lr=0.01, **SHAPE)], "cpu").scan is selective_scan_ref
        assert registry.mixer(name).packed_cuda_scan.__name__ == "cuda_scan"


@pytest.mark.parametrize("mixer,task_args,extra", [("mamba-s4d", (), {}), ("mamba-delta-t", (), {}),
                                                   ("mamba2", (("headdim", 4),), {}),
                                                   ("mamba-s4d-complex", (), {"gate": True, "d_state": 4})])
def test_packing_trains_each_model_as_if_alone(mixer, task_args, extra):
    proto = protocol("smoke", max_steps=8, eval_every=4, train_samples=256, val_samples=64, test_samples=64,
                     stop_value=2.0)
    specs = [RunSpec(mixer=mixer, seed=s, lr=lr, protocol=proto, task_args=task_args, **{**SHAPE, **extra})
             for s, lr in ((0, 0.03), (1, 0.01), (2, 0.003))]
    packed = train_pack(specs)
    for spec, rec in zip(specs, packed):
        (alone,) = train_pack([spec])
        torch.testing.assert_close(torch.tensor(rec["result"]["history"]), torch.tensor(alone["result"]["history"]),
                                   rtol=1e-4, atol=1e-5)
        for k, v in rec["_weights"].items():
            torch.testing.assert_close(v, alone["_weights"][k], rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")


# ---------------------------------------------------------------------------------------------------------------
# GPU: the packed forwards on mamba_ssm's kernels
# ---------------------------------------------------------------------------------------------------------------


def _rel_err(got, want):
    return ((got.double() - want.double()).abs().max() / want.double().abs().max().clamp(min=1.0)).item()


@pytest.mark.cuda
@pytest.mark.parametrize("mixer,task_args", [("mamba-s4d", ()), ("mamba-delta-t", ()), ("mamba2", (("headdim", 4),))])
def test_cuda_packed_kernels_match_the_packed_reference(mixer, task_args):
    """Float32 on the kernel vs float64 on the reference (same device): outputs and every parameter gradient."""
    specs = [RunSpec(mixer=mixer, seed=s, lr=0.01, task_args=task_args, **{**SHAPE, "d_model": 16, "d_state": 8})
             for s in range(4)]
    m = registry.mixer(mixer)
    cfg = m.block_config(specs[0])
    sds = [{k[len("mixer."):]: v for k, v in initial_state(s)[0].items() if k.startswith("mixer.")} for s in specs]
    p64 = {k: torch.stack([sd[k] for sd in sds]).cuda().requires_grad_(True) for k in sds[0]}
    p32 = {k: v.detach().float().requires_grad_(True) for k, v in p64.items()}
    h = torch.randn(4, 3, 100, 16, dtype=torch.float64, device="cuda")
    w = torch.randn_like(h)
    out = m.packed_forward(p32, h.float(), cfg, m.packed_cuda_scan())
    ref = m.packed_forward(p64, h, cfg, m.reference_scan)
    g32 = torch.autograd.grad((out * w.float()).sum(), list(p32.values()))
    g64 = torch.autograd.grad((ref * w).sum(), list(p64.values()))
    errs = {"out": _rel_err(out, ref), **{k: _rel_err(a, b) for k, a, b in zip(p32, g32, g64)}}
    print(f"\n[{mixer}] max relative |kernel - reference|: {errs}")
    assert max(errs.values()) < 5e-3, errs  # the SSD kernels use TF32 matmuls


@pytest.mark.cuda
def test_cuda_packed_mamba2_is_the_mamba_ssm_module_per_model():
    from mamba_ssm import Mamba2

    from verify.engines.cuda import mamba2_module
    from verify.blocks.common import cuda_ssd_scan

    cfg = Mamba2Config(d_model=32, d_state=8, headdim=8, ngroups=2, rmsnorm=True)
    sds = [init_mamba2(cfg, torch.Generator().manual_seed(s)) for s in range(3)]
    p = {k: torch.stack([sd[k] for sd in sds]).float().cuda() for k in sds[0]}
    h = torch.randn(3, 2, 300, 32, device="cuda")
    with torch.no_grad():
        out = packed_mamba2_forward(p, h, cfg, cuda_ssd_scan())
        for k in range(3):
            mod = mamba2_module(cfg, "cuda", torch.float32)
            assert isinstance(mod, Mamba2)
            mod.load_state_dict({n: v.float() for n, v in sds[k].items()}, strict=True)
            assert _rel_err(out[k], mod(h[k])) < 5e-3


def _indexed_scan(u, delta, A, B, C):
    """The selective scan written with per-step indexing (the textbook loop), for comparison."""
    h, ys = u.new_zeros(u.shape[0], u.shape[1], A.shape[1]), []
    for t in range(u.shape[2]):
        b = B[None] if B.dim() == 2 else B[:, None, :, t] if B.dim() == 3 else B[..., t]
        c = C[None] if C.dim() == 2 else C[:, None, :, t] if C.dim() == 3 else C[..., t]
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta * u)[:, :, t, None] * b
        ys.append((h * c).sum(-1))
    return torch.stack(ys, dim=2)


@pytest.mark.parametrize("bc", ["shared", "per-step", "per-channel"])
def test_reference_scan_training_branch_equals_the_indexed_loop_bit_for_bit(bc):
    """selective_scan_ref's training branch (time steps by one unbind) against the indexing loop: the same outputs
    and the same gradients for u, delta, A, B and C, bit for bit, with B and C shared (d, N) as in Mamba-S4D,
    per step (batch, N, L) as in Mamba, and per channel (batch, d, N, L); the no-grad branch gives the same output."""
    g = torch.Generator().manual_seed(0)
    batch, d, N, L = 3, 5, 4, 7
    shape = {"shared": (d, N), "per-step": (batch, N, L), "per-channel": (batch, d, N, L)}[bc]
    leaves = [torch.randn(batch, d, L, generator=g), 0.5 * torch.rand(batch, d, L, generator=g),
              -torch.rand(d, N, generator=g), torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)]
    outs, grads = [], []
    for f in (lambda *a: selective_scan_ref(*a), _indexed_scan):
        xs = [x.clone().requires_grad_() for x in leaves]
        y = f(*xs)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        outs.append(y.detach())
        grads.append([x.grad for x in xs])
    assert torch.equal(outs[0], outs[1])
    assert all(torch.equal(a, b) for a, b in zip(*grads))
    assert torch.equal(selective_scan_ref(*leaves), outs[0])


def test_reference_ssd_scan_gradients_equal_the_indexed_loop_bit_for_bit():
    """ssd_scan_ref's loop over time steps by unbind against the indexing loop: the same output and the same
    gradients for x, dt, A, B and C, bit for bit (two groups of two heads)."""
    from verify.engines.scan import ssd_scan_ref

    def indexed(x, dt, A, B, C):
        B, C = B.repeat_interleave(2, dim=2), C.repeat_interleave(2, dim=2)
        state, ys = x.new_zeros(x.shape[0], x.shape[2], x.shape[3], B.shape[-1]), []
        for t in range(x.shape[1]):
            decay = torch.exp(dt[:, t] * A)[:, :, None, None]
            state = decay * state + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, :, None, :]
            ys.append(torch.einsum("bhpn,bhn->bhp", state, C[:, t]))
        return torch.stack(ys, dim=1)

    g = torch.Generator().manual_seed(1)
    batch, L, heads, p, N = 2, 6, 4, 3, 5
    leaves = [torch.randn(batch, L, heads, p, generator=g), 0.5 * torch.rand(batch, L, heads, generator=g),
              -torch.rand(heads, generator=g), torch.randn(batch, L, 2, N, generator=g),
              torch.randn(batch, L, 2, N, generator=g)]
    outs, grads = [], []
    for f in (ssd_scan_ref, indexed):
        xs = [x.clone().requires_grad_() for x in leaves]
        y = f(*xs)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        outs.append(y.detach())
        grads.append([x.grad for x in xs])
    assert torch.equal(outs[0], outs[1]) and all(torch.equal(a, b) for a, b in zip(*grads))
    assert torch.equal(ssd_scan_ref(*leaves), outs[0])
