"""The hash-recall certificate (``verify.recall_law.certificate_margin``) against the circuit's readout written out
directly: logit(x) = sum over writes (w, v) of c(w, q) g(x, v), for codes with any row norms, on sequences meeting the
certificate's preconditions. The certificate must lower-bound every query's margin."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st
from profiles import examples

from verify import recall_law as rl


def margins(E, H, tokens, labels):
    """Per query (no exact collision): logit(answer) - max other logit, the designed circuit's readout (every write
    tau >= 1 stores (token tau-1, token tau)); None where the query token keys another write (exact collision)."""
    g, c = E @ E.T, H @ H.T
    out = []
    for s in range(tokens.shape[0]):
        seq = tokens[s]
        for t in np.nonzero(labels[s] != -100)[0]:
            q, a = seq[t], labels[s, t]
            keys, values = seq[:t], seq[1:t + 1]
            if any(w == q and v != a for w, v in zip(keys, values)):
                out.append(None)
                continue
            logits = (c[keys, q][:, None] * g[values, :]).sum(0)
            out.append(logits[a] - np.delete(logits, a).max())
    return out


def certificate(E, H, tokens, labels):
    prof = rl.collision_profile(tokens, labels)
    return rl.certificate_margin(E, H, int(prof.n_w.max()), int(prof.multiplicity.max())), prof


def test_answer_and_competitor_writes_both_count():
    """One leaking write with value a (hash collision -e) and one with value x (+e): the margin is 1 - 2e, so the
    answer's and the competitor's writes must both be charged; charging only the larger one claimed 1 - e."""
    q, a, k, j, x = range(5)
    e = 0.2
    E = np.eye(5)
    H = np.zeros((5, 5))
    H[q, 0] = 1
    H[k, :2] = -e, np.sqrt(1 - e * e)
    H[j, [0, 2]] = e, np.sqrt(1 - e * e)
    H[a, 3] = H[x, 4] = 1
    tokens = np.array([[q, a, k, a, j, x, q]])
    labels = np.full_like(tokens, -100)
    labels[0, -1] = a
    (margin,) = margins(E, H, tokens, labels)
    cert, prof = certificate(E, H, tokens, labels)
    assert prof.multiplicity.max() == 2  # one write with value a, one with value x
    assert abs(margin - (1 - 2 * e)) < 1e-12
    assert 0 < cert <= margin and margin - cert < 1e-12


def test_rows_that_are_not_unit_scale_the_certificate():
    """Doubling every embedding row multiplies every logit by 4; so does the certificate (up to its rounding
    allowance). A certificate that assumed unit rows would stay put."""
    rng = np.random.default_rng(0)
    V, D, N = 12, 4096, 2048
    E = rng.standard_normal((V, D))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    F = rng.standard_normal((N, D)) / np.sqrt(N)
    tokens = np.array([[1, 2, 3, 4, 5, 6, 1, 3, 5]])
    labels = np.full_like(tokens, -100)
    labels[0, 6:] = [2, 4, 6]
    unit, _ = certificate(E, E @ F.T, tokens, labels)
    doubled, _ = certificate(2 * E, (2 * E) @ F.T, tokens, labels)
    assert unit > 0
    assert abs(doubled - 16 * unit) < 1e-9  # g x4 and c x4
    assert min(margins(2 * E, (2 * E) @ F.T, tokens, labels)) >= doubled


def test_one_short_row_lowers_the_certificate():
    """Shrinking one row to half its length shrinks that token's own logit: the certificate must follow."""
    rng = np.random.default_rng(1)
    V, D, N = 10, 2048, 1024
    E = rng.standard_normal((V, D))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    F = rng.standard_normal((N, D)) / np.sqrt(N)
    tokens = np.array([[1, 2, 3, 4, 1]])
    labels = np.full_like(tokens, -100)
    labels[0, -1] = 2
    before, _ = certificate(E, E @ F.T, tokens, labels)
    E[2] *= 0.5
    after, _ = certificate(E, E @ F.T, tokens, labels)
    (margin,) = margins(E, E @ F.T, tokens, labels)
    assert after < before and after <= margin


@settings(max_examples=examples(60), deadline=None)
@given(seed=st.integers(0, 10**6), vocab=st.integers(6, 20), d=st.integers(512, 2048), n_frac=st.floats(0.5, 1.0),
       scale_spread=st.floats(0.0, 0.5), length=st.integers(3, 8), queries=st.integers(1, 4))
def test_certificate_lower_bounds_every_margin(seed, vocab, d, n_frac, scale_spread, length, queries):
    """Random codes with rows of norm 1 +- scale_spread, random sequences: wherever the certificate is positive,
    no query (without an exact collision) has a smaller margin."""
    rng = np.random.default_rng(seed)
    n = max(1, int(d * n_frac))
    E = rng.standard_normal((vocab, d))
    E *= (1 + scale_spread * rng.uniform(-1, 1, (vocab, 1))) / np.linalg.norm(E, axis=1, keepdims=True)
    F = rng.standard_normal((n, d)) * np.sqrt(d / n) / np.sqrt(d)
    H = E @ F.T
    tokens = rng.integers(0, vocab, (3, length))
    labels = np.full_like(tokens, -100)
    for s in range(3):
        for t in rng.choice(np.arange(1, length), size=min(queries, length - 1), replace=False):
            earlier = np.nonzero(tokens[s, :t] == tokens[s, t])[0]  # a query recalls the value after its key
            if len(earlier) and earlier[0] + 1 <= t:
                labels[s, t] = tokens[s, earlier[0] + 1]
    if (labels == -100).all():
        return
    cert, _ = certificate(E, H, tokens, labels)
    if cert <= 0:
        return
    for m in margins(E, H, tokens, labels):
        assert m is None or m >= cert - 1e-12
