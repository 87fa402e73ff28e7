"""GPU: the mamba_ssm engine's query-only forms of Mamba-2 and Mamba-S4D (``MambaSSMEngine.hidden_at``, what
``check_mqar`` runs) against the modules' full forwards gathered at the query positions, the one-pass token conv
kernel against float64 and against the gather + causal_conv1d path it replaces (Mamba too), the query gate kernel
against torch's gate (bit for bit), and the MQAR draw on the
GPU (its Triton hash) against the same draw on the CPU. Skipped without a CUDA GPU and mamba_ssm. Run with ``-s`` to see the differences:

    python3 -m pytest -q -s -m cuda tests/test_cuda_query_only_mamba2_s4d.py

The modules: ``mamba_ssm.Mamba2`` (the engine's ``_Mamba2``, Mamba2.forward on its unfused path with its torch conv)
and the Mamba-S4D block on mamba_ssm's ``selective_scan_fn``. The forms differ from them only by rounding (the
summation order of in_proj, the conv and out_proj, and the gate applied after the scan output is rounded), so the
logits at the query positions must agree to a few units of the arithmetic's rounding, times the logit scale
(max |logit| of the module), bounds stated in ``BOUND``:

* float32, Mamba-S4D: 1e-4 (the CUDA selective scan in IEEE float32, unit roundoff 2^-24; Mamba-1's test uses the same);
* float32, Mamba-2: 4e-3, 8 units of TF32's 2^-11 (the SSD kernels' ``tl.dot`` rounds float32 operands to TF32, so an
  operand that differs in its last float32 bit can round to a neighbouring TF32 value);
* bfloat16: 2^-5, 8 units of bfloat16's 2^-8 (in_proj, conv, gate and out_proj each round to bfloat16 once).

Exact recall through the same path: ``test_cuda_mamba2_s4d.py::test_construction_recalls_exactly_on_mamba_ssm``.
"""
from __future__ import annotations

import functools
from dataclasses import replace

import pytest
import torch

from constructions import mqar_mamba, mqar_mamba2, mqar_s4d
from constructions.layout import Construction, Mamba2Config, MQARTokens, embed
from verify.checks import query_positions
from verify.engines import make_engine, token_conv
from verify.engines.query_only import at_positions
from verify.tasks.mqar import MQARConfig, generate, generate_torch

pytestmark = pytest.mark.cuda

BOUND = {("mamba-s4d", "float32"): 1e-4, ("mamba2", "float32"): 4e-3, ("mamba-s4d", "bfloat16"): 2 ** -5,
         ("mamba2", "bfloat16"): 2 ** -5}


@functools.cache
def _build(mod, variant):
    return mod.build(8, 128, variant, seq_len=100)


def _with_biases(con, seed):
    """con with random in_proj / out_proj biases (bias=True), so the table and out_proj at the query positions carry
    one."""
    g = torch.Generator().manual_seed(seed)
    rows, d = con.mixer["in_proj.weight"].shape[0], con.config.d_model
    return replace(con, config=replace(con.config, bias=True), mixer={
        **con.mixer, "in_proj.bias": 0.1 * torch.randn(rows, generator=g, dtype=torch.float64),
        "out_proj.bias": torch.randn(d, generator=g, dtype=torch.float64)})


def _agree(con, tokens, pos, dtype, name):
    """max |logits of hidden_at - logits of the module's forward at pos| and the logit scale, asserted <= BOUND."""
    from mamba_ssm import Mamba2

    eng = make_engine("mamba_ssm", dtype)
    m, emb = eng.module(con)
    assert con.config.kind != "mamba2" or isinstance(m, Mamba2)
    tokens, pos = tokens.cuda(), pos.cuda()
    with torch.no_grad(), eng.precision():
        want = at_positions(m(embed(con, emb, tokens)), pos)  # the module's full forward, gathered
    got = eng.hidden_at(con, tokens, pos)
    assert got.shape == want.shape and got.dtype == want.dtype
    readout = con.readout.cuda().double()
    logits, logits_want = got.double() @ readout.T, want.double() @ readout.T
    diff, scale = (logits - logits_want).abs().max().item(), logits_want.abs().max().item()
    bound = BOUND[(con.config.kind, dtype)]
    print(f"\n[{name} {dtype}] max |logits(hidden_at) - logits(module)[pos]| = {diff:.3e} (logit scale {scale:.3e}, "
          f"relative {diff / scale:.3e}, bound {bound:.1e}, causal_conv1d {eng.fused})")
    assert diff <= bound * scale
    return logits, logits_want


def _task(T, n=64, seed=0, passes=2):
    tokens, labels = generate(MQARConfig(8, 128, T, num_examples=n, query_passes=passes), seed)
    return torch.from_numpy(tokens), torch.from_numpy(query_positions(labels)[0])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("mod, variant", [(mqar_mamba2, "one-hot"), (mqar_mamba2, "jl"), (mqar_s4d, "one-hot"),
                                          (mqar_s4d, "jl")], ids=lambda x: getattr(x, "NAME", x))
def test_query_only_logits_equal_the_module_forward_gathered(mod, variant, dtype):
    """The construction and a copy with random in_proj / out_proj biases: logits at every query position within the
    bound of the module's; the construction's argmax equals the module's at every query."""
    con = _build(mod, variant)
    tokens, pos = _task(100)
    logits, logits_want = _agree(con, tokens, pos, dtype, f"{mod.NAME} {variant}")
    assert torch.equal(logits.argmax(-1), logits_want.argmax(-1))
    _agree(_with_biases(con, 1), tokens, pos, dtype, f"{mod.NAME} {variant} biases")


RANDOM_MAMBA2 = [  # every optional part of Mamba2.forward after the scan: gated RMSNorm (both orders), gated MLP
    Mamba2Config(d_model=64, d_state=16, headdim=16, ngroups=2, rmsnorm=True),
    Mamba2Config(d_model=48, d_state=8, expand=2, headdim=16, d_ssm=64, ngroups=2, rmsnorm=False, d_conv=2),
    Mamba2Config(d_model=32, d_state=8, headdim=8, ngroups=4, rmsnorm=True, norm_before_gate=True, bias=False,
                 chunk_size=64),
]


@pytest.mark.parametrize("config", RANDOM_MAMBA2,
                         ids=lambda c: f"G{c.ngroups}-H{c.nheads}-rms{int(c.rmsnorm)}-mlp{c.d_mlp}")
def test_mamba2_query_only_on_random_weights(config):
    g = torch.Generator().manual_seed(2)
    mixer = {k: 0.3 * torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in config.zeros().items()}
    mixer["A_log"] = mixer["A_log"] - 2.0
    if "norm.weight" in mixer:
        mixer["norm.weight"] = mixer["norm.weight"] + 1.0
    ids = MQARTokens(8, 40)
    d = config.d_model
    con = Construction("random", "-", config, torch.randn(ids.n_tokens, d, generator=g, dtype=torch.float64), mixer,
                       torch.randn(12, d, generator=g, dtype=torch.float64), [], ids)
    tokens = torch.randint(0, ids.n_tokens, (6, 300), generator=g)
    pos = torch.stack([torch.randperm(300, generator=g)[:20].sort().values for _ in range(6)])
    _agree(con, tokens, pos, "float32", f"Mamba2 random G{config.ngroups} rmsnorm={config.rmsnorm} d_mlp={config.d_mlp}")


@pytest.mark.parametrize("cfg, seed", [(MQARConfig(8, 128, 100, num_examples=300, query_passes=2), 7),
                                       (MQARConfig(64, 8192, 1024, num_examples=64, noise_vocab=3), (1, 5))])
def test_gpu_draw_equals_the_cpu_draw(cfg, seed):
    """``generate_torch`` on the GPU gives the CPU's numbers (integer arithmetic), as check_mqar draws on CUDA."""
    on_gpu, on_cpu = generate_torch(cfg, seed, "cuda"), generate_torch(cfg, seed, "cpu")
    assert all(a.is_cuda and torch.equal(a.cpu(), b) for a, b in zip(on_gpu, on_cpu))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("C, width, L, dtype", [(70, 4, 130, torch.float32), (3584, 4, 512, torch.float32),
                                                (533, 4, 1024, torch.bfloat16), (129, 2, 77, torch.float32),
                                                (808, 4, 1024, torch.bfloat16), (130, 3, 99, torch.bfloat16),
                                                (64, 1, 65, torch.float32)])
def test_token_conv_kernel_within_its_rounding_bound(C, width, L, dtype, channels_last):
    """The compiled kernel on every sequence (not only the self-check's first two) within half an ulp of the output
    dtype plus the float32 terms of float64's value, in the layout asked for (channel-last: the rolling kernel, at
    widths 1-4 and Mamba-2's large MQAR width 808)."""
    g = torch.Generator().manual_seed(C)
    table_t = torch.randn(300, C, generator=g).to("cuda", dtype)
    tokens = torch.randint(0, 300, (6, L), generator=g).cuda()
    weight, bias = (torch.randn(*s, generator=g).to("cuda", dtype) for s in ((C, 1, width), (C,)))
    out = token_conv.table_conv_silu(table_t, tokens, weight, bias, channels_last)
    assert out.shape == (6, C, L) and (out.stride(1) == 1) == channels_last
    ref, size = token_conv.reference(table_t, tokens, weight, bias)
    bound = token_conv.error_bound(ref, size, width, dtype)  # half an ulp: the compiled kernel rounds to nearest
    assert token_conv._ROUNDING_ULPS == 0.5
    excess = ((out.double() - ref).abs() - bound).max().item()
    print(f"\n[token conv C={C} W={width} {dtype} channels_last={channels_last}] max excess over the bound {excess:.3e}")
    assert excess <= 0


@pytest.mark.parametrize("d, L, q, dtype, layout", [(70, 130, 9, torch.float32, "contiguous"),
                                                    (4608, 512, 32, torch.bfloat16, "contiguous"),
                                                    (129, 77, 40, torch.float16, "contiguous"),
                                                    (300, 200, 17, torch.bfloat16, "transposed")])
def test_query_gate_kernel_equals_torch_gate_bit_for_bit(d, L, q, dtype, layout):
    """``query_gate.gate_at`` on every sequence (not only the self-check's first two) equals torch's gather, lookup
    and gate exactly, for widths and query counts that are not multiples of the tiles, each dtype, and a scan output
    that is a transposed view (strides other than the scan's); values spread over [-12, 12] so SiLU's tails and
    signs are exercised."""
    from verify.engines import query_gate

    g = torch.Generator().manual_seed(d)
    batch, n_tokens = 6, 500
    y = (12 * (2 * torch.rand(batch, d, L, generator=g) - 1)).to("cuda", dtype)
    if layout == "transposed":
        y = y.transpose(1, 2).contiguous().transpose(1, 2)
    tokens = torch.randint(0, n_tokens, (batch, L), generator=g).cuda()
    pos = torch.stack([torch.randperm(L, generator=g)[:q] for _ in range(batch)]).cuda()
    z_t = (12 * (2 * torch.rand(n_tokens, d, generator=g) - 1)).to("cuda", dtype)
    got = query_gate.gate_at(y, pos, tokens, z_t)
    want = query_gate.reference(y, pos, tokens, z_t)
    assert got.shape == (batch, q, d) and got.dtype == dtype
    print(f"\n[query gate d={d} {dtype} {layout}] differing outputs: {int((got != want).sum())} of {want.numel()}")
    assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("mod", [mqar_mamba, mqar_mamba2, mqar_s4d], ids=lambda m: m.NAME)
def test_one_pass_conv_equals_the_gather_then_causal_conv1d(mod, dtype):
    """hidden_at with the one-pass kernel (the default) against hidden_at with the gather and causal_conv1d's kernel
    (``one_pass = False``), on a construction with random biases: the kernels compute the conv in the same order, so
    the mixer outputs agree to a unit of the dtype's rounding of the scan's input carried through the block."""
    con = _with_biases(mod.build(8, 128, "jl", seq_len=200), 3)
    tokens, pos = (t.cuda() for t in _task(200))
    eng = make_engine("mamba_ssm", dtype)
    got = eng.hidden_at(con, tokens, pos)
    eng.one_pass = False
    want = eng.hidden_at(con, tokens, pos)
    diff, scale = (got.double() - want.double()).abs().max().item(), want.double().abs().max().item()
    bound = (4e-3 if con.config.kind == "mamba2" else 1e-5) if dtype == "float32" else 2 ** -6
    print(f"\n[{mod.NAME} {dtype}] max |hidden_at one-pass - gather + causal_conv1d| = {diff:.3e} (scale {scale:.3e})")
    assert got.shape == want.shape and diff <= bound * scale


@pytest.mark.parametrize("mod", [mqar_mamba, mqar_mamba2, mqar_s4d], ids=lambda m: m.NAME)
def test_graph_replay_equals_the_eager_forward_bit_for_bit(mod):
    """hidden_at's CUDA graph (captured on a shape's second call, replayed after) returns the eager forward's values
    exactly, on new inputs each call and on a batch seen before; a shorter batch runs eagerly; the returned tensor
    is the caller's (the next replay does not overwrite it)."""
    con = mod.build(8, 128, "jl", seq_len=200)
    eng, eager = make_engine("mamba_ssm", "float32"), make_engine("mamba_ssm", "float32")
    eager.graphs = False
    batches = [tuple(t.cuda() for t in _task(200, n=16, seed=s)) for s in range(4)]
    short = tuple(t.cuda() for t in _task(200, n=5, seed=9))
    outs = []
    for tokens, pos in batches[:3] + [batches[0], batches[3], short]:
        got = eng.hidden_at(con, tokens, pos)
        outs.append((got, got.clone()))
        assert torch.equal(got, eager.hidden_at(con, tokens, pos))
    assert all(torch.equal(a, b) for a, b in outs)  # later replays left earlier results alone
    entry = eng._graph[1][(batches[0][0].shape, batches[0][1].shape)]
    assert isinstance(entry, tuple), f"the forward was not captured: {entry!r}"
    assert eng._graph[1][(short[0].shape, short[1].shape)] == "seen"
