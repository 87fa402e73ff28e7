"""Weights as named blocks (constructions.weights): the names address mamba_ssm's layouts, mean what they say in
the real forward, and every construction written with them is bitwise its pinned weights (sha256 per case)."""
import hashlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from constructions import haar, hash_recall, induction_heads, keep_nth, mqar_mamba, mqar_mamba2, mqar_s4d
from constructions.layout import Mamba2Config, MambaConfig, MambaS4DConfig
from constructions.weights import Basis, Mamba2Weights, MambaS4DWeights, MambaWeights
from verify.engines.query_only import silu_conv

# sha256 of each case's state dict, pinned: a change of layout or constants that moves any weight fails
STORED = json.loads((Path(__file__).parent / "data" / "construction_weights.sha256.json").read_text())

CASES = {
  "mqar-mamba one-hot 8/128": lambda: mqar_mamba.build(8, 128, "one-hot", seq_len=100),
  "mqar-mamba jl 8/128": lambda: mqar_mamba.build(8, 128, "jl", seq_len=100),
  "mqar-mamba jl 5/30 d_conv 2": lambda: mqar_mamba.build(5, 30, "jl", seq_len=64, d_conv=2, seed=3),
  "mqar-mamba2 one-hot 8/128": lambda: mqar_mamba2.build(8, 128, "one-hot", seq_len=100),
  "mqar-mamba2 jl 8/128": lambda: mqar_mamba2.build(8, 128, "jl", seq_len=100),
  "mqar-mamba2 jl 16/16 key_dim 12": lambda: mqar_mamba2.build(16, 16, "jl", seq_len=64, key_dim=12),
  "mqar-s4d one-hot 4/16": lambda: mqar_s4d.build(4, 16, "one-hot", seq_len=100),
  "mqar-s4d jl 4/64": lambda: mqar_s4d.build(4, 64, "jl", seq_len=100),
  "keep-nth 16 n=5": lambda: keep_nth.build(16, 5),
  "keep-nth 128 n=3 d_conv 1": lambda: keep_nth.build(128, 3, d_conv=1),
  "induction-heads 10 ours": lambda: induction_heads.build(10, 100, "ours"),
  "induction-heads 5 paper": lambda: induction_heads.build(5, 40, "paper"),
  "haar J=3 T=128": lambda: haar.build(3, 128),
  "haar J=1 T=16": lambda: haar.build(1, 16),
  "haar time layer": lambda: haar.build_time_layer(),
  "hash-recall analysis 64/32": lambda: hash_recall.build_analysis(512, 64, 32, 0),
  "hash-recall analysis 2 layers": lambda: hash_recall.build_analysis(256, 32, 8, 1, n_layers=2),
  "hash-recall parallel": lambda: hash_recall.build_parallel(256, 64, 16, 2, 0),
  "hash-recall multihead MQA": lambda: hash_recall.build_multihead(256, 64, 16, 4, "MQA", 0),
  "hash-recall multihead MHA": lambda: hash_recall.build_multihead(256, 64, 16, 4, "MHA", 0),
  "hash-recall mamba block": lambda: hash_recall.build_mamba_block(512, 64, 32, 0),
}


def digest(con):
    h = hashlib.sha256()
    for k, v in sorted(con.state_dict().items()):
        h.update(k.encode()); h.update(str(tuple(v.shape)).encode()); h.update(str(v.dtype).encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("case", sorted(CASES))
def test_constructions_are_bitwise_the_weights_they_were(case):
    assert digest(CASES[case]()) == STORED[case]


def test_mamba_names_address_mamba_ssm_rows():
    cfg = MambaConfig(d_model=6, d_state=3, d_conv=4, expand=2, dt_rank=2)
    W = MambaWeights(cfg)
    W.in_proj.z.bias[1] = 7.0
    W.x_proj.B.weight[2, 5] = 3.0
    W.x_proj.C.weight[0, 1] = 4.0
    W.x_proj.dt.weight[1, 0] = 5.0
    sd = W.state_dict()
    assert sd["in_proj.bias"][cfg.d_inner + 1] == 7.0 and sd["in_proj.bias"].count_nonzero() == 1
    assert sd["x_proj.weight"][2 + 2, 5] == 3.0 and sd["x_proj.weight"][2 + 3 + 0, 1] == 4.0
    assert sd["x_proj.weight"][1, 0] == 5.0 and sd["x_proj.weight"].count_nonzero() == 3
    with pytest.raises(AttributeError, match="blocks: x, z"):
        W.in_proj.y
    with pytest.raises(ValueError, match="lags 0..3"):
        W.conv.tap(4)


def test_conv_tap_lag_means_that_many_tokens_back():
    """Through the real forward's conv (mamba_ssm's torch branch): tap(lag) reads token t - lag."""
    cfg = MambaConfig(d_model=3, d_state=1, d_conv=4)
    x = torch.randn(1, cfg.d_inner, 9, dtype=torch.float64)
    for lag in range(cfg.d_conv):
        W = MambaWeights(cfg)
        W.conv.tap(lag)[:] = 1.0
        out = silu_conv(x, W.state_dict()["conv1d.weight"], W.conv.bias)
        want = F.silu(torch.cat([torch.zeros(1, 3, lag, dtype=torch.float64), x[..., :9 - lag]], dim=-1))
        # (the conv's algorithm may round; reading any other token would be off by O(1))
        assert torch.allclose(out, want, rtol=1e-12, atol=1e-12), lag


def test_mamba2_names_address_its_rows_groups_and_conv_streams():
    cfg = Mamba2Config(d_model=8, d_state=2, d_conv=4, expand=2, headdim=4, d_ssm=8, ngroups=2)
    W = Mamba2Weights(cfg)
    rows = cfg.in_proj_rows()
    W.group("C", 1).weight[0, 3] = 1.0
    W.in_proj.dt.bias[:] = 2.0
    W.conv.tap(1, "B")[:] = 5.0
    sd = W.state_dict()
    assert sd["in_proj.weight"][rows["C"].start + 2, 3] == 1.0
    assert torch.equal(sd["in_proj.bias"][rows["dt"]], torch.full((cfg.nheads,), 2.0, dtype=torch.float64))
    ch = cfg.conv_channels()["B"]
    assert (sd["conv1d.weight"][ch, 0, -2] == 5.0).all() and sd["conv1d.weight"].count_nonzero() == ch.stop - ch.start


def test_s4d_names():
    W = MambaS4DWeights(MambaS4DConfig(d_model=4, d_state=2, d_inner=6))
    W.in_proj.z.weight[5, 3] = 1.0
    W.B[2, 1] = 3.0
    sd = W.state_dict()
    assert sd["in_proj.weight"][6 + 5, 3] == 1.0 and sd["B"][2, 1] == 3.0


def test_basis_names_groups():
    b = Basis(["key[0]", "key[1]", "value[0]", "value[1]", "value[2]", "pos"])
    assert b["key"] == slice(0, 2) and b["value"] == slice(2, 5) and b["pos"] == slice(5, 6)
    assert b.index("value[1]") == 3 and len(b) == 6
    with pytest.raises(ValueError, match="not contiguous"):
        Basis(["key[0]", "value[0]", "key[1]"])
    with pytest.raises(KeyError, match="groups: key"):
        Basis(["key[0]"])["value"]
