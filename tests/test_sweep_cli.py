"""``train`` / ``sweep`` on the command line: help and defaults, bad values (exit 2, one line naming the flag as
typed), store paths refused before any training, progress lines, and SIGINT / SIGTERM (checkpoint, one line, exit
130 / 143, the rerun resumes). Packs run in this process (--no-ray) except where a test says otherwise."""
from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from verify.train import runner
from verify.train.store import ResultStore
from verify.train.cli import STORE_DIR
from verify_constructions.cli import main, parser

ROOT = Path(__file__).resolve().parents[1]
TINY_GRID = """note = "one pack of one tiny MQAR run"
task = "mqar"
mixers = ["mamba"]
vocabs = [4]
kappas = [2]
seq_lens = [8]
d_models = [8]
d_states = [4]
seeds = [0]
lrs = [0.03]
protocol = "smoke"
protocol_overrides = {{max_steps = {steps}, eval_every = {every}, stop_value = 2.0}}
"""

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(tmp_path, steps=40, every=20) -> str:
    p = tmp_path / f"tiny{steps}.toml"
    p.write_text(TINY_GRID.format(steps=steps, every=every))
    return str(p)


def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_every_flag_has_help_and_shows_its_default(command):
    p = _subparser(command)
    fmt = p._get_formatter()
    for a in p._actions:
        if a.dest == "help":
            continue
        text = fmt._get_help_string(a) % {"default": a.default}
        assert a.help and text.count("(default: ") == 1, a.option_strings
        if a.default not in (None, False, []):
            assert f"(default: {a.default})" in text or f"(default: {STORE_DIR}" in text, a.option_strings


BAD_TRAIN = [
    (["--lr", "nan"], "--lr"), (["--lr", "inf"], "--lr"), (["--lr", "-0.1"], "--lr"), (["--lr", "0"], "--lr"),
    (["--d-model", "-3"], "--d-model"), (["--d-model", "0"], "--d-model"), (["--vocab", "0"], "--vocab"),
    (["--seq-len", "abc"], "--seq-len"), (["--d-state", "1.5"], "--d-state"), (["--seed", "-1"], "--seed"),
    (["--max-steps", "0"], "--max-steps"), (["--mixer", "mamba3"], "--mixer"), (["--task", "recall"], "--task"),
    (["--protocol", "fast"], "--protocol"), (["--device", "gpu"], "--device"), (["--impl", "fused"], "--impl"),
    (["--impl", "module"], "--impl module"), (["--task-arg", "gamma=nan"], "--task-arg"),
    (["--task-arg", "p=Infinity"], "--task-arg"), (["--task-arg", "p"], "--task-arg"),
    (["--d-mod", "8"], "--d-mod"),  # no abbreviations: the flag named is the flag typed
]
BAD_SWEEP = [
    (["--minutes", "nan"], "--minutes"), (["--minutes", "inf"], "--minutes"), (["--minutes", "-1"], "--minutes"),
    (["--pack-size", "0"], "--pack-size"), (["--gpus-per-pack", "0"], "--gpus-per-pack"),
    (["--gpus-per-pack", "nan"], "--gpus-per-pack"), (["--cpus-per-pack", "-1"], "--cpus-per-pack"),
    (["--seeds", "0"], "--seeds"), (["--kappas", "0/2"], "--kappas"), (["--kappas", "-4"], "--kappas"),
    (["--mixers", "mamba3"], "--mixers mamba3"), (["--vocabs", "5"], "--vocabs 5"), (["--kappas", "3"], "--kappas 3"),
    (["--device", "cuda:x"], "--device"), (["--impl", "module"], "--impl module"),
]
BAD_RAY_SWEEP = [(["--device", "cuda:1", "--address", "auto"], "--device cuda:1: Ray assigns each pack its GPU")]


@pytest.mark.parametrize("argv,flag", [(["train", *a], f) for a, f in BAD_TRAIN]
                         + [(["sweep", "--grid", "smoke", "--no-ray", *a], f) for a, f in BAD_SWEEP]
                         + [(["sweep", "--grid", "smoke", *a], f) for a, f in BAD_RAY_SWEEP])
def test_a_bad_value_exits_2_with_one_line_naming_the_flag(argv, flag, capsys, monkeypatch):
    from verify.train import loop

    monkeypatch.setattr(runner, "train_one", _never)
    monkeypatch.setattr(loop, "train_pack", _never)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flag in err and "Traceback" not in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("argv", [["train", "--device", "cuda"], ["sweep", "--grid", "smoke", "--device", "cuda"],
                                  ["train", "--device", "cuda:1"]])
def test_cuda_without_cuda_exits_2_before_any_work(argv, capsys, monkeypatch):
    from verify.train import loop

    monkeypatch.setattr(runner, "train_one", _never)
    monkeypatch.setattr(loop, "train_pack", _never)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--device {argv[-1]}: CUDA is not available" in err


def _never(*args, **kwargs):
    raise AssertionError("trained, though the input should have been refused first")


def test_store_paths_that_cannot_hold_runs_are_refused_before_any_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runner, "train_one", _never)
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "notes.txt").write_text("not a store\n")
    (tmp_path / "obj.json").write_text('{"a": 1}\n')
    (tmp_path / "folder").mkdir()
    cases = [(tmp_path / "a-file/sub/s.jsonl", "its folder cannot be created or written"),
             (tmp_path / "notes.txt", "exists and is not a results store"),
             (tmp_path / "obj.json", "exists and is not a results store"),
             (tmp_path / "folder", "is a folder, not a results file")]
    for path, message in cases:
        assert main(["sweep", "--grid", "smoke", "--no-ray", "--store", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--store {path}: {message}" in err, err
    assert (tmp_path / "notes.txt").read_text() == "not a store\n" and not list((tmp_path / "folder").iterdir())


def test_a_cpu_sweep_never_writes_into_a_store_of_gpu_runs(tmp_path, capsys, monkeypatch):
    """The committed fig2 store holds H100 runs: a CPU sweep of fig2 into it (its default store) is refused before
    anything is written; a copy of GPU lines likewise, unless --allow-mixed-devices."""
    monkeypatch.setattr(runner, "train_one", _never)
    committed = ROOT / "results/train/fig2.jsonl"
    before = committed.stat()
    assert main(["sweep", "--grid", "fig2", "--no-ray", "--store", str(committed)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds runs trained on cuda and this sweep trains on cpu" in err
    assert "--allow-mixed-devices" in err
    assert main(["sweep", "--grid", "fig2", "--no-ray"]) == 2  # the default store is the committed one
    assert "the default store results/train/fig2.jsonl: holds runs trained on cuda" in capsys.readouterr().err
    after = committed.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)

    gpu = tmp_path / "gpu.jsonl"
    gpu.write_text("".join(committed.read_text().splitlines(keepends=True)[:3]))
    argv = ["sweep", "--grid", "smoke", "--no-ray", "--store", str(gpu), "--minutes", "0", "--quiet"]
    assert main(argv) == 2
    assert main(argv + ["--allow-mixed-devices"]) == 0


def test_an_empty_file_is_an_empty_store(tmp_path):
    (tmp_path / "s.jsonl").write_text("")
    assert main(["sweep", "--grid", "smoke", "--no-ray", "--store", str(tmp_path / "s.jsonl"), "--minutes", "0",
                 "--quiet"]) == 0


def test_checkpoint_folders_are_ignored_by_git():
    for path in ("results/train/fig2.jsonl.ckpt/0123abcd.pt", "out/x.jsonl.ckpt/p.pt"):
        r = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        assert r.returncode == 0, path


def test_progress_lines_every_few_seconds_unless_quiet(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runner, "run_sweep", functools.partial(runner.run_sweep, progress_every=0.05))
    grid = _tiny(tmp_path, steps=200, every=100)
    assert main(["sweep", "--grid", grid, "--no-ray", "--store", str(tmp_path / "a.jsonl")]) == 0
    out = capsys.readouterr().out.splitlines()
    progress = [ln for ln in out if ln.startswith("sweep: ")]
    assert progress[0] == "sweep: 0 of 1 runs stored; 1 to train in 1 packs on cpu (one after another in this process)"
    assert len(progress) >= 4 and progress[1].startswith("sweep: 0/1 packs, 0/1 runs stored")
    assert progress[-1].startswith("sweep: 1/1 packs, 1/1 runs stored")
    assert json.loads(out[-1])["finished_now"] == 1
    assert main(["sweep", "--grid", grid, "--no-ray", "--store", str(tmp_path / "b.jsonl"), "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and json.loads(out[0])["finished_now"] == 1


def _sweep_process(argv):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "verify_constructions", "sweep", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_checkpoints_the_sweep_and_the_rerun_resumes(tmp_path, sig):
    """SIGINT / SIGTERM while a pack trains: its checkpoint is written at a step boundary, the sweep prints one line
    and exits 130 / 143 without a traceback, and the same command run again continues from the checkpoint (shown
    by editing it: the rerun starts at the step and the seconds the checkpoint says)."""
    grid = _tiny(tmp_path, steps=100_000, every=1000)
    store = tmp_path / "s.jsonl"
    argv = ["sweep", "--grid", grid, "--no-ray", "--store", str(store)][1:]
    proc = _sweep_process(argv)
    try:
        for _ in range(2):
            first = proc.stdout.readline()  # the second line is printed as the pack is handed to the trainer
        assert first.startswith("sweep: 0/1 packs"), first
        time.sleep(1.5)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"sweep: interrupted by {signal.Signals(sig).name}: 0 runs stored, 1 packs checkpointed in "
                          f"{store}.ckpt; run the same command again to resume")
    (ck,) = Path(f"{store}.ckpt").glob("*.pt")
    state = torch.load(ck, weights_only=False)
    assert 0 < state["state"]["step"] < 100_000 and not store.exists()
    if sig == signal.SIGTERM:
        return
    state["state"]["step"], state["state"]["seconds"] = 100_000 - 3, 1000.0
    torch.save(state, ck)
    assert main(["sweep", *argv, "--quiet"]) == 0
    (rec,) = ResultStore(store).records()
    assert rec["result"]["steps"] == 100_000 and rec["pack_seconds"] >= 1000 and not ck.exists()
