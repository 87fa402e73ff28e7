"""GPU: the reference engine against mamba_ssm's own modules and references, and Theorem 2 recall on mamba_ssm.

Run on a machine with a GPU and mamba_ssm: ``python3 -m pytest -m cuda -s tests/test_cuda_mqar_mamba.py``.
Measured differences are printed (``-s``) so they can be quoted.
"""
import functools
import json
from dataclasses import replace

import pytest
import torch

from constructions import mqar_mamba
from verify.export import save
from constructions.layout import MambaConfig, embed
from verify.checks import check_mqar, query_positions
from verify.engines import make_engine
from verify.engines.query_only import at_positions
from verify.blocks.mamba import mamba_forward
from verify.engines.scan import selective_scan_ref
from verify.tasks.mqar import IGNORE, MQARConfig, generate

pytestmark = pytest.mark.cuda


def test_selective_scan_matches_mamba_ssm_reference_and_kernel():
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    from mamba_ssm.ops.selective_scan_interface import selective_scan_ref as their_ref

    g = torch.Generator(device="cuda").manual_seed(0)
    b, d, n, L = 3, 24, 8, 200
    r = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    u, delta, z = r(b, d, L), r(b, d, L) * 0.5, r(b, d, L)
    A, B, C, D, bias = -torch.rand(d, n, device="cuda", generator=g) - 0.1, r(b, n, L), r(b, n, L), r(d), r(d) * 0.1
    args = dict(D=D, z=z, delta_bias=bias, delta_softplus=True)
    ours = selective_scan_ref(u, delta, A, B, C, **args)
    theirs = their_ref(u, delta, A, B, C, **args)
    kernel = selective_scan_fn(u, delta, A, B, C, **args)
    d_ref, d_kernel = (ours - theirs).abs().max().item(), (ours - kernel).abs().max().item()
    print(f"\nselective_scan: |ours - mamba_ssm ref| = {d_ref:.2e}, |ours - kernel| = {d_kernel:.2e}")
    assert d_ref < 1e-4 and d_kernel < 2e-3


@pytest.mark.parametrize("d_conv, expand", [(2, 1), (4, 2)])
def test_reference_block_matches_mamba_ssm_module_on_random_weights(d_conv, expand):
    from mamba_ssm import Mamba

    cfg = MambaConfig(d_model=32, d_state=16, d_conv=d_conv, expand=expand)
    m = Mamba(**cfg.arguments(), device="cuda", dtype=torch.float32)
    torch.nn.init.normal_(m.conv1d.weight, std=0.3)
    x = torch.randn(4, 300, 32, device="cuda")
    with torch.no_grad():
        theirs = m(x)
        ours = mamba_forward({k: v.detach() for k, v in m.state_dict().items()}, x, cfg)
        ours64 = mamba_forward({k: v.detach().double() for k, v in m.state_dict().items()}, x.double(), cfg)
    diff, diff64 = (ours - theirs).abs().max().item(), (ours64 - theirs.double()).abs().max().item()
    print(f"\nMamba block (d_conv={d_conv}, expand={expand}): |ref fp32 - mamba_ssm| = {diff:.2e}, "
          f"|ref fp64 - mamba_ssm| = {diff64:.2e}, output scale {theirs.abs().max().item():.2e}")
    assert diff < 1e-4 * max(1.0, theirs.abs().max().item())


@functools.cache
def _build(kappa, vocab, variant, T):
    """One construction per size and worker, shared by the tests of that size (read-only)."""
    return mqar_mamba.build(kappa, vocab, variant, seq_len=T)


CASES = [(4, 64, "one-hot", 100), (16, 512, "one-hot", 256), (8, 128, "jl", 100), (32, 2048, "jl", 512),
         (64, 8192, "jl", 1024)]


@pytest.mark.parametrize("kappa, vocab, variant, T", CASES)
def test_engines_agree_and_recall_is_exact_in_float32(kappa, vocab, variant, T):
    con = _build(kappa, vocab, variant, T)
    task = MQARConfig(kappa, vocab, T, num_examples=64)
    tokens, labels = (torch.from_numpy(a) for a in generate(task, 0))
    ref = make_engine("reference", "float64", device="cuda").hidden(con, tokens)
    gpu = make_engine("mamba_ssm", "float32").hidden(con, tokens)
    mask = (labels != IGNORE).cuda()
    logit_ref = ref[mask] @ con.readout.cuda().T
    logit_gpu = gpu[mask].double() @ con.readout.cuda().T
    dh, dl = (ref - gpu.double()).abs().max().item(), (logit_ref - logit_gpu).abs().max().item()
    print(f"\n{variant} k={kappa} |V|={vocab} T={T}: max|hidden ref64 - mamba_ssm32| = {dh:.2e}, "
          f"max|logits| diff = {dl:.2e} (logit scale {logit_ref.abs().max().item():.1f}, "
          f"proven margin {con.proof.margin:.3g})")
    assert dl < 1e-3 * con.proof.margin
    r = check_mqar(con, MQARConfig(kappa, vocab, T, num_examples=1024), make_engine("mamba_ssm", "float32"), seed=1)
    print(f"  float32 recall {r.correct}/{r.queries}, min margin {r.min_margin:.4g}")
    assert r.correct == r.queries and r.min_margin >= con.proof.margin * (1 - 1e-4)


@pytest.mark.parametrize("dtype", ["tfloat32", "bfloat16", "float16"])
@pytest.mark.parametrize("kappa, vocab, variant, T", CASES)
def test_low_precision_recall(dtype, kappa, vocab, variant, T):
    """The margins are >= 30% of the recalled logit, far above bf16's 2^-8 rounding: recall stays exact."""
    con = _build(kappa, vocab, variant, T)
    r = check_mqar(con, MQARConfig(kappa, vocab, T, num_examples=512), make_engine("mamba_ssm", dtype), seed=2)
    print(f"\n{dtype} {variant} k={kappa} |V|={vocab} T={T}: recall {r.correct}/{r.queries}, "
          f"min margin {r.min_margin:.4g} (proven {con.proof.margin:.4g})")
    assert r.correct == r.queries


@pytest.mark.parametrize("kappa, vocab, variant, T", [(8, 128, "one-hot", 100), (32, 2048, "jl", 512)])
def test_query_only_path_equals_mamba_forward_gathered(kappa, vocab, variant, T):
    """The engine's hidden_at (Mamba's slow path on mamba_ssm's kernels, in_proj folded into a token table, the gate
    and out_proj at the query positions only) == mamba_ssm.Mamba.forward(embed(tokens)) gathered at the query
    positions within float32 rounding, for the construction and with random in_proj / out_proj biases; then exact
    recall through it in float32 and tfloat32."""
    con = _build(kappa, vocab, variant, T)
    g = torch.Generator().manual_seed(0)
    biased = replace(con, mixer={**con.mixer, "in_proj.bias": 0.1 * torch.randn(2 * con.config.d_inner, generator=g),
                                 "out_proj.bias": torch.randn(con.config.d_model, generator=g)})
    tokens, labels = generate(MQARConfig(kappa, vocab, T, num_examples=256), 0)
    tokens, pos = (torch.from_numpy(a).cuda() for a in (tokens, query_positions(labels)[0]))
    for c in (con, biased):
        eng = make_engine("mamba_ssm", "float32")
        m, emb = eng.module(c)
        with torch.no_grad(), eng.precision():
            want = at_positions(m(embed(c, emb, tokens)), pos)  # Mamba.forward (the fused path with causal_conv1d)
        got = eng.hidden_at(c, tokens, pos)
        diff, scale = (got - want).abs().max().item(), want.abs().max().item()
        print(f"\n{variant} k={kappa} |V|={vocab} T={T} {'biases' if c is biased else 'construction'}: "
              f"max|hidden_at - Mamba.forward[pos]| = {diff:.2e} (scale {scale:.2e}, fused {eng.fused})")
        assert got.shape == want.shape and diff <= 1e-4 * scale
    for dtype in ("float32", "tfloat32"):
        r = check_mqar(con, MQARConfig(kappa, vocab, T, num_examples=1024), make_engine("mamba_ssm", dtype), seed=1)
        print(f"  {dtype} recall {r.correct}/{r.queries}, min margin {r.min_margin:.4g}")
        assert r.passed and r.correct == r.queries
        assert dtype != "float32" or r.min_margin >= con.proof.margin * (1 - 1e-4)


def test_export_loads_strictly_into_mamba_ssm(tmp_path):
    """The README's snippet (config.json's block arguments into mamba_ssm.Mamba, by hand) and the export's loader."""
    from mamba_ssm import Mamba
    from safetensors.torch import load_file

    from verify.export import mamba_ssm_mixer

    con = mqar_mamba.build(6, 50, "jl", seq_len=100)
    save(con, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    sd = load_file(str(tmp_path / "model.safetensors"), device="cuda")
    m = Mamba(**cfg["block"]["arguments"], device="cuda")
    m.load_state_dict({k[len("mixer."):]: v for k, v in sd.items() if k.startswith("mixer.")}, strict=True)
    tokens, labels = (torch.from_numpy(a).cuda() for a in generate(MQARConfig(6, 50, 100, num_examples=200), 3))
    mask = labels != IGNORE
    loaded = mamba_ssm_mixer(tmp_path)  # the export's own loader: the same class, strictly loaded
    assert type(loaded) is Mamba
    for module in (m, loaded):
        with torch.no_grad():
            logits = module(sd["embedding.weight"][tokens]) @ sd["readout.weight"].T
        assert torch.equal(logits[mask].argmax(-1), labels[mask])


def test_tfloat32_precision_is_scoped():
    """dtype tfloat32 turns TF32 on inside the engine's forward and the check's readout only, then restores."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    eng = make_engine("mamba_ssm", "tfloat32")
    with eng.precision():
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    with make_engine("mamba_ssm", "float32").precision():
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32



@pytest.mark.parametrize("n, vocab, d, dtype", [(65536, 8192, 210, torch.float32), (1000, 1000, 37, torch.float32),
                                                (77, 5, 16, torch.float32), (4000, 300, 64, torch.bfloat16),
                                                (8192, 8192, 275, torch.float32), (77, 5, 257, torch.float32),
                                                (3000, 1000, 1000, torch.bfloat16), (500, 700, 2048, torch.float32)])
def test_fused_readout_matches_float64_within_tf32_rounding(n, vocab, d, dtype):
    """verify.fused_readout's kernels (Triton, TF32, no logits in memory) give every row's target logit and best
    other logit within the bound the certified screen assumes, c(d) sum_k |h_k| max_v |R_vk| (half of
    ``margin_error_bound``), of the float64 values of the same (float32-read) rows, for row counts, |V| and d not
    multiples of their tiles, bfloat16 rows, and rows wider than RESIDENT_D (the chunked kernel; d = 275 at |V| 8192
    is the Mamba-2 MQAR construction's large configuration)."""
    from verify import fused_readout

    g = torch.Generator(device="cuda").manual_seed(0)
    h = torch.randn(n, d, device="cuda", generator=g).to(dtype)
    R = torch.randn(vocab, d, device="cuda", generator=g)
    t = torch.randint(0, vocab, (n,), device="cuda", generator=g)
    assert fused_readout.available(h, vocab) == (n * vocab >= fused_readout.MIN_LOGITS)
    own, best = fused_readout.own_and_best_other(h, R, t)
    logits = h.double() @ R.double().T
    own64 = logits.gather(1, t[:, None]).squeeze(1)
    best64 = logits.scatter(1, t[:, None], float("-inf")).amax(dim=1)
    bound = fused_readout.margin_error_bound(h, R).double() / 2
    err_own, err_best = (own.double() - own64).abs(), (best.double() - best64).abs()
    print(f"\nn={n} |V|={vocab} d={d} {dtype}: max error own {err_own.max():.2e}, best other {err_best.max():.2e}, "
          f"largest share of the bound {max((err_own / bound).max(), (err_best / bound).max()):.3f}")
    assert bool((err_own <= bound).all()) and bool((err_best <= bound).all())
    assert bool(torch.isfinite(best).all())


@pytest.mark.parametrize("n, vocab, d", [(65536, 8192, 210), (8192, 8192, 275), (3000, 1000, 1000), (77, 5, 16)])
def test_fused_readout_bf16_operands_within_their_bound(n, vocab, d):
    """The kernels with bfloat16 operands (bfloat16 rows, the readout rounded by ``bf16_readout``): every row's
    target and best other logit within half of ``margin_error_bound(..., "bf16")`` of the float64 logits of the
    float32 readout, rows held whole and read in chunks."""
    from verify import fused_readout

    g = torch.Generator(device="cuda").manual_seed(1)
    h = torch.randn(n, d, device="cuda", generator=g).bfloat16()
    R = torch.randn(vocab, d, device="cuda", generator=g)
    t = torch.randint(0, vocab, (n,), device="cuda", generator=g)
    own, best = fused_readout.own_and_best_other(h, R, t, "bf16")
    logits = h.double() @ R.double().T
    own64 = logits.gather(1, t[:, None]).squeeze(1)
    best64 = logits.scatter(1, t[:, None], float("-inf")).amax(dim=1)
    bound = fused_readout.margin_error_bound(h, R, "bf16").double() / 2
    share = max(((own.double() - own64).abs() / bound).max(), ((best.double() - best64).abs() / bound).max())
    print(f"\nbf16 operands n={n} |V|={vocab} d={d}: largest share of the bound {share:.3f}")
    assert share <= 1 and bool(torch.isfinite(best).all())


@pytest.mark.parametrize("rows", ["float32", "bfloat16"])
@pytest.mark.parametrize("d", [64, 275])
@pytest.mark.parametrize("data", ["gaussian", "integer-ties"])
def test_certified_float32_readout_equals_the_plain_gemm(data, d, rows):
    """A float32 check's readout through the screen (``fused_readout.Screen``: TF32 for float32 rows, bfloat16
    operands for bfloat16 rows) gives the plain float32 GEMM's correct count and min margin: on Gaussian rows, and on
    small integers (exact in TF32, bfloat16 and float32) where a third of the rows tie their target with another
    logit (not recalled) and others miss by one; rows held whole (d 64) and read in chunks (d 275)."""
    from verify import checks, fused_readout

    g = torch.Generator(device="cuda").manual_seed(1)
    n, vocab = 20000, 1000
    if data == "gaussian":
        h, R = torch.randn(n, d, device="cuda", generator=g), torch.randn(vocab, d, device="cuda", generator=g)
    else:
        h = torch.randint(-3, 4, (n, d), device="cuda", generator=g).float()
        R = torch.randint(-3, 4, (vocab, d), device="cuda", generator=g).float()
    h = h.to(getattr(torch, rows))
    logits = h.float() @ R.T
    t = logits.argmax(dim=1)
    if data != "gaussian":  # targets: the best logit, a logit tied with the best, or one below it
        t = torch.where(torch.rand(n, device="cuda", generator=g) < 0.5, t,
                        ((logits - logits.amax(1, keepdim=True)).abs() <= 1).float().multinomial(1).squeeze(1))
    plain = checks._recall_plain(h.float(), R, t, torch.float32)
    screen = fused_readout.Screen(h, R, t)
    certified = screen.result(lambda rows, tt: checks._recall_plain(rows, R, tt, torch.float32))
    recomputed = int(screen.recompute.sum())
    print(f"\n{data} d={d} {rows} rows: plain {int(plain[0])}/{n} min margin {float(plain[1]):.6g}; certified "
          f"{int(certified[0])}/{n} min margin {float(certified[1]):.6g}; {recomputed} rows recomputed")
    assert int(certified[0]) == int(plain[0])
    assert float(certified[1]) == pytest.approx(float(plain[1]), abs=1e-4)
    if data != "gaussian":
        assert 0 < int(plain[0]) < n and float(plain[1]) <= 0  # the hard case is hard: ties and misses present


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_mamba2_large_readout_takes_the_certified_fused_path(dtype, monkeypatch):
    """check_mqar on the Mamba-2 construction at |V| 8192 (d = 275 > RESIDENT_D) screens every batch with the fused
    readout (4096 queries x 8192 logits a batch) and reports the plain float32 GEMM's count and min margin."""
    from constructions import mqar_mamba2
    from verify import fused_readout

    con = mqar_mamba2.build(64, 8192, "jl", seq_len=1024)
    assert con.config.d_model == 275
    task, eng = MQARConfig(64, 8192, 1024, num_examples=128), make_engine("mamba_ssm", dtype)
    screens, screen = [], fused_readout.Screen
    monkeypatch.setattr(fused_readout, "Screen", lambda h, *a: screens.append(h.shape) or screen(h, *a))
    fused = check_mqar(con, task, eng, seed=3, batch_size=64)
    monkeypatch.setattr(fused_readout, "available", lambda h, vocab: False)
    plain = check_mqar(con, task, eng, seed=3, batch_size=64)
    print(f"\nMamba-2 d=275 {dtype}: fused {fused.correct}/{fused.queries} min margin {fused.min_margin:.6g}, "
          f"plain {plain.correct}/{plain.queries} min margin {plain.min_margin:.6g}, proven {fused.proven_margin:.6g}")
    assert screens[:2] == [(4096, 275)] * 2 and all(d == 275 for _, d in screens)  # then the constructed ones
    assert fused.correct == plain.correct == fused.queries
    assert fused.min_margin == pytest.approx(plain.min_margin, rel=1e-5)
    assert fused.min_margin >= fused.proven_margin - fused.allowance  # the check's margin rule


def test_tf32_fused_readout_recalls_no_row_that_is_not_finite():
    """The fused readout's running maxima skip a NaN logit; in a TF32 check a hidden row holding a NaN or an inf is
    not recalled and makes the min margin NaN (the float64 GEMM's count of the finite rows otherwise), and a readout
    with a NaN is scored by the plain GEMM instead, whose NaN margin stays."""
    import math
    from types import SimpleNamespace

    from verify import fused_readout
    from verify.checks import _recall

    V, d, n = 8192, 256, 2048
    g = torch.Generator().manual_seed(0)
    readout = torch.randn(V, d, generator=g)
    target = torch.randint(0, V, (n,), generator=g)
    h = readout[target] * 4  # own logit ~ 4 |r|^2 = 1024, others ~ N(0, 64^2)
    h[5, 3], h[7, 0] = float("nan"), float("inf")
    assert fused_readout.available(h.cuda(), V)
    logits = h.double() @ readout.double().T
    own = logits.gather(1, target[:, None])[:, 0]
    others = logits.scatter(1, target[:, None], float("-inf")).max(dim=1).values
    finite = torch.isfinite(h).all(dim=1)
    want = int(((own > others) & finite).sum())
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        correct, margin = _recall(SimpleNamespace(name="rows", readout=readout), h.cuda(), target.cuda())
        assert int(correct) == want and want >= n - 2 - 5 and math.isnan(float(margin))
        bad = readout.clone()
        bad[0, 0] = float("nan")
        clean = readout[target] * 4
        correct, margin = _recall(SimpleNamespace(name="readout", readout=bad), clean.cuda(), target.cuda())
        assert math.isnan(float(margin))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
