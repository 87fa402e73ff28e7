"""The simplified linear Mamba's two exact forms in training: seconds per forward + backward, attention vs chunked.

``verify.engines.linear`` computes one layer's sum y_t = sum_{tau <= t} <C_t, B_tau> x_tau either as the masked L x L
score matrix times the values (``mode="attention"``, O(L^2 (N + P)) a sequence) or chunk by chunk with the state between
chunks (``mode="chunked"``, O(L Q (N + P) + L N P), Q <= CHUNK = 128 tokens a chunk; the form training uses). For the
one-layer shapes of the trained recall grids (read from the grid files: d_model, the largest d_state, seq_len, and the
protocol's batch; one layer of the tied linear Mamba) it times, on one device in float32, a forward and a backward of
``layer_forward`` (loss sum(y * w)) in each form, the best of 3 after a warm-up, and reports the ratio and the largest
relative difference between the two forms' outputs (the same sum: float32 rounding only). A form that does not fit the
device's memory is recorded as such. Usage::

    python3 benchmarks/linear_forms.py --out results/train/bench_linear_forms_DEVICE.json [--device cuda]
        [--grids recall-layers,recall-repeats,recall-vocab-long] [--overwrite]

Exit codes: 0 done, 2 bad input, 3 internal error, 130 interrupted.
"""
from __future__ import annotations

import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mqar_throughput import _time  # noqa: E402
from verify import blocks  # noqa: E402
from common.errors import require  # noqa: E402
from verify import cli_support as cli  # noqa: E402
from verify.engines.linear import CHUNK, layer_forward  # noqa: E402
from verify.train.sweep import grid  # noqa: E402

GRIDS = ("recall-layers", "recall-repeats", "recall-vocab-long")
MODES = ("attention", "chunked")


def shapes(name: str) -> list[dict]:
    """One shape per seq_len of grid ``name``: its d_model, largest d_state, the protocol's batch, one layer."""
    out: dict[int, dict] = {}
    for spec in grid(name).runs():
        s = out.setdefault(spec.seq_len, {"grid": name, "seq_len": spec.seq_len, "d_model": spec.d_model,
                                          "d_state": spec.d_state, "batch": spec.protocol.batch_size, "spec": spec})
        if spec.d_state > s["d_state"]:
            s.update(d_state=spec.d_state, spec=spec)
    return [out[k] for k in sorted(out)]


def time_shape(shape: dict, device: str) -> dict:
    train = blocks.KINDS["linear-mamba"].training
    cfg = replace(train.block_config(shape["spec"]), n_layers=1, residual=False)
    gen = torch.Generator().manual_seed(0)
    params = {k[len("layers.0."):]: v.float().to(device).requires_grad_()
              for k, v in train.init(cfg, gen).items()}
    h = torch.randn(shape["batch"], shape["seq_len"], cfg.d_model, generator=gen).to(device)
    w = torch.randn(shape["batch"], shape["seq_len"], cfg.d_model, generator=gen).to(device)
    row = {k: shape[k] for k in ("grid", "seq_len", "d_model", "d_state", "batch")}
    row.update(d_inner=cfg.d_inner, chunk=CHUNK, device=device)
    outs = {}
    for mode in MODES:
        def step():
            for p in params.values():
                p.grad = None
            y = layer_forward(params, h, cfg, mode)
            (y * w).sum().backward()
            outs[mode] = y.detach()
        try:
            row[f"{mode}_s"] = _time(step)
        except RuntimeError as e:
            if not cli.out_of_memory(e):
                raise
            row[f"{mode}_s"] = "out of memory"
            torch.cuda.empty_cache()
    if all(isinstance(row[f"{m}_s"], float) for m in MODES):
        row["attention_over_chunked"] = row["attention_s"] / row["chunked_s"]
        a, c = outs["attention"].double(), outs["chunked"].double()
        row["max_relative_difference"] = ((a - c).abs().max() / a.abs().max()).item()
    return row


def parser() -> cli.Parser:
    ap = cli.Parser(prog="python3 benchmarks/linear_forms.py", description=__doc__)
    ap.add_argument("--out", default=None, help="result file (JSON; default: rows on stdout only)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    ap.add_argument("--grids", type=cli.names(GRIDS), default=list(GRIDS),
                    help=f"comma-separated grids whose shapes are timed (default: {','.join(GRIDS)})")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file (default: refuse)")
    return ap


def main(argv) -> int:
    args = parser().parse_args(argv)
    out = cli.output_file(args.out, "--out", args.overwrite) if args.out else None
    require(args.device in ("cpu", "cuda"), f"--device must be cpu or cuda, got {args.device!r}")
    require(args.device == "cpu" or torch.cuda.is_available(), "--device cuda: no CUDA GPU is visible")
    rows = []
    for name in args.grids:
        for shape in shapes(name):
            rows.append(time_shape(shape, args.device))
            print(cli.dumps(rows[-1]), flush=True)
    if out:
        name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
        cli.write_json(out, {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "device_name": name,
                             "command": shlex.join(["python3", "benchmarks/linear_forms.py", *argv]),
                             "cpu_threads": torch.get_num_threads(), "rows": rows}, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
