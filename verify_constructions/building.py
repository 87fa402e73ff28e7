"""From the command line to a built construction: its parameters and proof constants as typed, and the build,
memory estimated first. Shared by ``check``, ``export``, ``check --from-export`` and ``list``."""
from __future__ import annotations

from dataclasses import fields, replace

import sympy as sp

from common.errors import RequirementError, require
from verify.memory import require_memory


def params_of(spec, args, base=None):
    """The spec's parameters: its defaults (or ``base``) with the flags typed in ``args``."""
    names = {f.name for f in fields(spec.params)}
    typed = {k: v for k, v in vars(args).items() if k in names}
    return replace(base, **typed) if base is not None else spec.params(**typed)


def constants_of(spec, items: list[str]):
    """The spec's proof constants with ``--constant NAME=VALUE`` overrides (exact rationals)."""
    if not items:
        return spec.constants
    known = {f.name for f in fields(spec.constants)}
    overrides = {}
    for item in items:
        require("=" in item, f"--constant {item}: expected NAME=VALUE")
        name, value = (s.strip() for s in item.split("=", 1))
        require(name in known, f"--constant {item}: unknown constant {name!r}; known: {', '.join(sorted(known))}")
        try:
            overrides[name] = sp.Rational(value)
        except (TypeError, ValueError, SyntaxError, ZeroDivisionError):
            raise RequirementError(f"--constant {item}: VALUE must be an exact number (integer, decimal or a/b), "
                                   f"got {value!r}")
    return replace(spec.constants, **overrides)


def build(spec, params, constants=None, what: str = ""):
    """Estimate the memory first, then build (with the spec's constants, or overridden ones)."""
    if spec.memory is not None:
        try:
            estimate = spec.memory(params)
        except (ArithmeticError, ValueError):  # invalid sizes: the builder's own checks name the requirement
            estimate = None
        if estimate is not None:
            require_memory(estimate, what or spec.name)
    if constants is None or constants is spec.constants:
        return spec.build(params)
    try:
        return spec.build(params, constants=constants)
    except (TypeError, ValueError, ArithmeticError) as e:
        if isinstance(e, RequirementError):
            raise
        raise RequirementError(f"--constant: {spec.name} cannot be built with these constants "
                               f"({type(e).__name__}: {e})")
