"""The query-only form of ``Mamba.forward`` (``verify.engines.query_only``, the mamba_ssm engine's ``hidden_at``) on
the CPU, with the reference scan: the table fold, then the whole forward, against embed + ``mamba_forward`` gathered.
The same function on mamba_ssm's kernels is tested against ``mamba_ssm.Mamba`` in ``test_cuda_mqar_mamba.py``."""
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from constructions import keep_nth, mqar_mamba
from constructions.layout import embed
from verify.engines import make_engine
from verify.engines.query_only import at_positions, gathered, in_proj_table, mamba_forward_at, queried
from verify.blocks.mamba import mamba_forward
from verify.engines.scan import selective_scan_ref

CONSTRUCTIONS = {  # the last one has a "+PE" position channel (embed writes t into it)
    "mqar one-hot": lambda: mqar_mamba.build(8, 128, "one-hot", seq_len=60),
    "mqar jl": lambda: mqar_mamba.build(6, 40, "jl", seq_len=60),
    "keep-nth": lambda: keep_nth.build(12, n=3),
}


def _with_random_biases(con, g):
    """con with random in_proj / out_proj biases (the constructions set them to 0 or constants), so both folds
    carry a bias."""
    mixer = {**con.mixer, "in_proj.bias": 0.1 * torch.randn(con.mixer["in_proj.bias"].shape, generator=g,
                                                            dtype=torch.float64),
             "out_proj.bias": torch.randn(con.config.d_model, generator=g, dtype=torch.float64)}
    return replace(con, mixer=mixer)


def _tokens_and_positions(con, g, batch=5, L=40, q=7):
    tokens = torch.randint(0, con.embedding.shape[0], (batch, L), generator=g)
    pos = torch.stack([torch.randperm(L, generator=g)[:q] for _ in range(batch)])
    return tokens, pos


@pytest.mark.parametrize("name", CONSTRUCTIONS)
def test_token_table_fold_equals_embedding_then_in_proj(name):
    """gathered(in_proj_table) == in_proj(embed(tokens)) + bias for a block of rows, (batch, rows, L) contiguous, and
    queried == the same rows at the query positions, on a random embedding (its position column too)."""
    g = torch.Generator().manual_seed(0)
    con = CONSTRUCTIONS[name]()
    E = torch.randn(con.embedding.shape, generator=g, dtype=torch.float64)
    W, b = (torch.randn(*s, generator=g, dtype=torch.float64) for s in (con.mixer["in_proj.weight"].shape,
                                                                        con.mixer["in_proj.bias"].shape))
    tokens, pos = _tokens_and_positions(con, g)
    table = in_proj_table(con, E, W, b)
    want = F.linear(embed(con, E, tokens), W, b)  # (batch, L, 2 d_inner)
    for rows in (slice(0, con.config.d_inner), slice(3, 2 * con.config.d_inner)):
        got = gathered(con, table, W, rows, tokens)
        torch.testing.assert_close(got, want[..., rows].transpose(1, 2), rtol=1e-12, atol=1e-12)
        assert got.is_contiguous()
        torch.testing.assert_close(queried(con, table, W, rows, tokens, pos), at_positions(want[..., rows], pos),
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("name", CONSTRUCTIONS)
def test_query_only_forward_equals_forward_gathered(name, dtype, rtol):
    """mamba_forward_at == mamba_forward(embed(tokens)) at pos, with the construction's weights and random biases."""
    g = torch.Generator().manual_seed(1)
    con = _with_random_biases(CONSTRUCTIONS[name](), g)
    params = {k: v.to(dtype) for k, v in con.mixer.items()}
    E = con.embedding.to(dtype)
    tokens, pos = _tokens_and_positions(con, g)
    got = mamba_forward_at(params, in_proj_table(con, E, params["in_proj.weight"], params["in_proj.bias"]), con,
                           tokens, pos, selective_scan_ref)
    want = at_positions(mamba_forward(params, embed(con, E, tokens), con.config), pos)
    assert got.shape == (*pos.shape, con.config.d_model) and got.dtype == dtype
    torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * want.abs().max().item())


def test_reference_hidden_at_is_hidden_gathered():
    g = torch.Generator().manual_seed(2)
    con = CONSTRUCTIONS["mqar jl"]()
    tokens, pos = _tokens_and_positions(con, g)
    engine = make_engine("reference", "float32")
    hidden = engine.hidden(con, tokens)
    want = torch.stack([hidden[i, pos[i]] for i in range(len(pos))])
    assert torch.equal(engine.hidden_at(con, tokens, pos), want)


@pytest.mark.parametrize("name", CONSTRUCTIONS)
def test_one_pass_gate_is_used_exactly_where_it_applies(name):
    """mamba_forward_at hands the gate to ``gate_at`` (here: torch's path under another name, so the outputs must
    agree exactly) for a construction without a position channel; with one ("+PE") its z rows carry a per-position
    term the table lacks, so ``gate_at`` must not be called."""
    from verify.engines import query_gate

    g = torch.Generator().manual_seed(3)
    con = _with_random_biases(CONSTRUCTIONS[name](), g)
    params = {k: v.float() for k, v in con.mixer.items()}
    table = in_proj_table(con, con.embedding.float(), params["in_proj.weight"], params["in_proj.bias"])
    tokens, pos = _tokens_and_positions(con, g)
    calls = []

    def gate_at(y, p, rows, toks):
        calls.append(rows)
        return query_gate.reference(y, p, toks, table[rows].T.contiguous())
    plain = mamba_forward_at(params, table, con, tokens, pos, selective_scan_ref)
    got = mamba_forward_at(params, table, con, tokens, pos, selective_scan_ref, gate_at=gate_at)
    assert torch.equal(got, plain)
    di = con.config.d_inner
    assert calls == ([] if con.position_channel is not None else [slice(di, 2 * di)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_query_gate_self_check_passes_torch_values_and_stops_a_one_ulp_change(dtype, monkeypatch):
    """The gate kernel's once-per-shape check: torch's own gate passes (the key is then trusted); one output one ulp
    off raises, and the key is not recorded."""
    from verify.engines import query_gate

    g = torch.Generator().manual_seed(4)
    y = torch.randn(3, 24, 50, generator=g).to(dtype)
    tokens = torch.randint(0, 30, (3, 50), generator=g)
    pos = torch.stack([torch.randperm(50, generator=g)[:6] for _ in range(3)])
    z_t = torch.randn(30, 24, generator=g).to(dtype)
    good = query_gate.reference(y, pos, tokens, z_t)
    monkeypatch.setattr(query_gate, "_CHECKED", set())
    monkeypatch.setattr(query_gate, "_ULPS", 0.0)
    bad = good.clone()
    bad[1, 2, 7] = torch.nextafter(bad[1, 2, 7].float(), torch.tensor(float("inf"))).to(dtype) \
        if dtype == torch.float32 else (bad[1, 2, 7].float() * (1 + 2 ** -7)).to(dtype)
    assert not torch.equal(bad, good)
    with pytest.raises(RuntimeError, match="differs from torch's gate"):
        query_gate.self_check(y, pos, tokens, z_t, bad)
    assert not query_gate._CHECKED
    query_gate.self_check(y, pos, tokens, z_t, good)
    assert len(query_gate._CHECKED) == 1


def test_transposed_rows_are_the_table_slices_transposed_once():
    """The one-pass kernels' row tables: ``table[rows].T`` with unit stride along the rows, the same tensor on a
    second request for the same slice."""
    from verify.engines.query_only import transposed_rows

    table = torch.arange(30.0).view(6, 5)
    get = transposed_rows(table)
    z = get(slice(2, 5))
    assert torch.equal(z, table[2:5].T) and z.stride() == (3, 1) and get(slice(2, 5)) is z
    assert torch.equal(get(slice(0, 2)), table[:2].T)
