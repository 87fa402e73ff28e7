"""experiments.mechanism_grid (the mechanism tool over every kept-weights run of a store) and the figure
recall-mechanism-grid that reads its lines. The tool: each run measured as experiments.mechanism measures it, resumed
without re-measuring, never replacing lines of other settings. The figure: the key hash's fraction of Welch's bound
and a fitted to the grid's recall, on lines whose answers are known (effective dimension at the bound and at N;
recall from the law at a known a)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import paper_figures
from constructions import hash_recall
from experiments import mechanism, mechanism_grid
from paper_figures.common import MissingResults
from paper_figures.recall_trained import MECHANISM_GRID, welch_dim, welch_fraction
from recall_trained_fixtures import mechanism_grid_lines
from verify import cli_support as cli
from verify.recall_law import law_num
from verify.train.spec import RunSpec, protocol, run_key
from verify.train.store import ResultStore, write_weights


def _run(capsys, argv):
    rc = cli.run_main(mechanism_grid.main, argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _store(tmp_path, n_runs=2):
    """A store of ``n_runs`` runs (V = 32, one-hot designed circuit as kept weights, D = N = 32) and one run without
    weights, which the tool must skip."""
    V = 32
    store = tmp_path / "s.jsonl"
    eye = torch.eye(V, dtype=torch.float64)
    recs = []
    for seed in range(n_runs + 1):
        spec = RunSpec(task="mqar-zoology", mixer="linear-mamba", vocab=V, kappa=4, seq_len=16, d_model=V, d_state=V,
                       d_conv=2, expand=2, seed=seed, lr=1e-2, protocol=protocol("koren-smoke", keep_weights=True),
                       model=(("wiring", "tied"),))
        rec = {"key": run_key(spec), "spec": spec.as_dict(), "result": {"best_val_acc": 0.5 + 0.1 * seed}}
        if seed < n_runs:
            layer = hash_recall.analysis_layer(np.eye(V), V)
            write_weights(store, {**rec, "_weights": {"embedding.weight": eye, "readout.weight": eye.clone(),
                                                      **{f"mixer.layers.0.{k}": v for k, v in layer.items()}}})
        recs.append(rec)
    ResultStore(store).append(recs)
    return store, recs


def test_the_tool_measures_each_kept_run_once_and_as_the_single_run_tool_does(tmp_path, capsys):
    store, recs = _store(tmp_path)
    out = tmp_path / "grid.jsonl"
    argv = ["--store", str(store), "--out", str(out), "--facts", "4", "--seq-len", "16", "--samples", "8", "--quiet"]
    rc, text, err = _run(capsys, argv)
    assert rc == 0, err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["key"] for x in lines] == [r["key"] for r in recs[:2]]  # the run without weights is skipped
    assert [x["best_val_acc"] for x in lines] == [0.5, 0.6]
    want = mechanism.measure(f"{store}.weights/{recs[0]['key']}.safetensors", 4, 16, 8, 0)
    want.pop("maps")
    assert lines[0]["report"] == json.loads(cli.dumps({"report": want}))["report"]
    assert lines[0]["report"]["key_block"]["relative_frobenius_distance"] == 0  # the one-hot circuit: G_kq = I
    before = out.read_text()
    rc, text, err = _run(capsys, argv)
    assert rc == 0 and text.startswith("0 runs measured, 2 in") and out.read_text() == before
    rc, text, err = _run(capsys, argv[:-3] + ["--samples", "9", "--quiet"])
    assert rc == 2 and "measured with" in err and err.count("\n") == 1 and out.read_text() == before


@pytest.mark.parametrize("case,expect", [("no-store", "--store"), ("no-weights", "no run has kept weights"),
                                         ("bad-out", "not a JSON-lines file")])
def test_the_tool_refuses_bad_input(tmp_path, capsys, case, expect):
    store, _ = _store(tmp_path, n_runs=0 if case == "no-weights" else 1)
    out = tmp_path / "grid.jsonl"
    if case == "bad-out":
        out.write_text("not json\n")
    argv = ["--store", str(tmp_path / "none.jsonl") if case == "no-store" else str(store), "--out", str(out)]
    rc, text, err = _run(capsys, argv)
    assert rc == 2 and text == "" and expect in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_the_figure_reads_the_welch_fraction_and_fits_a_to_the_grid(tmp_path):
    p = tmp_path / MECHANISM_GRID
    p.parent.mkdir(parents=True)
    lines = mechanism_grid_lines(1.25)
    # a cell that did not learn (recall below the convergence rule's 0.1; its a and hash are noise): named, left out
    bad = dict(lines[-1], d_model=56, d_state=4, best_val_acc=0.05,
               report=dict(lines[-1]["report"], a_recall=10.0, key_block={"effective_dim": 0.1,
                                                                         "diagonal_is_column_max": 0.0}))
    p.write_text("".join(json.dumps(x) + "\n" for x in lines + [bad]))
    r = paper_figures.make("recall-mechanism-grid", tmp_path)
    # named with its recall and the law's there (at the paper's a = 5/4): a failed run, not a cell the law puts low
    law = float(law_num(56, 4, 256, 16, 1.25))
    assert 0.5 < law < 0.7
    assert ("1 cells did not learn (recall below 0.1, the paper's convergence rule; (D, N): recall, the law's at "
            f"a = 5/4: (56, 4): 0.05, {law:.2f})") in r.caption
    assert f"the numbers below are over the other {len(lines)}" in r.caption and "10" not in r.caption.split("per cell")[1]
    narrow = [x for x in lines if x["d_model"] < 2 * x["d_state"]]
    assert welch_fraction(narrow[0]) == pytest.approx(narrow[0]["d_state"] / welch_dim(127, narrow[0]["d_state"]))
    assert f"1 where D >= 2N ({len(lines) - len(narrow)} cells)" in r.caption
    assert f"where D < 2N ({len(narrow)} cells)" in r.caption
    assert "a fitted to the grid = 1.250" in r.caption and "rms 0.000" in r.caption
    assert f"H'' decodes every fact in {len(lines) - len(narrow)}" in r.caption
    assert f"{len(lines) + 1} of the grid's 200 cells with N <= D measured" in r.caption
    p.write_text("".join(json.dumps(x) + "\n" for x in mechanism_grid_lines(3.0)))
    assert "a fitted to the grid = 3.000" in paper_figures.make("recall-mechanism-grid", tmp_path).caption
    p.unlink()
    with pytest.raises(MissingResults, match="experiments.mechanism_grid"):
        paper_figures.make("recall-mechanism-grid", tmp_path)


def test_the_grid_table_counts_per_n(tmp_path):
    """One row per N and one over all cells: cells, learned, the key hash's fraction of Welch's bound (median,
    least), the cells with the key diagonal at the column maximum, the cells whose H'' decodes every fact, median a;
    the fixture's answers: at N = 32 the cells D = 32, 48 (a random hash: N / Welch) and 64 (at the bound)."""
    p = tmp_path / MECHANISM_GRID
    p.parent.mkdir(parents=True)
    lines = mechanism_grid_lines(1.25)
    p.write_text("".join(json.dumps(x) + "\n" for x in lines))
    r = paper_figures.make("recall-mechanism-grid", tmp_path)
    rows = {line.split(" | ")[0].strip("| "): line.strip("| \n").split(" | ") for line in r.markdown.splitlines()[2:]}
    at_n = 32 / welch_dim(127, 32)
    assert 0.75 < at_n < 0.76
    assert rows["32"] == ["32", "3", "3", f"{at_n:.3f} ({at_n:.3f})", "3", "1", "1.25"]
    wide = sum(x["d_model"] >= 2 * x["d_state"] for x in lines)
    assert rows["all"][:3] == ["all", str(len(lines)), str(len(lines))] and rows["all"][5] == str(wide)
    assert set(rows) == {"4", "8", "16", "32", "all"}
    assert "median 1.25 at N = 4, 1.25 at N = 32" in r.caption
