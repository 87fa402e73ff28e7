"""Merge results stores trained elsewhere (another machine, a copy of the repository) into the stores here.

Usage: python3 tools/merge_stores.py [--into results/train] [--allow-mixed-devices] FILE.jsonl [...]

FILE's grid is its name up to the first "__" (GRID.jsonl, GRID__anything.jsonl); its runs go to INTO/GRID.jsonl.
Runs whose key the target holds are skipped (merging twice adds nothing), lines cut short are dropped, and a
target holding runs of another device type is refused unless --allow-mixed-devices. The pack checkpoints beside
FILE (FILE.ckpt/, a sweep's packs cut by its time budget or an interrupt) are copied beside the target
(INTO/GRID.jsonl.ckpt/, ignored by git), so that a sweep into the target resumes those packs; checkpoints there
whose runs the target now holds are deleted.
"""
import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.errors import RequirementError  # noqa: E402
from verify.train.store import ResultStore, check_target  # noqa: E402


def merge(src: Path, into: Path, allow_mixed: bool) -> str:
    grid = src.name.removesuffix(".jsonl").split("__")[0]
    target = ResultStore(into / f"{grid}.jsonl")
    records = ResultStore(src).records()
    for device in sorted({str(r.get("device", "")).split(":")[0] for r in records} - {""}):
        check_target(target.path, device, str(target.path), allow_mixed)
    n = target.append(records)  # only the keys the target does not hold
    lines = [f"{src} -> {target.path}: +{n} runs ({len(target.keys())} in all)"]
    ckpt, kept = Path(f"{src}.ckpt"), Path(f"{target.path}.ckpt")
    if ckpt.is_dir():
        kept.mkdir(parents=True, exist_ok=True)
        for f in ckpt.glob("*.pt"):
            shutil.copy2(f, kept / f.name)
            lines.append(f"  pack checkpoint {f.name} -> {kept}")
    if kept.is_dir():
        import torch

        stored = target.keys()
        for f in kept.glob("*.pt"):
            if set(torch.load(f, map_location="cpu", weights_only=False)["keys"]) <= stored:
                f.unlink()
                lines.append(f"  {f.name}: its runs are stored, checkpoint deleted")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stores", nargs="+", type=Path, help="results stores to merge (GRID[__anything].jsonl)")
    ap.add_argument("--into", type=Path, default=Path("results/train"), help="folder of the target stores")
    ap.add_argument("--allow-mixed-devices", action="store_true",
                    help="let runs of one device type into a target holding runs of another")
    a = ap.parse_args(argv)
    try:
        for src in a.stores:
            print(merge(src, a.into, a.allow_mixed_devices))
    except RequirementError as e:
        print(f"merge_stores: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
