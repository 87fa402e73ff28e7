"""What can be trained: the mixers (block kinds with a ``training`` entry, ``verify.blocks``) and the tasks.

Mixers: ``mamba`` (S6), ``mamba2`` (``mamba_ssm.Mamba2``, one head by default as the construction; task_args
``headdim`` for more), ``mamba-s4d`` (Mamba-S4D, ``verify.blocks.mamba_s4d``), ``mamba-delta-t``
(``verify.blocks.mamba_delta_t.MambaDeltaT``), ``linear-mamba`` (Koren et al.'s simplified linear Mamba, under the
model wiring "tied" of ``verify.train.recall_models``), ``mamba-s4d-complex`` (S4D's complex diagonal mixer,
``verify.blocks.mamba_s4d_complex``: a Vandermonde kernel and an FFT convolution, no scan kernel) and ``transformer``
(``verify.blocks.transformer``: causal softmax attention). Every one has a packed forward that runs the whole pack of
K models at once; the scanned ones through ONE scan call, the K models' channels (Mamba-2: heads and groups) folded
together: ``selective_scan_ref`` /
mamba_ssm's ``selective_scan_fn`` for ``mamba``, ``mamba-s4d`` and ``mamba-delta-t`` (the latter through the grouped
S6 reduction of ``verify.blocks.mamba_delta_t``), the pure-torch SSD reference with ``mamba_chunk_scan_combined``'s
signature / mamba_ssm's ``mamba_chunk_scan_combined`` for ``mamba2``. Adding a mixer is a block kind's ``Training``
(``verify.blocks``: its block config from a ``RunSpec``, its initial state dict, the masks of frozen entries, a
packed forward and/or a CUDA module factory, and the sweeps' bounds).

Registered tasks: ``mqar``, ``mqar-zoology`` (task_args ar (False), random_fillers (True), key_repeats (1): Koren et
al.'s MQAR, AR and repeated keys), ``keep-nth`` (task_args n (5), pe (False)), ``induction-heads``
(task_args p (0.75, the probability of the hard case; 0 = standard only, 1 = hard only), gamma (0.1)). Adding a task
is one ``Task`` in ``TASKS``: its generator config from a ``RunSpec`` and a sample count, ``generate(config, seed) ->
(tokens, labels)`` (labels IGNORE where not scored), and its token and class counts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from common.errors import RequirementError, require
from verify import blocks
from verify.tasks import induction_heads, keep_nth, mqar
from verify.train.spec import RunSpec


@dataclass(frozen=True)
class Task:
    name: str
    config: Callable[[RunSpec, int], Any]  # (spec, num_examples) -> generator config
    generate: Callable[[Any, Any], tuple]  # (config, seed) -> (tokens, labels), int64 (S, L)
    n_tokens: Callable[[RunSpec], int]
    n_classes: Callable[[RunSpec], int]
    position: Callable[[RunSpec], bool] = lambda s: False  # True: the last embedding coordinate is the position (+PE)


def _mqar_config(s: RunSpec, num_examples: int) -> mqar.MQARConfig:
    return mqar.MQARConfig(s.kappa, s.vocab, s.seq_len, num_examples=num_examples,
                           noise_vocab=s.arg("noise_vocab", 1), query_passes=s.arg("query_passes", 1))


def _zoology_config(s: RunSpec, num_examples: int) -> mqar.MQARConfig:
    ar = s.arg("ar", False)
    return mqar.MQARConfig(s.kappa, s.vocab, 2 * s.kappa + 1 if ar else s.seq_len, num_examples=num_examples,
                           layout="zoology", random_fillers=s.arg("random_fillers", True), reduce_to_ar=ar,
                           key_repeats=s.arg("key_repeats", 1))


def _keep_nth_config(s: RunSpec, num_examples: int) -> keep_nth.KeepNthConfig:
    return keep_nth.KeepNthConfig(vocab_size=s.vocab, n=s.arg("n", 5), seq_len=s.seq_len, num_examples=num_examples)


def _induction_config(s: RunSpec, num_examples: int) -> induction_heads.InductionHeadsConfig:
    return induction_heads.InductionHeadsConfig(vocab_size=s.vocab, seq_len=s.seq_len, p_hard=s.arg("p", 0.75),
                                                gamma=s.arg("gamma", 0.1), num_examples=num_examples)


TASKS: dict[str, Task] = {
    "mqar": Task("mqar", _mqar_config, mqar.generate,
                 n_tokens=lambda s: s.kappa + s.vocab + s.arg("noise_vocab", 1), n_classes=lambda s: s.vocab),
    # Koren et al.'s zoology-style MQAR / AR (recall scaling laws): one vocabulary, labels are token ids.
    "mqar-zoology": Task("mqar-zoology", _zoology_config, mqar.generate, n_tokens=lambda s: s.vocab,
                         n_classes=lambda s: s.vocab),
    # KEEP n-TH (|V| = 128, n = 5 in the paper): labels only at t >= n, so loss and accuracy are on those positions;
    # pe: the last embedding coordinate is the raw position t (keep_nth's docstring).
    "keep-nth": Task("keep-nth", _keep_nth_config, keep_nth.generate, n_tokens=lambda s: s.vocab,
                     n_classes=lambda s: s.vocab, position=lambda s: bool(s.arg("pe", False))),
    # Induction heads: every position scored, class |V| = blank (no earlier occurrence).
    "induction-heads": Task("induction-heads", _induction_config, induction_heads.generate,
                            n_tokens=lambda s: s.vocab, n_classes=lambda s: s.vocab + 1),
}


def mixer(name: str) -> blocks.Training:
    """The ``Training`` of the block kind ``name``; RequirementError for a kind that is unknown or does not train."""
    kinds = blocks.trainable()
    if name not in kinds:
        alias = blocks.ALIASES.get(name)
        hint = f" ({name!r} is an alias of {alias!r}, accepted only in stored data)" if alias else ""
        raise RequirementError(f"unknown mixer {name!r}{hint}; trainable here: {', '.join(kinds)}")
    return blocks.KINDS[name].training


def task(name: str) -> Task:
    if name not in TASKS:
        raise RequirementError(f"unknown task {name!r}; trainable here: {', '.join(TASKS)}")
    return TASKS[name]


def validate(spec: RunSpec) -> None:
    """Every requirement of a run, as one RequirementError, before any work."""
    m, t = mixer(spec.mixer), task(spec.task)
    spec.protocol.validate()
    require(spec.d_model >= 1 and spec.d_state >= 1, f"d_model and d_state must be >= 1, got {spec.d_model}, "
                                                     f"{spec.d_state}")
    require(spec.lr > 0, f"lr must be > 0, got {spec.lr}")
    t.config(spec, 1).validate()
    from verify.train import recall_models

    recall_models.validate(spec)
    if spec.mixer == "linear-mamba":  # an analysis model: trained only as the paper wires it
        require(recall_models.wiring(spec) == "tied", "mixer linear-mamba trains under model wiring 'tied' (the "
                                                      "paper's simplified linear Mamba, verify.train.recall_models)")
    cfg = recall_models.block_config(spec) if spec.model else m.block_config(spec)
    if not spec.gate and hasattr(cfg, "bias"):
        require(cfg.bias, "gate off needs bias=True")
