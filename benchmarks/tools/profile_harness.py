"""Where the MQAR harness spends GPU time (Theorem 2, large config): torch profiler tables of the whole check, of
``mamba_ssm.Mamba.forward`` alone and of the engine's query-only ``hidden_at`` alone (what the check runs before its
readout). Usage: python3 benchmarks/tools/profile_harness.py [--dtype D] [--tf32] [--rows R]"""
import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from constructions import mqar_mamba  # noqa: E402
from constructions.layout import embed  # noqa: E402
from verify.checks import check_mqar, query_positions  # noqa: E402
from verify.engines import make_engine  # noqa: E402
from verify.tasks.mqar import MQARConfig, generate  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--dtype", default="float32")
ap.add_argument("--tf32", action="store_true")
ap.add_argument("--rows", type=int, default=18)
a = ap.parse_args()
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = a.tf32
con = mqar_mamba.build(64, 8192, "jl", seq_len=1024)
eng = make_engine("mamba_ssm", a.dtype)
task = MQARConfig(64, 8192, 1024, num_examples=2048)
check_mqar(con, task, eng, batch_size=1024)
torch.cuda.synchronize()
t = time.perf_counter()
r = check_mqar(con, task, eng, batch_size=1024)
torch.cuda.synchronize()
print(f"dtype {a.dtype} tf32 {a.tf32} fused {eng.fused}: harness {r.queries / (time.perf_counter() - t) / 1e6:.3f} M q/s,"
      f" recall {r.recall}, min margin {r.min_margin:.1f}")
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
