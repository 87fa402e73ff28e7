"""Constructions are discovered through the entry-point group; the project's own register the same way."""
import tomllib
from importlib import metadata
from pathlib import Path

from verify import registry
from verify.api import ENTRY_POINT_GROUP, Spec


def test_the_project_declares_its_constructions_as_entry_points():
    declared = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    points = declared["project"]["entry-points"][ENTRY_POINT_GROUP]
    assert points == registry.BUILTIN
    installed = {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert {k: installed.get(k) for k in points} == points  # the installed metadata is the declared one
    assert all(isinstance(registry.SPECS[name], Spec) for name in points) and not registry.BROKEN


def test_a_broken_entry_point_is_reported_not_fatal(monkeypatch):
    class EP:
        def __init__(self, name, value):
            self.name, self.value = name, value

    points = [EP(n, v) for n, v in registry.BUILTIN.items()] + [
        EP("missing-module", "no_such_module:SPEC"), EP("not-a-spec", "verify.api:help_"),
        EP("misnamed", "verify.specs.haar:SPEC")]
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: points)
    specs, broken = registry.discover()
    assert list(specs) == list(registry.BUILTIN)
    assert "ModuleNotFoundError" in broken["missing-module"] and "not a verify.api.Spec" in broken["not-a-spec"]
    assert "named 'haar'" in broken["misnamed"]
