"""``verify.tasks.mqar.generate_torch``, the MQAR draw a check on the GPU uses, run here on the CPU (the same integer
operations give the same numbers on every device; ``tests/test_cuda_query_only_mamba2_s4d.py`` compares the GPU's):
layout and labels re-parsed independently, a pure function of (config, seed), the hash's integer arithmetic against
Python integers, the batches of a check, and the draw's marginals against the uniform law."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import RequirementError
from profiles import examples
from verify.tasks import mqar
from verify.tasks.mqar import IGNORE, MQARConfig, device_batches, generate_torch


def _labels(tokens, pos, target):
    labels = torch.full(tokens.shape, IGNORE, dtype=torch.int64)
    return labels.scatter_(1, pos, target)


@settings(max_examples=examples(100))
@given(kappa=st.integers(1, 16), vocab=st.integers(2, 64), extra=st.integers(0, 40), passes=st.integers(1, 3),
       noise=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_layout_and_labels(kappa, vocab, extra, passes, noise, seed):
    cfg = MQARConfig(kappa, vocab, (2 + passes) * kappa + extra, num_examples=4, noise_vocab=noise,
                     query_passes=passes)
    tokens, pos, target = generate_torch(cfg, seed)
    assert tokens.shape == (4, cfg.seq_len) and pos.shape == target.shape == (4, kappa * passes)
    assert (pos[:, 1:] > pos[:, :-1]).all()  # increasing, distinct
    ids = cfg.tokens
    for seq, lab in zip(tokens.tolist(), _labels(tokens, pos, target).tolist()):
        kv = {seq[2 * i]: seq[2 * i + 1] - ids.values_start for i in range(kappa)}
        assert sorted(kv) == list(range(kappa)) and all(0 <= v < vocab for v in kv.values())
        expected = [kv[t] if i >= 2 * kappa and t < kappa else IGNORE for i, t in enumerate(seq)]
        assert lab == expected  # labels at every query position and nowhere else, the paired value
        region = np.array(seq[2 * kappa:])
        assert np.array_equal(np.bincount(region[region < kappa], minlength=kappa), np.full(kappa, passes))
        others = region[region >= kappa]
        assert ((others >= ids.noise_start) & (others < ids.n_tokens)).all()


def test_pure_function_of_config_and_seed():
    cfg = MQARConfig(8, 128, 100, num_examples=50, query_passes=2)
    a, b, c, d = (generate_torch(cfg, s) for s in (3, 3, 4, (3, 0)))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[0], d[0])
    more = generate_torch(MQARConfig(8, 128, 100, num_examples=80, query_passes=2), 3)
    assert all(torch.equal(x[:50], y) for x, y in zip(more, a))  # sequence i depends on (seed, i), not on the count


def test_hash_arithmetic_is_exact():
    """_mul32 is multiplication mod 2^32 and _mix is lowbias32, against Python's integers, at the extremes too."""
    def lowbias32(x):
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    rng = np.random.default_rng(0)
    xs = [0, 1, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, *rng.integers(0, 2 ** 32, 2000).tolist()]
    x = torch.tensor(xs, dtype=torch.int64)
    for c in (0x7FEB352D, 0x846CA68B, 0xFFFFFFFF, 1):
        assert mqar._mul32(x, c).tolist() == [(v * c) & 0xFFFFFFFF for v in xs]
    assert mqar._mix(x).tolist() == [lowbias32(v) for v in xs]
    bits = mqar._bits(7, 0, (3, 5000), "cpu")
    assert bits.min() >= 0 and bits.max() < 2 ** 62 and bits.unique().numel() == bits.numel()


def test_check_batches_are_the_documented_draws():
    task = MQARConfig(kappa=4, vocab_size=16, seq_len=40, num_examples=17)
    batches = list(device_batches(task, seed=5, batch_size=7, device="cpu"))
    assert [len(b[0]) for b in batches] == [7, 7, 3]
    for i, batch in enumerate(batches):
        want = generate_torch(MQARConfig(4, 16, 40, num_examples=len(batch[0])), (5, i))
        assert all(torch.equal(x, y) for x, y in zip(batch, want))


def test_marginals_are_uniform():
    """Over 20,000 sequences: the first key, every value, the query slots (8 of 12) and the first keys of the two
    query passes jointly are uniform (chi-square within 5 standard deviations of its law)."""
    cfg = MQARConfig(4, 6, 20, num_examples=20000, query_passes=2)
    tokens, pos, target = generate_torch(cfg, 11)

    def uniform(counts):
        n, k = counts.sum(), len(counts)
        chi2 = float(((counts - n / k) ** 2 / (n / k)).sum())
        return abs(chi2 - (k - 1)) <= 5 * (2 * (k - 1)) ** 0.5

    assert uniform(np.bincount(tokens[:, 0].numpy(), minlength=4))
    assert uniform(np.bincount(target.flatten().numpy(), minlength=6))
    assert uniform(np.bincount(pos.flatten().numpy() - 8, minlength=12))
    first_pass, second_pass = tokens.gather(1, pos[:, :1]), tokens.gather(1, pos[:, 4:5])
    assert uniform(np.bincount((4 * first_pass + second_pass).flatten().numpy(), minlength=16))
    assert not uniform(np.bincount(pos[:, 0].numpy() - 8, minlength=12))  # the test can fail: the first slot is not


def test_zoology_layout_is_refused():
    with pytest.raises(RequirementError, match="disjoint layout"):
        generate_torch(MQARConfig(2, 16, 8, layout="zoology"), 0)
