"""Run keys carry a schema version: the runs stored under schema 1 (results/train/*.jsonl) keep their identity.

Schema 1 hashed the spec dict with ``proj`` left out when True and ``protocol.matmul`` left out when "float32";
schemas 1 and 2 named Mamba-S4D ``s4d`` and Mamba-Delta-transpose ``delta-top`` (the grid files did), schema 3 names
every mixer by its block kind's one name. ``_schema1_key`` below restates those rules independently of the code
under test (``STORED_NAME``: the names the stored lines use)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from common.errors import RequirementError
from verify.train.spec import SCHEMA, RunSpec, protocol, run_key, upgrade
from verify.train.store import ResultStore
from verify.train.sweep import grids

ROOT = Path(__file__).resolve().parents[1]
STORES = sorted((ROOT / "results/train").glob("*.jsonl"))
STORED_NAME = {"mamba-s4d": "s4d", "mamba-delta-t": "delta-top"}  # the kind's name -> the name stored runs carry


def _schema1_dict(spec: RunSpec) -> dict:
    d = spec.as_dict()
    d.pop("schema")
    d["mixer"] = STORED_NAME.get(d["mixer"], d["mixer"])
    if spec.proj:
        del d["proj"]
    if spec.protocol.matmul == "float32":
        del d["protocol"]["matmul"]
    return d


def _hash(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:20]


def _schema1_key(spec: RunSpec) -> str:
    return _hash(_schema1_dict(spec))


def _raw(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def stored() -> dict:
    """{store name: (its lines as written, its records as read)} of every committed store."""
    return {p.stem: (_raw(p), ResultStore(p).records()) for p in STORES}


def test_every_stored_line_is_read_under_the_current_schema_with_the_identity_it_was_stored_with(stored):
    """Every line of every committed store: its stored key is the hash of its spec as written. A schema-1 line is
    read back with that spec (the mixer under its kind's name) plus only the fields schema 1 left out at their
    defaults (and the schema), keyed by the hash of that; a line written under the current schema is read back as
    written, under its own key; no line is left unread."""
    lines, renamed, current = 0, 0, 0
    for raw, read in stored.values():
        assert len(raw) == len(read)
        for r, u in zip(raw, read):
            if r["spec"].get("schema") == SCHEMA:
                assert _hash(r["spec"]) == r["key"] == u["key"] == run_key(RunSpec.from_dict(r["spec"]))
                assert json.loads(json.dumps(u["spec"])) == r["spec"]
                current += 1
                continue
            assert "schema" not in r["spec"] and _hash(r["spec"]) == r["key"] == u["_key_stored"]
            filled = json.loads(json.dumps(u["spec"]))  # tuples as the lists they are stored as
            assert STORED_NAME.get(filled["mixer"], filled["mixer"]) == r["spec"]["mixer"]
            renamed += filled["mixer"] != r["spec"]["mixer"]
            filled["mixer"] = r["spec"]["mixer"]
            added = {k: filled.pop(k) for k in ("schema", "proj") if k not in r["spec"]}
            added.update({k: filled["protocol"].pop(k) for k in ("matmul",) if k not in r["spec"]["protocol"]})
            assert filled == r["spec"] and added in ({"schema": SCHEMA}, {"schema": SCHEMA, "proj": True},
                                                     {"schema": SCHEMA, "matmul": "float32"},
                                                     {"schema": SCHEMA, "proj": True, "matmul": "float32"})
            assert u["key"] == _hash(u["spec"]) != r["key"]
        lines += len(raw)
    assert len(stored) >= 18 and lines >= 12_000 and renamed >= 4_000 and current >= 1176  # fig2-tf32-ray.jsonl


def test_each_grid_recognises_in_its_store_the_runs_schema_1_recognised(stored):
    """Per grid, the runs whose key its store holds: the same count read under the current schema (the grid files
    naming the kinds by their one name) as under schema 1 (the aliases ``s4d``, ``delta-top``); the counts are those
    of the committed stores, grid by grid."""
    recognised = {}
    for name, g in grids().items():
        if name not in stored:
            continue
        schema1 = [(raw, read) for raw, read in zip(*stored[name]) if "schema" not in raw["spec"]]
        if not schema1:
            continue  # a store written under the current schema only
        old = {raw["key"] for raw, _ in schema1}
        new = {read["key"] for _, read in schema1}
        runs = g.runs()
        recognised[name] = sum(run_key(s) in new for s in runs)
        assert recognised[name] == sum(_schema1_key(s) in old for s in runs), name
    assert recognised == {"calibration": 42, "fig2-loss": 1176, "fig2-tf32": 1176, "fig2": 684, "fig3": 600,
                          "figA2": 1008, "figA3-mamba": 288, "figA3-mamba2": 288, "figA3-s4d": 288, "figA4": 1368,
                          "keepnth-nope-bare": 810, "keepnth-nope": 810, "keepnth-pe-bare": 810, "keepnth-pe": 810,
                          "recall-regime0": 360, "recall-vocab": 288}
    assert sum(recognised.values()) == 10_806


def test_a_run_stored_under_schema_1_is_not_trained_again(tmp_path):
    """plan() skips a run whose schema-1 line is in the store; an adopted copy is written under the current schema."""
    from verify.train.sweep import adopt, grid, plan

    spec = grid("keepnth-pe-bare").runs()[0]  # proj False: schema 1 kept it in the dict
    line = {"key": _schema1_key(spec), "spec": _schema1_dict(spec), "result": {"solved": True}, "device": "cuda"}
    (tmp_path / "old.jsonl").write_text(json.dumps(line) + "\n")
    old = ResultStore(tmp_path / "old.jsonl")
    assert plan([spec], old.keys(), 4) == []
    new = ResultStore(tmp_path / "new.jsonl")
    assert adopt([spec], new, [old.path], device="cuda") == 1
    (written,) = _raw(new.path)
    assert written["key"] == run_key(spec) and written["spec"]["schema"] == SCHEMA and "_key_stored" not in written


@pytest.mark.parametrize("grid_name, kind", [("figA3-s4d", "mamba-s4d"), ("fig3", "mamba-delta-t")])
def test_a_run_stored_under_schema_2_with_the_old_name_is_not_trained_again(tmp_path, grid_name, kind):
    """A schema-2 line (every field, the mixer under its alias ``s4d`` / ``delta-top``) is recognised."""
    from verify.train.sweep import grid, plan

    spec = next(s for s in grid(grid_name).runs() if s.mixer == kind)
    old = {**spec.as_dict(), "schema": 2, "mixer": STORED_NAME[kind]}
    old = json.loads(json.dumps(old))
    (tmp_path / "s.jsonl").write_text(json.dumps({"key": _hash(old), "spec": old, "result": {}}) + "\n")
    store = ResultStore(tmp_path / "s.jsonl")
    (read,) = store.records()
    assert read["spec"]["mixer"] == kind and read["key"] == run_key(spec) and read["_key_stored"] == _hash(old)
    assert plan([spec], store.keys(), 4) == []


def test_a_current_spec_takes_the_kinds_name_only():
    """Old names are read from stored data only: a schema-3 spec with one is kept as written and refused."""
    from verify.train import registry

    spec = RunSpec(task="mqar", mixer="mamba-s4d", vocab=4, d_model=8, d_state=4, seed=0, lr=0.03, kappa=2)
    d = {**spec.as_dict(), "mixer": "s4d"}
    assert RunSpec.from_dict(d).mixer == "s4d"
    with pytest.raises(RequirementError, match="'s4d' is an alias of 'mamba-s4d'"):
        registry.validate(RunSpec.from_dict(d))


def test_a_schema_1_line_whose_key_is_not_its_specs_is_left_alone():
    spec = RunSpec(task="mqar", mixer="mamba", vocab=4, d_model=8, d_state=4, seed=0, lr=0.03, kappa=2)
    d = _schema1_dict(spec)
    assert upgrade({"key": "not-this-spec", "spec": d}) == {"key": "not-this-spec", "spec": d}
    assert upgrade({"note": 1}) == {"note": 1}
    current = {"key": run_key(spec), "spec": spec.as_dict()}
    assert upgrade(current) is current


def test_every_field_is_in_the_key_including_defaults():
    spec = RunSpec(task="mqar", mixer="mamba", vocab=4, d_model=8, d_state=4, seed=0, lr=0.03, kappa=2)
    d = spec.as_dict()
    assert d["proj"] is True and d["protocol"]["matmul"] == "float32" and d["schema"] == SCHEMA
    assert RunSpec.from_dict(d) == spec
    tf32 = replace(spec, protocol=protocol("budgeted-loss-tf32"))
    assert len({run_key(spec), run_key(replace(spec, proj=False)), run_key(tf32)}) == 3
    with pytest.raises(RequirementError, match="key schema 4"):
        RunSpec.from_dict({**d, "schema": 4})
