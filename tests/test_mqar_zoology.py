"""The zoology-style MQAR / AR options of verify.tasks.mqar (Koren et al. 2026), and the default layout pinned."""
from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from common.errors import RequirementError
from verify.tasks import mqar
from verify.tasks.mqar import IGNORE, MQARConfig, generate


def test_default_layout_unchanged():
    """Pinned outputs of the default layout: the stored results and the checks' sequences depend on them."""
    t, l = generate(MQARConfig(3, 5, 12, num_examples=2, noise_vocab=2), 7)
    assert t.tolist() == [[0, 7, 2, 5, 1, 3, 0, 8, 2, 1, 8, 8], [0, 7, 1, 3, 2, 6, 9, 8, 9, 2, 0, 1]]
    assert l.tolist() == [[-100, -100, -100, -100, -100, -100, 4, -100, 2, 0, -100, -100],
                          [-100, -100, -100, -100, -100, -100, -100, -100, -100, 3, 4, 0]]
    t, l = generate(MQARConfig(2, 4, 9, num_examples=1, query_passes=2), 3)
    assert t.tolist() == [[0, 2, 1, 5, 1, 6, 0, 0, 1]] and l.tolist() == [[-100, -100, -100, -100, 3, -100, 0, 0, 3]]


@pytest.mark.parametrize("block", [7, 100, 1000, 1 << 22])
@pytest.mark.parametrize("args,kw,seed,digest", [
    ((16, 512, 64), dict(num_examples=300), (0, 0), "354cc862ad260679"),
    ((8, 1024, 64), dict(num_examples=77, random_fillers=False), 3, "2a91918b48dfd98b"),
    ((4, 64, 9), dict(num_examples=50, reduce_to_ar=True), (2, 1), "f79f2999c272f752"),
    ((8, 128, 17), dict(num_examples=100, reduce_to_ar=True, random_fillers=False), 7, "289c5f6d7ab6d64b"),
    ((80, 512, 161), dict(num_examples=40, reduce_to_ar=True), (0, 0), "432059b6a8799021"),
    ((5, 64, 30), dict(num_examples=64), 11, "42546903e53cad8d"),
])
def test_zoology_draw_in_blocks_is_pinned(monkeypatch, block, args, kw, seed, digest):
    """The zoology generator draws its permutations in blocks of rows and builds AR's sequences at the cut's size
    (bounded memory): whatever the block, the sequences are the ones the one-shot draw of the whole packed sequence
    gave (digests of that form's output, which the stored runs used), and equal to the one-shot formula written out
    here."""
    monkeypatch.setattr(mqar, "_BLOCK_ELEMS", block)
    t, l = generate(MQARConfig(*args, layout="zoology", **kw), seed)
    assert t.dtype == l.dtype == np.int64
    assert hashlib.sha256(t.tobytes() + l.tobytes()).hexdigest()[:16] == digest
    rng, (K, V), S = np.random.default_rng(seed), args[:2], kw["num_examples"]
    assert (t[:, 0:2 * K:2] == 1 + np.argsort(rng.random((S, V // 2 - 1)), axis=1)[:, :K]).all()
    assert (t[:, 1:2 * K:2] == V // 2 + np.argsort(rng.random((S, V - V // 2)), axis=1)[:, :K]).all()


@pytest.mark.parametrize("rows,n,k", [(50, 1, 1), (40, 7, 7), (40, 64, 1), (40, 64, 8), (40, 64, 9), (30, 511, 16),
                                       (20, 25_000, 1000), (5, 25_000, 24_999)])
def test_the_k_smallest_in_order_are_argsorts_first_k(rows, n, k):
    """The partition path (k <= n / 8) and the sort path give argsort's first k columns on uniform draws."""
    x = np.random.default_rng(n + k).random((rows, n))
    assert (mqar._smallest_in_order(x, k) == np.argsort(x, axis=1)[:, :k]).all()


@pytest.mark.parametrize("nf,V,L,fillers", [(16, 512, 64, True), (8, 128, 32, False), (4, 64, 24, True)])
def test_zoology_mqar_layout(nf, V, L, fillers):
    t, l = generate(MQARConfig(nf, V, L, num_examples=50, layout="zoology", random_fillers=fillers), 1)
    assert t.shape == l.shape == (50, L)
    keys, vals = t[:, 0:2 * nf:2], t[:, 1:2 * nf:2]
    assert ((keys >= 1) & (keys < V // 2)).all() and ((vals >= V // 2) & (vals < V)).all()
    assert all(len(set(r)) == nf for r in keys) and all(len(set(r)) == nf for r in vals)
    for s in range(50):
        q = np.nonzero(l[s] != IGNORE)[0]
        assert len(q) == nf and ((q - 2 * nf) % 2 == 0).all() and (q >= 2 * nf).all()
        assert sorted(t[s, q]) == sorted(keys[s])  # every key queried once
        lookup = dict(zip(keys[s], vals[s]))
        assert all(l[s, p] == lookup[t[s, p]] for p in q)  # label = the key's value (a token id)
        others = np.setdiff1d(np.arange(2 * nf, L), q)
        if not fillers:
            assert (t[s, others] == 0).all()
    if L == 4 * nf:  # fully packed: q r q r ...
        assert (l[:, 2 * nf::2] != IGNORE).all() and (l[:, 2 * nf + 1::2] == IGNORE).all()
    if fillers:  # random fillers are uniform over [0, V): about half land in the value range
        f = t[:, 2 * nf + 1::2]
        assert 0.35 < (f >= V // 2).mean() < 0.65


def test_zoology_ar():
    t, l = generate(MQARConfig(8, 128, 17, num_examples=400, layout="zoology", reduce_to_ar=True), 2)
    assert t.shape == (400, 17) and ((l != IGNORE).sum(1) == 1).all() and (l[:, 16] != IGNORE).all()
    which = (t[:, 0:16:2] == t[:, 16:17]).argmax(1)  # the queried fact is uniform over the N_f facts
    assert np.bincount(which, minlength=8).min() > 20
    assert (l[:, 16] == t[np.arange(400), 2 * which + 1]).all()


@pytest.mark.parametrize("kw,needle", [
    (dict(kappa=16, vocab_size=64, seq_len=64), "V > L"),
    (dict(kappa=16, vocab_size=512, seq_len=60), "L >= 2 N_f N_k + 2 N_f"),
    (dict(kappa=10, vocab_size=512, seq_len=118, key_repeats=5), "L >= 2 N_f N_k + 2 N_f (the facts, then one query "
                                                                  "slot per key) = 120"),
    (dict(kappa=4, vocab_size=512, seq_len=16, key_repeats=0), "key_repeats N_k an integer >= 1, got key_repeats=0"),
    (dict(kappa=4, vocab_size=512, seq_len=32, key_repeats=2.5), "an integer >= 1, got key_repeats=2.5"),
    (dict(kappa=4, vocab_size=512, seq_len=32, key_repeats=True), "an integer >= 1, got key_repeats=True"),
    (dict(kappa=4, vocab_size=512, seq_len=9, reduce_to_ar=True, key_repeats=2), "key_repeats = 1"),
    (dict(kappa=10, vocab_size=64, seq_len=62, key_repeats=4), "N_f N_k <= V - V//2"),
    (dict(kappa=4, vocab_size=512, seq_len=33), "even seq_len"),
    (dict(kappa=4, vocab_size=512, seq_len=16, reduce_to_ar=True), "2 N_f + 1"),
    (dict(kappa=40, vocab_size=64, seq_len=9), "N_f <= V//2 - 1"),
    (dict(kappa=4, vocab_size=512, seq_len=16, query_passes=2), "query_passes"),
])
def test_zoology_bad_input(kw, needle):
    with pytest.raises(RequirementError, match=re.escape(needle)):
        generate(MQARConfig(num_examples=2, layout="zoology", **kw), 0)
    with pytest.raises(RequirementError, match="layout"):
        generate(MQARConfig(4, 64, 16, layout="nope"), 0)
    with pytest.raises(RequirementError, match="key_repeats is an option of layout 'zoology'"):
        generate(MQARConfig(4, 64, 16, key_repeats=2), 0)


@pytest.mark.parametrize("nf,V,L,R", [(10, 512, 128, 5), (10, 512, 128, 2), (3, 64, 40, 4), (4, 64, 32, 3)])
def test_repeated_keys(nf, V, L, R):
    """Koren et al.'s repeated keys: each key stated N_k times, all N_f N_k values distinct, every key queried once,
    the label the value of the key's LAST statement (read here by overwriting a lookup left to right)."""
    S = 400
    t, l = generate(MQARConfig(nf, V, L, num_examples=S, layout="zoology", key_repeats=R), 5)
    C = 2 * nf * R
    keys, vals = t[:, 0:C:2], t[:, 1:C:2]
    assert ((keys >= 1) & (keys < V // 2)).all() and ((vals >= V // 2) & (vals < V)).all()
    last_pos = []
    for s in range(S):
        counts = np.unique(keys[s], return_counts=True)[1]
        assert len(counts) == nf and (counts == R).all()
        assert len(set(vals[s])) == nf * R
        lookup, pos = {}, {}
        for i, (k, v) in enumerate(zip(keys[s], vals[s])):
            lookup[k], pos[k] = v, i
        q = np.nonzero(l[s] != IGNORE)[0]
        assert len(q) == nf and (q >= C).all() and ((q - C) % 2 == 0).all()
        assert sorted(t[s, q]) == sorted(lookup)
        assert all(l[s, p] == lookup[t[s, p]] for p in q)
        first = {k: i for i, k in reversed(list(enumerate(keys[s])))}
        assert all(l[s, p] != vals[s][first[t[s, p]]] for p in q)  # not the first statement's value
        last_pos += list(pos.values())
    # the repeats interleave: a key's last statement is not confined to the last N_f facts
    assert np.mean(np.array(last_pos) < nf * (R - 1)) > 0.05


def test_repeated_keys_one_repeat_is_zoology():
    """key_repeats = 1 is the zoology generator itself (same numbers; the pinned digests above hold it)."""
    a = generate(MQARConfig(16, 512, 64, num_examples=50, layout="zoology"), 3)
    b = generate(MQARConfig(16, 512, 64, num_examples=50, layout="zoology", key_repeats=1), 3)
    assert all((x == y).all() for x, y in zip(a, b))
