"""Merge training stores fetched from a GPU run (OUT/GRID[__MIXERS].jsonl) into results/train/GRID.jsonl.

Usage: python3 tools/merge_stores.py FILE.jsonl [...]. Lines whose run key is already in the target are skipped, so
merging twice (or merging a store that was seeded from the target) adds nothing; cut lines are dropped. The checkpoint
of a pack cut at the run's deadline (FILE.jsonl.ckpt/) replaces .sweep-ckpt/FILE.jsonl.ckpt/ (a folder git ignores;
name it in the next call's carry and tools/gpu_session.sh resumes the pack from it); a store without one drops its
old checkpoint, whose pack has finished.
"""
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from verify.train.store import ResultStore  # noqa: E402

for f in sys.argv[1:]:
    grid = Path(f).name.removesuffix(".jsonl").split("__")[0]
    target = ResultStore(f"results/train/{grid}.jsonl")
    n = target.append(ResultStore(f).records())  # only the keys the target does not hold
    print(f"{f} -> {target.path}: +{n} runs ({len(target.keys())} in all)")
    ckpt, kept = Path(f + ".ckpt"), Path(".sweep-ckpt") / (Path(f).name + ".ckpt")
    shutil.rmtree(kept, ignore_errors=True)
    if ckpt.is_dir() and any(ckpt.iterdir()):
        shutil.copytree(ckpt, kept)
        print(f"  pack checkpoint kept in {kept}")

total = sum(p.stat().st_size for p in Path(".sweep-ckpt").rglob("*") if p.is_file())
print(f".sweep-ckpt holds {total / 2 ** 20:.1f} MiB of pack checkpoints (the next call carries them with the wheels "
      f"and the tree, 64 MiB in all)")
