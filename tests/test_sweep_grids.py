"""Grids as data files (experiments/grids/*.toml): every file loads, bad files are refused with one line naming the
file and the key, and the grids' runs are the ones the committed stores hold."""
from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import RequirementError
from verify.train.spec import run_key
from verify.train.store import ResultStore
from verify.train.sweep import GRID_DIR, grid, grids, load_grid
from verify_constructions.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = (GRID_DIR / "smoke.toml").read_text()


def test_every_grid_file_loads_and_names_its_grid():
    gs = grids()
    assert set(gs) == {p.stem for p in GRID_DIR.glob("*.toml")} and len(gs) >= 17
    for name, g in gs.items():
        assert g.name == name and g.note and g.runs()
        for other in g.reuses:
            assert other in gs


@pytest.mark.parametrize("name,complete", [("fig2-loss", 1176), ("fig2-tf32", 1176), ("keepnth-pe-bare", 810),
                                           ("recall-vocab", 288), ("fig3", 600)])
def test_grid_files_expand_to_the_runs_the_committed_stores_hold(name, complete):
    """Grids stored complete (results/train/README.md's status table): the data file's runs are exactly the stored
    ones, key for key (fig2-tf32: TF32 protocol; keepnth-pe-bare: projections off)."""
    keys = {run_key(s) for s in grid(name).runs()}
    stored = ResultStore(ROOT / f"results/train/{name}.jsonl").keys()
    assert len(keys) == complete and keys <= stored


def test_every_stored_run_is_a_run_of_its_grid():
    """Each grid's store holds only runs its grid file (or a grid it reuses) defines, key for key: a stored result
    can be traced to the data that made it. The calibration store also holds its budgeted arms (runs of fig2 and
    fig2-loss) and the reference arm at other epoch caps (``experiments.calibrate --epochs``: 1 and 8 stored)."""
    from experiments.calibrate import grids as calibration_grids

    gs = grids()
    for name, g in gs.items():
        path = ROOT / f"results/train/{name}.jsonl"
        if not path.exists():
            continue
        keys = {run_key(s) for other in (name, *g.reuses) for s in gs[other].runs()}
        if name == "calibration":
            keys |= {run_key(s) for e in (1, 8) for c in calibration_grids(e).values() for s in c.runs()}
            keys |= {run_key(s) for other in ("fig2", "fig2-loss") for s in gs[other].runs()}
        stray = ResultStore(path).keys() - keys
        assert not stray, (name, len(stray))


def test_calibration_grid_is_the_reference_arm_of_8_epochs():
    from verify.train.sweep import calibration_reference

    assert {run_key(s) for s in grid("calibration").runs()} == {run_key(s) for s in calibration_reference(8).runs()}
    assert {s.protocol.cap_steps for s in calibration_reference(1).runs()} == {6250}


def _write(tmp_path, text: str, name: str = "g") -> Path:
    p = tmp_path / f"{name}.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("edit,message", [
    (lambda t: t + 'mixer = "mamba"\n', "unknown key 'mixer'"),
    (lambda t: t.replace('task = "mqar"\n', ""), "missing key 'task'"),
    (lambda t: t.replace("vocabs = [4]", 'vocabs = ["4"]'), "key 'vocabs' must be a non-empty list of integers >= 1"),
    (lambda t: t.replace("vocabs = [4]", "vocabs = [-4]"), "key 'vocabs' must be a non-empty list of integers >= 1"),
    (lambda t: t.replace("vocabs = [4]", "vocabs = []"), "key 'vocabs' must be a non-empty list"),
    (lambda t: t.replace("seeds = [0, 1]", "seeds = [0, 0]"), "key 'seeds' has a seed twice"),
    (lambda t: t.replace("seeds = [0, 1]", "seeds = [true]"), "key 'seeds' must be a non-empty list of integers"),
    (lambda t: t.replace("lrs = [0.03]", "lrs = [nan]"), "key 'lrs' must be a list of finite numbers > 0"),
    (lambda t: t.replace("lrs = [0.03]", "lrs = [inf]"), "key 'lrs' must be a list of finite numbers > 0"),
    (lambda t: t.replace("lrs = [0.03]", "lrs = [0]"), "key 'lrs' must be a list of finite numbers > 0"),
    (lambda t: t.replace('mixers = ["mamba"]', 'mixers = ["mamba3"]'), "key 'mixers': unknown mixer 'mamba3'"),
    (lambda t: t.replace('task = "mqar"', 'task = "mqar2"'), "key 'task': unknown task 'mqar2'"),
    (lambda t: t.replace('protocol = "smoke"', 'protocol = "fast"'), "key 'protocol': unknown protocol 'fast'"),
    (lambda t: t + "d_multipliers = [1, 2]\n", "keys 'd_models' and 'd_multipliers' exclude each other"),
    (lambda t: t + 'n_rule = "fig2"\n', "key 'd_states' excludes 'n_rule'"),
    (lambda t: t + "gate = 1\n", "key 'gate' must be true or false, got 1"),
    (lambda t: t + "protocol_overrides = {max_step = 10}\n", "unknown or non-scalar protocol field 'max_step'"),
    (lambda t: t + 'protocol_overrides = {max_steps = "10"}\n', "max_steps must be of the type of 400, got '10'"),
    (lambda t: t + "protocol_overrides = {max_steps = 0}\n", "sizes and step counts must be >= 1"),
    (lambda t: t + 'reuses = ["nope"]\n', "key 'reuses': no grid 'nope' beside this file"),
    (lambda t: t + "vocabs = [5]\n", "not valid TOML"),
    (lambda t: t.replace("kappas = [2]", "kappas = [0]"), "a run of this grid is invalid: MQAR needs kappa >= 1"),
    (lambda t: t + "lambda_times_n = 0\n", "key 'lambda_times_n' must be an integer >= 1, got 0"),
    (lambda t: t + "lambda_times_n = 7\n", "the grid has no run (its filter 'lambda_times_n' = 7 leaves no cell)"),
    (lambda t: t + "seq_len_per_kappa = 2\n", "keys 'kappas' and 'seq_len_per_kappa' exclude each other"),
    (lambda t: t.replace("kappas = [2]\n", "") + "seq_len_per_kappa = 0\n",
     "key 'seq_len_per_kappa' must be an integer >= 1, got 0"),
    (lambda t: t.replace("kappas = [2]\n", "") + "seq_len_per_kappa = 7\n",
     "key 'seq_len_per_kappa' = 7 must divide every sequence length"),
    (lambda t: t + "vocab_above_seq_len = 1\n", "key 'vocab_above_seq_len' must be true or false, got 1"),
    (lambda t: t + "vocab_above_seq_len = true\n",
     "the grid has no run (its filter 'vocab_above_seq_len' = true leaves no cell)"),
])
def test_a_bad_grid_file_is_one_line_naming_the_file_and_the_key(tmp_path, edit, message):
    p = _write(tmp_path, edit(SMOKE))
    with pytest.raises(RequirementError) as e:
        load_grid(p)
    text = str(e.value)
    assert message in text and "\n" not in text and text.startswith(str(p)), text


def test_the_smoke_file_itself_is_valid(tmp_path):
    assert len(load_grid(_write(tmp_path, SMOKE)).runs()) == 4


def test_sweep_takes_a_grid_file_and_refuses_a_bad_one_with_exit_2(tmp_path, capsys):
    good = _write(tmp_path, SMOKE, "mine")
    assert main(["sweep", "--grid", str(good), "--store", str(tmp_path / "s.jsonl"), "--minutes", "0",
                 "--quiet"]) == 0
    assert '"total": 4' in capsys.readouterr().out
    bad = _write(tmp_path, SMOKE + "colour = 1\n", "bad")
    assert main(["sweep", "--grid", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.toml: unknown key 'colour'" in err
    assert main(["sweep", "--grid", "no-such-grid"]) == 2
    assert "unknown grid 'no-such-grid'; known: calibration, fig2" in capsys.readouterr().err


def test_lambda_times_n_keeps_the_cells_of_fixed_total_state(tmp_path):
    """recall-repeats (Koren et al.'s Lambda x N_k grid): Lambda N = 60 at every depth, each with N_k 1..5, 3 seeds;
    without the filter the same axes give every (Lambda, N) pair."""
    runs = grid("recall-repeats").runs()
    cells = {(dict(s.model)["layers"], s.d_state, dict(s.task_args)["key_repeats"]) for s in runs}
    assert cells == {(lam, 60 // lam, k) for lam in range(1, 6) for k in range(1, 6)} and len(runs) == 75
    assert {s.protocol.name for s in runs} == {"koren-repeats"} and {s.d_model for s in runs} == {100}
    text = (GRID_DIR / "recall-repeats.toml").read_text().replace("lambda_times_n = 60\n", "")
    assert len(load_grid(_write(tmp_path, text)).runs()) == 5 * 5 * 5 * 3



def test_the_v_x_l_grid_ties_kappa_to_the_length_and_skips_v_at_most_l(tmp_path):
    """recall-vocab-long (Koren et al.'s large-vocabulary grid): N_f = L / 4 at L = 1000..4000, ten V from 1002 to
    50000, the cells with L >= V skipped (31 of 40), one seed, D 150, N 75; a sweep's --kappas picks an L's cells."""
    from verify.train.cli import _select

    runs = grid("recall-vocab-long").runs()
    vocabs = (1002, 1548, 2390, 3688, 5696, 8796, 13582, 20970, 32382, 50000)
    want = {(v, t, t // 4) for v in vocabs for t in (1000, 2000, 3000, 4000) if v > t}
    assert {(s.vocab, s.seq_len, s.kappa) for s in runs} == want and len(runs) == len(want) == 31
    assert {(s.d_model, s.d_state, s.seed, s.protocol.name) for s in runs} == {(150, 75, 0, "koren-vocab-long")}
    text = (GRID_DIR / "recall-vocab-long.toml").read_text().replace("vocab_above_seq_len = true\n", "")
    unfiltered = load_grid(_write(tmp_path, text)).runs()
    assert len(unfiltered) == 40
    from verify.train import registry
    for s in unfiltered:
        if s.vocab <= s.seq_len:  # the 9 cells the filter skips: the task refuses them
            with pytest.raises(RequirementError, match="zoology MQAR needs (V > L|N_f <= V//2 - 1)"):
                registry.validate(s)
    import argparse
    args = argparse.Namespace(mixers=None, kappas=[250], vocabs=None, seeds=None)
    assert {(s.seq_len, s.kappa) for s in _select(grid("recall-vocab-long"), args)} == {(1000, 250)}
    with pytest.raises(RequirementError, match="--kappas 16: grid recall-vocab-long has 250, 500, 750, 1000"):
        _select(grid("recall-vocab-long"), argparse.Namespace(mixers=None, kappas=[16], vocabs=None, seeds=None))
