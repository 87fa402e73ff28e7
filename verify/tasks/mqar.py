"""Multi-query associative recall (MQAR) as in Huang et al. §5.1, with the gaps of the paper settled.

A sequence is ``k_1 v_1 ... k_kappa v_kappa`` (the kappa keys in random order, each with an iid uniform value), then a
query region of length ``seq_len - 2 kappa`` in which every key is queried exactly ``query_passes`` times (each pass a
fresh random order) at random positions, every other slot holding a random noise token. Keys, values and noise use
disjoint token ids (``constructions.layout.MQARTokens``: keys first, then values, then noise). Labels are the value
index (0..|V|-1) at query positions and ``IGNORE`` (-100) elsewhere, so the label sits at the query's own position,
as in zoology.

Choices for the paper's gaps (§4.1): keys are a permutation (iid keys would make the task ill-posed); queries and
noise positions are uniform over the query region (so adjacent queries happen); ids are disjoint.

``generate_torch`` draws the same distribution (disjoint layout) with torch integer operations on any device, so a
check on the GPU never waits for the host: a counter-based hash of (seed, stream, element index) replaces numpy's
generator, so its sequences differ from ``generate``'s for the same seed, but they are a pure function of
(config, seed), the same on every device (integer arithmetic is exact), and ``device_batches`` cuts a check into
batches as ``verify.checks`` does.

``layout="zoology"`` gives instead the MQAR and AR variants of Koren et al. 2026 (zoology's ``multiquery_ar``, see
``_generate_zoology``): one vocabulary of ``vocab_size`` tokens split in halves, labels that are token ids, the query
section fully packed when ``seq_len = 4 kappa``, random fillers on or off, ``reduce_to_ar`` for AR, and
``key_repeats`` N_k for the paper's appendix repeated-keys task (each key stated N_k times with different values, the
query asking for the last). The default ``layout="disjoint"`` is the generator above, unchanged.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, replace

import numpy as np
import torch

from common.errors import require

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only torch: the device draw runs as torch operations
    triton = None
from constructions.layout import MQARTokens

IGNORE = -100
LAYOUTS = ("disjoint", "zoology")


@dataclass(frozen=True)
class MQARConfig:
    kappa: int
    vocab_size: int
    seq_len: int
    num_examples: int = 256
    noise_vocab: int = 1
    query_passes: int = 1
    layout: str = "disjoint"  # "disjoint" (above) or "zoology" (Koren et al. 2026 / zoology, see _generate_zoology)
    random_fillers: bool = True  # zoology only: non-query slots uniform in [0, vocab_size) (else token 0)
    reduce_to_ar: bool = False  # zoology only: AR, N_f facts then one query (seq_len = 2 kappa + 1)
    key_repeats: int = 1  # zoology only: N_k, each key stated N_k times with different values (see _repeated_facts)

    @property
    def tokens(self) -> MQARTokens:
        return MQARTokens(self.kappa, self.vocab_size, self.noise_vocab)

    @property
    def num_queries(self) -> int:
        return self.kappa * self.query_passes

    def validate(self) -> None:
        require(self.layout in LAYOUTS, f"MQAR layout must be one of {LAYOUTS}, got {self.layout!r}")
        require(self.layout == "zoology" or self.key_repeats == 1,
                f"key_repeats is an option of layout 'zoology', got key_repeats={self.key_repeats} with layout "
                f"{self.layout!r}")
        if self.layout == "zoology":
            return _validate_zoology(self)
        require(self.kappa >= 1, f"MQAR needs kappa >= 1, got kappa={self.kappa}")
        require(self.vocab_size >= 2, f"MQAR needs |V| >= 2 values, got vocab_size={self.vocab_size}")
        require(self.noise_vocab >= 1, f"MQAR needs noise_vocab >= 1, got noise_vocab={self.noise_vocab}")
        require(self.query_passes >= 1, f"MQAR needs query_passes >= 1, got query_passes={self.query_passes}")
        require(self.num_examples >= 1, f"MQAR needs num_examples >= 1, got num_examples={self.num_examples}")
        need = 2 * self.kappa + self.num_queries
        require(self.seq_len >= need, f"MQAR needs seq_len >= 2*kappa + kappa*query_passes = {need} "
                                      f"(kappa={self.kappa}), got seq_len={self.seq_len}")


def generate(config: MQARConfig, seed: int | tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and labels, both int64 of shape (num_examples, seq_len); a pure function of (config, seed).

    ``seed`` is anything ``numpy.random.default_rng`` takes (an int, or a tuple such as (seed, batch_index)).
    """
    config.validate()
    if config.layout == "zoology":
        return _generate_zoology(config, seed)
    rng = np.random.default_rng(seed)
    S, K, T, ids = config.num_examples, config.kappa, config.seq_len, config.tokens
    Q, nq = T - 2 * K, config.num_queries

    order = np.argsort(rng.random((S, K)), axis=1)  # keys of the KV section, in order
    value_of_key = rng.integers(0, config.vocab_size, size=(S, K))
    tokens = _facts(order, value_of_key, T, ids)

    tokens[:, 2 * K:] = ids.noise_start + rng.integers(0, config.noise_vocab, size=(S, Q))
    queried = np.concatenate([np.argsort(rng.random((S, K)), axis=1) for _ in range(config.query_passes)], axis=1)
    chosen = np.argpartition(rng.random((S, Q)), nq - 1, axis=1)[:, :nq] if nq < Q else np.tile(np.arange(Q), (S, 1))
    slots = 2 * K + np.sort(chosen, axis=1)  # nq distinct uniform slots, in order
    return _queries(tokens, value_of_key, slots, queried)


def _facts(order: np.ndarray, value_of_key: np.ndarray, length: int, ids: MQARTokens) -> np.ndarray:
    """Tokens (rows, length) whose KV section states the keys in ``order`` (rows, kappa) with their values; the rest
    is left for the caller to fill."""
    rows, K = np.arange(len(order))[:, None], order.shape[1]
    tokens = np.empty((len(order), length), dtype=np.int64)
    tokens[:, 0:2 * K:2] = order
    tokens[:, 1:2 * K:2] = ids.values_start + value_of_key[rows, order]
    return tokens


def _queries(tokens: np.ndarray, value_of_key: np.ndarray, slots: np.ndarray, keys: np.ndarray):
    """(tokens, labels): ``keys`` (rows, q) placed at ``slots`` (rows, q), each labelled with its key's value."""
    rows = np.arange(len(tokens))[:, None]
    tokens[rows, slots] = keys
    labels = np.full(tokens.shape, IGNORE, dtype=np.int64)
    labels[rows, slots] = value_of_key[rows, keys]
    return tokens, labels


def hard_cases(config: MQARConfig, seed) -> list[tuple[np.ndarray, np.ndarray]]:
    """Sequences of the task (disjoint layout) that a random sample rarely holds, in groups of equal length and query
    count: (tokens, labels) per group, each (rows, length). A construction's proof claims its margin for every
    sequence of length at most seq_len, so the check scores these beside the random sample:

    * **coverage and repeats**, twice: ceil(|V| / kappa) sequences of length min(seq_len, 6 kappa) whose values run
      through a random permutation of all |V| values (every value an answer where a pass fits), the query region
      filled with passes of random key orders (every key queried again), once packed (adjacent queries throughout, the
      first right after the last value) and once alternating with noise (a key queried, noise written, the key
      queried again); short, so that covering a large vocabulary stays cheap;
    * **decay**: ceil(noise_vocab / (Q - 4)) sequences of length seq_len (Q = seq_len - 2 kappa) whose query region
      is noise, cycling through every noise id, then the oldest-written key twice (a repeat at once), the
      newest-written key, and the oldest key at the last position (the last min(Q, 4) of these): the oldest value
      after the longest decay, right after another key's query; and (kappa > 1) one such sequence whose region before
      those four queries the other keys fill instead of noise.
    """
    require(config.layout == "disjoint", f"hard cases are of the disjoint layout, got {config.layout!r}")
    config.validate()
    rng = np.random.default_rng(seed)
    K, V, T, ids = config.kappa, config.vocab_size, config.seq_len, config.tokens

    def facts(rows: int, values: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(rng.random((rows, K)), axis=1)
        return _facts(order, values, length, ids), order

    n_cover, short = -(-V // K), min(T, 6 * K)
    groups = []
    for step in (1, 2):  # queries packed; queries alternating with noise
        perm = np.concatenate([rng.permutation(V), rng.integers(0, V, n_cover * K - V)])
        values = perm.reshape(n_cover, K)
        tokens, _ = facts(n_cover, values, short)
        slots = np.arange(2 * K, short, step)
        noise = np.arange(n_cover * (short - 2 * K - len(slots))).reshape(n_cover, -1) % config.noise_vocab
        tokens[:, 2 * K + 1:short:2] = ids.noise_start + noise if step == 2 else tokens[:, 2 * K + 1:short:2]
        passes = np.concatenate([np.argsort(rng.random((n_cover, K)), axis=1)
                                 for _ in range(-(-len(slots) // K))], axis=1)
        groups.append(_queries(tokens, values, np.tile(slots, (n_cover, 1)), passes[:, :len(slots)]))

    Q = T - 2 * K
    tail = min(Q, 4)

    def last(order):  # oldest, oldest, newest, oldest: the last ``tail`` of them
        return np.stack([order[:, 0], order[:, 0], order[:, K - 1], order[:, 0]], axis=1)[:, 4 - tail:]

    n_decay = max(1, -(-config.noise_vocab // max(Q - tail, 1)))
    values = rng.integers(0, V, size=(n_decay, K))
    tokens, order = facts(n_decay, values, T)
    noise = np.arange(n_decay * (Q - tail)).reshape(n_decay, -1) % config.noise_vocab
    tokens[:, 2 * K:T - tail] = ids.noise_start + noise
    groups.append(_queries(tokens, values, np.tile(np.arange(T - tail, T), (n_decay, 1)), last(order)))
    if K > 1:  # the same decay through queries of the other keys instead of noise
        values = rng.integers(0, V, size=(1, K))
        tokens, order = facts(1, values, T)
        others = [rng.permutation(order[0, 1:]) for _ in range(-(-(Q - tail) // (K - 1)))]
        keys = np.concatenate([*others, np.empty(0, np.int64)])[:Q - tail]
        groups.append(_queries(tokens, values, np.arange(2 * K, T)[None], np.concatenate([keys, last(order)[0]])[None]))
    return groups


# ----------------------------------------------------------------------------------------------------------------
# The same task drawn on a device (torch): a counter-based hash, identical on every device
# ----------------------------------------------------------------------------------------------------------------

_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """x * c mod 2^32 for int64 tensors of 32-bit values, in two 16-bit halves of c (no int64 product overflows)."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _mix(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 (C. Wellons' 32-bit integer hash): a bijection of 32-bit values with full avalanche."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _entropy(seed, *more: int) -> tuple[int, ...]:
    return (*(seed if isinstance(seed, tuple) else (seed,)), *more)


def _bits(seed, stream: int, shape: tuple[int, ...], device) -> torch.Tensor:
    """62 pseudo-random bits (int64 >= 0) per element of ``shape``: two chains of ``_mix`` over the element's index,
    keyed by four 32-bit words of numpy's SeedSequence of (seed, stream). Each chain is a bijection of the index, so
    the values of one draw are distinct (no ties when sorted); the numbers depend on (seed, stream, index) only.

    On CUDA with Triton one kernel computes them in uint32 arithmetic (``_bits_kernel``: the same numbers; as torch
    operations a draw is about 80 launches, which bound a check of small batches by the host)."""
    w = [int(v) for v in np.random.SeedSequence(_entropy(seed, stream)).generate_state(4, np.uint32)]
    n = int(np.prod(shape))
    require(n <= 2 ** 32, f"a device MQAR draw holds at most 2^32 tokens per batch, got {n}")
    if triton is not None and torch.device(device).type == "cuda":
        out = torch.empty(shape, dtype=torch.int64, device=device)
        _bits_kernel[(triton.cdiv(n, _BITS_BLOCK),)](out, n, *w, BLOCK=_BITS_BLOCK)
        return out
    e = torch.arange(n, dtype=torch.int64, device=device).view(shape)
    hi, lo = _mix(_mix(e ^ w[0]) ^ w[1]), _mix(_mix(e ^ w[2]) ^ w[3])
    return (hi << 30) | (lo >> 2)


_BITS_BLOCK = 1024

if triton is not None:
    @triton.jit
    def _mix_u32(x):
        """``_mix`` on uint32 (products wrap mod 2^32, shifts are logical)."""
        x = x ^ (x >> 16)
        x = x * 0x7FEB352D
        x = x ^ (x >> 15)
        x = x * 0x846CA68B
        return x ^ (x >> 16)

    @triton.jit
    def _bits_kernel(OUT, n, w0, w1, w2, w3, BLOCK: tl.constexpr):
        """``_bits`` of the indices this program covers: (hi << 30) | (lo >> 2), hi and lo the two chains."""
        idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        e = idx.to(tl.uint32)  # n <= 2^32: every index fits
        hi = _mix_u32(_mix_u32(e ^ w0.to(tl.uint32)) ^ w1.to(tl.uint32))
        lo = _mix_u32(_mix_u32(e ^ w2.to(tl.uint32)) ^ w3.to(tl.uint32))
        bits = (hi.to(tl.uint64) << 30) | (lo >> 2).to(tl.uint64)
        tl.store(OUT + idx, bits.to(tl.int64), mask=idx < n)


def _permutations(seed, stream: int, rows: int, n: int, device) -> torch.Tensor:
    """(rows, n): a uniform random permutation of 0..n-1 per row (argsort of distinct random keys)."""
    return _bits(seed, stream, (rows, n), device).argsort(dim=1, stable=True)


def generate_torch(config: MQARConfig, seed, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids (num_examples, seq_len), query positions and their value labels (num_examples, num_queries) in
    increasing position order, int64 tensors on ``device``: ``generate``'s distribution (disjoint layout), labels as
    ``verify.checks.query_positions`` returns them, drawn by torch integer operations (no host work but the seed).

    A pure function of (config, seed), the same on every device; sequence i depends on (seed, i) and the task's sizes
    but not on num_examples (a longer draw extends a shorter one); not ``generate``'s numbers for the same seed."""
    config.validate()
    require(config.layout == "disjoint", f"generate_torch draws the disjoint layout, got layout={config.layout!r}")
    S, K, T, ids = config.num_examples, config.kappa, config.seq_len, config.tokens
    Q, nq = T - 2 * K, config.num_queries
    order = _permutations(seed, 0, S, K, device)  # keys of the KV section, in order
    value_of_key = _bits(seed, 1, (S, K), device) % config.vocab_size
    tokens = torch.empty((S, T), dtype=torch.int64, device=device)
    tokens[:, 0:2 * K:2] = order
    tokens[:, 1:2 * K:2] = ids.values_start + value_of_key.gather(1, order)
    tokens[:, 2 * K:] = ids.noise_start + _bits(seed, 2, (S, Q), device) % config.noise_vocab
    queried = torch.cat([_permutations(seed, 4 + p, S, K, device) for p in range(config.query_passes)], dim=1)
    slots = 2 * K + _permutations(seed, 3, S, Q, device)[:, :nq].sort(dim=1).values  # nq distinct uniform slots
    tokens.scatter_(1, slots, queried)
    return tokens, slots, value_of_key.gather(1, queried)


def device_batches(task: MQARConfig, seed, batch_size: int, device):
    """(tokens, positions, labels) of the check's batches of at most ``batch_size`` sequences, batch i being
    ``generate_torch(task with num_examples=its size, seed=(seed, i), device)``."""
    for i, start in enumerate(range(0, task.num_examples, batch_size)):
        size = min(batch_size, task.num_examples - start)
        yield generate_torch(replace(task, num_examples=size), _entropy(seed, i), device)


# ----------------------------------------------------------------------------------------------------------------
# The zoology-style MQAR / AR of Koren et al. 2026 (recall scaling laws)
# ----------------------------------------------------------------------------------------------------------------


def _validate_zoology(c: MQARConfig) -> None:
    V, K, L = c.vocab_size, c.kappa, c.seq_len
    require(K >= 1, f"zoology MQAR needs N_f = kappa >= 1, got kappa={K}")
    require(c.num_examples >= 1, f"zoology MQAR needs num_examples >= 1, got num_examples={c.num_examples}")
    require(c.query_passes == 1, f"zoology MQAR queries each key once (query_passes = 1), got {c.query_passes}")
    require(K <= V // 2 - 1, f"zoology MQAR needs N_f <= V//2 - 1 keys in {{1..V//2-1}}, got N_f={K}, V={V}")
    R = c.key_repeats
    require(isinstance(R, numbers.Integral) and not isinstance(R, bool) and R >= 1,
            f"zoology MQAR needs key_repeats N_k an integer >= 1, got key_repeats={R!r}")
    require(R == 1 or not c.reduce_to_ar, f"zoology AR states each key once (key_repeats = 1), got key_repeats={R}")
    require(K * R <= V - V // 2, f"zoology MQAR draws its N_f N_k = {K * R} values without replacement from the "
                                 f"{V - V // 2} of {{V//2..V-1}}: needs N_f N_k <= V - V//2, got N_f={K}, "
                                 f"key_repeats={R}, V={V}")
    if c.reduce_to_ar:
        require(L == 2 * K + 1, f"zoology AR needs seq_len = 2 N_f + 1 = {2 * K + 1}, got seq_len={L}")
        require(V > 4 * K, f"zoology AR is cut from an MQAR sequence of length 4 N_f and needs V > 4 N_f "
                           f"(zoology's V > L), got V={V}, N_f={K}")
        return
    require(L % 2 == 0, f"zoology MQAR needs an even seq_len, got seq_len={L}")
    require(V > L, f"zoology MQAR needs V > L (zoology's assertion), got V={V}, L={L}")
    require(L >= 2 * K * R + 2 * K, f"zoology MQAR needs L >= 2 N_f N_k + 2 N_f (the facts, then one query slot per "
                                    f"key) = {2 * K * R + 2 * K}, got L={L}, N_f={K}, key_repeats={R}")


_BLOCK_ELEMS = 1 << 22  # random numbers drawn at once by _first_of_permutations (32 MiB of float64)


def _first_of_permutations(rng: np.random.Generator, rows: int, n: int, k: int) -> np.ndarray:
    """``np.argsort(rng.random((rows, n)), axis=1)[:, :k]`` ((rows, k), int32: half the memory of int64 for the
    papers' 7.5M-sequence sets), drawn in blocks of rows.

    The same numbers as the one-shot form (``Generator.random`` fills row-major from one stream, and a row's argsort
    reads only that row), at a memory of ``_BLOCK_ELEMS`` doubles instead of ``rows x n``: the one-shot form needs
    about 16 x rows x n bytes, 21 GB for a paper-sized training set (2.56M sequences, V = 1024).
    """
    require(n < 2 ** 31, f"a permutation of {n} elements does not fit int32")
    out = np.empty((rows, k), dtype=np.int32)
    step = max(1, _BLOCK_ELEMS // max(n, 1))
    for a in range(0, rows, step):
        b = min(rows, a + step)
        out[a:b] = _smallest_in_order(rng.random((b - a, n)), k)
    return out


def _smallest_in_order(x: np.ndarray, k: int) -> np.ndarray:
    """``np.argsort(x, axis=1)[:, :k]`` for rows of distinct values: the indices of each row's k smallest, smallest
    first. Where k is well below the row length, a partition then a sort of the k (O(n + k log k) a row instead of
    O(n log n); measured 1.7-5 times faster at n = 512-1024, k = 16-32, 1.3 times at n = 25000, k = 1000). Rows with equal
    values among their k smallest may order those two differently from argsort, which itself leaves ties in no set
    order; uniform doubles tie there with probability about k n / 2^54 a row."""
    if 8 * k > x.shape[1]:
        return np.argsort(x, axis=1)[:, :k]
    part = np.argpartition(x, k - 1, axis=1)[:, :k]
    return np.take_along_axis(part, np.argsort(np.take_along_axis(x, part, axis=1), axis=1), axis=1)


def _ar_cut(keys: np.ndarray, values: np.ndarray, gaps: np.ndarray, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AR's sequences from the packed MQAR draw (L = 4 N_f, every query slot used) cut to its first 2 N_f + 1 tokens:
    the facts and the key in the first query slot (gap 0), labelled with its value; built at the cut's size, not
    the packed sequence's (a quarter of the packed arrays' memory, and no fillers: none survives the cut)."""
    S, K = keys.shape
    r = np.arange(S)
    first = which[r, np.argmin(gaps, axis=1)]  # gaps is a permutation of 0..N_f-1: the key at gap 0
    tokens = np.empty((S, 2 * K + 1), dtype=np.int64)
    tokens[:, 0:2 * K:2], tokens[:, 1:2 * K:2], tokens[:, 2 * K] = keys, values, keys[r, first]
    labels = np.full((S, 2 * K + 1), IGNORE, dtype=np.int64)
    labels[:, 2 * K] = values[r, first]
    return tokens, labels


def _generate_zoology(config: MQARConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """zoology's ``multiquery_ar`` as Koren et al. 2026 use it (power_a = 1, i.e. uniform gaps).

    Vocabulary: ``V = vocab_size`` tokens; keys are drawn without replacement from {1..V//2-1}, values without
    replacement from {V//2..V-1}; token 0 is the empty slot. The context is ``k_1 v_1 ... k_Nf v_Nf``; the query section
    (length L - 2 N_f) has ``space = (L - 2 N_f)/2`` slots of two tokens; N_f of them, uniformly at random without
    replacement, hold the N_f keys in random order (a key at offset ``2 * gap``). Every other position is token 0, or
    with ``random_fillers`` (every paper config) a uniform token in [0, V). With L = 4 N_f the section is fully packed,
    ``q r q r ...``. Labels are *token ids*: the queried key's value at the query's own position, IGNORE elsewhere
    (the model scores all V tokens). ``reduce_to_ar``: the packed sequence of length 4 N_f cut to its first 2 N_f + 1
    tokens, i.e. the facts and one uniformly chosen query.

    Same distribution as zoology's generator, not the same numbers (numpy ``default_rng``, not the global RNG).
    """
    rng = np.random.default_rng(seed)
    S, K, V, R = config.num_examples, config.kappa, config.vocab_size, config.key_repeats
    L = 4 * K if config.reduce_to_ar else config.seq_len
    vk = V // 2
    rows = np.arange(S)[:, None]
    keys = 1 + _first_of_permutations(rng, S, vk - 1, K)
    values = vk + _first_of_permutations(rng, S, V - vk, K * R)
    # the draws in order: keys, values, (with N_k > 1) the facts' order, fillers, gaps, which: at N_k = 1 the stream
    # the stored runs' sequences came from
    ctx_keys, ctx_values, answer = (keys, values, values) if R == 1 else _repeated_facts(rng, keys, values, R)
    C = 2 * K * R  # the facts' length
    fill = rng.integers(0, V, size=(S, L - C)) if config.random_fillers else None
    gaps = _first_of_permutations(rng, S, (L - C) // 2, K)
    which = _first_of_permutations(rng, S, K, K)  # which key sits in each chosen slot
    if config.reduce_to_ar:
        del fill  # the cut keeps no filler: every position after the facts holds a key
        return _ar_cut(keys, values, gaps, which)
    tokens = np.zeros((S, L), dtype=np.int64)
    tokens[:, 0:C:2], tokens[:, 1:C:2] = ctx_keys, ctx_values
    if fill is not None:
        tokens[:, C:] = fill
        del fill
    slots = C + 2 * gaps
    tokens[rows, slots] = keys[rows, which]
    labels = np.full((S, L), IGNORE, dtype=np.int64)
    labels[rows, slots] = answer[rows, which]
    return tokens, labels


def _repeated_facts(rng: np.random.Generator, keys: np.ndarray, values: np.ndarray, repeats: int):
    """The facts of the repeated-keys task (Koren et al.'s ``num_key_repeats`` N_k): (the N_f N_k facts' keys and
    values in context order, each of the N_f keys' answer), from ``keys`` (S, N_f) and ``values`` (S, N_f N_k), all
    distinct (drawn without replacement, as zoology draws the values of distinct keys).

    Occurrence o states key o // N_k with value ``values[:, o]``; the N_f N_k occurrences stand in a uniformly random
    order (one permutation per sequence, drawn here), so the repeats of a key interleave with the other keys' and a
    key's last statement can be anywhere in the facts; its answer is the value of that last statement. Our choice
    where the notes on the paper leave the layout open: blocks of a key's repeats, or rounds of all N_f keys, would
    let the position alone tell the last statement apart (with N_k = 1 this is zoology's context, one fact a key).
    """
    S, K = keys.shape
    rows = np.arange(S)[:, None]
    order = _first_of_permutations(rng, S, K * repeats, K * repeats)  # context fact p is occurrence order[:, p]
    where = np.argsort(order, axis=1).reshape(S, K, repeats)  # the context index of each occurrence, by key
    last = np.arange(K)[None, :] * repeats + np.argmax(where, axis=2)  # each key's last occurrence
    return keys[rows, order // repeats], values[rows, order], values[rows, last]
