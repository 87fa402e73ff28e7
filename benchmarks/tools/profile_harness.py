import torch, sys
sys.path.insert(0, '.')
from constructions import mqar_mamba
from verify.checks import check_mqar
from verify.engines import make_engine
from verify.tasks.mqar import MQARConfig
con = mqar_mamba.build(64, 8192, "jl", seq_len=1024)
eng = make_engine("mamba_ssm", "float32")
task = MQARConfig(64, 8192, 1024, num_examples=2048)
check_mqar(con, task, eng, batch_size=1024)
from torch.profiler import profile, ProfilerActivity
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
    check_mqar(con, task, eng, batch_size=1024); torch.cuda.synchronize()
print(p.key_averages().table(sort_by="cuda_time_total", row_limit=25))
