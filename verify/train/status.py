"""What each training grid has stored: per grid and mixer, the runs stored, the grid's runs of the first seeds that
are stored, the full grid's size, and how many stored runs solved their task (100% test accuracy).

    verify-constructions sweep --status [--seeds 3]

prints the markdown table that ``results/train/README.md`` quotes. A stored run counts toward a grid iff its key is
one of the grid's run keys (so runs of an older grid definition, or of another protocol, count as stored but not as
the grid's); keys stored under an older key schema are read under the current one (``verify.train.spec.upgrade``).
"""
from __future__ import annotations

from pathlib import Path

from verify import blocks
from verify.train.spec import run_key
from verify.train.store import ResultStore
from verify.train.sweep import grids


def grid_status(grid, records: list[dict], seeds: int) -> dict[str, dict]:
    """Per mixer: stored, solved, first-seeds stored / first-seeds total, full total."""
    keys, specs = {r["key"] for r in records}, grid.runs()
    out = {}
    for mixer in grid.mixers:
        runs = [s for s in specs if s.mixer == mixer]
        first = [s for s in runs if s.seed < seeds]
        mine = [r for r in records if r["spec"]["mixer"] == mixer]
        out[mixer] = {"stored": len(mine), "solved": sum(bool(r["result"]["solved"]) for r in mine),
                      "first_stored": sum(run_key(s) in keys for s in first), "first": len(first), "full": len(runs)}
    return out


def _cell(c: dict) -> str:
    if not c["stored"]:
        return f"0 / {c['full']}"
    solved = f", {c['solved']} solved" if c["solved"] else ""
    return f"{c['stored']} / {c['first_stored']} of {c['first']} / {c['full']}{solved}"


def table(directory: Path, seeds: int) -> str:
    """The table over every grid with a store ``directory/<grid>.jsonl``."""
    mixers = blocks.trainable()
    rows = [f"runs stored / runs of seeds 0-{seeds - 1} stored of the grid's / runs of the full grid; solved = 100% "
            "test accuracy", "", f"| grid | {' | '.join(mixers)} |", "|---" * (len(mixers) + 1) + "|"]
    for name, grid in grids().items():
        path = directory / f"{name}.jsonl"
        if not path.exists():
            continue
        status = grid_status(grid, ResultStore(path).records(), seeds)
        rows.append(f"| {name} | " + " | ".join(_cell(status[m]) if m in status else "" for m in mixers) + " |")
    return "\n".join(rows)
