"""tools/ for training elsewhere: merging stores (and their pack checkpoints) back, and the utilisation report of a
sweep (nvidia-smi sampled; here a stand-in prints fixed readings)."""
from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from verify.train.spec import run_key
from verify.train.store import ResultStore
from verify.train.sweep import grid

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / f"tools/{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rec(spec, device="cuda"):
    return {"key": run_key(spec), "spec": spec.as_dict(), "result": {"solved": False, "steps": 10}, "device": device}


def test_merge_adds_each_run_once_carries_checkpoints_and_refuses_mixed_devices(tmp_path, capsys):
    merge = _tool("merge_stores")
    runs = grid("smoke").runs()
    into = tmp_path / "results"
    ResultStore(into / "smoke.jsonl").append([_rec(runs[0])])
    src = tmp_path / "elsewhere/smoke__part.jsonl"
    ResultStore(src).append([_rec(runs[0]), _rec(runs[1])])
    Path(f"{src}.ckpt").mkdir()
    torch.save({"keys": [run_key(runs[2])]}, Path(f"{src}.ckpt/p2.pt"))
    Path(f"{into}/smoke.jsonl.ckpt").mkdir()
    torch.save({"keys": [run_key(runs[1])]}, into / "smoke.jsonl.ckpt/p1.pt")  # its run arrives with the merge
    for _ in range(2):
        assert merge.main(["--into", str(into), str(src)]) == 0
    assert sorted(r["key"] for r in ResultStore(into / "smoke.jsonl").records()) == sorted(
        run_key(s) for s in runs[:2])
    assert sorted(p.name for p in (into / "smoke.jsonl.ckpt").iterdir()) == ["p2.pt"]
    assert "+1 runs (2 in all)" in capsys.readouterr().out

    cpu = tmp_path / "cpu/smoke.jsonl"
    ResultStore(cpu).append([_rec(runs[3], device="cpu")])
    assert merge.main(["--into", str(into), str(cpu)]) == 2
    assert "holds runs trained on cuda and this sweep trains on cpu" in capsys.readouterr().err
    assert run_key(runs[3]) not in ResultStore(into / "smoke.jsonl").keys()
    assert merge.main(["--into", str(into), "--allow-mixed-devices", str(cpu)]) == 0


def test_the_utilisation_report_of_a_sweep(tmp_path):
    """The report times a sweep into a fresh store and summarises the (stand-in) nvidia-smi readings: two GPUs at
    30 % and 50 % make samples of 40 % mean, and the memory is the larger of the two."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '30, 1000'\necho '50, 2000'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    out, tiny = tmp_path / "util.json", tmp_path / "tiny.toml"
    tiny.write_text((ROOT / "experiments/grids/smoke.toml").read_text()
                    + "protocol_overrides = {max_steps = 30, eval_every = 10}\n")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "tools/sweep_gpu_utilisation.py"), "--out", str(out),
                        "--interval", "0.1", "--", "--grid", str(tiny), "--no-ray", "--quiet", "--seeds", "1",
                        "--store", str(tmp_path / "s.jsonl")], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rep = json.loads(out.read_text())
    assert rep["exit_code"] == 0 and rep["runs_stored"] == 2 and rep["runs_selected"] == 2 and rep["grid_runs"] == 4
    assert rep["model_steps"] == sum(x["result"]["steps"] for x in ResultStore(tmp_path / "s.jsonl").records())
    u = rep["utilisation"]
    assert u["samples"] >= 1 and u["mean_percent"] == u["max_percent"] == 40.0 and u["memory_max_mib"] == 2000
    assert u["zero_share"] == 0 and rep["devices"] == ["cpu"] and rep["wall_seconds"] > 0


def test_the_utilisation_report_says_why_it_has_no_readings(tmp_path):
    util = _tool("sweep_gpu_utilisation")
    rows, errors = [], []
    import threading

    stop = threading.Event()
    stop.set()
    path = os.environ["PATH"]
    try:
        os.environ["PATH"] = str(tmp_path)  # no nvidia-smi here
        util.sample(0.1, stop, rows, errors)
    finally:
        os.environ["PATH"] = path
    assert rows == [] and errors == ["nvidia-smi not found"] and util.summary(rows, errors) is None


@pytest.mark.parametrize("args", [["--", "--grid", "smoke"], ["--", "--store", "x.jsonl"]])
def test_the_utilisation_report_needs_a_grid_and_a_store_of_its_own(args, capsys):
    util = _tool("sweep_gpu_utilisation")
    with pytest.raises(SystemExit) as e:
        util.main(["--out", "x.json", *args])
    assert e.value.code == 2 and "need --grid GRID and --store FILE" in capsys.readouterr().err
