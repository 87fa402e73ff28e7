"""Block kinds: one object per kind of mixer block (``KINDS``), one module per kind, that every other place asks.

A construction names its block by ``config.kind`` (the config classes of the kinds below are in
``constructions.layout``, which builds with them); ``KINDS[config.kind]`` is everything the project knows about that
block: the reference engine's forward and dtype rules, the modules of other code bases that run it, its size formulas,
how an export describes it, and how it trains. The kinds: ``mamba`` (S6, ``mamba_ssm.Mamba``), ``mamba2`` (SSD,
``mamba_ssm.Mamba2``), ``mamba-s4d`` (Huang et al.'s Mamba-S4D with a real diagonal S4D mixer: the ablation),
``mamba-s4d-complex`` (the same block with S4D's complex diagonal mixer, as the S4D paper defines it and Huang et
al.'s counts imply), ``mamba-delta-t`` (Huang et al.'s Mamba-Delta-transpose), ``linear-mamba`` (Koren et al.'s
simplified linear Mamba, an analysis model), ``transformer`` (the one-layer Transformer baseline of Huang et al.'s
KEEP n-TH; trained only).

Names. Each kind has one name, the one above. ``ALIASES`` maps the aliases that stored data and format-1 files use
(``mamba_s4d`` in exports, ``s4d`` and ``delta-top`` in stored training runs and grid files) to it; ``canonical`` is
applied where such data is read (``verify.train.spec`` for stored runs, ``verify.train.grids`` for grid files,
``verify.export`` for exports) and nowhere else: everything else takes the one name only.

What a new block kind provides: one module in this package that defines ``KIND = BlockKind(...)`` (found when this
package is imported; a kind defined elsewhere, e.g. in a plugin, calls ``register(KIND)``), with

1. ``name`` (lower case, words joined by hyphens) and ``title`` (as the papers write it);
2. ``config``: a frozen dataclass whose fields are the block's constructor arguments, with a ``kind`` ClassVar equal
   to ``name``, fields ``d_model`` and ``d_state``, and the methods ``zeros(dtype)`` (the state dict of the block's
   parameter names and shapes, all zero: what a construction fills), ``arguments()`` (the constructor arguments with
   every default resolved; ``config(**config.arguments())`` is the same block) and ``chain_length(seq_len)`` (the
   rounded operations on the longest path from an input to a logit, for ``verify.rounding``);
3. ``update_rule``: the recurrence in words (every export's config.json states it);
4. ``forward(params, hidden, config)``: the reference forward, pure PyTorch on the scans of ``verify.engines.scan``,
   float64 kept in float64, hidden (batch, L, d_model) -> (batch, L, d_model);
5. ``width(config)`` and ``state_size(config)``: the mixer width d_inner and the entries of the recurrent state per
   sequence (the parameter count is counted from ``zeros``);
6. ``float32_params``: the parameters the real module keeps in float32 whatever its dtype;
7. ``mamba_ssm`` and ``transformers``: a ``RealModule`` (a factory ``make(config, device, dtype)`` that imports its
   package only when called, the state dict in that module's own layout, and what the module is in words), or the
   reason there is none;
8. ``training`` (optional): a ``Training`` (the block config of a training run, mamba_ssm's init, the freezing rules,
   the packed forward of K models and its scans, the CUDA module, and the sweeps' d bound, N base and gate default),
   or None where the kind is not trained.

``tests/test_block_kinds.py`` registers a kind of its own in one test module and checks it through the reference
engine, the export and the size formulas.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from common.errors import RequirementError, require
from verify.engines.scan import selective_scan_ref

KINDS: dict[str, "BlockKind"] = {}  # name -> kind, filled below (defined first: modules importing it mid-way see it)

# Aliases, as stored data and format-1 files use them -> the kind's one name (read sites only, see the docstring).
ALIASES = {"mamba_s4d": "mamba-s4d", "s4d": "mamba-s4d", "delta-top": "mamba-delta-t"}


def canonical(name: str) -> str:
    """The kind's name for a name read from stored data or a format-1 file (an alias mapped, any other unchanged)."""
    return ALIASES.get(name, name)


def _as_is(config, sd: dict) -> dict:
    return dict(sd)


@dataclass(frozen=True)
class RealModule:
    """A module outside the reference engine that runs the block (mamba_ssm's, this project's on mamba_ssm's kernels,
    or transformers'), and how a mixer state dict (``constructions.layout`` names) gets into it."""

    make: Callable  # (config, device, dtype) -> the module as its constructor initialises it; imports its package
    loads: str  # what the module is and how it is loaded, in words (an export's config.json says it)
    layout: Callable = _as_is  # (config, mixer state dict) -> the state dict under the module's own names and shapes

    def load(self, config, mixer: dict, device=None, dtype=None):
        """The module with ``mixer`` loaded by ``load_state_dict(strict=True)`` (its own initial draws do not move
        the global CPU generator)."""
        with torch.random.fork_rng(devices=[]):
            m = self.make(config, device, dtype)
        m.load_state_dict(self.layout(config, mixer), strict=True)
        return m


@dataclass(frozen=True)
class Training:
    """How a kind trains (``verify.train``): one entry per kind, read by the registry, the loop and the sweeps."""

    block_config: Callable[[Any], Any]  # RunSpec -> the block's config
    init: Callable[[Any, torch.Generator], dict]  # (config, generator) -> mixer state dict (float64), mamba_ssm's init
    freeze: Callable[[Any, Any, dict], dict]  # (config, spec, state dict) -> masks (1 = trainable); may edit the sd
    packed_forward: Callable | None = None  # (params, hidden (K, b, L, d), config, scan): K models at once, pure torch
    cuda_module: Callable | None = None  # (config, device, dtype) -> one mamba_ssm module (impl "module", CUDA)
    packed_cuda_scan: Callable | None = None  # () -> the CUDA scan for packed_forward (None: the reference scan)
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
    scan_bytes: Callable | None = None
    # per-token cost whatever d is, in units of d^2 (sweep.pack_cost, to start the largest packs first)
    pack_overhead: int = 0
    gate_default: bool = False  # the gate on in a grid that does not say (the paper's setting for this kind)
    d_bound: Callable[[int, int], int] | None = None  # (kappa, |V|) -> the d an MQAR construction needs (sweep.py)
    n_base: dict = field(default_factory=dict)  # state rule ("fig2", "a3") -> (kappa, |V|) -> N before multipliers
    d_multiple: int = 1  # the d grid is rounded up to a multiple of this (Mamba-2's heads)
    # the forward with a pluggable S6 scan, whose Delta and A the KEEP n-TH decay histogram reads off
    # (verify.train.decay, Fig. 1); None: no histogram for this kind
    decay_forward: Callable | None = None
    note: str = ""


@dataclass(frozen=True)
class BlockKind:
    """Everything about one kind of block (the module docstring lists what each field is)."""

    name: str
    title: str
    config: type
    update_rule: str
    forward: Callable  # (params, hidden (batch, L, d_model), config) -> (batch, L, d_model)
    width: Callable[[Any], int]  # config -> the mixer width d_inner
    state_size: Callable[[Any], int]  # config -> recurrent state entries per sequence
    mamba_ssm: RealModule | str  # or the reason mamba_ssm has no module for it
    transformers: RealModule | str  # or the reason transformers has none
    float32_params: frozenset = frozenset()
    training: Training | None = None

    def sizes(self, config) -> dict:
        """d_model, the mixer width d_inner, d_state and the recurrent state size (entries per sequence)."""
        return {"d_model": config.d_model, "d_inner": self.width(config), "d_state": config.d_state,
                "state_size": self.state_size(config)}

    def parameter_count(self, config) -> int:
        """Entries of the block's state dict."""
        return sum(t.numel() for t in config.zeros(torch.bool).values())

    def real(self, where: str) -> RealModule:
        """The ``RealModule`` of ``where`` ("mamba_ssm" or "transformers"); RequirementError with the reason if none."""
        module = getattr(self, where)
        if isinstance(module, str):
            raise RequirementError(f"{where} has no module for block {self.name!r}: {module}")
        return module


def register(kind: BlockKind) -> BlockKind:
    """Add ``kind`` to ``KINDS`` (its name new, not an alias, and the name its config class carries)."""
    require(kind.name not in KINDS or KINDS[kind.name] is kind, f"block kind {kind.name!r} is registered already")
    require(kind.name not in ALIASES, f"block kind name {kind.name!r} is an alias of {ALIASES.get(kind.name)!r}")
    require(getattr(kind.config, "kind", None) == kind.name,
            f"block kind {kind.name!r}: its config class {kind.config.__name__} has kind "
            f"{getattr(kind.config, 'kind', None)!r}")
    KINDS[kind.name] = kind
    return kind


def kind(name: str) -> BlockKind:
    """``KINDS[name]``, or a RequirementError naming the kinds (and the kind's name, for an alias)."""
    if name not in KINDS:
        hint = f" ({name!r} is an alias of {ALIASES[name]!r}, accepted only in stored data)" if name in ALIASES else ""
        raise RequirementError(f"unknown block kind {name!r}{hint}; known: {', '.join(KINDS)}")
    return KINDS[name]


def of(config) -> BlockKind:
    """The kind of a block config."""
    return kind(config.kind)


def mixer_sizes(config) -> dict:
    """``BlockKind.sizes`` of the config's kind."""
    return of(config).sizes(config)


def trainable() -> list[str]:
    """The kinds that train (``BlockKind.training`` set), in ``KINDS`` order."""
    return [n for n, k in KINDS.items() if k.training is not None]


def _discover() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if isinstance(getattr(module, "KIND", None), BlockKind):
            register(module.KIND)


_discover()
