"""Where the MQAR harness's time goes beyond ``hidden_at``: an ablation at one configuration (GPU).

Times, per dtype, in queries per second: ``hidden_at`` alone on one generated batch; ``hidden_at`` + the readout
(``verify.checks._recall``) on that batch, with the fused Triton readout (TF32 checks: the kernel; float32 and
bfloat16 checks: the certified screen, and how many rows it recomputes) and with the plain GEMM + max; generation
alone (the harness's threaded ``_batches`` pipeline, no GPU); the whole ``check_mqar`` with and without the fused
readout, and its steady rate (the extra batches' queries per extra second from 16 to 64 batches, so the pipeline's
start and end are left out); the bare scan kernel's rate in the same run. Usage::

    python3 benchmarks/tools/harness_ablation.py --out OUT/harness_ablation.json [--config large] [--overwrite]

Needs a CUDA GPU and mamba_ssm. Exit codes: 0 done, 2 bad input (no GPU included), 3 internal error, 130
interrupted.
"""
from __future__ import annotations

import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import verify.checks as checks  # noqa: E402
from verify import fused_readout  # noqa: E402
from common.errors import RequirementError  # noqa: E402
from verify import cli_support as cli  # noqa: E402
from mqar_throughput import CONFIGS, _time, bare_kernel_qps, steady_qps  # noqa: E402
from verify.engines import make_engine  # noqa: E402
from verify.registry import SPECS  # noqa: E402
from verify.tasks.mqar import MQARConfig, generate  # noqa: E402


def _with(obj, name, value, fn):
    saved = getattr(obj, name)
    setattr(obj, name, value)
    try:
        return fn()
    finally:
        setattr(obj, name, saved)


def ablate(config: str, dtypes: list[str], progress: cli.Progress) -> dict:
    kappa, vocab, variant, T, batch, batches = CONFIGS[config]
    spec = SPECS["mqar-mamba"]
    con = spec.build(spec.params(kappa=kappa, vocab=vocab, variant=variant, seq_len=T))
    task = MQARConfig(kappa, vocab, T, num_examples=batch * batches)
    tokens, labels = generate(replace(task, num_examples=batch), 0)
    pos, target = checks.query_positions(labels)
    tokens, pos, target = (torch.from_numpy(a).cuda() for a in (tokens, pos, target))
    q = pos.numel()
    out = {"config": config, "gpu": torch.cuda.get_device_name(), "batch": batch, "batches": batches,
           "bare_kernel_float32_qps": bare_kernel_qps(con, batch, T, kappa, torch.float32),
           "bare_kernel_bfloat16_qps": bare_kernel_qps(con, batch, T, kappa, torch.bfloat16)}

    t = time.perf_counter()
    for _ in checks._batches(task, 1, batch):
        pass
    out["generation_qps"] = task.num_examples * kappa / (time.perf_counter() - t)
    for dtype in dtypes:
        progress.update(dtype)
        eng = make_engine("mamba_ssm", dtype)
        row = {"hidden_at_qps": q / _time(lambda: eng.hidden_at(con, tokens, pos))}

        harness = lambda: _time(lambda: checks.check_mqar(con, task, eng, seed=1, batch_size=batch))  # noqa: E731

        def scored():
            with eng.precision():
                h = eng.hidden_at(con, tokens, pos)
                checks._recall(con, h.reshape(-1, h.shape[-1]), target)
        row["hidden_at_readout_fused_qps"] = q / _time(scored)  # TF32 checks: the kernel; others: the screen
        row["harness_fused_qps"] = task.num_examples * kappa / harness()
        row["harness_fused_steady_qps"] = steady_qps(con, eng, task, batch)
        row["fused_tiles"] = str(getattr(fused_readout._own_and_best_other, "best_config", None))
        # the plain GEMM + max, Triton's kernel switched off
        row["hidden_at_readout_unfused_qps"] = q / _with(fused_readout, "triton", None, lambda: _time(scored))
        row["harness_unfused_qps"] = task.num_examples * kappa / _with(fused_readout, "triton", None, harness)
        with eng.precision():
            if not torch.backends.cuda.matmul.allow_tf32:  # the rows the certified screen recomputes
                h = eng.hidden_at(con, tokens, pos).reshape(-1, con.config.d_model)
                screen = fused_readout.Screen(h, checks._readout(con, h.device, torch.float32), target)
                row["screen_recomputed_rows"] = int(screen.recompute.sum())
                row["screen_rows"] = h.shape[0]
        out[dtype] = row
        print(dtype, cli.dumps(row), flush=True)
        progress.advance()
    return out


GPU_DTYPES = ("float32", "tfloat32", "bfloat16")


def parser() -> cli.Parser:
    ap = cli.Parser(prog="python3 benchmarks/tools/harness_ablation.py", description=__doc__, )
    ap.add_argument("--out", required=True, help="result file (JSON)")
    ap.add_argument("--config", default="large", choices=["default", "large"], help="configuration of mqar_throughput")
    ap.add_argument("--dtypes", type=cli.names(GPU_DTYPES), default=list(GPU_DTYPES),
                    help=f"comma-separated dtypes (default: {','.join(GPU_DTYPES)})")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file (default: refuse)")
    return ap


def main(argv) -> int:
    args = parser().parse_args(argv)
    out = cli.output_file(args.out, "--out", args.overwrite)
    if not torch.cuda.is_available():
        raise RequirementError("this benchmark needs a CUDA GPU and mamba_ssm; torch sees no GPU")
    with cli.Progress(len(args.dtypes), "harness ablation", args.quiet) as progress:
        res = ablate(args.config, args.dtypes, progress)
    res["command"] = shlex.join(["python3", "benchmarks/tools/harness_ablation.py", *argv])
    cli.write_json(out, res)
    print(cli.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
