"""Throughput of the MQAR check harness (Theorems 2-4): verified MQAR query tokens per second.

For each configuration it measures, on the same machine in one run:
* ``harness``: the whole check, ``check_mqar`` (generate tokens, run the engine's ``hidden_at``, read out at query
  positions, compare argmax with labels) on the ``mamba_ssm`` engine (GPU; tokens drawn on the GPU,
  ``verify.tasks.mqar.generate_torch``) or the reference engine (CPU), in queries per second. On mamba_ssm
  ``hidden_at`` is the query-only form of the block's forward (``verify.engines.query_only``, Mamba, Mamba-2 and
  Mamba-S4D alike: embedding + in_proj folded into a token table; the conv, Mamba's x_proj and dt_proj and the scan,
  without its gate, over every position; the gate (Mamba-2: or gated RMSNorm, gated MLP) and out_proj at the query
  positions only);
* ``harness steady``: the harness's rate once its pipeline is full (``steady_qps``: extra queries per extra second
  from the configuration's batches to 4x as many);
* ``bare kernel``: one ``selective_scan_fn`` call of the same shapes (u, delta: (B, d, L); A: (d, N); B, C: (B, N, L);
  D, z, delta_bias, softplus as mamba_ssm's slow path passes them), in queries per second of the same batch;
* ``bare module``: the block's module forward alone on an already-embedded batch (``mamba_ssm.Mamba``: in_proj,
  conv, x_proj, dt_proj, the same scan, out_proj over every position; ``mamba_ssm.Mamba2``; the Mamba-S4D block);
* ``query-only``: the engine's ``hidden_at`` alone on an already-generated batch (what the harness runs per batch
  before the readout);
and the ratios harness / bare kernel, harness steady / bare kernel and harness / bare module, in float32, tfloat32 (float32 tensors, TF32
tensor-core matmuls; the scan kernel has no matmul, so its bare-kernel row is float32's) and bfloat16. Usage::

    python3 benchmarks/mqar_throughput.py --out results/bench.json [--cpu-only] [--configs default,large]
        [--constructions mqar-mamba,mqar-mamba2,mqar-s4d] [--overwrite] [--quiet]

Without a CUDA GPU (or with ``--cpu-only``) only the reference-engine rows are measured. Exit codes: 0 done, 1 a
harness check missed a query or FAILED (the rates of a failing check are not throughput), 2 bad input, 3 internal
error, 130 interrupted. A check whose verdict is UNPROVEN with every query recalled (in bfloat16 the rounding
allowance can exceed the proven margin: at kappa 64, |V| 8192 it is 132 against 59.3) is measured; each row records
the verdict and its reasons.

The bare kernel is the scan each block's module runs, gate z included: ``selective_scan_fn`` for Mamba
(input-dependent B, C) and Mamba-S4D (input-independent B, C of shape (d_inner, N)), ``mamba_chunk_scan_combined``
(Triton SSD) for Mamba-2. The harness's scan leaves the gate to the query positions (and Mamba-S4D's zero Delta input
is one broadcast row), so its scan reads and writes less than the bare kernel's.
"""
from __future__ import annotations

import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from verify import cli_support as cli  # noqa: E402
from verify.checks import check_mqar, query_positions  # noqa: E402
from verify.engines import make_engine  # noqa: E402
from verify.registry import SPECS  # noqa: E402
from verify.tasks.mqar import MQARConfig, generate  # noqa: E402

CONFIGS = {  # name: (kappa, |V|, variant, T, batch, GPU batches)
    "default": (8, 128, "one-hot", 100, 1024, 32),
    "large": (64, 8192, "jl", 1024, 1024, 16),  # 16 batches (64 for the steady rate)
    # Mamba-S4D's mixer width is kappa * p channels (9344 at the large config): a smaller large config.
    ("mqar-s4d", "large"): (32, 1024, "jl", 512, 128, 4),
}


def _time(fn, repeats=3):
    fn()  # warm-up (kernel autotune, allocator)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def bare_kernel_qps(con, batch, T, kappa, dtype):
    """Queries/s of the block's scan alone on random inputs of the shapes the construction's block uses."""
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    cfg, dev = con.config, "cuda"
    r = lambda *shape, dt=dtype: torch.randn(*shape, device=dev, dtype=dt)  # noqa: E731
    if cfg.kind == "mamba2":
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

        h, p, g, n = cfg.nheads, cfg.head_dim, cfg.ngroups, cfg.d_state
        x, z, dt = r(batch, T, h, p), r(batch, T, h, p), r(batch, T, h)
        B, C, A = r(batch, T, g, n), r(batch, T, g, n), -torch.rand(h, device=dev)
        fn = lambda: mamba_chunk_scan_combined(x, dt, A, B, C, cfg.chunk_size, D=torch.zeros(h, device=dev),  # noqa
                                               z=z, dt_bias=torch.zeros(h, device=dev), dt_softplus=True)
        return batch * kappa / _time(fn)
    d, n = cfg.d_inner, cfg.d_state
    u, delta, z = r(batch, d, T), r(batch, d, T), r(batch, d, T)
    if cfg.kind == "mamba-s4d":
        B, C = r(d, n, dt=torch.float32), r(d, n, dt=torch.float32)
    else:
        B, C = r(batch, n, T), r(batch, n, T)
    A, D, bias = -torch.rand(d, n, device=dev), torch.zeros(d, device=dev), torch.zeros(d, device=dev)
    fn = lambda: selective_scan_fn(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True)  # noqa: E731
    return batch * kappa / _time(fn)


def bare_module_qps(con, engine, batch, T, kappa):
    module, _ = engine.module(con)
    x = torch.randn(batch, T, con.config.d_model, device="cuda", dtype=engine.dtype)

    def fn():
        with torch.no_grad(), engine.precision():
            module(x)
    return batch * kappa / _time(fn)


def query_only_qps(con, engine, task, batch):
    """Queries/s of ``engine.hidden_at`` alone on one generated batch (tokens and query positions on the GPU)."""
    tokens, labels = generate(replace(task, num_examples=batch), 0)
    tokens, pos = (torch.from_numpy(a).cuda() for a in (tokens, query_positions(labels)[0]))
    return pos.numel() / _time(lambda: engine.hidden_at(con, tokens, pos))


def harness_qps(con, engine, task, batch_size):
    box = {}
    fn = lambda: box.update(r=check_mqar(con, task, engine, seed=1, batch_size=batch_size))  # noqa: E731
    seconds = _time(fn)
    r = box["r"]
    if r.correct != r.queries or r.verdict == "FAIL":  # UNPROVEN (rounding allowance >= the bound) is recorded
        raise cli.CheckFailed(f"{r.construction} {r.dtype}: {r.verdict}, recall {r.recall} on {r.queries} queries, "
                              f"min margin {r.min_margin}: {'; '.join(r.reasons)}")
    return r.queries / seconds, r


def steady_qps(con, engine, task, batch_size):
    """The harness's rate once its pipeline is full: the extra queries per extra second from ``task`` to 4x its
    sequences (the first batch's generation and the final sync cancel)."""
    long = replace(task, num_examples=4 * task.num_examples)
    seconds = lambda t: _time(lambda: check_mqar(con, t, engine, seed=1, batch_size=batch_size))  # noqa: E731
    return 3 * task.num_examples * task.kappa / (seconds(long) - seconds(task))


def run(names, constructions, cpu_only, quiet=False):
    rows = []
    with cli.Progress(len(names) * len(constructions), "mqar throughput", quiet) as progress:
        for construction in constructions:
            for name in names:
                progress.update(f"{construction} {name}")
                rows.append(run_one(construction, name, cpu_only))
                progress.advance()
    return rows


def run_one(construction, name, cpu_only):
    kappa, vocab, variant, T, batch, gpu_batches = CONFIGS.get((construction, name), CONFIGS[name])
    spec = SPECS[construction]
    con = spec.build(spec.params(kappa=kappa, vocab=vocab, variant=variant, seq_len=T))
    row = {"construction": construction, "config": name, "kappa": kappa, "vocab": vocab, "variant": variant,
           "T": T, "batch": batch, "d_model": con.config.d_model, "d_state": con.config.d_state}
    cpu_samples = 64 if name == "default" else 4
    cpu_qps, _ = harness_qps(con, make_engine("reference", "float32"),
                             MQARConfig(kappa, vocab, T, num_examples=cpu_samples), cpu_samples)
    row["reference_cpu_float32_qps"] = cpu_qps
    if not cpu_only and torch.cuda.is_available():
        row["gpu"] = torch.cuda.get_device_name()
        task = MQARConfig(kappa, vocab, T, num_examples=batch * gpu_batches)
        row["causal_conv1d_fused_path"] = make_engine("mamba_ssm", "float32").fused
        for dtype in ("float32", "tfloat32", "bfloat16"):
            engine = make_engine("mamba_ssm", dtype)
            qps, r = harness_qps(con, engine, task, batch)
            kernel = bare_kernel_qps(con, batch, T, kappa, engine.dtype)
            module = bare_module_qps(con, engine, batch, T, kappa)
            steady = steady_qps(con, engine, task, batch)
            row[dtype] = {"harness_qps": qps, "harness_steady_qps": steady, "steady_over_kernel": steady / kernel,
                          "bare_kernel_qps": kernel, "bare_module_qps": module,
                          "query_only_qps": query_only_qps(con, engine, task, batch),
                          "harness_over_kernel": qps / kernel, "harness_over_module": qps / module,
                          "min_margin": r.min_margin, "recall": r.recall, "verdict": r.verdict,
                          "reasons": r.reasons}
    print(cli.dumps(row), flush=True)
    return row


MQAR_CHECKS = ("mqar-mamba", "mqar-mamba2", "mqar-s4d")


def parser() -> cli.Parser:
    ap = cli.Parser(prog="python3 benchmarks/mqar_throughput.py", description=__doc__)
    ap.add_argument("--out", default=None, help="result file (JSON; default: rows on stdout only)")
    ap.add_argument("--configs", type=cli.names(["default", "large"]), default=["default", "large"],
                    help="comma-separated configurations (default: default,large)")
    ap.add_argument("--constructions", type=cli.names(MQAR_CHECKS), default=["mqar-mamba"],
                    help=f"comma-separated MQAR constructions from {', '.join(MQAR_CHECKS)} (default: mqar-mamba)")
    ap.add_argument("--cpu-only", action="store_true", help="measure only the reference engine on the CPU")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file (default: refuse)")
    return ap


def main(argv) -> int:
    args = parser().parse_args(argv)
    out = cli.output_file(args.out, "--out", args.overwrite) if args.out else None
    if not args.cpu_only and not torch.cuda.is_available():
        print("no CUDA GPU: measuring the reference-engine rows only", file=sys.stderr, flush=True)
    rows = run(args.configs, args.constructions, args.cpu_only, args.quiet)
    if out:
        cli.write_json(out, {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
                             "command": shlex.join(["python3", "benchmarks/mqar_throughput.py", *argv]),
                             "rows": rows}, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
