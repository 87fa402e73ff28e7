"""Where the MQAR harness spends GPU time (Theorem 2, large config): torch profiler tables of the whole check, of
``mamba_ssm.Mamba.forward`` alone and of the engine's query-only ``hidden_at`` alone (what the check runs before its
readout). Usage::

    python3 benchmarks/tools/profile_harness.py [--dtype D] [--tf32] [--rows R]

Needs a CUDA GPU and mamba_ssm. Exit codes: 0 done, 2 bad input (no GPU included), 3 internal error, 130 interrupted.
"""
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from constructions import mqar_mamba  # noqa: E402
from common.errors import RequirementError  # noqa: E402
from constructions.layout import embed  # noqa: E402
from verify import cli_support as cli  # noqa: E402
from verify.checks import check_mqar, query_positions  # noqa: E402
from verify.engines import make_engine  # noqa: E402
from verify.tasks.mqar import MQARConfig, generate  # noqa: E402


def parser() -> cli.Parser:
    ap = cli.Parser(prog="python3 benchmarks/tools/profile_harness.py", description=__doc__, progress=False)
    ap.add_argument("--dtype", default="float32", choices=["float32", "tfloat32", "bfloat16", "float16"],
                    help="engine dtype")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls and convolutions")
    ap.add_argument("--rows", type=cli.integer(1, 10**4), default=18, help="rows of each profiler table")
    return ap


def main(argv) -> int:
    a = parser().parse_args(argv)
    if not torch.cuda.is_available():
        raise RequirementError("this benchmark needs a CUDA GPU and mamba_ssm; torch sees no GPU")
    from torch.profiler import ProfilerActivity, profile

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = a.tf32
    con = mqar_mamba.build(64, 8192, "jl", seq_len=1024)
    eng = make_engine("mamba_ssm", a.dtype)
    task = MQARConfig(64, 8192, 1024, num_examples=2048)
    check_mqar(con, task, eng, batch_size=1024)
    torch.cuda.synchronize()
    t = time.perf_counter()
    r = check_mqar(con, task, eng, batch_size=1024)
    torch.cuda.synchronize()
    print(f"dtype {a.dtype} tf32 {a.tf32} fused {eng.fused}: harness {r.queries / (time.perf_counter() - t) / 1e6:.3f} "
          f"M q/s, recall {r.recall}, min margin {r.min_margin:.1f}")
    with profile(activities=[ProfilerActivity.CUDA]) as p:
        check_mqar(con, task, eng, batch_size=1024)
        torch.cuda.synchronize()
    print(p.key_averages().table(sort_by="cuda_time_total", row_limit=a.rows))
    m, emb = eng.module(con)
    tokens, labels = generate(MQARConfig(64, 8192, 1024, num_examples=1024), 0)
    tokens, pos = (torch.from_numpy(v).cuda() for v in (tokens, query_positions(labels)[0]))
    x = embed(con, emb, tokens)
    for title, fn in (("module alone", lambda: m(x)),
                      ("query-only hidden_at alone", lambda: eng.hidden_at(con, tokens, pos))):
        with torch.no_grad(), profile(activities=[ProfilerActivity.CUDA]) as p:
            for _ in range(2):
                fn()
            torch.cuda.synchronize()
        print(f"{title} (2 calls):")
        print(p.key_averages().table(sort_by="cuda_time_total", row_limit=a.rows))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
