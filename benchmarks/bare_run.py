"""Wall time and CPU time of the bare ``verify-constructions`` (every default check), per check and in total.

    python3 benchmarks/bare_run.py --out results/bare_run_cpu.json [--repeat 2]

Runs the command as a user would (a fresh process, ``--json --quiet``), ``--repeat`` times, and records the
machine (cores, torch threads), the best wall time, the process's user + system CPU time, and each check's seconds.
An existing --out is replaced only with --overwrite.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.io import write_json_atomic  # noqa: E402


def one_run() -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "verify_constructions", "--json", "--quiet"], capture_output=True,
                       text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    body = json.loads(p.stdout)
    return {"exit": p.returncode, "wall_s": round(wall, 2),
            "cpu_s": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 2),
            "verdicts": body["verdicts"],
            "checks": [{"construction": c["construction"], "summary": c.get("summary", ""),
                        "seconds": round(c.get("seconds", 0.0), 2), "verdict": c["verdict"]} for c in body["checks"]]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="result JSON file")
    ap.add_argument("--repeat", type=int, default=2, help="runs; the best wall time is reported (default: 2)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = ap.parse_args()
    if Path(args.out).exists() and not args.overwrite:
        print(f"error: --out {args.out} exists: pass --overwrite to replace it", file=sys.stderr)
        return 2
    runs = [one_run() for _ in range(max(1, args.repeat))]
    best = min(runs, key=lambda r: r["wall_s"])
    import torch

    write_json_atomic(args.out, {"command": "python3 benchmarks/bare_run.py " + " ".join(sys.argv[1:]),
                                 "date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(),
                                 "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                                 "wall_s": [r["wall_s"] for r in runs], "best": best})
    print(f"best wall {best['wall_s']} s, CPU {best['cpu_s']} s, exit {best['exit']}, {best['verdicts']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
