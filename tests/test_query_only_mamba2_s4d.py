"""The query-only forms of the Mamba-2 and Mamba-S4D blocks (verify.engines.query_only) equal the full forward
gathered at the query positions: exact in real arithmetic, so in float64 they agree to rounding of the folded in_proj
and out_proj, for the constructions and for random weights with every optional part of the block switched on."""
from dataclasses import replace

import pytest
import torch

from constructions import mqar_mamba2, mqar_s4d
from constructions.layout import Construction, Mamba2Config, MambaS4DConfig, MQARTokens
from verify.checks import query_positions
from verify.engines import make_engine
from verify.engines.query_only import at_positions, in_proj_table, mamba2_forward_at, mamba_s4d_forward_at
from verify.engines.scan import selective_scan_ref
from verify.tasks.mqar import MQARConfig, generate
from verify.blocks.mamba2 import ssd_chunk_scan_ref

REF = make_engine("reference", "float64")


def _both(con, tokens, pos, engine=REF):
    want = at_positions(engine.hidden(con, tokens), pos)
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


@pytest.mark.parametrize("module", [mqar_mamba2, mqar_s4d], ids=lambda m: m.NAME)
def test_constructions_in_float32(module):
    """In float32 the forms differ from the forward by summation order and the gate's placement: rounding."""
    con = module.build(4, 16, "jl", seq_len=40)
    f32 = replace(con, mixer={k: v.float() for k, v in con.mixer.items()}, embedding=con.embedding.float())
    tokens, pos = _task(con, 40)
    got = _both(f32, tokens, pos, engine=make_engine("reference", "float32"))[0]
    want = _both(con, tokens, pos)[1]
    assert got.dtype == torch.float32
    assert (got.double() - want).abs().max() <= 1e-5 * want.abs().max()


def _random(cfg, width, seed, position_channel):
    g = torch.Generator().manual_seed(seed)
    mixer = {k: 0.5 * torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in cfg.zeros().items()}
    tokens = MQARTokens(3, 6)
    con = Construction("random", "-", cfg, torch.randn(tokens.n_tokens, width, generator=g, dtype=torch.float64),
                       mixer, torch.eye(width, dtype=torch.float64), [], tokens, position_channel=position_channel)
    ids = torch.randint(0, tokens.n_tokens, (3, 20), generator=g)
    return con, ids, torch.tensor([[2, 7, 19], [0, 5, 11], [1, 18, 19]])


@pytest.mark.parametrize("position_channel", [None, 5])
@pytest.mark.parametrize("rmsnorm, d_ssm, ngroups", [(False, None, 1), (True, None, 2), (True, 8, 1), (False, 8, 2)])
def test_mamba2_random_weights(rmsnorm, d_ssm, ngroups, position_channel):
    """Every optional part of Mamba2.forward after the scan (gate, gated norm, gated MLP, biases) acts per position;
    a "+PE" position channel is added per position."""
    cfg = Mamba2Config(d_model=8, d_state=4, d_conv=4, expand=2, headdim=4, d_ssm=d_ssm, ngroups=ngroups,
                       rmsnorm=rmsnorm, chunk_size=8)
    con, ids, pos = _random(cfg, 8, 0, position_channel)
    got, want = _both(con, ids, pos)
    assert (got - want).abs().max() <= 1e-12 * want.abs().max()
    broken = replace(con, mixer={**con.mixer, "out_proj.weight": con.mixer["out_proj.weight"] * 1.001})  # must show
    assert (_both(broken, ids, pos)[0] - want).abs().max() > 1e-6 * want.abs().max()


@pytest.mark.parametrize("position_channel", [None, 1])
def test_mamba_s4d_random_weights(position_channel):
    con, ids, pos = _random(MambaS4DConfig(d_model=6, d_state=3, d_conv=3, d_inner=10), 6, 1, position_channel)
    got, want = _both(con, ids, pos)
    assert (got - want).abs().max() <= 1e-12 * want.abs().max()
    z_rows = {**con.mixer, "in_proj.weight": con.mixer["in_proj.weight"].clone()}
    z_rows["in_proj.weight"][10:] *= 1.01  # the gate's rows, read at the query positions only: must show
    assert (_both(replace(con, mixer=z_rows), ids, pos)[0] - want).abs().max() > 1e-6 * want.abs().max()
