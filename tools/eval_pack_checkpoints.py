"""Test accuracy of packs that stopped before their step budget, from their checkpoints, on the CPU reference.

Usage: python3 tools/eval_pack_checkpoints.py GRID OUT.json TRAINED_ON MAMBA_SSM CKPT.pt [...] (TRAINED_ON: where the
checkpoints were trained, for example "cuda (H100)"; MAMBA_SSM: its mamba_ssm version). For packs that cannot be
finished where they were trained (for example Mamba-2 packs whose final test evaluation faulted in mamba_ssm's Triton
SSD kernels, results/train/README.md, fig2-cut.json): each run's spec, the step it reached, its last validation
accuracy and its accuracy on the run's full test set through the packed reference forward (the exact sequential SSD
scan; CPU, float32). These are truncated runs, not store lines: the output is a separate file, written atomically.
"""
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.io import write_json_atomic  # noqa: E402
from verify.train import loop  # noqa: E402
from verify.train.spec import run_key  # noqa: E402
from verify.train.sweep import grid as load_grid  # noqa: E402


def evaluate_checkpoint(specs: dict, path: str) -> list[dict]:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    pack = [specs[k] for k in ck["keys"]]
    model = loop.build_model(pack, "cpu", ck["impl"])
    loop.load_params(model, ck["params"])
    _, acc, correct, queries = loop.evaluate(model, *loop.datasets(pack[0])["test"], "cpu",
                                             pack[0].protocol.batch_size)
    st = ck["state"]
    return [{"key": key, "spec": s.as_dict(), "step": st["step"], "stop_step": st["stop_step"][i],
             "val_acc": st["history"][i][-1][2] if st["history"][i] else None, "test_acc": float(acc[i]),
             "test_correct": int(correct[i]), "test_queries": queries, "checkpoint": os.path.basename(path)}
            for i, (key, s) in enumerate(zip(ck["keys"], pack))]


def main(grid: str, out: str, trained_on: str, mamba_ssm: str, paths: list[str]) -> None:
    specs = {run_key(s): s for s in load_grid(grid).runs()}
    rows = [r for p in paths for r in evaluate_checkpoint(specs, p)]
    write_json_atomic(out, {"grid": grid, "trained_on": trained_on, "mamba_ssm": mamba_ssm,
                            "evaluated_on": "cpu reference (packed forward, float32)", "torch": torch.__version__,
                            "runs": rows})
    print(f"{len(rows)} runs from {len(paths)} checkpoints -> {out}")


if __name__ == "__main__":
    main(*sys.argv[1:5], sys.argv[5:])
