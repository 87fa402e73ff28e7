"""Run keys carry a schema version: the runs stored under schema 1 (results/train/*.jsonl) keep their identity.

Schema 1 hashed the spec dict with ``proj`` left out when True and ``protocol.matmul`` left out when "float32";
``_schema1_key`` below restates that rule independently of the code under test."""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from constructions.errors import RequirementError
from verify.train.spec import SCHEMA, RunSpec, protocol, run_key, upgrade
from verify.train.store import ResultStore
from verify.train.sweep import grids

ROOT = Path(__file__).resolve().parents[1]
STORES = sorted((ROOT / "results/train").glob("*.jsonl"))


def _schema1_dict(spec: RunSpec) -> dict:
    d = spec.as_dict()
    d.pop("schema")
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
    """Every line of every committed store: its stored key is the hash of its spec as written (schema 1), and it is
    read back with that spec plus only the fields schema 1 left out at their defaults (and the schema), keyed by the
    hash of that; no line is left unread."""
    lines = 0
    for raw, read in stored.values():
        assert len(raw) == len(read)
        for r, u in zip(raw, read):
            assert "schema" not in r["spec"] and _hash(r["spec"]) == r["key"] == u["_key_schema1"]
            filled = json.loads(json.dumps(u["spec"]))  # tuples as the lists they are stored as
            added = {k: filled.pop(k) for k in ("schema", "proj") if k not in r["spec"]}
            added.update({k: filled["protocol"].pop(k) for k in ("matmul",) if k not in r["spec"]["protocol"]})
            assert filled == r["spec"] and added in ({"schema": SCHEMA}, {"schema": SCHEMA, "proj": True},
                                                     {"schema": SCHEMA, "matmul": "float32"},
                                                     {"schema": SCHEMA, "proj": True, "matmul": "float32"})
            assert u["key"] == _hash(u["spec"]) != r["key"]
        lines += len(raw)
    assert len(stored) >= 17 and lines >= 11_000


def test_each_grid_recognises_in_its_store_the_runs_schema_1_recognised(stored):
    """Per grid, the runs whose key its store holds: the same count read under schema 2 as under schema 1."""
    recognised = {}
    for name, g in grids().items():
        if name not in stored:
            continue
        old = {r["key"] for r in stored[name][0]}
        new = {r["key"] for r in stored[name][1]}
        runs = g.runs()
        recognised[name] = sum(run_key(s) in new for s in runs)
        assert recognised[name] == sum(_schema1_key(s) in old for s in runs), name
    assert recognised["fig2-loss"] == recognised["fig2-tf32"] == 1176 and recognised["figA4"] == 1368
    assert sum(recognised.values()) == 10_806


def test_a_run_stored_under_schema_1_is_not_trained_again(tmp_path):
    """plan() skips a run whose schema-1 line is in the store; an adopted copy is written under schema 2."""
    from verify.train.sweep import adopt, grid, plan

    spec = grid("keepnth-pe-bare").runs()[0]  # proj False: schema 1 kept it in the dict
    line = {"key": _schema1_key(spec), "spec": _schema1_dict(spec), "result": {"solved": True}, "device": "cuda"}
    (tmp_path / "old.jsonl").write_text(json.dumps(line) + "\n")
    old = ResultStore(tmp_path / "old.jsonl")
    assert plan([spec], old.keys(), 4) == []
    new = ResultStore(tmp_path / "new.jsonl")
    assert adopt([spec], new, [old.path], device="cuda") == 1
    (written,) = _raw(new.path)
    assert written["key"] == run_key(spec) and written["spec"]["schema"] == SCHEMA and "_key_schema1" not in written


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
    with pytest.raises(RequirementError, match="key schema 3"):
        RunSpec.from_dict({**d, "schema": 3})
