"""The public API for a construction of your own: what a construction module provides, and the tools to write it.

A construction is one ``Spec`` (below), registered under the entry-point group ``ENTRY_POINT_GROUP`` of any installed
package (``[project.entry-points."mamba_constructions.constructions"] my-name = "my_module:SPEC"``); ``list``,
``check`` and ``export`` then know it, with no edit of this project, exactly as they know the project's own
constructions, which register the same way. ``docs/your-construction.md`` walks through one.

A Spec provides

* ``params``: a frozen dataclass whose fields become the command-line flags (``field_name`` -> ``--field-name``,
  help text from ``field(metadata=help_("..."))``); ``defaults``: the params a bare run checks;
* ``build(params[, constants]) -> Construction``: the weights, in the real module's names (``MambaWeights`` and the
  other named-block layouts of ``constructions.weights``), with a ``Proof``: the claim, its proven margin or error
  bound, and its obligations (``obligations_of`` a function returning ``Obligation``s decided by sympy);
* ``check(construction, params, engine) -> CheckResult``: the task and the scoring; ``check_labelled`` scores token
  sequences whose labelled positions must be recalled (argmax), and the verdict rule is the same for every
  construction (``verify.checks.CheckResult``);
* optionally ``constants`` (the proof's constants, a frozen dataclass ``--constant NAME=VALUE`` overrides) and
  ``memory(params) -> bytes`` (checked against the available memory before building).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from common.errors import RequirementError, require
from constructions.layout import Construction, MambaConfig, Mamba2Config
from constructions.proof import Proof, margin_obligation, obligations_of
from constructions.weights import Basis, Mamba2Weights, MambaWeights
from symbolic.proofs import Obligation
from verify.checks import CheckResult, check_labelled
from verify.tasks.mqar import IGNORE

ENTRY_POINT_GROUP = "mamba_constructions.constructions"


def help_(text: str) -> dict:
    """``field(metadata=help_(...))``: the CLI help text of a params field."""
    return {"help": text}


@dataclass(frozen=True)
class Spec:
    """One construction as the command line knows it (see the module docstring)."""

    name: str
    theorem: str
    mixer: str
    formulas: dict[str, str]  # at least d_model, d_state, d_conv
    params: type  # frozen dataclass; its fields are the CLI flags
    defaults: tuple  # params instances that a bare ``verify-constructions`` checks
    build: Callable[..., Construction]  # build(params[, constants]) -> Construction
    check: Callable[..., CheckResult]  # check(construction, params, engine) -> CheckResult
    constants: object | None = None  # the proof's default constants (a frozen dataclass), overridable by --constant
    memory: Callable[..., int] | None = None  # memory(params) -> bytes a check needs (verify.memory), before building


__all__ = ["Basis", "CheckResult", "Construction", "ENTRY_POINT_GROUP", "IGNORE", "Mamba2Config", "Mamba2Weights",
           "MambaConfig", "MambaWeights", "Obligation", "Proof", "RequirementError", "Spec", "check_labelled",
           "help_", "margin_obligation", "obligations_of", "require"]
