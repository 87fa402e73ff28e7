"""The query-only forms of the Mamba-2 and Mamba-S4D blocks (verify.engines.query_only) equal the full forward
gathered at the query positions: exact in real arithmetic, so in float64 they agree to rounding of the folded in_proj
and out_proj, for the constructions and for random weights with every optional part of the block switched on."""
from dataclasses import replace

import pytest
import torch

from constructions import mqar_mamba2, mqar_s4d
from constructions.layout import Construction, Mamba2Config, MQARTokens
from verify.checks import query_positions
from verify.engines import make_engine
from verify.engines.query_only import at_positions, in_proj_table, mamba2_forward_at, mamba_s4d_forward_at
from verify.engines.scan import selective_scan_ref
from verify.tasks.mqar import MQARConfig, generate
from verify.train.models import ssd_chunk_scan_ref

REF = make_engine("reference", "float64")


def _both(con, tokens, pos):
    want = at_positions(REF.hidden(con, tokens), pos)
    table = in_proj_table(con, con.embedding, con.mixer["in_proj.weight"], con.mixer.get("in_proj.bias"))
    if con.config.kind == "mamba2":
        got = mamba2_forward_at(con.mixer, table, con, tokens, pos, ssd_chunk_scan_ref)
    else:
        got = mamba_s4d_forward_at(con.mixer, table, con, tokens, pos, selective_scan_ref)
    return got, want


def _task(con, T, n=8, seed=0):
    tokens, labels = generate(MQARConfig(con.tokens.kappa, con.tokens.vocab_size, T, num_examples=n), seed)
    return torch.from_numpy(tokens), torch.from_numpy(query_positions(labels)[0])


@pytest.mark.parametrize("module, variant", [(mqar_mamba2, "one-hot"), (mqar_mamba2, "jl"), (mqar_s4d, "one-hot"),
                                             (mqar_s4d, "jl")])
def test_constructions(module, variant):
    con = module.build(4, 16, variant, seq_len=40)
    got, want = _both(con, *_task(con, 40))
    assert got.shape == want.shape
    assert (got - want).abs().max() <= 1e-12 * want.abs().max()


@pytest.mark.parametrize("rmsnorm, d_ssm, ngroups", [(False, None, 1), (True, None, 2), (True, 8, 1), (False, 8, 2)])
def test_mamba2_random_weights(rmsnorm, d_ssm, ngroups):
    """Every optional part of Mamba2.forward after the scan (gated norm, gated MLP, biases) acts per position."""
    cfg = Mamba2Config(d_model=8, d_state=4, d_conv=4, expand=2, headdim=4, d_ssm=d_ssm, ngroups=ngroups,
                       rmsnorm=rmsnorm, chunk_size=8)
    g = torch.Generator().manual_seed(0)
    mixer = {k: 0.5 * torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in cfg.zeros().items()}
    tokens = MQARTokens(3, 6)
    con = Construction("random", "-", cfg, torch.randn(tokens.n_tokens, 8, generator=g, dtype=torch.float64), mixer,
                       torch.eye(8, dtype=torch.float64), [], tokens)
    ids = torch.randint(0, tokens.n_tokens, (3, 20), generator=g)
    pos = torch.tensor([[2, 7, 19], [0, 5, 11], [1, 18, 19]])
    got, want = _both(con, ids, pos)
    assert (got - want).abs().max() <= 1e-12 * want.abs().max()
    broken = replace(con, mixer={**mixer, "out_proj.weight": mixer["out_proj.weight"] * 1.001})  # must show
    assert (_both(broken, ids, pos)[0] - want).abs().max() > 1e-6 * want.abs().max()
