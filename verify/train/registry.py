"""What can be trained: mixers and tasks, one small entry each.

Registered mixers: ``mamba`` (S6), ``mamba2`` (``mamba_ssm.Mamba2``, one head by default as the construction;
task_args ``headdim`` for more), ``s4d`` (Mamba-S4D, ``verify.engines.mamba_s4d``), ``mamba-delta-t`` (alias
``delta-top``, the name the Fig. 3 / A.4 grids use; ``verify.engines.delta_t.MambaDeltaT``). Every one has a packed
forward (``verify.train.models``) that runs the whole pack of K models through ONE scan call, the K models' channels
(Mamba-2: heads and groups) folded together: ``selective_scan_ref`` / mamba_ssm's ``selective_scan_fn`` for
``mamba``, ``s4d`` and ``mamba-delta-t`` (the latter through the grouped S6 reduction of
``verify.engines.delta_t``), the pure-torch SSD reference with ``mamba_chunk_scan_combined``'s signature / mamba_ssm's
``mamba_chunk_scan_combined`` for ``mamba2``. Registered tasks: ``mqar``, ``mqar-zoology``, ``keep-nth`` (task_args
n (5), pe (False)), ``induction-heads`` (task_args p (0.75, the probability of the hard case; 0 = standard only, 1 =
hard only), gamma (0.1)).

Adding a mixer is one ``Mixer`` in ``MIXERS``: its block
config from a ``RunSpec``, its initial state dict (mamba_ssm's init), the masks of frozen entries (the gate), and
either a packed pure-torch forward (``packed_forward(params, hidden (K, b, L, d), config, scan)``, all parameters
with a leading K axis; ``reference_scan`` is its scan off CUDA, ``packed_cuda_scan()`` the kernel on CUDA) or a CUDA
module factory, or both. Adding a task is one ``Task`` in ``TASKS``: its generator
config from a ``RunSpec`` and a sample count, ``generate(config, seed) -> (tokens, labels)`` (labels IGNORE where not
scored), and its token and class counts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from constructions.errors import RequirementError, require
from constructions.layout import MambaConfig
from constructions.layout import Mamba2Config, MambaDeltaTConfig, MambaS4DConfig
from verify.engines.scan import selective_scan_ref
from verify.tasks import induction_heads, keep_nth, mqar
from verify.train.models import (conv_off, cuda_scan, cuda_ssd_scan, gate_off_rows, init_delta_t, init_mamba,
                                 init_mamba2, init_s4d, packed_delta_t_forward, packed_mamba2_forward,
                                 packed_mamba_forward, packed_s4d_forward, proj_off, ssd_chunk_scan_ref)
from verify.train.spec import RunSpec


@dataclass(frozen=True)
class Mixer:
    name: str
    block_config: Callable[[RunSpec], Any]
    init: Callable[[Any, torch.Generator], dict]  # (config, generator) -> mixer state dict (mamba_ssm names)
    freeze: Callable[[Any, RunSpec, dict], dict]  # (config, spec, state dict) -> masks; may edit the state dict
    packed_forward: Callable | None = None  # pure torch, any device (scan pluggable)
    cuda_module: Callable | None = None  # (config, device, dtype) -> mamba_ssm module
    packed_cuda_scan: Callable | None = None  # () -> the CUDA scan for packed_forward (None: reference scan)
    reference_scan: Callable = selective_scan_ref  # packed_forward's scan off CUDA (pure torch)
    # evaluation forwards (validation, test) of packed models use reference_scan, the exact pure-torch scan, on every
    # device; training keeps packed_cuda_scan. Mamba-2 only: its Triton SSD forward faulted in evaluation after
    # training on an H100 (results/train/README.md), and the reference scores the trained weights identically.
    evaluate_on_reference: bool = False
    # the training step of a packed model is captured as a CUDA graph on CUDA (verify.train.step): only for packed
    # forwards that never synchronise with the host (Mamba-Delta-top's S6 reduction checks Delta > 0 on the host)
    graph_safe: bool = True
    # bytes per model of the tensors its scan materialises, where they dominate a pack's memory (sweep.plan cuts the
    # pack to fit sweep.PACK_BYTES); None: small beside the pack sizes the grids use
    scan_bytes: Callable[[RunSpec], int] | None = None
    note: str = ""


def _mamba_config(s: RunSpec) -> MambaConfig:
    return MambaConfig(d_model=s.d_model, d_state=s.d_state, d_conv=s.d_conv, expand=s.expand)


def _freezer(z_rows, x_rows=None):
    """The ``Mixer.freeze`` of a block whose gate pre-activation is rows ``z_rows(config)`` of in_proj (and whose SSM
    input is rows ``x_rows(config)``, where the in/out projections can be frozen): gate off unless ``spec.gate``, conv
    at the identity unless ``spec.conv``, projections at the identity unless ``spec.proj``."""
    def freeze(config, spec: RunSpec, sd: dict) -> dict:
        masks = {} if spec.gate else gate_off_rows(sd, z_rows(config))
        if not spec.conv:
            masks.update(conv_off(config, sd))
        if not spec.proj:
            require(x_rows is not None, f"{spec.mixer} has no in/out projections-off setting (proj=False)")
            proj_off(sd, x_rows(config), masks)
        return masks
    return freeze


def _mamba2_config(s: RunSpec) -> Mamba2Config:
    return Mamba2Config(d_model=s.d_model, d_state=s.d_state, d_conv=s.d_conv, expand=s.expand,
                        headdim=s.arg("headdim"))


def _s4d_config(s: RunSpec) -> MambaS4DConfig:
    return MambaS4DConfig(d_model=s.d_model, d_state=s.d_state, d_conv=s.d_conv, d_inner=s.expand * s.d_model)


def _delta_t_config(s: RunSpec) -> MambaDeltaTConfig:
    return MambaDeltaTConfig(d_model=s.d_model, d_state=s.d_state, d_conv=s.d_conv, expand=s.expand)


def _mamba2_module(config, device, dtype):
    from verify.engines.cuda import mamba2_module

    return mamba2_module(config, device, dtype)


def _s4d_module(config, device, dtype):
    from verify.engines.mamba_s4d import MambaS4D

    return MambaS4D(**config.mamba_kwargs(), scan=cuda_scan(), device=device, dtype=dtype)


def _delta_t_module(config, device, dtype):
    from verify.engines.delta_t import MambaDeltaT

    return MambaDeltaT(config, scan_fn=cuda_scan(), device=device, dtype=dtype)


def _mamba_module(config, device, dtype):
    """``mamba_ssm.Mamba`` on its unfused path: the fused ``mamba_inner_fn`` (taken when causal_conv1d is installed)
    returns a gradient of the wrong shape for ``out_proj.bias`` (mamba_ssm 2.3.2: "MambaInnerFnBackward returned an
    invalid gradient at index 6"), and the gate-off runs need that bias."""
    from mamba_ssm import Mamba

    return Mamba(**config.mamba_kwargs(), use_fast_path=False, device=device, dtype=dtype)


def _delta_t_scan_bytes(s: RunSpec) -> int:
    """The S6 reduction's flattened channels (N * d_inner per model, verify.engines.delta_t): about 8 float32 tensors
    of batch x L x N x d_inner in the step (forward inputs and output, backward gradients). Measured on the H100: a
    pack of 15 at |V| = 20, d 160 took 39 GB (2.6 GB a model here), one of 9 at |V| = 40, d 320 asked for 11 GB per
    tensor."""
    return 8 * 4 * s.protocol.batch_size * s.seq_len * s.d_state * s.d_model * s.expand


MIXERS: dict[str, Mixer] = {
    "mamba": Mixer("mamba", _mamba_config, init_mamba,
                   _freezer(lambda c: slice(c.d_inner, 2 * c.d_inner), lambda c: slice(0, c.d_inner)),
                   packed_forward=packed_mamba_forward,
                   cuda_module=_mamba_module, packed_cuda_scan=cuda_scan,
                   note="mamba_ssm.Mamba (S6); gate off = z frozen at a constant"),
    "mamba2": Mixer("mamba2", _mamba2_config, init_mamba2, _freezer(lambda c: c.in_proj_rows()["z"]),
                    packed_forward=packed_mamba2_forward, cuda_module=_mamba2_module,
                    packed_cuda_scan=cuda_ssd_scan, reference_scan=ssd_chunk_scan_ref, evaluate_on_reference=True,
                    note="mamba_ssm.Mamba2(use_mem_eff_path=False), one head unless task_args headdim; gate off = "
                         "its in_proj z rows frozen; packed = one SSD scan (mamba_chunk_scan_combined) per pack"),
    "s4d": Mixer("s4d", _s4d_config, init_s4d,
                 _freezer(lambda c: slice(c.width, 2 * c.width), lambda c: slice(0, c.width)),
                 packed_forward=packed_s4d_forward, cuda_module=_s4d_module, packed_cuda_scan=cuda_scan,
                 note="Mamba-S4D (verify.engines.mamba_s4d); gate on in the paper's MQAR runs"),
    "mamba-delta-t": Mixer("mamba-delta-t", _delta_t_config, init_delta_t,
                           _freezer(lambda c: slice(c.d_inner, 2 * c.d_inner)), packed_forward=packed_delta_t_forward,
                           cuda_module=_delta_t_module, packed_cuda_scan=cuda_scan, graph_safe=False,
                           scan_bytes=_delta_t_scan_bytes,
                           note="Mamba-Delta-top (verify.engines.delta_t); gate off in the paper's induction heads"),
}
MIXERS["delta-top"] = MIXERS["mamba-delta-t"]  # the name the fig3 / figA4 grids and the bound table use


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
                           layout="zoology", random_fillers=s.arg("random_fillers", True), reduce_to_ar=ar)


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


def mixer(name: str) -> Mixer:
    if name not in MIXERS:
        raise RequirementError(f"unknown mixer {name!r}; trainable here: {', '.join(MIXERS)}")
    return MIXERS[name]


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
    m.block_config(spec)
    if not spec.gate:
        require(m.block_config(spec).bias, "gate off needs bias=True")
