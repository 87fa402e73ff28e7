"""Throughput of the selectivity checks (``keep-nth``, ``induction-heads``, ``haar``): scored positions per second.

For each check and configuration it measures, on the same machine in one run:
* ``harness``: the whole check through ``verify.registry.SPECS[name].check`` (generate the task, embed, run the engine,
  score: exact argmax at every labelled position for KEEP n-TH and induction heads; for Haar every projection output
  compared with the exact projection within the derived bound) on the reference engine (CPU, float32) and on the
  ``mamba_ssm`` engine (GPU, float32 and bfloat16), in scored positions per second;
* ``bare kernel``: one ``selective_scan_fn`` call of the shapes the harness's module runs, per batch of sequences the
  harness pushes through the layer. S6 (keep-nth, haar): u, delta, z (B, d_inner, L); A (d_inner, N); B, C (B, N, L);
  D, delta_bias, softplus as mamba_ssm's slow path passes them. Mamba-Delta-transpose (induction-heads): the flattened
  call ``verify.blocks.mamba_delta_t.selective_scan_delta_t_via_s6`` makes: u, delta (B, N * d_inner, L); A (N * d_inner, 1);
  B, C (B, N, 1, L) (N groups of state size 1); no D, z, bias or softplus;
* ``bare module``: the engine's module forward alone (``mamba_ssm.Mamba``, or ``MambaDeltaT`` on ``selective_scan_fn``)
  on an already-embedded batch of the same shape;
converted to scored positions per second (positions scored per sequence pushed through the layer, times sequences per
second), and the ratios harness / bare kernel and harness / bare module. Usage::

    python3 benchmarks/selectivity_throughput.py --out results/bench.json [--cpu-only] [--configs default,large]
        [--checks keep-nth,induction-heads,haar] [--overwrite] [--quiet]

Haar pushes T unit impulses (the layer's kernel) plus the random signals through the layer and scores one output per
wavelet for each impulse-matrix column set and each signal; its positions are those outputs.

A check that fails (e.g. Haar's bound in bfloat16) is measured and reported (its row says ``"passed": false`` and a
line on stderr says so), not an exit code: exit codes are 0 done, 2 bad input, 3 internal error, 130 interrupted.
"""
from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mqar_throughput import _time  # noqa: E402
from verify import cli_support as cli  # noqa: E402
from verify.engines import make_engine  # noqa: E402
from verify.registry import SPECS  # noqa: E402
from verify.specs import batch_for  # noqa: E402

# check -> config -> (params on the CPU reference engine, params on the GPU). The defaults are the checks' own
# defaults (the paper's task sizes); "large" is the longest / widest the CLI's default suite runs.
CONFIGS = {
    "keep-nth": {
        "default": (dict(vocab=128, n=5, seq_len=50, samples=256), dict(vocab=128, n=5, seq_len=50, samples=8192)),
        "large": (dict(vocab=128, n=5, seq_len=10_000, samples=4), dict(vocab=128, n=5, seq_len=10_000, samples=256)),
    },
    "induction-heads": {
        "default": (dict(vocab=10, seq_len=100, samples=256), dict(vocab=10, seq_len=100, samples=8192)),
        "large": (dict(vocab=40, seq_len=2000, samples=4), dict(vocab=40, seq_len=5000, samples=64)),
    },
    "haar": {
        "default": (dict(levels=3, seq_len=128, jumps=4, samples=64), dict(levels=3, seq_len=128, jumps=4,
                                                                             samples=8192)),
        "large": (dict(levels=5, seq_len=256, jumps=8, samples=64), dict(levels=7, seq_len=1024, jumps=16,
                                                                         samples=4096)),
    },
}


def layer_batches(name, con, p):
    """(sequences pushed through the layer per check, sequences per batch) as the check runs them."""
    T = p.seq_len
    if name == "haar":
        return T + p.samples, batch_for(T, con.config.d_inner)
    width = con.config.d_model * (con.config.d_state if name == "induction-heads" else 1)
    return p.num_examples, batch_for(T, width)


def bare_kernel_seconds(con, batch, T, dtype):
    """Seconds of one scan call of the shapes the engine's module runs on ``batch`` sequences of length T."""
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    cfg, dev = con.config, "cuda"
    r = lambda *shape, dt=dtype: torch.randn(*shape, device=dev, dtype=dt)  # noqa: E731
    d, n = cfg.d_inner, cfg.d_state
    if cfg.kind == "mamba-delta-t":  # the flattened S6 call of verify.blocks.mamba_delta_t
        u, delta = r(batch, n * d, T), torch.rand(batch, n * d, T, device=dev, dtype=dtype) + 0.1
        A = -torch.rand(n * d, 1, device=dev)
        B, C = r(batch, n, 1, T), r(batch, n, 1, T)
        fn = lambda: selective_scan_fn(u, delta, A, B, C, None, None, None, False)  # noqa: E731
        return _time(fn)
    u, delta, z = r(batch, d, T), r(batch, d, T), r(batch, d, T)
    B, C = r(batch, n, T), r(batch, n, T)
    A, D, bias = -torch.rand(d, n, device=dev), torch.zeros(d, device=dev), torch.zeros(d, device=dev)
    fn = lambda: selective_scan_fn(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True)  # noqa: E731
    return _time(fn)


def bare_module_seconds(con, engine, batch, T):
    module, _ = engine.module(con)
    x = torch.randn(batch, T, con.config.d_model, device="cuda", dtype=engine.dtype)

    def fn():
        with torch.no_grad():
            module(x)
    return _time(fn)


def harness(spec, con, p, engine):
    box = {}
    seconds = _time(lambda: box.update(r=spec.check(con, p, engine)))
    r = box["r"]
    if not r.passed:  # measured and reported (row "passed": false), not hidden: e.g. Haar's bound in bfloat16
        print(f"CHECK FAILED: {r.construction} {r.dtype} {r.summary}: {r.correct}/{r.queries} positions, "
              f"max error {r.max_error} vs bound {r.error_bound}", file=sys.stderr, flush=True)
    return r.queries / seconds, r


def run(checks, names, cpu_only, quiet=False):
    rows = []
    with cli.Progress(len(checks) * len(names), "selectivity throughput", quiet) as progress:
        for check in checks:
            for name in names:
                progress.update(f"{check} {name}")
                rows.append(run_one(check, name, cpu_only))
                progress.advance()
    return rows


def run_one(check, name, cpu_only):
    spec = SPECS[check]
    cpu_kw, gpu_kw = CONFIGS[check][name]
    p = spec.params(**cpu_kw)
    con = spec.build(p)
    row = {"check": check, "config": name, "cpu_params": cpu_kw, "d_model": con.config.d_model,
           "d_inner": con.config.d_inner, "d_state": con.config.d_state, "block": con.config.kind}
    cpu_pps, r = harness(spec, con, p, make_engine("reference", "float32"))
    row["reference_cpu_float32"] = {"positions_per_s": cpu_pps, "positions": r.queries, "sequences": r.sequences,
                                    "min_margin": r.min_margin, "max_error": r.max_error,
                                    "error_bound": r.error_bound}
    if not cpu_only and torch.cuda.is_available():
        row["gpu"] = torch.cuda.get_device_name()
        row["gpu_params"] = gpu_kw
        p = spec.params(**gpu_kw)
        con = spec.build(p)
        row.update(d_model=con.config.d_model, d_inner=con.config.d_inner, d_state=con.config.d_state)
        seqs, batch = layer_batches(check, con, p)
        for dtype in ("float32", "bfloat16"):
            engine = make_engine("mamba_ssm", dtype)
            pps, r = harness(spec, con, p, engine)
            per_seq = r.queries / seqs  # scored positions per sequence pushed through the layer
            kernel = per_seq * batch / bare_kernel_seconds(con, batch, p.seq_len, engine.dtype)
            module = per_seq * batch / bare_module_seconds(con, engine, batch, p.seq_len)
            row[dtype] = {"harness_positions_per_s": pps, "bare_kernel_positions_per_s": kernel,
                          "bare_module_positions_per_s": module, "harness_over_kernel": pps / kernel,
                          "harness_over_module": pps / module, "batch": batch, "positions": r.queries,
                          "min_margin": r.min_margin, "max_error": r.max_error, "error_bound": r.error_bound,
                          "passed": r.passed, "correct": r.correct}
    print(cli.dumps(row), flush=True)
    return row


def parser() -> cli.Parser:
    ap = cli.Parser(prog="python3 benchmarks/selectivity_throughput.py", description=__doc__)
    ap.add_argument("--out", default=None, help="result file (JSON; default: rows on stdout only)")
    ap.add_argument("--configs", type=cli.names(["default", "large"]), default=["default", "large"],
                    help="comma-separated configurations (default: default,large)")
    ap.add_argument("--checks", type=cli.names(CONFIGS), default=list(CONFIGS),
                    help=f"comma-separated checks (default: {','.join(CONFIGS)})")
    ap.add_argument("--cpu-only", action="store_true", help="measure only the reference engine on the CPU")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file (default: refuse)")
    return ap


def main(argv) -> int:
    args = parser().parse_args(argv)
    out = cli.output_file(args.out, "--out", args.overwrite) if args.out else None
    if not args.cpu_only and not torch.cuda.is_available():
        print("no CUDA GPU: measuring the reference-engine rows only", file=sys.stderr, flush=True)
    torch.manual_seed(0)
    rows = run(args.checks, args.configs, args.cpu_only, args.quiet)
    if out:
        cli.write_json(out, {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
                             "command": shlex.join(["python3", "benchmarks/selectivity_throughput.py", *argv]),
                             "cpu_threads": torch.get_num_threads(), "rows": rows}, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
