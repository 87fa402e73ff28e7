"""GPU utilisation and time of a training sweep: runs ``verify-constructions sweep`` while sampling ``nvidia-smi``,
and writes one JSON file (atomically).

Usage: python3 tools/sweep_gpu_utilisation.py --out OUT.json [--interval SECONDS] -- SWEEP FLAGS...

for example ``-- --grid fig2-tf32 --seeds 2 --device cuda --store /tmp/fig2-tf32.jsonl``: give a --store of its own
(a fresh file times the whole selection). Written:

* ``wall_seconds``: the sweep command from start to exit (Ray's start included);
* ``train_seconds``: from the first pack's start to the last one's end, over the packs this sweep trained: its
  finished runs (the records' ``finished`` time minus ``pack_seconds``; whole seconds) and its packs checkpointed in
  flight (the checkpoint file's time minus the training seconds it records), starts clamped to the sweep's start;
  the span the GPU was working on the grid;
* ``runs_stored`` / ``runs_selected`` / ``grid_runs``; the model-steps trained in this sweep, of finished runs
  (``model_steps_finished``) and of the packs checkpointed in flight (``model_steps_checkpointed``, from the step
  and the models' stops that each checkpoint under ``STORE.ckpt/`` holds, less what a checkpoint held when the sweep
  began), ``model_steps`` their sum; ``model_steps_per_train_second`` (both) and
  ``model_steps_per_train_second_finished_only``. A short window cuts packs in flight; counting finished runs alone
  then reads far too low (the packs are trained largest first);
* ``full_grid_minutes_estimate`` = the grid's model-steps (every run to its protocol's last step: early stops make
  it lean high) / the rate of both;
* ``utilisation``: nvidia-smi's utilization.gpu sampled every ``--interval`` s from the sweep's start (per sample the
  mean over GPUs): samples, mean, max, the share of samples at 0 %, and the largest memory.used (MiB); null with a
  reason where nvidia-smi is missing or printed nothing;
* the sweep's exit code and its last output lines.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common.io import write_json_atomic  # noqa: E402


def sample(interval: float, stop: threading.Event, rows: list, errors: list) -> None:
    """Append (utilisation %, memory MiB) per sample, the mean and the max over GPUs, until ``stop``."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        errors.append("nvidia-smi not found")
        return
    while not stop.is_set():
        try:
            out = subprocess.run([exe, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10).stdout
            gpus = [tuple(float(x) for x in line.split(",")) for line in out.strip().splitlines() if line.strip()]
            if gpus:
                rows.append((sum(g[0] for g in gpus) / len(gpus), max(g[1] for g in gpus)))
        except (subprocess.TimeoutExpired, ValueError) as e:
            errors.append(f"{type(e).__name__}: {e}")
        stop.wait(interval)


def summary(rows: list, errors: list) -> dict | None:
    if not rows:
        return None
    util = [u for u, _ in rows]
    return {"samples": len(rows), "mean_percent": round(sum(util) / len(util), 1), "max_percent": max(util),
            "zero_share": round(sum(u == 0 for u in util) / len(util), 3),
            "memory_max_mib": max(m for _, m in rows), "sampling_errors": len(errors)}


def store_of(sweep_args: list[str]) -> Path | None:
    return Path(sweep_args[sweep_args.index("--store") + 1]) if "--store" in sweep_args[:-1] else None


def _stamp(record: dict) -> float:
    return datetime.fromisoformat(record["finished"]).timestamp()


def checkpoints(store: Path, keys: set[str]) -> dict[str, dict]:
    """Per pack checkpoint of ``store`` (``STORE.ckpt/PACK.pt``) holding runs of ``keys``: its run keys, the
    model-steps it has trained (a stopped model's steps up to its stop), its training seconds and the file's time."""
    out = {}
    for f in sorted(Path(f"{store}.ckpt").glob("*.pt")):
        import torch

        ck = torch.load(f, map_location="cpu", weights_only=False)
        if not set(ck["keys"]) & keys:
            continue
        st = ck["state"]
        steps = sum(stop if stop is not None else st["step"] for stop in st["stop_step"])
        out[f.name] = {"keys": list(ck["keys"]), "model_steps": steps, "seconds": float(st.get("seconds", 0.0)),
                       "mtime": f.stat().st_mtime}
    return out


def window(records: list[dict], before: set[str], ck_before: dict, ck_after: dict, t0: float) -> dict:
    """What the sweep trained between ``t0`` and now: the finished runs not in the store before (``before``, their
    keys) and the packs checkpointed now, each less the steps its checkpoint held at ``t0`` (``ck_before``; a pack
    is known by its first run key), and the span from the first pack's start to the last one's end."""
    new = [r for r in records if r["key"] not in before]
    held = {c["keys"][0]: c["model_steps"] for c in ck_before.values()}
    finished = sum(r["result"]["steps"] for r in new) - sum(held.get(r["key"], 0) for r in new)
    advanced = [c for c in ck_after.values() if c["model_steps"] > held.get(c["keys"][0], 0)]
    checkpointed = sum(c["model_steps"] - held.get(c["keys"][0], 0) for c in advanced)
    spans = [(_stamp(r) - r.get("pack_seconds", 0), _stamp(r)) for r in new if r.get("finished")]
    spans += [(c["mtime"] - c["seconds"], c["mtime"]) for c in advanced]
    span = round(max(e for _, e in spans) - max(t0, min(s for s, _ in spans)), 1) if spans else None
    return {"runs": len(new), "finished": finished, "checkpointed": checkpointed, "packs_checkpointed": len(advanced),
            "span": span}


def grid_model_steps(specs) -> int:
    """Model-steps of every run of a grid trained to its protocol's last step (no early stop)."""
    return sum(min(s.protocol.max_steps, s.protocol.cap_steps or s.protocol.max_steps) for s in specs)


def per_second(steps: int, span: float | None) -> float | None:
    return round(steps / span, 1) if span else None


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between nvidia-smi samples")
    a = ap.parse_args(argv[:split])
    sweep_args = argv[split + 1:]
    store = store_of(sweep_args)
    if store is None or "--grid" not in sweep_args[:-1]:
        ap.error("the sweep flags after -- need --grid GRID and --store FILE")
    from verify.train.spec import run_key
    from verify.train.store import ResultStore
    from verify.train.sweep import grid

    specs = grid(sweep_args[sweep_args.index("--grid") + 1]).runs()
    keys = {run_key(s) for s in specs}

    def stored() -> list[dict]:
        return [r for r in ResultStore(store).records() if r.get("key") in keys] if store.exists() else []

    before, ck_before = {r["key"] for r in stored()}, checkpoints(store, keys)
    rows, errors, stop = [], [], threading.Event()
    sampler = threading.Thread(target=sample, args=(a.interval, stop, rows, errors), daemon=True)
    cmd = [sys.executable, "-m", "verify_constructions", "sweep", *sweep_args]
    t0 = time.time()
    sampler.start()
    path = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path})
    wall = time.time() - t0
    stop.set()
    sampler.join()
    recs = stored()
    w = window(recs, before, ck_before, checkpoints(store, keys), t0)
    counts = next((json.loads(line) for line in reversed(proc.stdout.splitlines()) if line.startswith("{")), {})
    steps = w["finished"] + w["checkpointed"]
    rate = per_second(steps, w["span"])
    grid_steps = grid_model_steps(specs)
    out = {"command": " ".join(["python3", "tools/sweep_gpu_utilisation.py", *argv]), "exit_code": proc.returncode,
           "wall_seconds": round(wall, 1), "train_seconds": w["span"], "runs_stored": w["runs"],
           "runs_selected": counts.get("total"), "grid_runs": len(keys), "packs_checkpointed": w["packs_checkpointed"],
           "model_steps_finished": w["finished"], "model_steps_checkpointed": w["checkpointed"],
           "model_steps": steps, "model_steps_per_train_second": rate,
           "model_steps_per_train_second_finished_only": per_second(w["finished"], w["span"]),
           "grid_model_steps": grid_steps,
           "full_grid_minutes_estimate": round(grid_steps / rate / 60, 1) if rate else None,
           "devices": sorted({str(r.get("device")) for r in recs if r["key"] not in before}),
           "utilisation": summary(rows, errors),
           "utilisation_missing_because": None if rows else (errors[-1] if errors else "no samples"),
           "sweep_output_tail": (proc.stdout + proc.stderr).splitlines()[-5:]}
    write_json_atomic(a.out, out)
    print(json.dumps(out, indent=1))
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
