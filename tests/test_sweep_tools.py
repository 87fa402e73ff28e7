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


def test_a_window_counts_the_steps_of_packs_cut_in_flight(tmp_path):
    """A sweep cut by --minutes: the steps of the packs it checkpointed count with those of its finished runs, the
    rate is over both, and the full grid's time is the grid's model-steps at that rate. A second window resumes the
    checkpoint and counts only the steps trained since."""
    tiny = tmp_path / "tiny.toml"
    tiny.write_text((ROOT / "experiments/grids/smoke.toml").read_text()
                    + 'protocol_overrides = {max_steps = 100000, eval_every = 50, stop = "val_loss", '
                      'stop_value = 0.0}\n')  # never stops early: cut by the time budget
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reports, held = [], []
    for i in range(2):
        out = tmp_path / f"util{i}.json"
        r = subprocess.run([sys.executable, str(ROOT / "tools/sweep_gpu_utilisation.py"), "--out", str(out),
                            "--interval", "0.5", "--", "--grid", str(tiny), "--no-ray", "--quiet", "--seeds", "1",
                            "--minutes", "0.05", "--store", str(tmp_path / "s.jsonl")], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        reports.append(json.loads(out.read_text()))
        cks = sorted((tmp_path / "s.jsonl.ckpt").glob("*.pt"))
        assert cks  # the pack in flight was checkpointed
        cks = [torch.load(f, weights_only=False) for f in cks]
        held.append(sum(len(c["keys"]) * c["state"]["step"] for c in cks))  # no model stops early
    first, second = reports
    assert first["runs_stored"] == 0 and first["model_steps_finished"] == 0
    assert first["packs_checkpointed"] >= 1 and first["model_steps_checkpointed"] > 0
    assert first["model_steps_per_train_second_finished_only"] == 0
    assert first["model_steps"] == first["model_steps_checkpointed"] == held[0]
    assert first["model_steps_per_train_second"] == pytest.approx(first["model_steps"] / first["train_seconds"],
                                                                  abs=0.1)
    assert first["grid_model_steps"] == 4 * 100_000  # 4 runs of the grid, none stopping early
    assert first["full_grid_minutes_estimate"] == pytest.approx(
        400_000 / first["model_steps_per_train_second"] / 60, abs=0.1)
    assert 0 < first["train_seconds"] <= first["wall_seconds"]
    # the second window resumed what the first left: only its own steps count
    assert second["runs_stored"] == 0 and second["model_steps_checkpointed"] == held[1] - held[0] > 0


def test_window_arithmetic_on_a_synthetic_store():
    """Finished runs new to the store count their steps, less what a checkpoint of their pack held before the
    window; checkpoints count what they gained; the span runs from the first start (clamped to the window's start)
    to the last end."""
    util = _tool("sweep_gpu_utilisation")
    t0 = 1_000_000.0
    stamp = lambda t: __import__("datetime").datetime.fromtimestamp(t).isoformat()  # noqa: E731
    records = [{"key": "old", "result": {"steps": 4000}, "finished": stamp(t0 - 500), "pack_seconds": 100},
               {"key": "a1", "result": {"steps": 4000}, "finished": stamp(t0 + 100), "pack_seconds": 80},
               {"key": "a2", "result": {"steps": 1200}, "finished": stamp(t0 + 100), "pack_seconds": 80},
               {"key": "r1", "result": {"steps": 4000}, "finished": stamp(t0 + 200), "pack_seconds": 300}]
    before = {"old"}
    ck_before = {"r.pt": {"keys": ["r1"], "model_steps": 3000, "seconds": 250.0, "mtime": t0 - 10}}
    ck_after = {"c.pt": {"keys": ["c1", "c2", "c3"], "model_steps": 3 * 900, "seconds": 150.0, "mtime": t0 + 240},
                "q.pt": {"keys": ["q1"], "model_steps": 50, "seconds": 9.0, "mtime": t0 - 900}}
    ck_before["q.pt"] = ck_after["q.pt"]  # held before, not trained in this window
    w = util.window(records, before, ck_before, ck_after, t0)
    # finished: 4000 + 1200 + 4000 - 3000 (r1's pack had trained 3000 before) = 6200; checkpointed: 2700 (q: 0)
    assert w == {"runs": 3, "finished": 6200, "checkpointed": 2700, "packs_checkpointed": 1, "span": 240.0}
