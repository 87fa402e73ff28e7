"""Training machinery: packed model, training loop, store/resume, sweeps, calibration (CPU; CUDA tests marked). The
Ray scheduler, the command line and the grid files have their own test files (tests/test_sweep_*.py)."""
from __future__ import annotations

import json
import math
import signal

import pytest
import torch

from constructions.layout import MambaConfig
from verify.blocks.mamba import mamba_forward
from verify.train.loop import train_pack
from verify.blocks.mamba import init_mamba, packed_mamba_forward
from verify.train.spec import SCHEMA, RunSpec, pack_key, protocol, run_key
from verify.train.store import ResultStore
from verify.train.runner import Outcome, run_sweep
from verify.train.sweep import grid, plan, tightness
from verify_constructions.cli import main

TINY = dict(task="mqar", mixer="mamba", kappa=2, vocab=4, seq_len=8, d_model=16, d_state=4)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: threads only add overhead


def test_packed_forward_is_the_reference_block_per_model():
    cfg = MambaConfig(d_model=6, d_state=3)
    sds = [init_mamba(cfg, torch.Generator().manual_seed(s)) for s in range(3)]
    packed = {k: torch.stack([sd[k] for sd in sds]) for k in sds[0]}
    h = torch.randn(3, 2, 9, 6, dtype=torch.float64)
    out = packed_mamba_forward(packed, h, cfg)
    for k in range(3):
        torch.testing.assert_close(out[k], mamba_forward(sds[k], h[k], cfg), rtol=0, atol=1e-12)


def test_smoke_training_reaches_full_validation_accuracy():
    spec = RunSpec(seed=0, lr=0.03, protocol=protocol("smoke", max_steps=400), **TINY)
    (rec,) = train_pack([spec])
    r = rec["result"]
    assert r["early_stopped"] and r["val_acc"] == 1.0 and r["steps"] <= 400, r["history"][-3:]
    assert r["test_acc"] > 0.99
    # gate off: the z rows never moved, so the state dict is a real mamba_ssm.Mamba with a constant gate
    w = rec["_weights"]["mixer.in_proj.weight"]
    assert torch.all(w[spec.d_model:] == 0)


def test_packing_trains_each_model_as_if_alone():
    proto = protocol("smoke", max_steps=30, eval_every=10, train_samples=512)
    specs = [RunSpec(seed=s, lr=lr, protocol=proto, **TINY) for s, lr in ((0, 0.03), (1, 0.01), (2, 0.003))]
    packed = train_pack(specs)
    for spec, rec in zip(specs, packed):
        (alone,) = train_pack([spec])
        assert rec["key"] == alone["key"] == run_key(spec)
        got = torch.tensor([h[1:] for h in rec["result"]["history"]])
        want = torch.tensor([h[1:] for h in alone["result"]["history"]])
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 7, 64, 1000])
def test_evaluation_in_padded_batches_scores_every_query_once(batch):
    """evaluate's padded multiples of the training batch = one forward over the whole set, query for query."""
    from verify.train.loop import IGNORE, build_model, datasets, evaluate

    specs = [RunSpec(seed=s, lr=0.01, protocol=protocol("smoke"), **TINY) for s in (0, 1)]
    model = build_model(specs, "cpu")
    tok, lab = datasets(specs[0])["val"]
    tok, lab = tok[:45], lab[:45]
    loss, acc, correct, queries = evaluate(model, tok, lab, "cpu", batch=batch, max_elems=2 ** 12)
    logits = torch.einsum("kbld,kcd->kblc", model.hidden(tok[None].expand(2, -1, -1)), model.readout)
    scored = lab != IGNORE
    assert queries == int(scored.sum())
    want = (logits.argmax(-1) == lab[None]) & scored[None]
    assert correct.tolist() == want.sum(dim=(1, 2)).double().tolist()
    ce = torch.nn.functional.cross_entropy(logits[:, scored].flatten(0, 1).float(), lab[scored].repeat(2),
                                           reduction="none").view(2, -1).double().mean(1)
    torch.testing.assert_close(loss, ce, rtol=1e-5, atol=1e-6)


def _rows_per_forward(model, tok, lab, batch, **kw):
    from verify.train.loop import evaluate

    rows, hidden = [], model.hidden
    model.hidden = lambda t: rows.append(t.shape[1]) or hidden(t)
    evaluate(model, tok, lab, "cpu", batch=batch, **kw)
    return rows


@pytest.mark.parametrize("mixer,impl", [("mamba-delta-t", "packed"), ("mamba-delta-t", "module"), ("mamba", "packed")])
def test_evaluation_of_a_memory_capped_mixer_runs_one_training_batch_per_forward(mixer, impl):
    """Mamba-Delta-top's scan memory grows with N x d_inner: its evaluation forwards take the training batch, not
    the larger chunks other mixers evaluate in (which ran an H100 out of memory at |V| = 40, d 320, N 160). Packed
    and one-module models alike (the module path, CUDA only, gets the engines' module on the CPU here)."""
    import dataclasses

    from verify.train import registry
    from verify.train.loop import build_model, datasets, initial_state
    from verify.train.models import ModuleModel

    specs = [RunSpec(seed=0, lr=0.01, protocol=protocol("smoke"), **{**TINY, "mixer": mixer})]
    if impl == "packed":
        model = build_model(specs, "cpu")
    else:
        m = registry.mixer(mixer)
        stand_in = dataclasses.replace(m, cuda_module=lambda cfg, device, dtype: _engine_module("mamba-delta-t", cfg))
        model = ModuleModel(stand_in, m.block_config(specs[0]), *initial_state(specs[0]), "cpu", torch.float64)
    tok, lab = datasets(specs[0])["val"]
    assert _rows_per_forward(model, tok[:40], lab[:40], batch=8) == ([8] * 5 if mixer == "mamba-delta-t" else [40])


def test_evaluation_chunks_are_sized_by_the_logits_where_the_classes_outnumber_d():
    """A forward holds at most max_elems logits: with |V| = 64 classes and d = 4, chunks sized by d alone would be
    16x too large (recall-vocab at |V| = 16384, d = 32 asked an H100 for 15.75 GiB that way)."""
    from verify.train.loop import build_model, datasets

    specs = [RunSpec(seed=0, lr=0.01, protocol=protocol("smoke"), **{**TINY, "vocab": 64, "d_model": 4})]
    model = build_model(specs, "cpu")
    tok, lab = datasets(specs[0])["val"]
    C, d = model.readout.shape[1:]
    assert C >= 16 * d
    assert _rows_per_forward(model, tok[:40], lab[:40], batch=4, max_elems=2 * 4 * 8 * C) == [8] * 5


@pytest.mark.parametrize("mixer", ["mamba2", "mamba"])
def test_only_mamba2_evaluates_on_its_reference_scan(mixer):
    """Mamba-2 packs train with their CUDA kernel (here a stand-in) but evaluate with the exact reference scan, and
    get the kernel back afterwards; other mixers evaluate with the scan they train with."""
    from verify.train.loop import build_model, datasets, evaluate

    specs = [RunSpec(seed=0, lr=0.01, protocol=protocol("smoke"), **{**TINY, "mixer": mixer})]
    model = build_model(specs, "cpu")
    calls = []

    def kernel(*args, **kwargs):
        calls.append(1)
        return model.mixer.reference_scan(*args, **kwargs)

    model.scan = kernel
    tok, lab = datasets(specs[0])["val"]
    evaluate(model, tok[:8], lab[:8], "cpu")
    assert bool(calls) == (mixer == "mamba") and model.scan is kernel
    model.hidden(tok[:2][None])
    assert calls


def test_deadline_checkpoint_resumes_to_the_same_result(tmp_path):
    proto = protocol("smoke", max_steps=20, eval_every=5, train_samples=512, stop_value=2.0)  # never stops early
    specs = [RunSpec(seed=s, lr=0.03, protocol=proto, **TINY) for s in (0, 1)]
    ck = str(tmp_path / "pack.pt")
    assert train_pack(specs, checkpoint=ck, deadline=0.0) is None  # stops after one step, checkpointed
    resumed = train_pack(specs, checkpoint=ck)
    straight = train_pack(specs)
    for a, b in zip(resumed, straight):
        torch.testing.assert_close(torch.tensor(a["result"]["history"]), torch.tensor(b["result"]["history"]),
                                   rtol=1e-5, atol=1e-6)
    assert not (tmp_path / "pack.pt").exists()


def test_store_skips_cut_lines_and_never_merges_them(tmp_path):
    store = ResultStore(tmp_path / "r.jsonl")
    store.append([{"key": "a", "x": 1}])
    with open(store.path, "ab") as f:
        f.write(b'{"key": "b", "x"')  # a crash mid-line
    store.append([{"key": "c", "x": 3}, {"key": "d", "x": 4}])
    assert [r["key"] for r in store.records()] == ["a", "c", "d"]


def _append_twice(path, records):
    return [ResultStore(path).append(records) for _ in range(2)]


def test_store_appends_each_run_key_once_even_from_processes_at_once(tmp_path):
    """A record whose key the store holds is not appended again (counted in the return value); keyless lines always
    are. Four processes adding the same 50 runs at once leave each once: the keys are read under the write lock."""
    import multiprocessing

    store = ResultStore(tmp_path / "r.jsonl")
    assert store.append([{"key": "a"}, {"key": "a"}, {"note": 1}]) == 2
    assert store.append([{"key": "a"}, {"key": "b"}, {"note": 1}]) == 2
    assert [r.get("key") for r in store.records()] == ["a", None, "b", None]
    runs = [{"key": f"k{i}", "x": i} for i in range(50)]
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        added = pool.starmap(_append_twice, [(tmp_path / "p.jsonl", runs)] * 4)
    assert sum(map(sum, added)) == 50
    assert sorted(r["key"] for r in ResultStore(tmp_path / "p.jsonl").records()) == sorted(r["key"] for r in runs)


def test_figA4_takes_the_runs_figure_3_finished(tmp_path):
    """Figure A.4's N = 4|V| column is Figure 3's grid (every fig3 run key is a figA4 run key): a figA4 sweep copies
    what the fig3 store beside its own holds (figA4 runs only, each once) and trains the rest."""
    fig3 = grid("fig3").runs()
    assert grid("figA4").reuses == ("fig3",)
    assert {run_key(s) for s in fig3} <= {run_key(s) for s in grid("figA4").runs()}
    rec = {"key": run_key(fig3[0]), "spec": fig3[0].as_dict(), "result": {"solved": True, "test_acc": 1.0},
           "device": "cpu"}
    ResultStore(tmp_path / "fig3.jsonl").append([rec, {**rec, "key": "not-a-figA4-run"}])
    for _ in range(2):  # --minutes 0: adopt, then train nothing
        assert main(["sweep", "--grid", "figA4", "--store", str(tmp_path / "figA4.jsonl"), "--mixers", fig3[0].mixer,
                     "--vocabs", str(fig3[0].vocab), "--seeds", "1", "--minutes", "0"]) == 0
    assert ResultStore(tmp_path / "figA4.jsonl").keys() == {rec["key"]}


def test_interrupted_sweep_resumes_without_loss_or_duplicates(tmp_path, monkeypatch):
    """A sweep stopped by an interrupt while training its second pack keeps the first pack's runs; the rerun trains
    only the rest, and a third run trains nothing (packs one after another in this process: no Ray)."""
    from verify.train import runner

    specs = grid("smoke").runs()
    store = ResultStore(tmp_path / "smoke.jsonl")
    calls, train_one = [], runner.train_one

    def interrupted_on_the_second_pack(*args):
        if len(calls) == 1:
            raise KeyboardInterrupt
        calls.append(args)
        return train_one(*args)

    monkeypatch.setattr(runner, "train_one", interrupted_on_the_second_pack)
    res = run_sweep(specs, store, pack_size=2, executor="inline")
    assert res.interrupted == signal.SIGINT and len(store.records()) == 2
    monkeypatch.setattr(runner, "train_one", train_one)
    res = run_sweep(specs, store, pack_size=2, executor="inline")
    assert res.counts() == {"finished_now": 2, "remaining": 0, "total": 4, "checkpointed": 0, "failed": 0}
    keys = [r["key"] for r in store.records()]
    assert sorted(keys) == sorted(run_key(s) for s in specs) and len(set(keys)) == len(keys)
    assert run_sweep(specs, store, pack_size=2, executor="inline").finished_now == 0
    rows = tightness(store.records())
    assert {r["smallest_solved"] for r in rows} <= {8, 16, None} and all(r["bound"] == 4 for r in rows)


def test_a_failing_pack_is_reported_and_the_others_are_stored(tmp_path, monkeypatch):
    from verify.train import runner

    specs = grid("smoke").runs()
    train_one = runner.train_one

    def fails_at_d16(spec_dicts, *args):
        if spec_dicts[0]["d_model"] == 16:
            raise RuntimeError("out of memory\nsecond line: the last line is reported")
        return train_one(spec_dicts, *args)

    monkeypatch.setattr(runner, "train_one", fails_at_d16)
    res = run_sweep(specs, ResultStore(tmp_path / "s.jsonl"), pack_size=2, executor="inline")
    assert res.finished_now == 2 and res.remaining == 2 and len(res.failed) == 1
    assert res.failed[0].startswith("mamba d=16 ") and res.failed[0].endswith("second line: the last line is reported")


def test_plan_groups_by_shape_and_skips_done():
    specs = grid("fig2").runs()
    packs = plan(specs, {run_key(specs[0])}, pack_size=64)
    assert sum(map(len, packs)) == len(specs) - 1
    for p in packs:
        assert len({(s.mixer, s.kappa, s.d_model, s.d_state) for s in p}) == 1 and len(p) <= 64


def test_plan_cuts_packs_whose_scan_tensors_would_not_fit():
    """Mamba-Delta-top's flattened scan holds ~8 tensors of batch x L x N x d_inner per model: its packs are cut to
    PACK_BYTES (one model at |V| = 40, d = 320, N = 160: 10.5 GB), the other mixers' packs are not."""
    from verify.train import registry, sweep

    specs = grid("fig3").runs()
    packs = plan(specs, set(), pack_size=64)
    assert sorted(run_key(s) for p in packs for s in p) == sorted(run_key(s) for s in specs)  # each run once
    per_cell = {}
    for p in packs:
        per_cell.setdefault(pack_key(p[0]), []).append(len(p))
    for p in packs:
        fits = registry.mixer(p[0].mixer).scan_bytes
        if fits is None:
            assert per_cell[pack_key(p[0])] == [15]  # 5 seeds x 3 lrs: uncut
        else:
            assert len(p) == 1 or len(p) * fits(p[0]) <= sweep.PACK_BYTES
            limit = min(15, max(1, sweep.PACK_BYTES // fits(p[0])))  # as large as fits, up to the cell's 15
            assert len(per_cell[pack_key(p[0])]) == -(-15 // limit)
    big = [p for p in packs if p[0].mixer == "mamba-delta-t" and p[0].vocab == 40 and p[0].d_model == 320]
    assert big and all(len(p) == 1 for p in big)
    small = [p for p in packs if p[0].mixer == "mamba-delta-t" and p[0].vocab == 5]
    assert small and all(len(p) == 15 for p in small)


def test_cli_train_prints_one_record():
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["train", "--kappa", "2", "--vocab", "4", "--seq-len", "8", "--d-state", "4", "--max-steps", "20",
                     "--json"]) == 0
    rec = json.loads(buf.getvalue())
    assert rec["spec"]["mixer"] == "mamba" and rec["spec"]["schema"] == SCHEMA and "_weights" not in rec


@pytest.mark.cuda
def test_cuda_packed_kernel_matches_reference_and_module():
    from mamba_ssm import Mamba

    from verify.blocks.common import cuda_scan

    cfg = MambaConfig(d_model=16, d_state=8)
    sds = [init_mamba(cfg, torch.Generator().manual_seed(s)) for s in range(4)]
    packed = {k: torch.stack([sd[k] for sd in sds]).float().cuda() for k in sds[0]}
    h = torch.randn(4, 3, 50, 16, device="cuda")
    out = packed_mamba_forward(packed, h, cfg, scan=cuda_scan())
    ref = packed_mamba_forward(packed, h, cfg)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    for k in range(4):
        m = Mamba(**cfg.arguments(), device="cuda", dtype=torch.float32)
        m.load_state_dict({n: v.float() for n, v in sds[k].items()}, strict=True)
        with torch.no_grad():
            torch.testing.assert_close(out[k], m(h[k]), rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
def test_cuda_module_training_matches_packed_training():
    proto = protocol("smoke", max_steps=30, eval_every=10, train_samples=512)
    spec = RunSpec(seed=0, lr=0.01, protocol=proto, **TINY)
    (a,) = train_pack([spec], device="cuda", impl="packed")
    (b,) = train_pack([spec], device="cuda", impl="module")
    torch.testing.assert_close(torch.tensor(a["result"]["history"]), torch.tensor(b["result"]["history"]),
                               rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# The other mixers (Mamba-2, Mamba-S4D, Mamba-Delta-top) and tasks (KEEP n-TH, induction heads)
# ---------------------------------------------------------------------------------------------------------------

SHORT = dict(max_steps=60, eval_every=20, train_samples=512, val_samples=128, test_samples=128, stop_value=2.0)


def _engine_module(mixer, cfg):
    """The engines' own module of a registered mixer (pure torch), to load a trained state dict strictly."""
    from verify.blocks.mamba_delta_t import MambaDeltaT
    from verify.blocks.mamba_s4d import MambaS4D
    from verify.engines.scan import selective_scan_ref

    if mixer == "mamba-s4d":
        return MambaS4D(**cfg.arguments(), dtype=torch.float64)
    if mixer == "mamba-delta-t":
        return MambaDeltaT(cfg, scan_fn=selective_scan_ref, dtype=torch.float64)
    return None


@pytest.mark.parametrize("mixer,gate", [("mamba2", False), ("mamba-s4d", True), ("mamba-s4d", False), ("mamba-delta-t", False)])
def test_other_mixers_train_on_mqar_and_export(mixer, gate):
    from verify.train import registry

    spec = RunSpec(seed=0, lr=0.03, protocol=protocol("smoke", **SHORT), gate=gate,
                   **{**TINY, "mixer": mixer, "d_model": 8})
    (rec,) = train_pack([spec])
    hist = rec["result"]["history"]
    assert hist[-1][1] < hist[0][1] < 2 * math.log(4), hist  # validation loss goes down from about ln |V|
    sd = {k[len("mixer."):]: v for k, v in rec["_weights"].items() if k.startswith("mixer.")}
    cfg = registry.mixer(mixer).block_config(spec)
    if mixer == "mamba2":
        assert {k: v.shape for k, v in sd.items()} == {k: v.shape for k, v in cfg.zeros().items()}
        z = cfg.in_proj_rows()["z"]
    else:
        z = slice(cfg.width if mixer == "mamba-s4d" else cfg.d_inner, None)
        module = _engine_module(mixer, cfg)
        module.load_state_dict({k: v.double() for k, v in sd.items()}, strict=True)
        h = torch.randn(2, 7, spec.d_model, dtype=torch.float64)
        packed = registry.mixer(mixer).packed_forward({k: v.double()[None] for k, v in sd.items()}, h[None], cfg)
        with torch.no_grad():
            torch.testing.assert_close(packed[0], module(h), rtol=1e-10, atol=1e-10)
    if not gate:  # the z rows never moved
        assert torch.all(sd["in_proj.weight"][z] == 0) and torch.all(sd["in_proj.bias"][z] == 1.0)


def test_keep_nth_with_pe_learns_and_scores_positions_from_n():
    proto = protocol("smoke", max_steps=300, eval_every=50, train_samples=1024, val_samples=128, test_samples=256)
    spec = RunSpec(task="keep-nth", mixer="mamba", vocab=4, seq_len=8, d_model=8, d_state=4, conv=False, seed=0,
                   lr=0.03, protocol=proto, task_args=(("n", 2), ("pe", True)))
    (rec,) = train_pack([spec])
    r = rec["result"]
    assert r["test_queries"] == 256 * (8 - 2 + 1)  # positions t >= n only
    assert r["val_acc"] == 1.0 and r["test_acc"] > 0.99, r["history"]
    assert torch.all(rec["_weights"]["mixer.conv1d.weight"][:, 0, :-1] == 0)  # no conv: frozen at the identity


def test_induction_heads_trains_with_the_blank_class():
    spec = RunSpec(task="induction-heads", mixer="mamba-delta-t", vocab=3, seq_len=12, d_model=8, d_state=6, seed=0,
                   lr=0.03, protocol=protocol("smoke", **SHORT), task_args=(("gamma", 0.1), ("p", 0.75)))
    (rec,) = train_pack([spec])
    hist = rec["result"]["history"]
    assert rec["_weights"]["readout.weight"].shape[0] == 4  # |V| + blank
    assert rec["result"]["test_queries"] == 128 * 12 and hist[-1][1] < hist[0][1], hist


_NOTHING = Outcome(0, 0, 0, 0, [])  # the outcome of a sweep with nothing to train


def test_calibration_reuses_the_fig2_runs_it_shares(tmp_path, monkeypatch):
    """The budgeted half of the calibration is made of fig2 cells: finished fig2 runs are taken, not retrained."""
    from experiments import calibrate

    spec = calibrate.grids(8)["budgeted"].runs()[0]
    rec = {"key": run_key(spec), "spec": spec.as_dict(), "device": "cpu",
           "result": {"solved": True, "test_acc": 1.0, "steps": 400, "epochs": 0.3, "early_stopped": True}}
    ResultStore(tmp_path / "fig2.jsonl").append([rec, {**rec, "key": "not-a-calibration-run"}])
    seen = {}
    monkeypatch.setattr(calibrate, "run_sweep", lambda specs, store, **kw: seen.update(keys=store.keys()) or _NOTHING)
    argv = ["--out", str(tmp_path), "--only", "budgeted", "--minutes", "0", "--device", "cpu"]
    assert calibrate.main(argv) == 0
    assert seen["keys"] == {run_key(spec)}
    out = json.loads((tmp_path / "calibration.json").read_text())
    assert out["rows"][0]["budgeted"]["solved"] and out["rows"][0]["kappa"] == spec.kappa
    assert out["command"] == "python -m experiments.calibrate " + " ".join(argv)


def test_calibration_verdicts_take_the_reference_of_the_epochs_asked_for(tmp_path, monkeypatch):
    """A store holding reference runs truncated at 1 and at 8 epochs: --epochs 8 judges by the 8-epoch runs only."""
    from experiments import calibrate

    def rec(spec, acc):
        return {"key": run_key(spec), "spec": spec.as_dict(), "result": {
            "solved": acc == 1.0, "test_acc": acc, "steps": 6250, "epochs": 1.0, "early_stopped": False}}

    one, eight = (calibrate.grids(e, kappas=(4,), d_multipliers=(0.5,))["reference"].runs()[0] for e in (1, 8))
    ResultStore(tmp_path / "calibration.jsonl").append([rec(one, 1.0), rec(eight, 0.25)])
    monkeypatch.setattr(calibrate, "run_sweep", lambda specs, store, **kw: _NOTHING)
    assert calibrate.main(["--out", str(tmp_path), "--only", "reference", "--kappas", "4", "--d-multipliers", "0.5",
                           "--minutes", "0", "--device", "cpu"]) == 0
    (row,) = json.loads((tmp_path / "calibration.json").read_text())["rows"]
    assert row["reference"]["runs"] == 1 and row["reference"]["best_test_acc"] == 0.25
    assert not row["reference"]["solved"]


def test_calibration_cells_can_be_narrowed(tmp_path, monkeypatch):
    """--kappas / --d-multipliers pick a subset of the calibration cells: the same run keys as the full grid's."""
    from experiments import calibrate

    seen = {}
    monkeypatch.setattr(calibrate, "run_sweep", lambda specs, store, **kw: seen.update(specs=specs) or _NOTHING)
    assert calibrate.main(["--out", str(tmp_path), "--epochs", "1", "--kappas", "4", "--d-multipliers", "0.5",
                           "--minutes", "0", "--device", "cpu"]) == 0
    full = {run_key(s): s for g in calibrate.grids(1).values() for s in g.runs()}
    got = seen["specs"]
    assert {(s.kappa, s.d_model, s.protocol.name) for s in got} == {(4, 6, "reference"), (4, 6, "budgeted"),
                                                                     (4, 6, "budgeted-loss")}
    assert all(run_key(s) in full for s in got) and len(got) == 7 + 21 + 21
    with pytest.raises(SystemExit) as e:  # a malformed list is argparse's one-line error, exit 2
        calibrate.main(["--out", str(tmp_path), "--kappas", "four"])
    assert e.value.code == 2


def test_tightness_tells_the_stopping_rule_from_solving():
    """A run that met the budgeted stopping rule (100% validation accuracy) but misses a test query is 'stopped', not
    'solved': the two smallest d are reported apart."""
    from dataclasses import replace

    spec = grid("smoke").runs()[0]

    def rec(d, acc, stopped):
        s = replace(spec, d_model=d)
        return {"key": run_key(s), "spec": s.as_dict(),
                "result": {"test_acc": acc, "solved": acc == 1.0, "early_stopped": stopped}}
    (row,) = tightness([rec(8, 0.9999, True), rec(16, 1.0, True), rec(4, 0.5, False)])
    assert (row["smallest_stopped"], row["smallest_solved"]) == (8, 16)


def test_calibration_verdicts_per_budgeted_variant():
    """Each budgeted variant's verdict is compared with the reference's; a run that stopped (met its rule) without
    solving is counted as such."""
    from dataclasses import replace

    from experiments import calibrate

    g = calibrate.grids(1)
    ref, bud, loss = (g[n].runs()[0] for n in ("reference", "budgeted", "budgeted-loss"))

    def rec(spec, solved, stopped, seed=0):
        spec = replace(spec, seed=seed)
        return {"key": run_key(spec), "spec": spec.as_dict(), "result": {
            "solved": solved, "test_acc": 1.0 if solved else 0.9999, "steps": 1000, "epochs": 1.0,
            "early_stopped": stopped}}
    (row,) = calibrate.verdicts([rec(ref, True, True), rec(bud, False, True), rec(bud, False, True, seed=1),
                                 rec(loss, True, True)])
    assert row["agree"] == {"budgeted": False, "budgeted-loss": True}
    assert row["budgeted"]["stopped_unsolved"] == 2 and row["budgeted-loss"]["stopped_unsolved"] == 0


def test_status_counts_a_grids_stored_runs_by_mixer_and_seed():
    """``sweep --status``: stored runs per mixer, the grid's first-seed runs among them (by run key; a run of another
    definition counts as stored, not as the grid's), the full grid's size, and the solved ones."""
    from verify.train.status import grid_status

    g = grid("fig2")
    runs = g.runs()
    mamba = [s for s in runs if s.mixer == "mamba"]
    seed0 = [s for s in mamba if s.seed == 0][:3]
    records = [{"key": run_key(s), "spec": s.as_dict(), "result": {"solved": i == 0}} for i, s in enumerate(seed0)]
    records.append({"key": "not-of-this-grid", "spec": {**seed0[0].as_dict()}, "result": {"solved": False}})
    st = grid_status(g, records, seeds=1)
    assert st["mamba"] == {"stored": 4, "solved": 1, "first_stored": 3, "full": len(mamba),
                           "first": sum(s.seed == 0 for s in mamba)}
    assert st["mamba-s4d"]["stored"] == 0 and st["mamba-s4d"]["full"] == sum(s.mixer == "mamba-s4d" for s in runs)


@pytest.mark.parametrize("mixer", ["mamba", "mamba-s4d"])
def test_projections_off_is_the_papers_keep_nth_model(mixer):
    """proj=False (the paper's KEEP n-TH models, embedding -> SSM -> linear output): in_proj's x rows and out_proj
    stay the identity through training, and the trainable parameters are the embedding, the SSM and the readout
    (Mamba: x_proj, dt_proj, A, D; Mamba-S4D: dt_bias, A, B, C, D). The two are different runs (keys)."""
    proto = protocol("smoke", max_steps=60, eval_every=30, train_samples=256, val_samples=64, test_samples=64)
    kw = dict(task="keep-nth", mixer=mixer, vocab=4, seq_len=8, d_model=8, d_state=4, conv=False, seed=0, lr=0.03,
              protocol=proto, task_args=(("n", 2), ("pe", True)))
    spec = RunSpec(proj=False, **kw)
    assert RunSpec(**kw).as_dict()["proj"] is True and run_key(spec) != run_key(RunSpec(**kw))
    from verify.train.loop import build_model

    model = build_model([spec], "cpu")
    d, n, v, r = 8, 4, 4, math.ceil(8 / 16)
    ssm = (r + 2 * n) * d + (d * r + d) + d * n + d if mixer == "mamba" else d + 3 * d * n + d
    trainable = sum(int((model.masks[k][0] if model.masks.get(k) is not None else torch.ones_like(p[0])).sum())
                    for k, p in model.params.items())
    assert trainable == v * d + ssm + v * d
    (rec,) = train_pack([spec])
    w = rec["_weights"]
    assert torch.equal(w["mixer.out_proj.weight"], torch.eye(d, dtype=w["mixer.out_proj.weight"].dtype))
    assert torch.equal(w["mixer.in_proj.weight"][:d], torch.eye(d, dtype=w["mixer.in_proj.weight"].dtype))
