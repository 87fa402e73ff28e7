"""The command line: exit codes, one-line errors, JSON, export round trip."""
import argparse
import io
import json
import subprocess
import sys

import pytest
import torch

from constructions import mqar_mamba
from verify.export import load
from verify.engines import make_engine
from verify_constructions.cli import main

# mamba_ssm.Mamba(bias=True, conv_bias=True) parameter names (mamba_ssm 2.3, modules/mamba_simple.py)
MAMBA_NAMES = {"in_proj.weight", "in_proj.bias", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight",
               "dt_proj.bias", "A_log", "D", "out_proj.weight", "out_proj.bias"}


def run(*argv):
    return subprocess.run([sys.executable, "-m", "verify_constructions", *argv], capture_output=True, text=True)


@pytest.mark.parametrize("argv, needle", [
    (["check", "mqar-mamba", "--kappa", "0"], "kappa >= 1"),
    (["check", "mqar-mamba", "--vocab", "1"], "|V| >= 2"),
    (["check", "mqar-mamba", "--kappa", "4", "--seq-len", "11"], "seq_len >= 2*kappa"),
    (["check", "mqar-mamba", "--engine", "tpu"], "engine must be one of"),
    (["check", "mqar-mamba", "--dtype", "float8"], "dtype must be one of"),
    (["check", "mqar-mamba", "--dtype", "tfloat32"], "tfloat32 (float32 tensors with TF32"),
    (["export", "mqar-mamba", "--dtype", "tfloat32", "--out", "/nonexistent/x"], "file dtype must be one of"),
    (["check", "mqar-mamba", "--variant", "two-hot"], "variant must be one of"),
    (["check", "mqar-mamba", "--kappa", "x"], "invalid int value"),
    (["check", "nope"], "invalid choice"),
    (["check"], "name a construction"),
])
def test_bad_input_is_one_line_and_exit_2(argv, needle):
    r = run(*argv)
    assert r.returncode == 2, r
    assert r.stderr.count("\n") == 1 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for machines without a GPU")
def test_cuda_engine_without_gpu_is_a_clear_error():
    r = run("check", "mqar-mamba", "--engine", "mamba_ssm")
    assert r.returncode == 2 and "needs a CUDA GPU" in r.stderr and "Traceback" not in r.stderr


def test_check_json_reports_exact_recall(capsys):
    assert main(["check", "mqar-mamba", "--kappa", "5", "--vocab", "30", "--variant", "jl", "--samples", "20",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    hard = 6 * (20 + 10) + 4 + 90  # constructed: 30 / 5 rows of length 30 packed (20 queries) and alternating (10);
    # of length 100, a decay row through noise (4 queries) and one through queries (90)
    assert out["passed"] and out["correct"] == out["queries"] == 100 + hard and out["config"]["hard_cases"] == 14
    assert out["sizes"]["d_state"] == 5 and out["min_margin"] >= out["proven_margin"] * (1 - 1e-9)


def test_default_run_table_and_exit_code():
    r = run("--json")
    body = json.loads(r.stdout)
    assert r.returncode == 0 and body["passed"] and all(c["passed"] for c in body["checks"])
    exact = [c for c in body["checks"] if c["construction"] == "mqar-mamba"]
    assert exact and all(c["correct"] == c["queries"] for c in exact)  # Theorem 2: exact recall, every query


def test_list_shows_size_formulas(capsys):
    assert main(["list", "--json"]) == 0
    specs = json.loads(capsys.readouterr().out)
    assert specs["mqar-mamba"]["sizes"]["d_state"].startswith("kappa")


def test_export_round_trip_same_logits(tmp_path):
    assert main(["export", "mqar-mamba", "--kappa", "3", "--vocab", "7", "--variant", "jl", "--out",
                 str(tmp_path), "--dtype", "float64"]) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    d = 3 + config["info"]["value_dim"]
    assert config["block"]["arguments"] == {"d_model": d, "d_state": 3, "d_conv": 4, "expand": 1,
                                            "dt_rank": -(-d // 16), "bias": True, "conv_bias": True}
    assert config["tokens"]["keys"] == [0, 3] and config["tokens"]["values"] == [3, 10]
    back = load(tmp_path)
    assert set(back.mixer) == MAMBA_NAMES
    original = mqar_mamba.build(3, 7, "jl", seq_len=100)  # the CLI default T
    tokens = torch.tensor([[0, 4, 1, 9, 2, 3, 10, 1, 0, 2]])
    eng = make_engine("reference", "float64")
    assert torch.equal(eng.hidden(back, tokens), make_engine("reference", "float64").hidden(original, tokens))


# --- options, exit codes, paths, layout (the command line under bad input) -----------------------------------------

def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


@pytest.mark.parametrize("argv, needle", [
    (["--engine", "mamba_ssm", "list"], "--engine typed before 'list' has no effect there"),
    (["--dtype", "bfloat16", "export", "mqar-mamba", "--out", "x"], "--dtype typed before 'export'"),
    (["--dtype", "float32", "check", "haar", "--dtype", "float64"], "typed twice with different values"),
    (["check", "mqar-mamba", "--jl-eps", "nan"], "must be a finite number, got 'nan'"),
    (["check", "induction-heads", "--gamma", "inf"], "must be a finite number, got 'inf'"),
    (["check", "mqar-mamba", "--kappa", "100000", "--vocab", "100000000"], "of memory, and"),
    (["figures", "--results", "/nonexistent/results"], "no such folder"),
    (["figures", "--only", "nope"], "unknown figure"),
    (["check", "mqar-mamba", "--from-export", "/nonexistent/export"], "no such folder"),
    (["check", "haar", "--seed", "5", "--seed", "-2"], "must be an integer >= 0"),
    (["check", "copy-previous", "--seed", str(2**63)], "must be an integer"),
    (["check", "copy-previous", "--samples", "-1"], "at least one sequence"),
    (["check", "copy-previous", "--vocab", "1000000000000"], "2 <= --vocab <= 4096"),
    (["check", "copy-previous", "--seq-len", "1"], "--seq-len >= 2"),
    (["check", "keep-nth", "--d-conv", "1000000000000"], "of memory, and"),
])
def test_more_bad_input_is_one_line_and_exit_2(capsys, argv, needle):
    code, _, err = cli(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and needle in err, err


def test_options_before_the_subcommand_act_on_it(capsys):
    code, out, _ = cli(capsys, "--dtype", "float32", "--json", "check", "haar", "--levels", "1", "--seq-len", "16",
                       "--samples", "2", "--quiet")
    body = json.loads(out)
    assert code == 0 and body["dtype"] == "float32" and body["engine"] == "reference"


def test_internal_error_is_exit_3_one_line_and_debug_shows_the_traceback(capsys, monkeypatch):
    from verify.registry import SPECS

    def broken(*a, **k):
        raise ZeroDivisionError("boom")

    from dataclasses import replace as dc_replace

    monkeypatch.setitem(SPECS, "haar", dc_replace(SPECS["haar"], check=broken))
    code, _, err = cli(capsys, "check", "haar", "--quiet")
    assert code == 3 and err.count("\n") == 1 and "internal error: ZeroDivisionError: boom" in err
    code = main(["check", "haar", "--quiet", "--debug"])
    assert code == 3 and "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried "
                                                                 "to allocate 1032000000000000 bytes"),
                                   torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                   RuntimeError("numel: integer multiplication overflow"),
                                   ValueError("array is too big; `arr.size * arr.dtype.itemsize` is larger than the "
                                              "maximum possible size.")])
def test_an_allocation_that_fails_is_bad_input_exit_2(capsys, monkeypatch, error):
    """An allocation no estimate foresaw, or a size too large to allocate at all (torch's element count overflowing,
    numpy's "array is too big"), means the sizes do not fit this machine: exit 2, one line; any other RuntimeError
    stays an internal error (exit 3)."""
    from dataclasses import replace as dc_replace

    from verify.registry import SPECS

    def raising(*a, **k):
        raise error

    monkeypatch.setitem(SPECS, "haar", dc_replace(SPECS["haar"], check=raising))
    code, _, err = cli(capsys, "check", "haar", "--quiet")
    assert code == 2 and err.count("\n") == 1 and "out of memory" in err
    monkeypatch.setitem(SPECS, "haar", dc_replace(SPECS["haar"], check=lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("shape mismatch"))))
    assert cli(capsys, "check", "haar", "--quiet")[0] == 3


def test_interrupt_is_exit_130_one_line():
    """SIGINT while a check runs (sent once its first progress line shows it at work, with most of its sequences
    still to come): exit 130, the last line "interrupted", no traceback."""
    import signal

    p = subprocess.Popen([sys.executable, "-m", "verify_constructions", "check", "keep-nth", "--seq-len", "20000",
                          "--samples", "256"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    seen = ""
    while "keep-nth:" not in seen and p.poll() is None:
        seen += p.stderr.readline()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    err = seen + err
    assert p.returncode == 130 and "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted", err


def test_json_is_strict_even_where_a_value_is_undefined(capsys):
    code, out, _ = cli(capsys, "check", "induction-heads", "--vocab", "5", "--seq-len", "30", "--samples", "4",
                       "--dtype", "bfloat16", "--json", "--quiet")
    body = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert body["verdict"] in ("PASS", "UNPROVEN") and code in (0, 1)


@pytest.mark.parametrize("width", [80, 200])
def test_table_reads_at_80_and_200_columns(width):
    """The verdict, recall and margins are visible whole at 80 columns, for a PASS and a FAIL row alike."""
    from rich.console import Console

    from verify_constructions.cli import table
    from verify.registry import SPECS
    from verify.engines import make_engine
    from constructions import mqar_mamba
    from dataclasses import replace as dc_replace

    spec = SPECS["mqar-mamba"]
    p = spec.params(kappa=4, vocab=16, samples=4)
    good = spec.check(spec.build(p), p, make_engine("reference"))
    con = spec.build(p)
    con.proof = dc_replace(con.proof, margin=123.456789)
    bad = spec.check(con, p, make_engine("reference"))
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(table([good, bad], "Construction checks (engine reference, float64)"))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width
    assert "PASS" in text and "FAIL" in text and "…" not in text
    assert f"{good.correct}/{good.queries}" in text and "123.5" in text and f"{good.min_margin:.4g}" in text


def test_export_is_a_pair_written_atomically_with_mode_0644(tmp_path, capsys):
    target = tmp_path / "e"
    assert cli(capsys, "export", "keep-nth", "--vocab", "8", "--out", str(target))[0] == 0
    assert sorted(f.name for f in target.iterdir()) == ["config.json", "model.safetensors"]
    assert all(oct(f.stat().st_mode & 0o777) == "0o644" for f in target.iterdir())
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # no temporary folder left behind
    before = (target / "model.safetensors").read_bytes()
    code, _, err = cli(capsys, "export", "keep-nth", "--vocab", "9", "--out", str(target))
    assert code == 2 and "--force" in err and (target / "model.safetensors").read_bytes() == before
    assert cli(capsys, "export", "keep-nth", "--vocab", "9", "--out", str(target), "--force")[0] == 0
    assert json.loads((target / "config.json").read_text())["record"]["params"]["vocab"] == 9
    (tmp_path / "file").write_text("x")
    code, _, err = cli(capsys, "export", "keep-nth", "--out", str(tmp_path / "file"))
    assert code == 2 and "is a file" in err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    code, _, err = cli(capsys, "export", "keep-nth", "--out", str(tmp_path / "other"), "--force")
    assert code == 2 and "holds no export" in err


@pytest.mark.parametrize("damage", ["truncate", "garbage-json", "missing"])
def test_a_damaged_export_is_bad_input(tmp_path, capsys, damage):
    target = tmp_path / "e"
    assert cli(capsys, "export", "keep-nth", "--vocab", "8", "--out", str(target))[0] == 0
    weights = target / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "garbage-json":
        (target / "config.json").write_text("{not json")
    else:
        weights.unlink()
    code, _, err = cli(capsys, "check", "keep-nth", "--from-export", str(target))
    assert code == 2 and err.count("\n") == 1, err


def test_every_flag_has_help_text():
    from verify_constructions.cli import parser

    def walk(p):
        yield p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from walk(sub)

    missing = [(p.prog, a.option_strings) for p in walk(parser()) for a in p._actions
               if a.option_strings and a.help in (None, "") and a.dest != "help"]
    assert not missing, missing


def test_another_engine_is_compared_with_the_float64_reference(capsys, monkeypatch):
    """check on a third-party engine prints and asserts its largest logit difference from the float64 reference;
    an engine that disagrees beyond the rounding bound FAILS even when it recalls every query."""
    pytest.importorskip("transformers")
    code, out, _ = cli(capsys, "check", "mqar-mamba", "--kappa", "4", "--vocab", "16", "--samples", "8",
                       "--engine", "transformers", "--json", "--quiet")
    body = json.loads(out)
    assert code == 0 and 0 <= body["reference_difference"] <= body["reference_bound"] < 1e-2
    from verify.engines.hf import TransformersEngine

    hidden = TransformersEngine.hidden
    monkeypatch.setattr(TransformersEngine, "hidden", lambda self, con, tokens: hidden(self, con, tokens) + 1e-2)
    code, out, _ = cli(capsys, "check", "mqar-mamba", "--kappa", "4", "--vocab", "16", "--samples", "8",
                       "--engine", "transformers", "--json", "--quiet")
    body = json.loads(out)
    assert code == 1 and any("disagrees with the float64 reference" in r for r in body["reasons"])


def test_jobs_must_be_positive(capsys):
    code, _, err = cli(capsys, "--jobs", "0")
    assert code == 2 and "--jobs 0: must be >= 1" in err
