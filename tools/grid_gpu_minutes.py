"""GPU time of a grid trained in one or several jobs on a GPU machine, from the jobs' step timings (each job's
steps.jsonl written by tools/gpu_session.sh: one line per step with its start and end).

Usage: python3 tools/grid_gpu_minutes.py GRID STEPS.jsonl [...] --store STORE.jsonl [--out SUMMARY.json]

A job held the whole GPU while any of the grid's sweep steps ran, so its GPU time is the span from the first such
step's start to the last one's end; the grid's GPU time is the sum over jobs. Installing packages and bundling the
outputs are outside every step and are not counted. Work lost to a pack restarted from scratch (its checkpoint was
not kept) is counted, as it was spent.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.io import write_text_atomic  # noqa: E402
from verify.train.store import ResultStore  # noqa: E402


def job_span(path: Path, grid: str) -> dict:
    steps = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    mine = [s for s in steps if s["step"].startswith(f"sweep@{grid}@") or s["step"] == f"sweep@{grid}"]
    if not mine:
        sys.exit(f"{path} has no sweep step of grid {grid!r}")
    return {"file": path.name, "processes": len(mine), "seconds": round(max(s["end"] for s in mine)
                                                                        - min(s["start"] for s in mine), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("grid")
    ap.add_argument("steps", nargs="+", type=Path)
    ap.add_argument("--store", required=True)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    from verify.train.spec import run_key
    from verify.train.sweep import grid

    jobs = [job_span(p, a.grid) for p in a.steps]
    specs = grid(a.grid).runs()
    keys = {run_key(s) for s in specs}
    recs = [r for r in ResultStore(a.store).records() if r.get("key") in keys]
    done, steps = len(recs), sum(r["result"]["steps"] for r in recs)
    total = sum(c["seconds"] for c in jobs)
    out = {"grid": a.grid, "runs_of_grid": len(specs), "runs_stored": done, "jobs": jobs,
           "gpu_seconds": round(total, 1), "gpu_minutes": round(total / 60, 1), "model_steps": steps,
           "model_steps_per_gpu_second": round(steps / total, 1)}
    text = json.dumps(out, indent=1)
    print(text)
    if a.out:
        write_text_atomic(a.out, text + "\n")


if __name__ == "__main__":
    main()
