"""``check hash-recall``: the designed hashing circuit (Koren et al. 2026) on zoology-style MQAR / AR.

The claim is probabilistic, so the verdict depends on what the theory guarantees at the given sizes:

* **exact** when ``verify.recall_law.certificate_margin`` of the drawn codes is positive (a deterministic
  guarantee for every query whose sequence meets its preconditions, checked on the generated sequences), or when the
  rigorous bound times the number of queries is <= ``EXACT_DELTA`` (then a miss has probability <= 1e-3);
* **threshold** otherwise: recall >= corrected law - ``law_model_error(corrected law)`` - 4 binomial standard
  errors, where the corrected law is evaluated on the very sequences checked (``verify.recall_law.collision_profile``).
  The model error is not a flag: it is the largest shortfall (predicted - measured recall) of the designed-circuit
  cells stored in ``results/recall_scaling`` (the 3 x 752 one-layer cells and the 21 stacked ones) whose prediction
  lies in the same band (``LAW_MODEL_ERROR``), plus 0.002 and rounded up to 0.005. The shortfall shrinks as the
  prediction nears 1 (0.085 at 0.1-0.3, 0.015 above 0.95), so one error for every cell (0.09) let a circuit with a
  quarter of its state cut pass at a prediction of 0.97. Above the stored predictions (0.98) the top band's error is
  used. When the threshold is at or below chance (1 / number of values) the law predicts nothing checkable at these
  sizes and the check is UNPROVEN, never PASS.

Reported in ``info``: the law with the paper's a and with a from the generator, the corrected law, the rigorous
bound, the certificate margin, and which verdict rule applied.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch

from constructions import hash_recall
from common.errors import require
from constructions.layout import Construction
from constructions.proof import Proof, obligations_of
from symbolic import recall_scaling as rs
from verify import recall_law as rl
from verify.api import Spec
from verify.blocks import mixer_sizes
from verify.checks import CheckResult, proof_fields, report_progress, score_batch, worst_margin
from verify.memory import TASK_BYTES, check_bytes
from verify.tasks.mqar import MQARConfig, generate

EXACT_DELTA = 1e-3
# (upper edge of a band of the corrected law's prediction, largest shortfall of the stored cells in it + 0.002,
# rounded up to 0.005); tests/test_hash_recall_circuit.py recomputes each band from results/recall_scaling
LAW_MODEL_ERROR = ((0.1, 0.08), (0.3, 0.085), (0.5, 0.065), (0.7, 0.07), (0.8, 0.055), (0.9, 0.05), (0.95, 0.03),
                   (math.inf, 0.015))


def law_model_error(predicted: float) -> float:
    """The corrected law's model error at a prediction: its band's entry of ``LAW_MODEL_ERROR``; inf for a prediction
    that is not a number (the required recall is then NaN, which no recall meets)."""
    return next((error for edge, error in LAW_MODEL_ERROR if predicted < edge), math.inf)
Z_SE = 4  # binomial standard errors below the prediction (one-sided 4 sigma: a false FAIL has probability < 4e-5)
FILLERS = ("random", "empty")
COMPOSITIONS = ("parallel", "residual")


def _help(text: str):
    return {"help": text}


@dataclass(frozen=True)
class HashRecallParams:
    """Parameters of the designed hashing circuit check (CLI flags of the same names)."""

    vocab: int = field(default=512, metadata=_help("vocabulary size V (keys 1..V/2-1, values V/2..V-1)"))
    facts: int = field(default=16, metadata=_help("number of facts N_f"))
    d_model: int = field(default=64, metadata=_help("embedding dimension D"))
    d_state: int = field(default=32, metadata=_help("state dimension N (N <= D)"))
    task: str = field(default="mqar", metadata=_help("mqar (L = seq_len) or ar (L = 2 N_f + 1)"))
    seq_len: int | None = field(default=None, metadata=_help("MQAR length L (default 4 N_f, the paper's)"))
    fillers: str = field(default="random", metadata=_help("non-query slots: random (paper) or empty (token 0)"))
    block: str = field(default="analysis", metadata=_help("analysis (simplified linear Mamba) or mamba (mamba_ssm)"))
    layers: int = field(default=1, metadata=_help("layers Lambda (analysis block)"))
    composition: str = field(default="parallel", metadata=_help(
        "Lambda > 1: parallel (Lambda hashes averaged, one layer of state Lambda N) or residual (the designed "
        "residual stack: Lambda layers with orthogonal hashes, model width 2D; checked against N_eff = Lambda N)"))
    a_log: float = field(default=-100.0, metadata=_help("A_log of the mamba block (decay exp(-exp(A_log)) per step)"))
    samples: int = field(default=256, metadata=_help("number of sequences checked"))
    seed: int = field(default=0, metadata=_help("seed of the codes; the task uses seed + 1"))

    @property
    def length(self) -> int:
        if self.task == "ar":
            return 2 * self.facts + 1
        return self.seq_len if self.seq_len is not None else 4 * self.facts

    def task_config(self) -> MQARConfig:
        require(self.task in rs.TASKS, f"hash-recall task must be one of {rs.TASKS}, got {self.task!r}")
        require(self.fillers in FILLERS, f"hash-recall fillers must be one of {FILLERS}, got {self.fillers!r}")
        return MQARConfig(self.facts, self.vocab, self.length, num_examples=self.samples, layout="zoology",
                          random_fillers=self.fillers == "random", reduce_to_ar=self.task == "ar")


def build(p: HashRecallParams) -> Construction:
    """The circuit, with its proof: the recall law's derivation (``symbolic.recall_scaling.obligations``)."""
    con = _build(p)  # (it carries attributes beyond the dataclass fields: the hashes)
    con.proof = Proof("probabilistic", "recall >= the corrected law's prediction (or exact under the certificate or "
                                       "the rigorous bound)", obligations_of(rs.obligations))
    return con


def _build(p: HashRecallParams) -> Construction:
    p.task_config().validate()
    require(p.block in hash_recall.BLOCKS, f"hash-recall block must be one of {hash_recall.BLOCKS}, got {p.block!r}")
    require(p.composition in COMPOSITIONS, f"hash-recall composition must be one of {COMPOSITIONS}, "
                                           f"got {p.composition!r}")
    if p.block == "analysis":
        if p.layers > 1 and p.composition == "parallel":
            return hash_recall.build_parallel(p.vocab, p.d_model, p.d_state, p.layers, p.seed)
        if p.layers > 1:
            return hash_recall.build_residual_stack(p.vocab, p.d_model, p.d_state, p.layers, p.seed)
        return hash_recall.build_analysis(p.vocab, p.d_model, p.d_state, p.seed, n_layers=p.layers)
    require(p.layers == 1, f"hash-recall in the mamba block is one layer, got layers={p.layers}")
    return hash_recall.build_mamba_block(p.vocab, p.d_model, p.d_state, p.seed, a_log=p.a_log)


def predictions(p: HashRecallParams, profile: rl.CollisionProfile) -> dict:
    """The law (paper a, generator a), the corrected law, and the rigorous bound at the check's sizes."""
    task = p.task
    a_paper = float(rs.PAPER_A[("designed", task)])
    a_gen = float(rs.a_coefficient("designed", task, nf=p.facts,
                                   seq_len=None if task == "ar" or p.length == 4 * p.facts else p.length))
    lam, D, N = p.layers, p.d_model, p.d_state
    # parallel hashes: derived N_eff = Lambda N D / (D + (Lambda - 1) N); residual: the paper's N_eff = Lambda N
    n_eff = lam * N * D / (D + (lam - 1) * N) if p.composition == "parallel" else float(lam * N)
    n_w, ctx, mult = int(profile.n_w.max()), int(profile.context.max()), int(profile.multiplicity.max())
    bound = rl.rigorous_failure_bound(D, N, p.vocab, n_w, ctx, max(mult, 1)) if lam == 1 \
        else {"bound": 1.0}  # the rigorous bound is for one layer
    return {"a_paper": a_paper, "a_generator": a_gen, "N_eff": n_eff,
            "law": float(rl.law_num(D, n_eff, p.vocab, p.facts, a_paper)),
            "law_a_generator": float(rl.law_num(D, n_eff, p.vocab, p.facts, a_gen)),
            "corrected_law": rl.corrected_law_num(D, n_eff, p.vocab, profile),
            "rigorous_bound_per_query": bound["bound"], "rigorous_bound_args": bound,
            "max_leaking_writes": n_w, "max_multiplicity": mult, "max_context": ctx,
            "exact_collisions": int(profile.exact.sum())}


def check(con: Construction, p: HashRecallParams, engine, batch_size: int = 256) -> CheckResult:
    task = p.task_config()
    tokens, labels = generate(task, p.seed + 1)
    profile = rl.collision_profile(tokens, labels)
    start = time.perf_counter()
    queries = correct = 0
    min_margin, bound = float("inf"), 0.0
    for i in range(0, len(tokens), batch_size):
        hidden = engine.hidden(con, torch.from_numpy(tokens[i:i + batch_size]))
        q, c, m, b = score_batch(con, hidden, torch.from_numpy(labels[i:i + batch_size]))
        queries, correct, min_margin, bound = queries + q, correct + c, worst_margin(min_margin, m), max(bound, b)
        report_progress(min(i + batch_size, len(tokens)), len(tokens))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start

    pred = predictions(p, profile)
    fields = proof_fields(con, engine, p.length, bound)
    certificate = None
    if (p.layers == 1 or p.composition == "parallel") and getattr(con, "hashes", None):
        E = con.embedding.double().numpy()
        certificate = rl.certificate_margin(E, E @ con.hashes[0].T, pred["max_leaking_writes"],
                                            max(pred["max_multiplicity"], 1))
    if p.block == "mamba" and con.info.get("decay_per_step", 1.0) < 1.0 - 1e-12:
        certificate = None  # the certificate is for the undecayed circuit
    no_exact_collision = pred["exact_collisions"] == 0
    if certificate is not None and certificate > 0 and no_exact_collision:
        rule, required = "exact (certificate of the drawn codes)", 1.0
    elif queries * pred["rigorous_bound_per_query"] <= EXACT_DELTA and no_exact_collision:
        rule, required = f"exact (rigorous bound: P(any miss) <= {EXACT_DELTA:g})", 1.0
    else:
        rule, required, interval = _threshold(pred["corrected_law"], queries, chance=2 / p.vocab)
        pred["prediction_interval"] = interval
    info = {**con.info, **pred, "certificate_margin": certificate, "block": p.block}
    need = "none" if required is None else f"{required:.3f}"
    summary = (f"V={p.vocab} N_f={p.facts} L={p.length} {p.task} D={p.d_model} N={p.d_state}"
               + (f" Lambda={p.layers}" if p.layers > 1 else "") + f" law={pred['law']:.3f} "
               f"corr={pred['corrected_law']:.3f} need>={need}")
    if rule.startswith("exact (certificate"):  # a deterministic margin bound: compared like a proof's margin
        fields.update(claim="margin", proven_margin=certificate)
    else:
        fields.update(claim="probabilistic", proven_margin=None, allowance=0.0)
    return CheckResult(con.name, con.theorem, mixer_sizes(con.config), engine.name, engine.dtype_name, len(tokens),
                       queries, correct, min_margin, seconds=seconds, config={**asdict(task), "seed": p.seed + 1},
                       info=info, summary=summary, required_recall=required, rule=rule, **fields)


def _threshold(predicted: float, queries: int, chance: float) -> tuple[str, float | None, list[float]]:
    """The threshold rule: recall >= predicted - its model error - Z_SE s.e.; None when that is at or below chance."""
    se = math.sqrt(max(predicted * (1 - predicted), 1e-12) / max(queries, 1))
    interval = [max(0.0, predicted - Z_SE * se), min(1.0, predicted + Z_SE * se)]
    error = law_model_error(predicted)
    required = predicted - error - Z_SE * se
    rule = (f"recall >= corrected law {predicted:.3f} - law error {error:g} - {Z_SE} s.e. "
            f"({Z_SE} s.e. = {Z_SE * se:.3f})")
    if required <= chance:
        return rule + f": at or below chance {chance:.3g}, nothing to check", None, interval
    return rule, required, interval


def memory(p: HashRecallParams) -> int:
    expand = 4 if p.block == "mamba" else 2
    width = 2 * p.d_model if p.layers > 1 and p.composition == "residual" else p.d_model  # the stack's 2D
    return p.layers * check_bytes(n_tokens=p.vocab, n_classes=p.vocab, d_model=width,
                                  d_inner=expand * width, d_state=p.d_state, seq_len=p.length,
                                  batch=min(256, p.samples), n_codes=p.vocab) + \
        TASK_BYTES * p.samples * p.length * 2  # tokens and labels, and the collision profile over them


DEFAULTS = (HashRecallParams(samples=64), HashRecallParams(block="mamba", samples=32),
            HashRecallParams(vocab=16, facts=2, task="ar", d_model=512, d_state=512, samples=64))

SPEC = Spec(
    name="hash-recall",
    theorem="Recall scaling law (Koren et al. 2026)",
    mixer="simplified linear Mamba (analysis) or Mamba (S6, expand 4), JL embedding + hash F",
    formulas={
        "d_model": "D >= (m_V + z)^2 ~ 2 ln V  [law, target Phi(z)]",
        "d_state": "N >= a N_f (m_V + z)^2 / (Lambda (D - (m_V + z)^2)), a = 3 - 2/N_f (designed MQAR)",
        "d_conv": "2 (previous and current token)",
    },
    params=HashRecallParams,
    defaults=DEFAULTS,
    build=build,
    check=check,
    memory=memory,
)
