"""The certified float32 readout's row selection (``verify.fused_readout.certify``) on the CPU: from approximate
margins within delta of the float32 ones, the sure rows plus the recomputed rows give exactly the float32 correct
count and min margin, whatever the approximation error within the bound (the GPU kernel's TF32 bound itself is
tested in tests/test_cuda_mqar_mamba.py)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from verify.fused_readout import certify, margin_error_bound


@settings(deadline=None)
@given(st.integers(1, 300), st.integers(0, 2 ** 31 - 1), st.floats(0.0, 3.0), st.booleans())
def test_certified_rows_give_the_float32_count_and_min_margin(n, seed, spread, ties):
    g = torch.Generator().manual_seed(seed)
    exact = torch.randn(n, generator=g, dtype=torch.float64) * spread
    if ties:  # exact ties (not recalled) and near ties
        exact[torch.rand(n, generator=g) < 0.3] = 0.0
    delta = torch.rand(n, generator=g, dtype=torch.float64) * 0.5
    approx = exact + (2 * torch.rand(n, generator=g, dtype=torch.float64) - 1) * delta  # anywhere within the bound
    sure, recompute = certify(approx, delta)
    assert bool((exact[(approx > delta) & ~recompute] > 0).all())  # rows counted without recomputing are recalled
    assert int(sure + (exact[recompute] > 0).sum()) == int((exact > 0).sum())
    assert float(exact[recompute].min()) == float(exact.min())
    assert bool(recompute[(approx.abs() <= delta)].all())  # every undecided row is recomputed


def test_non_finite_margins_and_bounds_are_recomputed():
    margin = torch.tensor([5.0, float("nan"), float("-inf"), 4.0, 9.0])
    sure, recompute = certify(margin, torch.tensor([0.1, 0.1, 0.1, 0.1, float("nan")]))
    assert recompute.tolist() == [False, True, True, True, True] and int(sure) == 1


@pytest.mark.parametrize("d", [200, 275, 2048])
def test_margin_error_bound_covers_operands_truncated_to_tf32(d):
    """The bound holds for the worst case it models: both operands truncated to 10 mantissa bits, float32 sums in
    the chunked kernel's order (chunks of 32 features, each chunk's products summed, then added to the running
    float32 sum), up to MAX_D features."""
    g = torch.Generator().manual_seed(d)
    h, R = torch.randn(500, d, generator=g), torch.randn(300, d, generator=g)
    trunc = lambda x: (x.view(torch.int32) & ~((1 << 13) - 1)).view(torch.float32)  # noqa: E731
    logits_tf32 = torch.zeros(500, 300)
    for k0 in range(0, d, 32):
        logits_tf32 += trunc(h[:, k0:k0 + 32]) @ trunc(R[:, k0:k0 + 32]).T
    logits = h.double() @ R.double().T
    per_dot = (logits_tf32.double() - logits).abs().amax(dim=1)
    assert bool((2 * per_dot <= margin_error_bound(h, R).double()).all())


@pytest.mark.parametrize("d", [200, 275, 2048])
def test_bf16_margin_error_bound_covers_the_readout_rounded_to_bfloat16(d):
    """The bfloat16 screen's bound: bfloat16 rows times the readout rounded to nearest bfloat16, products exact,
    float32 sums in the chunked kernel's order, against the float64 logits of the float32 readout, on random rows and
    on the worst case of the rounding (every entry 1 + 2^-8 - 2^-20, rounded down by almost 2^-8, all one sign),
    which reaches most of the bound: TF32's smaller e = 2^-9 + 2^-20 would not cover it."""
    from verify.fused_readout import bf16_readout

    g = torch.Generator().manual_seed(d)
    worst = torch.full((2, d), 1 + 2.0 ** -8 - 2.0 ** -20)
    for h, R in ((torch.randn(500, d, generator=g).bfloat16(), torch.randn(300, d, generator=g)),
                 (torch.ones(3, d).bfloat16(), worst)):
        Rb = bf16_readout(R).float()
        assert bool(((Rb - R).abs() <= 2.0 ** -8 * R.abs()).all())
        logits_bf16 = torch.zeros(len(h), len(R))
        for k0 in range(0, d, 32):
            logits_bf16 += h[:, k0:k0 + 32].float() @ Rb[:, k0:k0 + 32].T
        per_dot = (logits_bf16.double() - h.double() @ R.double().T).abs().amax(dim=1)
        assert bool((2 * per_dot <= margin_error_bound(h, R, "bf16").double()).all())
    assert bool((2 * per_dot > 0.8 * margin_error_bound(h, R, "bf16").double()).all())  # most of it: the worst case
    assert not bool((2 * per_dot <= margin_error_bound(h, R, "tf32").double()).all())


def test_bf16_screen_falls_back_to_tf32_for_readouts_with_float32_subnormals():
    from verify.fused_readout import bf16_readout

    R = torch.randn(10, 4)
    assert bf16_readout(R) is not None
    R[3, 1] = 1e-39  # a float32 subnormal
    assert bf16_readout(R) is None


def test_margin_error_bound_ignores_features_the_readout_does_not_read():
    """Large hidden features where every readout row is zero (the MQAR key channels) do not loosen the bound."""
    g = torch.Generator().manual_seed(0)
    h, R = torch.randn(50, 20, generator=g), torch.randn(30, 20, generator=g)
    R[:, 10:] = 0
    wide = h.clone()
    wide[:, 10:] = 1e6
    assert torch.equal(margin_error_bound(wide, R), margin_error_bound(h, R))


def test_self_check_passes_exact_values_and_stops_a_kernel_outside_the_bound():
    """The once-per-shape check of a compiled kernel: values within the TF32 bound pass (and the shape is then
    trusted); a value off by more than the bound (a skipped feature chunk: the last 25 features' share) raises."""
    from verify import fused_readout as fr

    g = torch.Generator().manual_seed(0)
    h, readout = torch.randn(300, 275, generator=g), torch.randn(64, 275, generator=g)
    target = torch.randint(0, 64, (300,), generator=g)
    logits = h.double() @ readout.double().T
    own = logits.gather(1, target[:, None]).squeeze(1)
    best = logits.scatter(1, target[:, None], float("-inf")).amax(dim=1)
    fr._CHECKED.clear()
    fr.self_check(h, readout, target, own.float(), best.float())
    assert (str(h.device), 275, 64, "tf32") in fr._CHECKED
    fr._CHECKED.clear()
    skipped = (h[:, :250].double() @ readout[:, :250].double().T).gather(1, target[:, None]).squeeze(1)
    with pytest.raises(RuntimeError, match="beyond the TF32 bound"):
        fr.self_check(h, readout, target, skipped.float(), best.float())
    assert not fr._CHECKED


def test_padding_appends_zero_features_and_is_refreshed_after_a_write():
    """The kernels' operands: zero features appended up to a multiple of ALIGN (an aligned width left as it is), so
    every dot product is unchanged; a readout's padded copy is made once and made again after the readout changes."""
    from verify import fused_readout as fr

    g = torch.Generator().manual_seed(0)
    h, aligned = torch.randn(7, 275, generator=g), torch.randn(7, 2 * fr.ALIGN, generator=g)
    hp = fr._padded(h)
    assert hp.shape == (7, 288) and torch.equal(hp[:, :275], h) and not hp[:, 275:].any()
    assert fr._padded(aligned) is aligned
    R = torch.randn(5, 275, generator=g)
    first = fr._padded_readout(R)
    assert fr._padded_readout(R) is first and torch.equal(hp @ first.T, fr._padded(h) @ fr._padded(R).T)
    torch.testing.assert_close(hp @ first.T, h @ R.T, rtol=0, atol=1e-4)
    R[0, 0] += 1
    again = fr._padded_readout(R)
    assert again is not first and again[0, 0] == R[0, 0]
    wide = torch.randn(5, 2 * fr.ALIGN, generator=g)
    assert fr._padded_readout(wide) is wide and wide not in fr._PADDED
