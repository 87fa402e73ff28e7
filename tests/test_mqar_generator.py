"""The MQAR generator: layout, labels and determinism, checked by re-parsing the sequences independently."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import RequirementError
from verify.tasks.mqar import IGNORE, MQARConfig, generate, hard_cases


def _parse(tokens, cfg):
    """Independent reading of one sequence: the KV dictionary, then the expected label at each query."""
    ids = cfg.tokens
    kv = {int(tokens[2 * i]): int(tokens[2 * i + 1]) - ids.values_start for i in range(cfg.kappa)}
    expected = np.full(len(tokens), IGNORE)
    for t in range(2 * cfg.kappa, len(tokens)):
        if tokens[t] < cfg.kappa:
            expected[t] = kv[int(tokens[t])]
    return kv, expected


@given(kappa=st.integers(1, 16), vocab=st.integers(2, 64), extra=st.integers(0, 40), passes=st.integers(1, 3),
       noise=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_layout_and_labels(kappa, vocab, extra, passes, noise, seed):
    cfg = MQARConfig(kappa, vocab, (2 + passes) * kappa + extra, num_examples=5, noise_vocab=noise,
                     query_passes=passes)
    tokens, labels = generate(cfg, seed)
    assert tokens.shape == labels.shape == (5, cfg.seq_len)
    ids = cfg.tokens
    for seq, lab in zip(tokens, labels):
        kv, expected = _parse(seq, cfg)
        assert sorted(kv) == list(range(kappa))  # keys are a permutation
        assert all(0 <= v < vocab for v in kv.values())
        assert np.array_equal(lab, expected)  # labels sit at query positions, equal the paired value
        assert (seq[1:2 * kappa:2] >= ids.values_start).all() and (seq[1:2 * kappa:2] < ids.noise_start).all()
        query_region = seq[2 * kappa:]
        queried = query_region[query_region < kappa]
        assert np.array_equal(np.bincount(queried, minlength=kappa), np.full(kappa, passes))
        others = query_region[query_region >= kappa]
        assert ((others >= ids.noise_start) & (others < ids.n_tokens)).all()  # fillers are noise only


def test_pure_function_of_config_and_seed():
    cfg = MQARConfig(8, 128, 100, num_examples=50)
    a, b, c = generate(cfg, 3), generate(cfg, 3), generate(cfg, 4)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_shortest_length_makes_every_query_adjacent():
    cfg = MQARConfig(6, 10, 18, num_examples=3)
    tokens, labels = generate(cfg, 0)
    assert (tokens[:, 12:] < 6).all() and (labels[:, 12:] != IGNORE).all()


@pytest.mark.parametrize("kw, message", [
    (dict(kappa=0, vocab_size=5, seq_len=10), r"kappa >= 1, got kappa=0"),
    (dict(kappa=4, vocab_size=1, seq_len=20), r"\|V\| >= 2 values, got vocab_size=1"),
    (dict(kappa=4, vocab_size=5, seq_len=11), r"seq_len >= 2\*kappa \+ kappa\*query_passes = 12 .*got seq_len=11"),
    (dict(kappa=4, vocab_size=5, seq_len=15, query_passes=2), r"= 16 .*got seq_len=15"),
])
def test_bad_configs_name_the_requirement(kw, message):
    with pytest.raises(RequirementError, match=message):
        generate(MQARConfig(**kw), 0)


def test_check_batches_are_the_documented_parts(monkeypatch):
    """``verify.checks._batches``: batch i concatenates parts j of PART_TOKENS // T sequences, part j being
    ``generate(..., seed=(seed, i, j))``, and every sequence comes once, in order, whatever the thread timing."""
    from dataclasses import replace

    from verify import checks

    monkeypatch.setattr(checks, "PART_TOKENS", 3 * 40)  # 3 sequences of T = 40 per part
    task = MQARConfig(kappa=4, vocab_size=16, seq_len=40, num_examples=17)
    batches = list(checks._batches(task, seed=5, batch_size=7))
    assert [len(b[0]) for b in batches] == [7, 7, 3]
    for i, (tokens, pos, target) in enumerate(batches):
        size = len(tokens)
        parts = [generate(replace(task, num_examples=min(3, size - j)), (5, i, j // 3)) for j in range(0, size, 3)]
        want_tokens = np.concatenate([p[0] for p in parts])
        want_pos, want_target = checks.query_positions(np.concatenate([p[1] for p in parts]))
        assert np.array_equal(tokens, want_tokens)
        assert np.array_equal(pos, want_pos) and np.array_equal(target, want_target)


@given(kappa=st.integers(1, 12), vocab=st.integers(2, 80), extra=st.integers(0, 30), passes=st.integers(1, 3),
       noise=st.integers(1, 40), seed=st.integers(0, 2**31))
def test_hard_cases_are_task_sequences_that_cover_the_proofs_cases(kappa, vocab, extra, passes, noise, seed):
    """Every constructed sequence parses as an MQAR sequence with correct labels; every value is an answer in both
    coverage groups; keys are queried again after noise; the oldest key is queried last, after the newest; every
    noise id occurs."""
    cfg = MQARConfig(kappa, vocab, (2 + passes) * kappa + extra, num_examples=1, noise_vocab=noise,
                     query_passes=passes)
    ids, Q, T = cfg.tokens, cfg.seq_len - 2 * kappa, cfg.seq_len
    packed, alternating, decay, *by_queries = hard_cases(cfg, seed)
    assert len(by_queries) == (kappa > 1)
    for (tokens, labels), length in zip((packed, alternating, decay, *by_queries),
                                        (min(T, 6 * kappa),) * 2 + (T, T)):
        assert tokens.shape == labels.shape and tokens.shape[1] == length
        for seq, lab in zip(tokens, labels):
            assert sorted(seq[0:2 * kappa:2]) == list(range(kappa))
            assert all(ids.values_start <= v < ids.noise_start for v in seq[1:2 * kappa:2])
            assert all(x < kappa or x >= ids.noise_start for x in seq[2 * kappa:])
            assert np.array_equal(_parse(seq, cfg)[1], lab)
    for tokens, labels in (packed, alternating):
        answers = labels[labels != IGNORE]
        if (labels[0] != IGNORE).sum() >= kappa:  # a whole pass per sequence: every value is an answer
            assert set(answers.tolist()) == set(range(vocab))
        assert len(tokens) == -(-vocab // kappa)
    assert (packed[0][:, 2 * kappa:] < kappa).all()  # packed: only queries
    assert (alternating[0][:, 2 * kappa + 1::2] >= ids.noise_start).all()
    if min(Q, 4 * kappa) // 2 >= 2 * kappa:  # every key queried, then noise, then queried again
        seq = alternating[0][0, 2 * kappa:]
        assert all(np.count_nonzero(seq == k) >= 2 for k in range(kappa))
    tail = min(Q, 4)
    for group in (decay, *by_queries):
        seq = group[0][0]
        oldest, newest = seq[0], seq[2 * kappa - 2]
        assert list(seq[T - tail:]) == [oldest, oldest, newest, oldest][4 - tail:]
        assert (group[1][0, T - tail:] != IGNORE).all() and (group[1][0, :2 * kappa] == IGNORE).all()
    if Q > tail:
        assert set(np.unique(decay[0][:, 2 * kappa:T - tail]) - ids.noise_start) == \
            set(range(min(noise, len(decay[0]) * (Q - tail))))
    if by_queries:  # the other keys fill the region before the last queries
        seq = by_queries[0][0][0]
        assert (seq[2 * kappa:] < kappa).all() and seq[0] not in seq[2 * kappa:T - tail]

def test_hard_cases_cover_every_value_at_the_default_sizes():
    """The kappa = 32, |V| = 512 default: every value is an answer (a sample of 32 sequences misses about 60)."""
    cfg = MQARConfig(32, 512, 256, num_examples=32)
    packed, alternating, *_ = hard_cases(cfg, 0)
    for _, labels in (packed, alternating):
        assert set(labels[labels != IGNORE].tolist()) == set(range(512))
    sample = generate(cfg, 1)[1]
    assert len(set(sample[sample != IGNORE].tolist())) < 512
