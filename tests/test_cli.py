"""The command line: exit codes, one-line errors, JSON, export round trip."""
import json
import subprocess
import sys

import pytest
import torch

from constructions import mqar_mamba
from constructions.export import load
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
    (["export", "mqar-mamba", "--dtype", "tfloat32", "--out", "/nonexistent/x"], "export dtype must be one of"),
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
    assert out["passed"] and out["correct"] == out["queries"] == 100
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
    assert config["mamba_kwargs"] == {"d_model": d, "d_state": 3, "d_conv": 4, "expand": 1,
                                      "dt_rank": -(-d // 16), "bias": True, "conv_bias": True}
    assert config["tokens"]["keys"] == [0, 3] and config["tokens"]["values"] == [3, 10]
    back = load(tmp_path)
    assert set(back.mixer) == MAMBA_NAMES
    original = mqar_mamba.build(3, 7, "jl", seq_len=100)  # the CLI default T
    tokens = torch.tensor([[0, 4, 1, 9, 2, 3, 10, 1, 0, 2]])
    eng = make_engine("reference", "float64")
    assert torch.equal(eng.hidden(back, tokens), make_engine("reference", "float64").hidden(original, tokens))
