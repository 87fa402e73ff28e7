"""Checks: run a construction on an engine over generated tasks and compare with the theorem's claim.

The MQAR claim is exact recall: at every query position the argmax of the readout logits is the queried key's
value. Each check also reports the smallest logit margin (target logit minus the largest other logit) next to the
construction's proven lower bound on it.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import MISSING, asdict, dataclass, field, replace

import numpy as np
import torch

from common.errors import require
from constructions.layout import Construction
from verify import fused_readout, rounding
from verify.blocks import mixer_sizes
from verify.cli_support import strict
from verify.tasks.mqar import IGNORE, MQARConfig, device_batches, generate, hard_cases


@dataclass
class CheckResult:
    """One check of one construction on one engine: what was measured, what the proof claims, and the verdict.

    The verdict (``verdict``, ``reasons``) is PASS only when every obligation of the proof holds (decided by sympy at
    the construction's parameters) *and* the measurement meets the proof's claim:

    * ``margin``: every scored position recalled (argmax), and min margin >= proven margin - ``allowance``;
    * ``error``: every scored output within ``error_bound`` + ``allowance`` of the exact value;
    * ``probabilistic``: recall >= ``required_recall`` (the rule is stated in ``rule``).

    ``allowance`` is the engine's rounding allowance (``verify.rounding``). UNPROVEN means nothing failed but the
    proof does not cover these parameters (``outside``) or there is no bound to compare with: measured only.
    """

    construction: str
    theorem: str
    sizes: dict
    engine: str
    dtype: str
    sequences: int
    queries: int
    correct: int
    min_margin: float
    proven_margin: float | None
    seconds: float
    config: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    summary: str = ""  # the problem sizes in one short line, for the table (e.g. "k=8 |V|=128 T=100 d=136 N=8")
    required_recall: float | None = None  # probabilistic claims: pass iff recall >= this
    # Checks of a real-valued claim (e.g. Haar projections) instead of an argmax: the largest |output - exact| over
    # everything scored and the bound the proof derives on it.
    max_error: float | None = None
    error_bound: float | None = None
    claim: str = "margin"
    obligations: list = field(default_factory=list)  # [{"name", "statement", "holds"}], decided by sympy
    allowance: float = 0.0  # rounding allowance of the engine's dtype, in the units of the margin (or error)
    outside: str | None = None  # why the parameters are outside the proof (measured only)
    rule: str = ""  # the pass rule, in words
    weights_dtype: str = ""  # the coarsest dtype the weights were rounded to (stored file or engine)
    # engines other than the float64 reference: the largest |logit difference| from it on random tokens, and the
    # rounding model's bound on one logit (``compare_with_reference``); a difference above the bound FAILS
    reference_difference: float | None = None
    reference_bound: float | None = None
    # set by the command line (``audit_proof``) where the result's proof side is not its construction's proof
    proof_mismatch: str | None = None

    @property
    def recall(self) -> float:
        return self.correct / self.queries if self.queries else 0.0

    @property
    def failed_obligations(self) -> list[str]:
        return [o["name"] for o in self.obligations if not o["holds"]]

    @property
    def reasons(self) -> list[str]:
        """Why the check is not a PASS (empty for a PASS): failures first, then what leaves it unproven."""
        out = [f"obligation fails: {name}" for name in self.failed_obligations]
        if self.queries == 0:
            out.append("nothing was scored")
        elif self.claim == "error":
            if not self.max_error <= self.error_bound + self.allowance:
                out.append(f"max error {self.max_error:.6g} > bound {self.error_bound:.6g} + allowance "
                           f"{self.allowance:.3g}")
        elif self.claim == "probabilistic":
            if self.required_recall is not None and not self.recall >= self.required_recall:
                out.append(f"recall {self.recall:.4f} < required {self.required_recall:.4f} ({self.rule})")
        else:
            if self.correct < self.queries:
                out.append(f"{self.queries - self.correct} of {self.queries} scored positions not recalled")
            if self.proven_margin is not None and not self.min_margin >= self.proven_margin - self.allowance:
                out.append(f"min margin {self.min_margin:.10g} < proven {self.proven_margin:.10g} - allowance "
                           f"{self.allowance:.3g}: the proof claims more than the weights do")
        if self.outside:
            out.append(f"outside the proof: {self.outside}")
        if self.proof_mismatch:
            out.append(f"the result does not carry its construction's proof: {self.proof_mismatch}")
        if self.reference_difference is not None and not self.reference_difference <= self.reference_bound:
            out.append(f"engine {self.engine} disagrees with the float64 reference engine: max |logit difference| "
                       f"{self.reference_difference:.3g} > rounding bound {self.reference_bound:.3g}")
        bound = self.error_bound if self.claim == "error" else self.proven_margin
        if self.claim in ("margin", "error") and bound is not None and not self.allowance < abs(bound):
            out.append(f"undecidable in {self.dtype} with {self.weights_dtype or self.dtype} weights: the rounding "
                       f"allowance {self.allowance:.3g} is not below the proven bound {bound:.6g}")
        if out:
            return out
        if not self.obligations:
            return ["no obligations: nothing was proven"]
        if self.claim == "margin" and self.proven_margin is None:
            return ["no proven margin to compare with"]
        if self.claim == "probabilistic" and self.required_recall is None:
            return [f"no checkable prediction: {self.rule}"]
        return []

    @property
    def verdict(self) -> str:
        reasons = self.reasons
        if not reasons:
            return "PASS"
        return "UNPROVEN" if all(r.startswith(UNPROVEN_PREFIXES) for r in reasons) else "FAIL"

    @property
    def passed(self) -> bool:
        return self.verdict == "PASS"

    def as_dict(self) -> dict:
        """Strict-JSON-ready: a non-finite number becomes null, with the reason under ``undefined_values``."""
        body = {**asdict(self), "recall": self.recall, "verdict": self.verdict, "passed": self.passed,
                "reasons": self.reasons, "obligations_held": len(self.obligations) - len(self.failed_obligations),
                "obligations_total": len(self.obligations), "failed_obligations": self.failed_obligations}
        return strict(body)


UNPROVEN_PREFIXES = ("outside the proof", "no obligations", "no proven margin", "no checkable prediction",
                     "undecidable in")


def proof_fields(con: Construction, engine, seq_len: int, logit_bound: float) -> dict:
    """The proof's side of a CheckResult: claim, obligations (decided now, cached), proven bound, allowance."""
    proof = con.proof
    if proof is None:
        return {"claim": "margin", "obligations": [], "proven_margin": None, "allowance": 0.0,
                "outside": "the construction carries no proof"}
    obligations = [{"name": o.name, "statement": o.statement, "holds": bool(o.holds)} for o in proof.decide()]
    k = con.config.chain_length(seq_len)
    weights = weights_dtype(con, engine)
    if proof.claim == "error":
        allowance = 0.0  # the check computes it from its outputs' scale (error_allowance)
    else:
        allowance = rounding.margin_allowance(k, rounding_dtype(engine), weights, logit_bound)
    return {"claim": proof.claim, "obligations": obligations, "proven_margin": proof.margin, "allowance": allowance,
            "outside": proof.outside, "error_bound": proof.error_bound, "weights_dtype": weights}


def audit_proof(result: CheckResult, con: Construction, proof=MISSING) -> str | None:
    """Where ``result`` (what a Spec's ``check`` returned) does not carry the proof of ``con``: the first difference,
    or None. The verdict rests on the result's obligations and bound, and a check of a construction of one's own is
    code the verifier did not write, so the command line re-decides the proof here and compares:

    * every obligation of the proof is in the result, with the same statement and the same decision (a check may add
      obligations, as a check of stored weights does; it may not drop, rename or overturn one), and a proof without
      obligations gives a result without them (UNPROVEN, never PASS);
    * a proof whose parameters lie outside it (``outside``) gives a result that says so;
    * a margin proof's result compares against that margin; an error proof's result is an error claim (its bound may
      be derived from the proof at a measured quantity, as Haar's with Proposition 1's computed time is, so it is not
      compared); a probabilistic proof's check derives its own rule (e.g. hash-recall's certificate).

    ``proof``: the construction's proof as it was before the check ran (default ``con.proof``), so that a check
    that replaced it is compared with the one it was given.
    """
    if proof is None:
        return "the construction carries no proof, but the result has obligations" if result.obligations else None
    have = {o["name"]: o for o in result.obligations}
    decided = proof.decide()
    for o in decided:
        got = have.get(o.name)
        if got is None:
            return f"obligation {o.name!r} is missing"
        if got["statement"] != o.statement or bool(got["holds"]) != bool(o.holds):
            return (f"obligation {o.name!r} reads {got['statement']!r} = {bool(got['holds'])}, the proof decides "
                    f"{o.statement!r} = {bool(o.holds)}")
    if not decided and result.obligations:
        return f"the proof has no obligations, the result {len(result.obligations)}"
    if proof.outside and not result.outside:
        return f"the parameters are outside the proof ({proof.outside}), the result does not say so"
    if proof.claim == "margin" and (result.claim != "margin" or result.proven_margin != proof.margin):
        return (f"the proof claims a margin of {proof.margin!r}, the result compares with {result.claim} "
                f"{result.proven_margin!r}")
    if proof.claim == "error" and result.claim != "error":
        return f"the proof bounds an error, the result checks a {result.claim} claim"
    return None


def rounding_dtype(engine) -> str:
    """The dtype whose unit roundoff bounds the engine's arithmetic (coarser than its tensors for some engines)."""
    return getattr(engine, "rounding_dtype", engine.dtype_name)


def compare_with_reference(con: Construction, engine, seq_len: int, sequences: int = 4, seed: int = 0) -> dict:
    """The largest |logit difference| between ``engine`` and the float64 reference engine at every position of
    ``sequences`` random token sequences of length ``seq_len``, and the rounding model's bound on one logit there:
    ``relative_error(chain_length, rounding dtype, weights dtype) * logit_bound`` of the reference's hidden state
    (``verify.rounding``; the margin allowance is twice it)."""
    from verify.engines import make_engine
    from verify.engines.compare import max_logit_difference

    reference = make_engine("reference", "float64")
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, con.embedding.shape[0], (sequences, seq_len), generator=g)
    labels = torch.zeros_like(tokens)  # every position scored
    diff = max_logit_difference(con, engine, reference, tokens, labels)
    scale = float(logit_bound(con, reference.hidden(con, tokens)))
    k = con.config.chain_length(seq_len)
    bound = rounding.relative_error(k, rounding_dtype(engine), weights_dtype(con, engine)) * scale
    return {"reference_difference": diff, "reference_bound": bound}


def weights_dtype(con: Construction, engine) -> str:
    """The coarsest of the construction's stored weight dtype and the engine's dtype (the engine casts to it)."""
    stored = {str(t.dtype).removeprefix("torch.") for t in (con.embedding, con.readout, *con.mixer.values())}
    names = stored | {"float32" if engine.dtype_name == "tfloat32" else engine.dtype_name}
    return max(names, key=lambda n: rounding.UNIT_ROUNDOFF.get(n, 0.0))


def logit_bound(con: Construction, h: torch.Tensor) -> torch.Tensor:
    """max over rows of sum_i max_c |r_ci| |h_i| (0-dim, on h's device): bounds every logit |r_c . h| of the rows,
    and the magnitude the rounding allowance is relative to (``verify.rounding``)."""
    if h.numel() == 0:
        return h.new_zeros((), dtype=torch.float64)
    cache = con.__dict__.setdefault("_readout_cache", {})
    key = ("colmax", str(h.device))
    if key not in cache:
        cache[key] = con.readout.double().abs().amax(dim=0).to(h.device)
    return (h.reshape(-1, h.shape[-1]).double().abs() @ cache[key]).amax()


_PROGRESS: list = []  # the active progress callback(done, total), set by ``progress``


@contextlib.contextmanager
def progress(callback):
    """Within the block, checks report ``callback(done, total)`` after each batch (sequences or outputs done)."""
    _PROGRESS.append(callback)
    try:
        yield
    finally:
        _PROGRESS.pop()


def report_progress(done: int, total: int) -> None:
    if _PROGRESS:
        _PROGRESS[-1](done, total)


READOUT_CHUNK = 2 ** 25  # logits per readout chunk (128 MiB in float32): fewer, larger GEMMs were faster on the H100
# than L2-sized chunks of 2^23 (benchmarks/tools/harness_ablation.py, results/gpu/harness_ablation_h100_2026-11-24.json)


def _readout(con: Construction, device, dtype) -> torch.Tensor:
    cache = con.__dict__.setdefault("_readout_cache", {})
    key = (str(device), dtype)
    if key not in cache:
        cache[key] = con.readout.to(device, dtype)
    return cache[key]


def _finite_readout(con: Construction) -> bool:
    """Every readout entry finite (decided once per construction, on its own tensor): the fused readout's maxima
    skip NaN logits, so a readout that could make one is scored by the plain GEMM, which keeps them."""
    cache = con.__dict__
    if "_finite_readout" not in cache:
        cache["_finite_readout"] = bool(torch.isfinite(con.readout).all())
    return cache["_finite_readout"]


def _recall(con: Construction, h: torch.Tensor, target: torch.Tensor):
    """(correct, min margin) as 0-dim device tensors for hidden rows h (n, d) and value labels target (n,).

    The margin of a query is its target logit minus the largest other logit; a tie is not a recall.
    """
    return _recall_later(con, h, target)()


def _recall_later(con: Construction, h: torch.Tensor, target: torch.Tensor):
    """``_recall`` as a function to call later: on CUDA the fused readout (``verify.fused_readout``) runs now, and
    the certified float32 screen's few recomputed rows wait until the call, so that the caller can enqueue the next
    batch first."""
    work = torch.float64 if h.dtype == torch.float64 else torch.float32
    readout = _readout(con, h.device, work)
    target = target.reshape(-1, 1)
    require(readout.shape[0] >= 2, f"construction {con.name}: its readout has {readout.shape[0]} class(es); an argmax "
                                   f"over one class recalls every query whatever the state, so a recall check needs "
                                   f"at least 2")
    if target.numel() == 0:  # no query: none recalled, no margin
        done = h.new_tensor(0, dtype=torch.int64), h.new_tensor(float("inf"), dtype=work)
    elif not fused_readout.available(h, readout.shape[0]) or not _finite_readout(con):
        done = _recall_plain(h, readout, target, work)
    elif torch.backends.cuda.matmul.allow_tf32:  # a TF32 check: the kernel's TF32 values are the check's
        own, best_other = fused_readout.own_and_best_other(h, readout, target)
        # the kernel's running max skips a NaN logit: a row that is not finite is not recalled, and its margin NaN
        own = torch.where(torch.isfinite(h).all(dim=1), own, float("nan"))
        done = (own > best_other).sum(), (own - best_other).min()
    else:  # float32 verdicts certified from the TF32 pass, the undecided rows recomputed in float32
        screen = fused_readout.Screen(h, readout, target)
        return lambda: screen.result(lambda rows, t: _recall_plain(rows, readout, t, work))
    return lambda: done


def _recall_plain(h: torch.Tensor, readout: torch.Tensor, target: torch.Tensor, work: torch.dtype):
    """``_recall`` with the logits written, in chunks of at most READOUT_CHUNK, in the ``work`` dtype's GEMM."""
    target = target.reshape(-1, 1)
    correct, margin = [], []
    rows = max(1, READOUT_CHUNK // readout.shape[0])
    for i in range(0, len(target), rows):  # chunks of at most READOUT_CHUNK logits
        logits = h[i:i + rows].to(work) @ readout.T
        t = target[i:i + rows]
        own = logits.gather(1, t).squeeze(1)
        best_other = logits.scatter_(1, t, float("-inf")).amax(dim=1)  # in place: logits is ours
        correct.append((own > best_other).sum())
        margin.append((own - best_other).min())
    return torch.stack(correct).sum(), torch.stack(margin).min()


def score_queries(con: Construction, hidden: torch.Tensor, labels: torch.Tensor) -> tuple[int, int, float]:
    """(queries, correct, min margin) on the labelled positions of one batch (any number of queries per row)."""
    return score_batch(con, hidden, labels)[:3]


def worst_margin(a: float, b: float) -> float:
    """The smaller of two margins, NaN if either is (Python's ``min`` would keep the other and hide it)."""
    return a + b if math.isnan(a) or math.isnan(b) else min(a, b)


def score_batch(con: Construction, hidden: torch.Tensor, labels: torch.Tensor) -> tuple[int, int, float, float]:
    """``score_queries`` and ``logit_bound`` of the scored rows (the rounding allowance's scale)."""
    mask = labels.to(hidden.device) != IGNORE
    h = hidden[mask]
    correct, margin = _recall(con, h, labels.to(hidden.device)[mask])
    return int(mask.sum()), int(correct), float(margin), float(logit_bound(con, h))


def query_positions(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Query positions and targets, (batch, q) each; every row of an MQAR batch has the same number of queries."""
    rows, cols = np.nonzero(labels != IGNORE)
    pos = cols.reshape(labels.shape[0], -1)
    return pos, labels[rows, cols].reshape(pos.shape)


def _to_device(t: torch.Tensor, device) -> torch.Tensor:
    if torch.device(device).type != "cuda":
        return t
    return t.pin_memory().to(device, non_blocking=True)


PREFETCH, PART_TOKENS, WORKERS = 3, 2 ** 17, 8  # batches generated ahead; tokens per generated part; threads


def _batches(task: MQARConfig, seed: int, batch_size: int, prefetch: int = PREFETCH):
    """Batch i is the concatenation of parts j of at most ``PART_TOKENS // seq_len`` sequences (at least one), part
    j being ``generate(task with num_examples=its size, seed=(seed, i, j))``. The parts of the next ``prefetch``
    batches are generated on ``WORKERS`` threads while the engine runs the current one (numpy releases the GIL):
    generation overlaps the GPU, and the first batch is ready after one part's time, not one batch's."""
    sizes = [min(batch_size, task.num_examples - i) for i in range(0, task.num_examples, batch_size)]
    part = max(1, PART_TOKENS // task.seq_len)

    def make(i, j):
        tokens, labels = generate(replace(task, num_examples=min(part, sizes[i] - j)), (seed, i, j // part))
        return (tokens, *query_positions(labels))

    def submit(pool, i):
        return [pool.submit(make, i, j) for j in range(0, sizes[i], part)]

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = [submit(pool, i) for i in range(min(prefetch, len(sizes)))]
        for i in range(len(sizes)):
            if i + prefetch < len(sizes):
                futures.append(submit(pool, i + prefetch))
            parts = [f.result() for f in futures[i]]
            futures[i] = None
            yield tuple(np.concatenate(arrays) for arrays in zip(*parts))


def _hard_batches(task: MQARConfig, seed: int, batch_size: int):
    """``verify.tasks.mqar.hard_cases`` (seed (seed, 2^31)) as (tokens, positions, targets) batches of at most
    ``batch_size`` sequences."""
    for tokens, labels in hard_cases(task, (seed, 2**31)):
        for i in range(0, len(tokens), batch_size):
            yield (tokens[i:i + batch_size], *query_positions(labels[i:i + batch_size]))


def check_labelled(con: Construction, tokens, labels, engine, *, config: dict, summary: str,
                   batch_size: int = 256) -> CheckResult:
    """Run token ids (S, L) in batches and score every position whose label is not ``IGNORE`` (exact argmax).

    For tasks whose rows have different numbers of scored positions (KEEP n-TH, induction heads); MQAR uses the
    faster ``check_mqar``, which overlaps generation with the engine and never syncs per batch.
    """
    start = time.perf_counter()
    queries = correct = 0
    min_margin, bound = float("inf"), 0.0
    with engine.precision():
        for i in range(0, len(tokens), batch_size):
            tok = torch.as_tensor(tokens[i:i + batch_size])
            hidden = engine.hidden(con, tok)
            q, c, m, b = score_batch(con, hidden, torch.as_tensor(labels[i:i + batch_size]))
            queries, correct, min_margin, bound = queries + q, correct + c, worst_margin(min_margin, m), max(bound, b)
            report_progress(min(i + batch_size, len(tokens)), len(tokens))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return CheckResult(con.name, con.theorem, mixer_sizes(con.config), engine.name, engine.dtype_name, len(tokens),
                       queries, correct, min_margin, seconds=seconds, config=config, info=dict(con.info),
                       summary=summary, rule=MARGIN_RULE, **proof_fields(con, engine, tokens.shape[1], bound))


def check_mqar(con: Construction, task: MQARConfig, engine, seed: int = 0, batch_size: int = 256,
               constructed: bool = True) -> CheckResult:
    """Generate ``task.num_examples`` sequences in batches, run them, score every query; then the same for the
    task's constructed sequences (``verify.tasks.mqar.hard_cases``: every value an answer, repeated and adjacent
    queries, the oldest key after the longest decay), which the disjoint layout's proofs cover as well;
    ``constructed=False`` scores the random sequences alone (a typical-case measurement, ``verify.key_dim``).

    The engine computes its mixer output at the query positions only (``engine.hidden_at``; on mamba_ssm a
    query-only form of the block's forward), and no host sync happens inside the batch loop: a batch's readout is
    finished (``_recall_later``) once the next batch is enqueued. On a CUDA engine the sequences are drawn on the GPU
    (``verify.tasks.mqar.device_batches``: other numbers than numpy's ``generate`` for the same seed, the same
    distribution; the zoology layout is drawn on the host)."""
    require(con.tokens == task.tokens, f"construction {con.name} was built for tokens {con.tokens}, "
                                       f"but the task uses {task.tokens}")
    task.validate()
    start = time.perf_counter()
    queries = sequences = 0
    scored, tops = [], []
    with engine.precision():
        pending = None  # the previous batch's readout, finished once this batch is enqueued
        on_gpu = torch.device(engine.device).type == "cuda" and task.layout == "disjoint"
        batches = device_batches(task, seed, batch_size, engine.device) if on_gpu else _batches(task, seed, batch_size)
        hard = list(_hard_batches(task, seed, batch_size)) if constructed and task.layout == "disjoint" else []
        total = task.num_examples + sum(len(b[0]) for b in hard)
        for tokens, pos, target in itertools.chain(batches, hard):  # no host sync inside: the GPU runs ahead
            if not torch.is_tensor(tokens):
                tokens, pos, target = (_to_device(torch.from_numpy(a), engine.device) for a in (tokens, pos, target))
            h = engine.hidden_at(con, tokens, pos)  # (batch, q, d): the mixer at the query positions only
            tops.append(logit_bound(con, h))
            if pending is not None:
                scored.append(pending())
            pending = _recall_later(con, h.reshape(-1, h.shape[-1]), target)
            queries, sequences = queries + target.numel(), sequences + len(tokens)
            report_progress(sequences, total)
        if pending is not None:
            scored.append(pending())
    correct, margins = zip(*scored)
    correct, min_margin = int(torch.stack(correct).sum()), float(torch.stack(margins).min())
    bound = float(torch.stack(tops).max())
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    n_hard = total - task.num_examples
    summary = (f"k={task.kappa} |V|={task.vocab_size} T={task.seq_len} d={con.config.d_model} "
               f"N={con.config.d_state}" + (f" +{n_hard} constructed sequences" if n_hard else ""))
    return CheckResult(con.name, con.theorem, mixer_sizes(con.config), engine.name, engine.dtype_name, sequences,
                       queries, correct, min_margin, seconds=seconds,
                       config={**asdict(task), "seed": seed, "hard_cases": n_hard},
                       info=dict(con.info), summary=summary, rule=MARGIN_RULE,
                       **proof_fields(con, engine, task.seq_len, bound))


MARGIN_RULE = "every obligation holds, every query recalled, min margin >= proven margin - rounding allowance"
