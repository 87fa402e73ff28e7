"""What can be trained: mixers and tasks, one small entry each.

Adding a mixer (Mamba-2, Mamba-S4D, Mamba-Delta-top when their engines land) is one ``Mixer`` in ``MIXERS``: its block
config from a ``RunSpec``, its initial state dict (mamba_ssm's init), the masks of frozen entries (the gate), and
either a packed pure-torch forward (``packed_forward(params, hidden (K, b, L, d), config, scan)``, all parameters
with a leading K axis) or a CUDA module factory, or both. Adding a task is one ``Task`` in ``TASKS``: its generator
config from a ``RunSpec`` and a sample count, ``generate(config, seed) -> (tokens, labels)`` (labels IGNORE where not
scored), and its token and class counts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from constructions.errors import RequirementError, require
from constructions.layout import MambaConfig
from verify.tasks import mqar
from verify.train.models import conv_off, gate_off, init_mamba, packed_mamba_forward
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
    note: str = ""


def _mamba_config(s: RunSpec) -> MambaConfig:
    return MambaConfig(d_model=s.d_model, d_state=s.d_state, d_conv=s.d_conv, expand=s.expand)


def _freeze(config, spec: RunSpec, sd: dict) -> dict:
    masks = {} if spec.gate else gate_off(config, sd)
    if not spec.conv:
        masks.update(conv_off(config, sd))
    return masks


def _mamba_module(config, device, dtype):
    from mamba_ssm import Mamba

    return Mamba(**config.mamba_kwargs(), device=device, dtype=dtype)


def _cuda_scan():
    from verify.train.models import cuda_scan

    return cuda_scan()


MIXERS: dict[str, Mixer] = {
    "mamba": Mixer("mamba", _mamba_config, init_mamba, _freeze, packed_forward=packed_mamba_forward,
                   cuda_module=_mamba_module, packed_cuda_scan=_cuda_scan,
                   note="mamba_ssm.Mamba (S6); gate off = z frozen at a constant"),
}
# To come from the issue-3/4 branches: "mamba2" (mamba_ssm.Mamba2(use_mem_eff_path=False), gate off the same way via
# its in_proj z rows), "s4d" (Mamba block with the S4D mixer, gate on), "delta-top" (Mamba-Delta-top, gate off).


@dataclass(frozen=True)
class Task:
    name: str
    config: Callable[[RunSpec, int], Any]  # (spec, num_examples) -> generator config
    generate: Callable[[Any, Any], tuple]  # (config, seed) -> (tokens, labels), int64 (S, L)
    n_tokens: Callable[[RunSpec], int]
    n_classes: Callable[[RunSpec], int]


def _mqar_config(s: RunSpec, num_examples: int) -> mqar.MQARConfig:
    return mqar.MQARConfig(s.kappa, s.vocab, s.seq_len, num_examples=num_examples,
                           noise_vocab=s.arg("noise_vocab", 1), query_passes=s.arg("query_passes", 1))


def _zoology_config(s: RunSpec, num_examples: int) -> mqar.MQARConfig:
    ar = s.arg("ar", False)
    return mqar.MQARConfig(s.kappa, s.vocab, 2 * s.kappa + 1 if ar else s.seq_len, num_examples=num_examples,
                           layout="zoology", random_fillers=s.arg("random_fillers", True), reduce_to_ar=ar)


TASKS: dict[str, Task] = {
    "mqar": Task("mqar", _mqar_config, mqar.generate,
                 n_tokens=lambda s: s.kappa + s.vocab + s.arg("noise_vocab", 1), n_classes=lambda s: s.vocab),
    # Koren et al.'s zoology-style MQAR / AR (recall scaling laws): one vocabulary, labels are token ids.
    "mqar-zoology": Task("mqar-zoology", _zoology_config, mqar.generate, n_tokens=lambda s: s.vocab,
                         n_classes=lambda s: s.vocab),
}
# To come from the issue-4 branch: "keep-nth" (task_args n, pe) and "induction-heads" (task_args p, gamma).


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
