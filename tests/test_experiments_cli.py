"""The command lines of ``experiments/`` and ``benchmarks/``: exit codes, one-line refusals of bad input
before any work, stored results never replaced silently, resumption, progress, strict JSON."""
from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.errors import RequirementError
from experiments import haar_rates, key_dim, recall_grid, recall_grid_gpu, sensitivity
from verify import cli_support as cli

ROOT = Path(__file__).resolve().parents[1]
STORED = ROOT / "results"


def _script(rel: str):
    """A benchmark script as a module (they are run as files, not installed)."""
    sys.path.insert(0, str((ROOT / rel).parent))
    spec = importlib.util.spec_from_file_location(Path(rel).stem, ROOT / rel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _refused(capsys, main, argv, expect: str) -> str:
    """Exit 2, exactly one stderr line that contains ``expect``, no traceback, nothing on stdout."""
    rc = cli.run_main(main, argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2, (argv, rc, err)
    assert len(lines) == 1 and "Traceback" not in err and expect in lines[0], (argv, err)
    assert out == ""
    return lines[0]


@pytest.fixture
def a_file(tmp_path) -> Path:
    f = tmp_path / "a_file"
    f.write_text("x")
    return f


# --- bad input: every class, per command (in-process: run_main is what `python -m` runs) ---------------------------

BAD = {  # command -> [(argv, text the one stderr line must contain)]; "{file}" is an existing plain file
    "recall_grid": [
        (["--bad-flag"], "unrecognized arguments: --bad-flag"),
        (["--dra", "1"], "unrecognized arguments: --dra"),  # no abbreviations: the flag named is the flag typed
        (["--draws", "0"], "argument --draws: must be an integer >= 1"),
        (["--draws", "nan"], "argument --draws: must be an integer"),
        (["--seqs", "1.5"], "argument --seqs: must be an integer"),
        (["--seed", "-1"], "argument --seed: must be an integer >= 0"),
        (["--d-step", "0"], "argument --d-step"),
        (["--regimes", "regime_0,regime_9"], "unknown name 'regime_9'"),
        (["--regimes", "regime_0,regime_0"], "names repeat"),
        (["--multilayer", "--multihead"], "not allowed with argument"),
        (["--multilayer", "--d-step", "4"], "--d-step applies to the grid, not to --multilayer"),
        (["--multihead", "--regimes", "regime_1"], "--regimes applies to the grid"),
        (["--out", "{file}"], "is an existing file; a folder is expected"),
        (["--out", "{file}/sub"], "is a file, not a folder"),
        (["--seqs", "1000000000", "--out", "{tmp}"], "of memory"),
    ],
    "recall_grid_gpu": [
        ([], "the following arguments are required: out"),
        (["{tmp}", "--d-values", "5:2:1"], "argument --d-values: must be start:stop:step"),
        (["{tmp}", "--d-values", "2:65"], "argument --d-values"),
        (["{tmp}", "--max-minutes", "inf"], "argument --max-minutes: must be a finite number > 0"),
        (["{tmp}", "--max-minutes", "nan"], "argument --max-minutes: must be a finite number > 0"),
        (["{tmp}", "--max-minutes", "0"], "argument --max-minutes: must be a finite number > 0"),
        (["{tmp}", "--engine", "cuda"], "argument --engine: invalid choice"),
        (["{file}"], "OUT_DIR {file}: is an existing file"),
        (["{tmp}", "--engine", "reference", "--seqs", "1000000000"], "of memory"),
    ],
    "haar_rates": [
        (["--targets", "0"], "argument --targets: must be an integer >= 1"),
        (["--targets", "inf"], "argument --targets"),
        (["--seed", "x"], "argument --seed"),
        (["--out", "{file}"], "a stored result exists; pass --overwrite"),
        (["--out", "{tmp}"], "is a folder; a file name is expected"),
        (["--out", "{file}/r.json"], "is a file, not a folder"),
        (["--out", "{tmp}/r.json", "--targets", "1000000"], "needs about"),
    ],
    "sensitivity": [
        (["--bad-flag"], "unrecognized arguments: --bad-flag"),
        (["--seq-len", "4"], "argument --seq-len: must be an integer >= 5"),
        (["--seq-len", "1e4"], "argument --seq-len"),
        (["--seq-len", "-inf"], "argument --seq-len: must be an integer >= 5"),  # a value, not an unknown option
        (["--out", "{tmp}/r.json", "--seq-len", "1000000000"], "--seq-len 1000000000 needs about"),
        (["--out", "{file}"], "a stored result exists"),
    ],
    "key_dim": [
        (["--vocab", "1"], "argument --vocab: must be an integer >= 2"),
        (["--kappas", "0"], "argument --kappas: must be comma-separated integers >= 1"),
        (["--kappas", "4,4"], "values repeat"),
        (["--samples", "-5"], "argument --samples"),
        (["--vocab", "2000000000"], "of memory"),
    ],
}
MODULES = {"recall_grid": recall_grid, "recall_grid_gpu": recall_grid_gpu, "haar_rates": haar_rates,
           "sensitivity": sensitivity, "key_dim": key_dim}


@pytest.mark.parametrize("name,argv,expect", [(n, a, e) for n, cases in BAD.items() for a, e in cases])
def test_bad_input_is_one_line_and_exit_2(name, argv, expect, tmp_path, a_file, capsys):
    fill = lambda s: s.replace("{file}", str(a_file)).replace("{tmp}", str(tmp_path))  # noqa: E731
    _refused(capsys, MODULES[name].main, [fill(a) for a in argv], fill(expect))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # refused before any work: nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_gpu_engine_without_cuda_is_bad_input(tmp_path, capsys):
    _refused(capsys, recall_grid_gpu.main, [str(tmp_path / "o")], "--engine mamba_ssm:")
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not Path("/proc").is_dir() or os.name != "posix", reason="needs /proc (not writable, even by root)")
def test_unwritable_out_is_bad_input(capsys):
    _refused(capsys, recall_grid.main, ["--out", "/proc/mc-test/x"], "cannot write in /proc")
    _refused(capsys, haar_rates.main, ["--out", "/proc/r.json"], "cannot write in /proc")


def test_benchmark_bad_input(tmp_path, a_file, capsys):
    mqar = _script("benchmarks/mqar_throughput.py")
    _refused(capsys, mqar.main, ["--configs", "huge"], "argument --configs: unknown name 'huge'")
    _refused(capsys, mqar.main, ["--constructions", "mqar-x"], "unknown name 'mqar-x'")
    _refused(capsys, mqar.main, ["--out", str(a_file)], "a stored result exists")
    sel = _script("benchmarks/selectivity_throughput.py")
    _refused(capsys, sel.main, ["--checks", "keep-nth,nope"], "argument --checks: unknown name 'nope'")
    _refused(capsys, sel.main, ["--out", str(tmp_path)], "is a folder")
    abl = _script("benchmarks/tools/harness_ablation.py")
    _refused(capsys, abl.main, [], "the following arguments are required: --out")
    _refused(capsys, abl.main, ["--out", "x.json", "--dtypes", "float64"], "unknown name 'float64'")
    prof = _script("benchmarks/tools/profile_harness.py")
    _refused(capsys, prof.main, ["--rows", "0"], "argument --rows")
    _refused(capsys, prof.main, ["--dtype", "float64"], "argument --dtype: invalid choice")
    _refused(capsys, prof.main, ["--construction", "mqar-x"], "argument --construction: invalid choice")
    _refused(capsys, prof.main, ["--batches", "0"], "argument --batches")
    forms = _script("benchmarks/linear_forms.py")
    _refused(capsys, forms.main, ["--grids", "recall-layers,nope"], "argument --grids: unknown name 'nope'")
    _refused(capsys, forms.main, ["--device", "gpu"], "--device must be cpu or cuda, got 'gpu'")
    _refused(capsys, forms.main, ["--out", str(a_file)], "a stored result exists")
    if not torch.cuda.is_available():
        _refused(capsys, forms.main, ["--device", "cuda"], "--device cuda: no CUDA GPU is visible")
        _refused(capsys, abl.main, ["--out", str(tmp_path / "a.json")], "needs a CUDA GPU")
        _refused(capsys, prof.main, [], "needs a CUDA GPU")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_linear_forms_benchmark_times_both_forms_of_each_grid_length(tmp_path):
    """The recall grids' one-layer shapes, one per length; at L <= CHUNK (recall-repeats, L = 128) the two forms are
    one computation (difference 0), above it they differ by float32 rounding only."""
    forms = _script("benchmarks/linear_forms.py")
    assert [(s["seq_len"], s["d_model"], s["d_state"], s["batch"]) for s in forms.shapes("recall-vocab-long")] == \
        [(1000, 150, 75, 20), (2000, 150, 75, 20), (3000, 150, 75, 20), (4000, 150, 75, 20)]
    assert [(s["seq_len"], s["d_state"], s["batch"]) for s in forms.shapes("recall-layers")] == [(320, 16, 128)]
    out = tmp_path / "forms.json"
    assert cli.run_main(forms.main, ["--grids", "recall-repeats", "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert (row["seq_len"], row["max_relative_difference"]) == (128, 0.0)
    assert row["attention_s"] > 0 and row["chunked_s"] > 0


# --- the same through `python -m` / the script, as a user runs them (subprocesses, concurrently) --------------------


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT))


def test_subprocess_exit_codes_and_stored_results_kept(tmp_path):
    """Exit 2 and one stderr line for bad input through ``python -m`` and a script; the overwrite refusals (the grid with other
    settings, the default output of sensitivity) leave the stored files byte-identical; --help is exit 0."""
    grid = tmp_path / "recall_scaling"
    grid.mkdir()
    shutil.copy(STORED / "recall_scaling/regime_0.json", grid / "regime_0.json")
    (tmp_path / "results").mkdir()
    shutil.copy(STORED / "keep_nth_memory.json", tmp_path / "results/keep_nth_memory.json")
    before = {p: p.read_bytes() for p in (grid / "regime_0.json", tmp_path / "results/keep_nth_memory.json")}
    py = [sys.executable]
    runs = {
        "sensitivity bad flag": (py + ["-m", "experiments.sensitivity", "--bad-flag"], 2, "--bad-flag"),
        "sensitivity default out": (py + ["-m", "experiments.sensitivity"], 2, "a stored result exists"),
        "grid other settings": (py + ["-m", "experiments.recall_grid", "--out", str(grid), "--regimes", "regime_0",
                                      "--draws", "1", "--seqs", "2"], 2, "other settings (draws: stored 4, asked 1"),
        "haar nan": (py + ["-m", "experiments.haar_rates", "--targets", "nan"], 2, "--targets"),
        "mqar bench": (py + [str(ROOT / "benchmarks/mqar_throughput.py"), "--configs", "x"], 2, "--configs"),
        "help": (py + ["-m", "experiments.haar_rates", "--help"], 0, None),
    }
    procs = {k: subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for k, (cmd, _, _) in runs.items()}
    for k, p in procs.items():
        out, err = p.communicate(timeout=120)
        _, rc, expect = runs[k]
        assert p.returncode == rc, (k, p.returncode, err)
        if rc == 2:
            assert len(err.strip().splitlines()) == 1 and expect in err and "Traceback" not in err, (k, err)
        else:
            assert "--overwrite" in out and "(default: 20)" in out and err == ""  # every flag's help and default
    assert all(p.read_bytes() == b for p, b in before.items())


def test_sigint_exits_130_with_one_line(tmp_path):
    out = tmp_path / "keep.json"
    p = subprocess.Popen([sys.executable, "-m", "experiments.sensitivity", "--out", str(out)], cwd=ROOT, env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    first = p.stderr.readline()  # the first progress line: the measurement has started
    assert first.startswith("keep-nth memory: 0/"), first
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    lines = [line for line in err.splitlines() if not line.startswith("keep-nth memory:")]
    assert p.returncode == 130 and lines == ["interrupted"] and "Traceback" not in err, err
    assert not out.exists()


# --- resumable grids: resume with the same settings, refuse others, replace only with --overwrite -------------------


def _no_nan(text: str):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def test_recall_grid_writes_resumes_and_refuses(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--regimes", "regime_0", "--draws", "1", "--seqs", "2", "--d-step", "30"]
    assert cli.run_main(recall_grid.main, argv + ["--quiet"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.startswith("regime_0 {")  # --quiet: no progress
    path = tmp_path / "regime_0.json"
    data = _no_nan(path.read_text())
    assert data["done_d"] == [2, 32, 62] and len(data["cells"]) == 1 + 31 + 31  # cells N <= D, N in 2..32
    assert data["command"].startswith("python -m experiments.recall_grid --out")
    first = path.read_bytes()

    assert cli.run_main(recall_grid.main, argv) == 0  # same settings, finished: nothing to do, file untouched
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "recall grid: 0/3, elapsed 0 s" and err[-1].startswith("recall grid: 3/3")  # piped progress
    assert path.read_bytes() == first

    partial = dict(data, cells=[c for c in data["cells"] if c["D"] != 62], done_d=[2, 32])
    path.write_text(json.dumps(partial))  # cut before the last D: a rerun measures only D = 62, and the same cells
    assert cli.run_main(recall_grid.main, argv + ["--quiet"]) == 0
    resumed = json.loads(path.read_text())
    assert resumed["done_d"] == [2, 32, 62] and resumed["cells"] == data["cells"]
    capsys.readouterr()

    _refused(capsys, recall_grid.main, argv[:-2] + ["--d-step", "20"], "other settings (d_values: stored [2, 32")
    assert json.loads(path.read_text()) == resumed
    path.write_text("{truncated")
    _refused(capsys, recall_grid.main, argv, "is not a readable result file")
    assert path.read_text() == "{truncated"
    assert cli.run_main(recall_grid.main, argv[:-2] + ["--d-step", "62", "--overwrite", "--quiet"]) == 0
    assert _no_nan(path.read_text())["done_d"] == [2, 64]


def test_recall_grid_gpu_reference_engine_matches_the_analysis_model(tmp_path, capsys):
    """The real block (reference engine) computes the designed circuit: same accuracy as the analysis model, logits
    within float32 rounding; a rerun resumes; other settings are refused."""
    argv = [str(tmp_path), "--engine", "reference", "--regimes", "regime_0", "--d-values", "2:5:2", "--draws", "1",
            "--seqs", "2", "--quiet"]
    assert cli.run_main(recall_grid_gpu.main, argv) == 0
    path = tmp_path / "regime_0.json"
    data = _no_nan(path.read_text())
    assert [(c["D"], c["N"]) for c in data["cells"]] == [(2, 2), (4, 2), (4, 3), (4, 4)]
    assert all(c["measured"] == c["measured_analysis"] and c["max_abs_logit_diff"] < 1e-4 for c in data["cells"])
    first = path.read_bytes()
    capsys.readouterr()
    _refused(capsys, recall_grid_gpu.main, argv + ["--seed", "1"], "other settings (seed: stored 0, asked 1)")
    assert path.read_bytes() == first


def test_tables_refuse_an_existing_file(tmp_path, capsys):
    (tmp_path / "multihead.json").write_text("{}")
    _refused(capsys, recall_grid.main, ["--multihead", "--out", str(tmp_path)], "multihead.json: a stored result")
    assert (tmp_path / "multihead.json").read_text() == "{}"


# --- cli_support ------------------------------------------------------------------------------------------------------


def test_output_file_refuses_a_stored_result_and_replaces_it_with_overwrite(tmp_path):
    """An existing result file is refused without --overwrite and accepted with it (its folder is what must be
    writable, not the file); a folder, or a file where the folder should be, is refused either way."""
    stored = tmp_path / "cost.json"
    stored.write_text("{}")
    with pytest.raises(RequirementError, match="a stored result exists"):
        cli.output_file(str(stored))
    assert cli.output_file(str(stored), overwrite=True) == stored
    assert cli.output_file(str(tmp_path / "new.json")) == tmp_path / "new.json"
    with pytest.raises(RequirementError, match="is a folder"):
        cli.output_file(str(tmp_path), overwrite=True)
    with pytest.raises(RequirementError, match="is a file, not a folder"):
        cli.output_file(str(stored / "inner.json"), overwrite=True)


def test_run_main_exit_codes(capsys):
    def boom(argv):
        raise ZeroDivisionError("x\ny")

    assert cli.run_main(boom, []) == 3
    err = capsys.readouterr().err.splitlines()
    assert err == ["internal error: ZeroDivisionError: x y (--debug prints the traceback)"]
    assert cli.run_main(boom, ["--debug"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and err.splitlines()[-1] == "internal error: ZeroDivisionError: x y"

    def failed(argv):
        raise cli.CheckFailed("recall 0.5")

    def stop(argv):
        raise KeyboardInterrupt

    def bad(argv):
        raise RequirementError("needs N >= kappa")

    assert (cli.run_main(failed, []), cli.run_main(stop, []), cli.run_main(bad, []), cli.run_main(lambda a: 0, [])) \
        == (1, 130, 2, 0)
    assert capsys.readouterr().err.splitlines() == ["FAILED: recall 0.5", "interrupted", "error: needs N >= kappa"]


def test_strict_json_nulls_non_finite_values_with_the_reason():
    text = cli.dumps({"a": [1.0, math.nan], "b": {"c": -math.inf}, "d": 2})
    data = _no_nan(text)
    assert data["a"] == [1.0, None] and data["b"] == {"c": None} and data["d"] == 2
    assert set(data["undefined_values"]) == {"a[1]", "b.c"} and "nan" in data["undefined_values"]["a[1]"]
    assert "undefined_values" not in _no_nan(cli.dumps({"a": 1.0}))


def test_number_types_refuse_non_finite_and_out_of_range():
    import argparse

    for text in ("nan", "inf", "-inf", "0", "x", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            cli.real(0, lo_open=True)(text)
    for text in ("nan", "1.0", "1e3", "0", "11"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli.integer(1, 10)(text)
    assert cli.real(0, lo_open=True)("0.5") == 0.5 and cli.integer(1, 10)("10") == 10


def test_memory_refusal_names_estimate_and_available(monkeypatch):
    from verify import memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 2**30)
    with pytest.raises(RequirementError, match=r"the grid needs about 2.0 GiB of memory, and 1.0 GiB is "
                                               r"available: lower --seqs"):
        cli.require_memory(2**31, "the grid", "--seqs")
    cli.require_memory(2**29, "the grid", "--seqs")


def test_progress_piped_lines_and_quiet():
    stream = io.StringIO()
    with cli.Progress(3, "demo", stream=stream, every=0.05) as p:
        p.advance(status="step 1")
        import time
        time.sleep(0.2)  # a long step: heartbeat lines keep coming
        p.advance(2)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "demo: 0/3, elapsed 0 s" and len(lines) >= 3
    assert lines[-1].startswith("demo: 3/3, step 1, done in")
    quiet = io.StringIO()
    with cli.Progress(3, "demo", quiet=True, stream=quiet) as p:
        p.advance(3)
    assert quiet.getvalue() == ""
