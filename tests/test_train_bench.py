"""The training throughput bench's pack-size sweep (``verify.train.throughput``) and its JSON
(``experiments.train_bench``), and experiments.protocol_cost's arithmetic.

The sweep logic runs on stand-in timings (seconds chosen per pack size), so where it stops and every rate are known
by hand; one real CPU run at tiny sizes checks the file's fields against its own timings."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments import protocol_cost as pc
from experiments import train_bench as bench
from verify.train import throughput
from verify.train.spec import protocol

REF = protocol("reference", train_samples=4096, val_samples=16, test_samples=16)


def _fake_timings(monkeypatch, seconds, oom_from=None):
    """time_models returns seconds(K) for a pack of K (K = 1 for the single path); raises CUDA out of memory from
    ``oom_from`` models on. Returns the list of (K, impl, graph) calls."""
    calls = []

    def fake(specs, device, impl, steps, warmup, graph=False):
        k = len(specs)
        calls.append((k, impl, graph))
        if oom_from is not None and k >= oom_from:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return seconds(k)

    monkeypatch.setattr(throughput, "time_models", fake)
    return calls


def test_auto_doubles_while_the_rate_grows_and_stops_at_the_plateau(monkeypatch):
    # K models take 1 + K/8 s for 10 steps: rates 10K / (1 + K/8) = 8.9, 16, 26.7, 40, 53.3, 64, 71.1, 75.3 (K = 1 ..
    # 128); 128 gains 75.3 / 71.1 = 1.059 < 1.1 over 64, so the sweep ends at 128, and 64 was the last to gain.
    _fake_timings(monkeypatch, lambda k: 1 + k / 8)
    spec = bench.parse_cell("keep-nth:mamba:10:8:8", REF)
    row = throughput.bench_cell(spec, ["auto"], steps=10, warmup=0, device="cpu", single_models=2, plateau=0.1)
    assert [p["models"] for p in row["sweep"]] == [1, 2, 4, 8, 16, 32, 64, 128]
    assert row["stopped"].startswith("plateau: 128 models")
    for p in row["sweep"]:
        assert p["packed"]["seconds"] == 1 + p["models"] / 8
        assert p["packed"]["model_steps_per_s"] == pytest.approx(10 * p["models"] / (1 + p["models"] / 8))
    assert row["best"] == {"models": 128, "path": "packed", "model_steps_per_s": pytest.approx(1280 / 17)}
    # single: 2 models one after another, 1.125 s each
    assert row["single"]["models_timed"] == 2 and row["single"]["seconds"] == 2.25
    assert row["single"]["model_steps_per_s"] == pytest.approx(20 / 2.25)
    assert row["speedup"] == pytest.approx((1280 / 17) / (20 / 2.25))
    assert row["batch"] == 16 and row["spec"]["seq_len"] == 10 and row["spec"]["task_args"] == [["n", 5], ["pe", True]]


def test_fixed_sizes_and_the_memory_bound(monkeypatch):
    calls = _fake_timings(monkeypatch, lambda k: 1.0, oom_from=8)
    spec = bench.parse_cell("mamba:4:128:11:8", REF)
    points, stopped = throughput.sweep_sizes(spec, [3, 7, "auto"], 5, 0, "cpu", 0.1, 1024)
    # fixed 3 and 7, then doubling 1, 2, 4 (each gains x2 at 1 s a pack), 8 does not fit
    assert [p["models"] for p in points] == [1, 2, 3, 4, 7] and stopped == "out of memory at 8 models"
    assert [k for k, _, _ in calls] == [3, 7, 1, 2, 4, 8]
    points, stopped = throughput.sweep_sizes(spec, ["auto"], 5, 0, "cpu", 0.1, 4)
    assert [p["models"] for p in points] == [1, 2, 4] and stopped == "--max-models 4"


def test_a_constant_rate_stops_the_doubling_at_once(monkeypatch):
    _fake_timings(monkeypatch, lambda k: float(k))  # every pack runs 5 model-steps a second
    spec = bench.parse_cell("mamba:4:128:11:8", REF)
    points, stopped = throughput.sweep_sizes(spec, ["auto"], 5, 0, "cpu", 0.1, 64)
    assert [p["models"] for p in points] == [1, 2] and stopped.startswith("plateau: 2 models")
    assert throughput.plateaued(100.0, 109.0, 0.1) and not throughput.plateaued(100.0, 111.0, 0.1)


def test_a_tiny_cpu_bench_writes_rates_computed_from_its_timings_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "bench.json"
    argv = ["--device", "cpu", "--protocol", "reference", "--models", "3,auto", "--max-models", "2", "--steps", "2",
            "--warmup", "0", "--single-models", "1", "--cells", "keep-nth:mamba:6:4:2", "--grid", "smoke",
            "--where", "d_model=8", "--out", str(out)]
    assert bench.main(argv) == 0
    data = json.loads(out.read_text())
    assert data["command"] == "python -m experiments.train_bench " + " ".join(argv)
    assert data["settings"]["batch"] == 16 and len(data["rows"]) >= 2
    for row in data["rows"]:
        assert [p["models"] for p in row["sweep"]] == [1, 2, 3] and row["stopped"] == "--max-models 2"
        for p in row["sweep"]:
            assert p["packed"]["seconds"] > 0
            assert p["packed"]["model_steps_per_s"] == pytest.approx(p["models"] * 2 / p["packed"]["seconds"])
        assert row["best"]["model_steps_per_s"] == max(p["packed"]["model_steps_per_s"] for p in row["sweep"])
        assert row["single"]["model_steps_per_s"] == pytest.approx(2 / row["single"]["seconds"])
        assert row["speedup"] == pytest.approx(row["best"]["model_steps_per_s"] / row["single"]["model_steps_per_s"])
    calls = _fake_timings(monkeypatch, lambda k: 1.0)
    assert bench.main(argv) == 0 and calls == []  # every cell is in the file: nothing timed again
    assert json.loads(out.read_text()) == data


@pytest.mark.parametrize("argv, message", [
    (["--cells", "keep-nth:mamba:x:8:8"], "must be integers"),
    (["--cells", "mamba:4:128"], "a cell is mixer:kappa:|V|:d:N"),
    (["--where", "seq_len=10"], "give a --grid"),
    (["--grid", "smoke", "--where", "colour=1"], "not a RunSpec field"),
    (["--grid", "smoke", "--where", "d_model=12345"], "no run shape matches"),
    (["--models", "0"], "--models"),
])
def test_bench_bad_input(argv, message, capsys):
    from verify import cli_support as cli

    assert cli.run_main(bench.main, ["--device", "cpu", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_bench_refuses_a_file_of_other_settings(tmp_path, monkeypatch, capsys):
    from verify import cli_support as cli

    _fake_timings(monkeypatch, lambda k: 1.0)
    out = tmp_path / "b.json"
    base = ["--device", "cpu", "--models", "1", "--single-models", "1", "--cells", "mamba:4:128:11:8", "--out",
            str(out)]
    assert cli.run_main(bench.main, base) == 0
    assert cli.run_main(bench.main, [*base, "--steps", "7"]) == 2
    assert "holds a result of other settings" in capsys.readouterr().err


def test_the_scripts_run_as_modules_and_refuse_bad_input_in_one_line(tmp_path):
    """``python -m experiments.train_bench`` / ``experiments.calibrate`` as a user types them: bad input is exit 2 and
    one stderr line naming the flag, before any work (nothing written)."""
    root = Path(__file__).resolve().parents[1]
    runs = {"experiments.train_bench": (["--models", "0", "--out", str(tmp_path / "b.json")], "--models"),
            "experiments.calibrate": (["--kappas", "four", "--out", str(tmp_path)], "--kappas")}
    env = dict(os.environ, PYTHONPATH=str(root))
    procs = {m: subprocess.Popen([sys.executable, "-m", m, *argv], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
             for m, (argv, _) in runs.items()}
    for m, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2 and out == "", (m, proc.returncode, err)
        assert len(err.strip().splitlines()) == 1 and runs[m][1] in err and "Traceback" not in err, (m, err)
    assert list(tmp_path.iterdir()) == []


# --- the protocol's cost ----------------------------------------------------------------------------------------------


def _row(cell: str, spec: dict, rates: dict[int, float]) -> dict:
    best = max(rates, key=rates.get)
    return {"cell": cell, "spec": spec, "batch": 16, "sweep": [
        {"models": k, "packed": {"seconds": 1.0, "model_steps_per_s": r}} for k, r in sorted(rates.items())],
        "best": {"models": best, "path": "packed", "model_steps_per_s": rates[best]}}


def _keep(mixer, T, d, n):
    return {"task": "keep-nth", "mixer": mixer, "vocab": 128, "kappa": 0, "seq_len": T, "d_model": d, "d_state": n}


def test_gpu_hours_by_hand():
    # 3 models x 600 epochs x 6250 steps = 11.25 M model-steps; at 1000 a second 11,250 s = 3.125 h
    assert pc.gpu_hours(3, 600, 1000.0) == pytest.approx(3.125)
    assert pc.STEPS_PER_EPOCH == 6250


def test_table_a1_cost_by_hand(tmp_path):
    """One measured cell (T 50, d 64, N 64, the largest) stands for every A.1 cell: 45 cells x 3 seeds. Pack of 3:
    the sweep's largest size <= 3 is 2, at 2500 model-steps/s; best 5000 (at 64).
    Upper: 45 x 3 x 600 x 6250 = 506,250,000 model-steps: 202,500 s = 56.25 h at 2500, 28.125 h at 5000.
    Estimate: Table A.1's printed epochs sum (by hand, row by row) to 1525 + 1581 + 1154 + 382 + 299 + 279 + 1542 +
    1131 + 1212 = 9105; 9105 x 3 x 6250 = 170,718,750 model-steps: 18.96875 h at 2500, 9.484375 h at 5000."""
    rows = [_row("keep-nth:mamba:50:64:64", _keep("mamba", 50, 64, 64), {1: 1000.0, 2: 2500.0, 64: 5000.0})]
    t = pc.cost(pc.TABLES[0], rows, tmp_path)
    assert t["cells"] == 45 and t["seeds"] == 3 and t["model_steps_upper"] == 506_250_000
    assert t["gpu_hours"]["upper"] == {"pack": pytest.approx(56.25), "best": pytest.approx(28.125)}
    assert t["gpu_hours"]["estimate"] == {"pack": pytest.approx(18.96875), "best": pytest.approx(9.484375)}
    assert t["rates"] == {"measured": 1, "from_larger_cell": 44, "missing": []}
    assert t["epochs_estimate_bases"] == {"stated by the paper": 45}


def test_a_cell_without_a_larger_measured_cell_leaves_its_table_without_a_total(tmp_path):
    rows = [_row("keep-nth:mamba:50:64:32", _keep("mamba", 50, 64, 32), {3: 100.0})]  # no N = 64 measured
    t = pc.cost(pc.TABLES[0], rows, tmp_path)
    assert len(t["rates"]["missing"]) == 15  # the N = 64 cells: 5 T x 3 d
    assert all(v is None for b in t["gpu_hours"].values() for v in b.values())
    # a pack-size sweep that starts above the seeds gives a best rate but no pack rate
    r = pc.rate_for(_keep("mamba", 10, 8, 8), [_row("x", _keep("mamba", 10, 8, 8), {4: 50.0})], 3)
    assert r["pack"] is None and r["best"] == 50.0 and r["source"] == "measured"


def test_the_larger_cell_chosen_is_the_smallest_that_dominates():
    rows = [_row("a", _keep("mamba", 50, 64, 64), {3: 1.0}), _row("b", _keep("mamba", 30, 32, 32), {3: 2.0}),
            _row("c", _keep("mamba", 50, 8, 64), {3: 3.0}), _row("s", _keep("mamba-s4d-complex", 10, 8, 8), {3: 4.0})]
    # T d (d + N): a 409,600, b 61,440, c 28,800; the smallest of those at least as large in every size is chosen
    assert pc.rate_for(_keep("mamba", 20, 8, 8), rows, 3)["pack"] == 3.0  # a, b, c dominate: c
    assert pc.rate_for(_keep("mamba", 20, 16, 8), rows, 3)["pack"] == 2.0  # c's d = 8 is too small: b
    assert pc.rate_for(_keep("mamba", 20, 8, 64), rows, 3)["source"] == "from c (every size >=)"
    assert pc.rate_for(_keep("mamba", 40, 32, 8), rows, 3)["pack"] == 1.0  # only a covers T 40, d 32
    assert pc.rate_for(_keep("mamba-s4d-complex", 20, 8, 8), rows, 3) is None  # another mixer never stands in


def test_stored_runs_give_the_epochs_where_every_run_of_the_cell_fell():
    def rec(d, lr, history):
        spec = {**_keep("mamba", 10, d, 8), "lr": lr, "protocol": {"batch_size": 64, "train_samples": 100_000}}
        return {"spec": spec, "result": {"history": history}}

    fell = pc.stop_epochs([
        rec(8, 0.03, [[200, 0.5, 0.9], [400, 5e-7, 1.0]]), rec(8, 0.03, [[200, 1e-7, 1.0]]),  # 400 x 64 / 1e5
        rec(8, 0.01, [[200, 0.5, 0.9]]),  # another lr: not the paper's
        rec(32, 0.03, [[200, 1e-7, 1.0]]), rec(32, 0.03, [[200, 2e-6, 1.0]]),  # one run never fell: no estimate
    ])
    assert fell == {pc.cell_key(_keep("mamba", 10, 8, 8)): pytest.approx(0.256)}


def test_protocol_cost_command_line(tmp_path, capsys):
    from verify import cli_support as cli

    rate = tmp_path / "bench.json"
    rows = [_row("keep-nth:mamba:50:64:64", _keep("mamba", 50, 64, 64), {3: 1000.0})]
    rate.write_text(json.dumps({"device_name": "test GPU", "rows": rows}))
    out = tmp_path / "cost.json"
    assert cli.run_main(pc.main, ["--rate", str(rate), "--out", str(out), "--results", str(tmp_path)]) == 0
    data = json.loads(out.read_text())
    assert [t["table"] for t in data["tables"]][:4] == ["A.1", "A.2", "A.3", "A.4"]
    a3 = data["tables"][2]  # the no-PE table shares the +PE cell's rate: 45 x 3 x 600 x 6250 / 1000 / 3600
    assert a3["gpu_hours"]["upper"]["pack"] == pytest.approx(140.625)
    assert "| A.3 (Mamba, KEEP FIFTH) | 45 x 3 |" in out.with_suffix(".md").read_text()
    capsys.readouterr()
    assert cli.run_main(pc.main, ["--rate", str(rate), "--out", str(out)]) == 2  # never replaced silently
    assert "a stored result exists" in capsys.readouterr().err
    rows[0]["batch"] = 64
    rate.write_text(json.dumps({"device_name": "test GPU", "rows": rows}))
    assert cli.run_main(pc.main, ["--rate", str(rate), "--out", str(tmp_path / "o.json")]) == 2
    assert "timed at batch 64" in capsys.readouterr().err


def test_minutes_starts_no_cell_after_the_budget(tmp_path, monkeypatch, capsys):
    _fake_timings(monkeypatch, lambda k: 1.0)
    clock = iter([0.0, 0.0, 100.0, 100.0, 100.0])  # the deadline is set at 0; the second cell starts at 100 s
    monkeypatch.setattr(bench.time, "time", lambda: next(clock))
    out = tmp_path / "b.json"
    argv = ["--device", "cpu", "--models", "1", "--single-models", "1", "--cells",
            "keep-nth:mamba:6:4:2,keep-nth:mamba:7:4:2", "--minutes", "1", "--out", str(out)]
    assert bench.main(argv) == 0
    assert [r["cell"] for r in json.loads(out.read_text())["rows"]] == ["keep-nth:mamba:6:4:2"]
    assert "1 cells left" in capsys.readouterr().err
