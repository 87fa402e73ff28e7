import json

import pytest

from verify_constructions.cli import main


@pytest.mark.parametrize("engine", ["reference", "transformers"])
def test_registered_and_passes(capsys, engine):
    assert main(["check", "copy-previous", "--engine", engine, "--json", "--quiet"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["verdict"] == "PASS" and body["correct"] == body["queries"] == 64 * 31
    assert body["obligations_held"] == 3 and body["min_margin"] >= body["proven_margin"] - body["allowance"]


def test_broken_gate_fails_naming_the_obligation(capsys):
    assert main(["check", "copy-previous", "--constant", "gate_pre=-100", "--json", "--quiet"]) == 1
    assert "the gate is a positive constant" in json.loads(capsys.readouterr().out)["failed_obligations"]


def test_export_and_check_it(capsys, tmp_path):
    assert main(["export", "copy-previous", "--out", str(tmp_path / "e"), "--quiet"]) == 0
    assert main(["check", "copy-previous", "--from-export", str(tmp_path / "e"), "--quiet"]) == 0
