"""Where an MQAR check spends GPU time (Theorems 2-4, the benchmark's large configurations): the harness's rate,
the fraction of its wall time the GPU is busy, and torch profiler tables of the whole check, of the block's module
forward alone and of the engine's query-only ``hidden_at`` alone (what the check runs before its readout). Usage::

    python3 benchmarks/tools/profile_harness.py [--construction C] [--dtype D] [--rows R] [--batches K]

``--dtype tfloat32`` is float32 with TF32 matmuls (the engine's precision context). Needs a CUDA GPU and mamba_ssm.
Exit codes: 0 done, 2 bad input (no GPU included), 3 internal error, 130 interrupted.
"""
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.mqar_throughput import CONFIGS, MQAR_CHECKS  # noqa: E402
from common.errors import RequirementError  # noqa: E402
from constructions.layout import embed  # noqa: E402
from verify import cli_support as cli  # noqa: E402
from verify.checks import check_mqar  # noqa: E402
from verify.engines import make_engine  # noqa: E402
from verify.registry import SPECS  # noqa: E402
from verify.tasks.mqar import MQARConfig, generate_torch  # noqa: E402


def parser() -> cli.Parser:
    ap = cli.Parser(prog="python3 benchmarks/tools/profile_harness.py", description=__doc__, progress=False)
    ap.add_argument("--construction", default="mqar-mamba", choices=list(MQAR_CHECKS), help="MQAR construction")
    ap.add_argument("--dtype", default="float32", choices=["float32", "tfloat32", "bfloat16"], help="engine dtype")
    ap.add_argument("--rows", type=cli.integer(1, 10**4), default=14, help="rows of each profiler table")
    ap.add_argument("--batches", type=cli.integer(1, 10**4), default=None,
                    help="batches per check (default: the benchmark's)")
    return ap


def busy_seconds(prof) -> float:
    """GPU time of the profiled kernels (their self CUDA time, summed), seconds."""
    return sum(e.self_device_time_total for e in prof.key_averages()) / 1e6


def main(argv) -> int:
    a = parser().parse_args(argv)
    if not torch.cuda.is_available():
        raise RequirementError("this benchmark needs a CUDA GPU and mamba_ssm; torch sees no GPU")
    from torch.profiler import ProfilerActivity, profile

    kappa, vocab, variant, T, batch, batches = CONFIGS.get((a.construction, "large"), CONFIGS["large"])
    batches = a.batches or batches
    spec = SPECS[a.construction]
    con = spec.build(spec.params(kappa=kappa, vocab=vocab, variant=variant, seq_len=T))
    eng = make_engine("mamba_ssm", a.dtype)
    task = MQARConfig(kappa, vocab, T, num_examples=batch * batches)
    check_mqar(con, task, eng, batch_size=batch)
    torch.cuda.synchronize()
    t = time.perf_counter()
    r = check_mqar(con, task, eng, batch_size=batch)
    torch.cuda.synchronize()
    wall = time.perf_counter() - t
    print(f"{a.construction} dtype {a.dtype}: harness {r.queries / wall / 1e6:.3f} M q/s ({wall * 1e3:.1f} ms, "
          f"{batches} batches of {batch}), recall {r.recall}, min margin {r.min_margin:.1f}, verdict {r.verdict}")
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
        t = time.perf_counter()
        check_mqar(con, task, eng, batch_size=batch)
        torch.cuda.synchronize()
        wall = time.perf_counter() - t
    print(f"whole check, profiled: wall {wall * 1e3:.1f} ms, GPU busy {busy_seconds(p) * 1e3:.1f} ms")
    print(p.key_averages().table(sort_by="self_cuda_time_total", row_limit=a.rows))
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows))
    m, emb = eng.module(con)
    tokens, pos, _ = generate_torch(replace(task, num_examples=batch), 0, "cuda")
    x = embed(con, emb, tokens).to(eng.dtype)
    for title, fn in (("module alone", lambda: m(x)),
                      ("query-only hidden_at alone", lambda: eng.hidden_at(con, tokens, pos))):
        with torch.no_grad(), eng.precision():
            fn()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as p:
                t = time.perf_counter()
                for _ in range(2):
                    fn()
                torch.cuda.synchronize()
                wall = time.perf_counter() - t
        print(f"{title} (2 calls): wall {wall * 1e3:.1f} ms, GPU busy {busy_seconds(p) * 1e3:.1f} ms")
        print(p.key_averages().table(sort_by="self_cuda_time_total", row_limit=a.rows))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
