"""Every construction the command line knows, discovered through the entry-point group
``mamba_constructions.constructions`` (``verify.api.ENTRY_POINT_GROUP``).

Each entry point names a ``verify.api.Spec``; the project's own constructions are entry points of its own package
(``pyproject.toml``) like any other. ``SPECS`` maps name -> Spec, in the order of ``BUILTIN`` then the others by
name. An entry point that fails to load, or does not name a Spec, is kept out of ``SPECS`` and reported in
``BROKEN`` (name -> reason), which ``list`` shows and ``check NAME`` names, so one broken package does not stop the
verifier. Run from a source tree that was never installed, the package has no entry points; the built-in ones are
then loaded from ``BUILTIN`` (the same values as ``pyproject.toml``, which a test compares).
"""
from __future__ import annotations

from importlib import import_module, metadata

from verify.api import ENTRY_POINT_GROUP, Spec

BUILTIN = {
    "mqar-mamba": "verify.specs.mqar:MQAR_MAMBA",
    "mqar-mamba2": "verify.specs.mqar:MQAR_MAMBA2",
    "mqar-s4d": "verify.specs.mqar:MQAR_S4D",
    "hash-recall": "verify.specs.hash_recall:SPEC",
    "keep-nth": "verify.specs.keep_nth:SPEC",
    "induction-heads": "verify.specs.induction_heads:SPEC",
    "haar": "verify.specs.haar:SPEC",
}


def _load_value(value: str):
    module, _, attr = value.partition(":")
    obj = import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def discover() -> tuple[dict[str, Spec], dict[str, str]]:
    """(specs, broken): every Spec of the entry-point group, and the reason each broken entry point failed."""
    points = {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    if not any(name in points for name in BUILTIN):  # a source tree that was never installed
        points = {**BUILTIN, **points}
    specs, broken = {}, {}
    for name in [*[n for n in BUILTIN if n in points], *sorted(n for n in points if n not in BUILTIN)]:
        try:
            spec = _load_value(points[name])
        except Exception as e:  # noqa: BLE001 -- a broken package must not stop the verifier
            broken[name] = f"{points[name]} failed to load: {type(e).__name__}: {e}"
            continue
        if not isinstance(spec, Spec):
            broken[name] = f"{points[name]} is a {type(spec).__name__}, not a verify.api.Spec"
        elif spec.name != name:
            broken[name] = f"{points[name]} is named {spec.name!r}, not {name!r} as its entry point"
        else:
            specs[name] = spec
    return specs, broken


SPECS, BROKEN = discover()
