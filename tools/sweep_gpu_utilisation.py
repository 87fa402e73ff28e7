"""GPU utilisation and time of a training sweep: runs ``verify-constructions sweep`` while sampling ``nvidia-smi``,
and writes one JSON file (atomically).

Usage: python3 tools/sweep_gpu_utilisation.py --out OUT.json [--interval SECONDS] -- SWEEP FLAGS...

for example ``-- --grid fig2-tf32 --seeds 2 --device cuda --store /tmp/fig2-tf32.jsonl``: give a --store of its own
(a fresh file times the whole selection). Written:

* ``wall_seconds``: the sweep command from start to exit (Ray's start included);
* ``train_seconds``: from the first stored run's pack start to the last one's end (the records' ``finished`` time
  minus ``pack_seconds``; whole seconds), the span the GPU was working on the grid;
* ``runs_stored`` / ``runs_selected`` / ``grid_runs``; ``model_steps`` (sum of the stored runs' steps) and
  ``model_steps_per_train_second``; ``full_grid_minutes_estimate`` = train time x grid runs / runs stored (the
  selection's cells stand for the grid's; fewer seeds make smaller packs, so this leans high);
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


def train_span(records: list[dict]) -> float | None:
    """Seconds from the first pack's start to the last pack's end, from the records' ``finished`` stamps."""
    ends = [datetime.fromisoformat(r["finished"]).timestamp() for r in records if r.get("finished")]
    starts = [datetime.fromisoformat(r["finished"]).timestamp() - r.get("pack_seconds", 0) for r in records
              if r.get("finished")]
    return round(max(ends) - min(starts), 1) if ends else None


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
    from verify.train.spec import run_key
    from verify.train.store import ResultStore
    from verify.train.sweep import grid

    g = grid(sweep_args[sweep_args.index("--grid") + 1])
    keys = {run_key(s) for s in g.runs()}
    recs = [r for r in ResultStore(store).records() if r.get("key") in keys] if store.exists() else []
    counts = next((json.loads(line) for line in reversed(proc.stdout.splitlines()) if line.startswith("{")), {})
    span = train_span(recs)
    steps = sum(r["result"]["steps"] for r in recs)
    out = {"command": " ".join(["python3", "tools/sweep_gpu_utilisation.py", *argv]), "exit_code": proc.returncode,
           "wall_seconds": round(wall, 1), "train_seconds": span, "runs_stored": len(recs),
           "runs_selected": counts.get("total"), "grid_runs": len(keys), "model_steps": steps,
           "model_steps_per_train_second": round(steps / span, 1) if span else None,
           "full_grid_minutes_estimate": round(span * len(keys) / len(recs) / 60, 1) if span and recs else None,
           "devices": sorted({str(r.get("device")) for r in recs}),
           "utilisation": summary(rows, errors),
           "utilisation_missing_because": None if rows else (errors[-1] if errors else "no samples"),
           "sweep_output_tail": (proc.stdout + proc.stderr).splitlines()[-5:]}
    write_json_atomic(a.out, out)
    print(json.dumps(out, indent=1))
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
