"""Block kind ``transformer`` (verify.blocks.transformer): the one-layer Transformer baseline of Huang et al.'s KEEP
n-TH tables.

* its packed forward equals, per model, the same layer built from torch.nn modules (nn.MultiheadAttention,
  nn.LayerNorm, nn.Linear) with the state dict loaded (outputs and gradients, float64);
* its trained-parameter count beside the paper's (Tables A.1/A.2's Transformer rows, Table 1);
* it trains in the same loop: a tiny KEEP n-TH is solved on the CPU, a pack trains each model as if alone, and runs
  that name parts it does not have are refused.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.errors import RequirementError
from paper_figures.params import trained_params
from verify.train import registry
from verify.train.loop import initial_state, train_pack
from verify.train.spec import RunSpec, protocol

pytestmark = pytest.mark.usefixtures("one_thread")

KEEP = dict(task="keep-nth", vocab=8, seq_len=10, task_args=(("n", 3), ("pe", False)))


class Oracle(nn.Module):
    """The pre-norm layer of verify.blocks.transformer from torch.nn modules."""

    def __init__(self, d, heads, max_len, d_mlp):
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(max_len, d))
        self.norm1, self.norm2, self.norm_f = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.fc1, self.fc2 = nn.Linear(d, d_mlp), nn.Linear(d_mlp, d)

    def load(self, sd: dict):
        names = {"pos_embedding": "pos", "attn.in_proj.weight": "attn.in_proj_weight",
                 "attn.in_proj.bias": "attn.in_proj_bias", "mlp.fc1.weight": "fc1.weight", "mlp.fc1.bias": "fc1.bias",
                 "mlp.fc2.weight": "fc2.weight", "mlp.fc2.bias": "fc2.bias"}
        self.load_state_dict({names.get(k, k): v for k, v in sd.items()}, strict=True)
        return self

    def forward(self, u):
        L = u.shape[1]
        h = u + self.pos[:L]
        a = self.norm1(h)
        mask = torch.ones(L, L, dtype=torch.bool).triu(1)
        h = h + self.attn(a, a, a, attn_mask=mask, need_weights=False)[0]
        h = h + self.fc2(F.gelu(self.fc1(self.norm2(h))))
        return self.norm_f(h)


@pytest.mark.parametrize("heads", [1, 2])
def test_packed_forward_and_gradients_are_torch_nn_per_model(heads):
    K, d = 3, 8
    specs = [RunSpec(mixer="transformer", d_model=d, d_state=heads, seed=s, lr=0.01, **KEEP) for s in range(K)]
    m = registry.mixer("transformer")
    cfg = m.block_config(specs[0])
    gen = torch.Generator().manual_seed(heads)
    sds = [{k[len("mixer."):]: v for k, v in initial_state(s)[0].items() if k.startswith("mixer.")} for s in specs]
    p = {k: (torch.stack([sd[k] for sd in sds]) + 0.1 * torch.randn(K, *sds[0][k].shape, generator=gen,
                                                                     dtype=torch.float64)).requires_grad_(True)
         for k in sds[0]}
    h = torch.randn(K, 2, 7, d, generator=gen, dtype=torch.float64, requires_grad=True)
    out = m.packed_forward(p, h, cfg)
    oracles = [Oracle(d, heads, cfg.max_len, cfg.width).double().load({k: v[i] for k, v in p.items()})
               for i in range(K)]
    want = torch.stack([o(h[i]) for i, o in enumerate(oracles)])
    torch.testing.assert_close(out, want, rtol=0, atol=1e-10)
    w = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    g_out = torch.autograd.grad((out * w).sum(), h)[0]
    g_want = torch.autograd.grad((want * w).sum(), h)[0]
    torch.testing.assert_close(g_out, g_want, rtol=0, atol=1e-10)
    # the attention is causal: a later token does not move an earlier output
    h2 = h.detach().clone()
    h2[:, :, -1] += torch.randn(d, generator=gen, dtype=torch.float64)  # (a constant shift is what LayerNorm removes)
    assert torch.equal(m.packed_forward(p, h2, cfg)[:, :, :-1], out[:, :, :-1])
    assert not torch.allclose(oracles[0](h2[0])[:, -1], want[0, :, -1])


# Huang et al., the Transformer rows of Tables A.1/A.2 (thousands), d = 16, 32, 64 at T = 10, 20, 30, 40, 50; the T = 30
# column repeats T = 10 for every d and is smaller than T = 20 (a copy error in the paper: not compared).
PAPER = {16: (5.8, 6.0, 5.8, 6.3, 6.4), 32: (15.1, 15.4, 15.1, 16.0, 16.4), 64: (42.3, 42.9, 42.3, 44.2, 44.9)}


@pytest.mark.parametrize("d", list(PAPER))
def test_trained_count_beside_the_papers(d):
    """Ours: embedding and readout 2 |V| d, position embedding T d, attention 4 d^2 + 4 d, MLP of width d 2 d^2 + 2 d,
    three LayerNorms 6 d; within 4% of the paper's count at every T it prints reliably (Table 1: 6.4k at d = 16,
    T = 50)."""
    for T, paper in zip((10, 20, 30, 40, 50), PAPER[d]):
        spec = RunSpec(mixer="transformer", d_model=d, d_state=1, seed=0, lr=0.01,
                       **{**KEEP, "vocab": 128, "seq_len": T})
        ours = trained_params(spec)
        assert ours == 2 * 128 * d + T * d + 6 * d * d + 12 * d
        if T != 30:
            assert abs(ours / (1000 * paper) - 1) < 0.04, (d, T, ours, paper)


def test_a_tiny_keep_nth_is_solved_and_packing_trains_as_alone():
    proto = protocol("smoke", max_steps=150, eval_every=25, train_samples=1024, val_samples=64, test_samples=256)
    specs = [RunSpec(mixer="transformer", d_model=16, d_state=1, seed=s, lr=lr, protocol=proto, **KEEP)
             for s, lr in ((0, 0.01), (1, 0.003))]
    packed = train_pack(specs)
    assert packed[0]["result"]["solved"], packed[0]["result"]["history"]
    for spec, rec in zip(specs, packed):
        (alone,) = train_pack([spec])
        torch.testing.assert_close(torch.tensor(rec["result"]["history"]), torch.tensor(alone["result"]["history"]),
                                   rtol=1e-4, atol=1e-5)
        assert rec["result"]["steps"] == alone["result"]["steps"]


@pytest.mark.parametrize("bad,match", [({"gate": True}, "no gate"), ({"conv": False}, "no gate, conv"),
                                       ({"proj": False}, "in/out projections"), ({"d_state": 3}, "must divide")])
def test_runs_naming_parts_it_lacks_are_refused(bad, match):
    spec = RunSpec(mixer="transformer", **{"d_model": 8, "d_state": 1, "seed": 0, "lr": 0.01, **KEEP, **bad})
    with pytest.raises(RequirementError, match=match):
        initial_state(spec)


def test_scores_are_scaled_by_the_head_width():
    """A wrong scale (1/d instead of 1/sqrt(d_head)) would change the output: the oracle's scaled dot product."""
    from verify.blocks.transformer import causal_attention

    q, k, v = (torch.randn(1, 2, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(i))
               for i in range(3))
    want = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(causal_attention(q, k, v), want, rtol=0, atol=1e-12)
    assert not torch.allclose(causal_attention(q / math.sqrt(4), k, v), want)
