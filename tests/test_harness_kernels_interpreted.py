"""The MQAR harness's own Triton kernels on the CPU, through Triton's interpreter (TRITON_INTERPRET=1, set before
triton is imported: run this file in its own process): the one-pass token conv (``verify.engines.token_conv``) and the
device draw's hash (``verify.tasks.mqar._bits_kernel``). The compiled kernels are checked on the GPU by
``tests/test_cuda_query_only_mamba2_s4d.py`` (the draw equal to the CPU's; hidden_at with and without the one-pass
conv). Skipped where triton is not installed."""
import os

import numpy as np
import pytest
import torch

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("run with TRITON_INTERPRET=1 (Triton's CPU interpreter)", allow_module_level=True)
pytest.importorskip("triton")

from constructions import mqar_mamba, mqar_mamba2, mqar_s4d  # noqa: E402
from verify.engines import query_only, token_conv  # noqa: E402
from verify.blocks.mamba2 import ssd_chunk_scan_ref  # noqa: E402
from verify.engines.scan import selective_scan_ref  # noqa: E402
from verify.tasks import mqar  # noqa: E402


def _case(n_tokens, C, width, batch, L, dtype, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    table_t = torch.randn(n_tokens, C, generator=g).to(dtype)
    tokens = torch.randint(0, n_tokens, (batch, L), generator=g)
    weight = torch.randn(C, 1, width, generator=g).to(dtype)
    b = torch.randn(C, generator=g).to(dtype) if bias else None
    return table_t, tokens, weight, b


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("n_tokens, C, width, batch, L, dtype, bias", [
    (40, 70, 4, 3, 130, torch.float32, True),   # C and L not multiples of the tile
    (9, 5, 2, 2, 3, torch.float32, False),      # L shorter than the conv, no bias
    (300, 129, 3, 2, 64, torch.bfloat16, True),
    (17, 64, 1, 1, 65, torch.float32, True),    # width 1: no history
])
def test_kernel_equals_conv_of_the_gathered_rows(n_tokens, C, width, batch, L, dtype, bias, channels_last):
    """Values within the kernel's rounding bound of float64 (``self_check``'s bound, asserted here directly) and
    equal to ``silu_conv`` of the gathered rows to float32 rounding; the layout asked for."""
    table_t, tokens, weight, b = _case(n_tokens, C, width, batch, L, dtype, bias)
    out = token_conv.table_conv_silu(table_t, tokens, weight, b, channels_last)
    assert out.shape == (batch, C, L) and out.dtype == dtype
    assert (out.stride(1) == 1) == channels_last or C == 1
    ref, size = token_conv.reference(table_t, tokens, weight, b)
    bound = token_conv.error_bound(ref, size, width, dtype)  # one ulp here: the interpreter truncates to bfloat16
    assert ((out.double() - ref).abs() <= bound).all()
    torch_path = query_only.silu_conv(table_t.float()[tokens].transpose(1, 2), weight.float(),
                                      None if b is None else b.float())
    assert torch.allclose(out.float(), torch_path, rtol=2 * torch.finfo(dtype).eps, atol=1e-5)


def test_self_check_raises_on_a_wrong_kernel(monkeypatch):
    """A kernel whose values leave the bound (here: one output moved by one float32 ulp per unit of its size) ends the
    check with an error; the key is not recorded, so the kernel's next use is checked again."""
    table_t, tokens, weight, b = _case(20, 8, 4, 2, 10, torch.float32)
    out = token_conv.table_conv_silu(table_t, tokens, weight, b)
    ref, size = token_conv.reference(table_t, tokens, weight, b)
    bad = out.clone()
    bad[0, 3, 5] += float(8 * 2.0 ** -22 * size[0, 3, 5] + 1e-3)
    monkeypatch.setattr(token_conv, "_CHECKED", set())
    with pytest.raises(RuntimeError, match="beyond its rounding bound"):
        token_conv.self_check(table_t, tokens, weight, b, bad)
    assert not token_conv._CHECKED
    token_conv.self_check(table_t, tokens, weight, b, out)
    assert len(token_conv._CHECKED) == 1


@pytest.mark.parametrize("mod", [mqar_mamba, mqar_mamba2, mqar_s4d], ids=lambda m: m.NAME)
def test_query_only_forms_with_the_kernel_equal_the_gather_then_conv(mod):
    """Each block's query-only form with the one-pass kernel (Mamba-2 reading its channel-last output) equals the
    form with the gather and torch's conv, in float32, to float32 rounding of the scan's input."""
    from verify.tasks.mqar import MQARConfig, generate
    from verify.checks import query_positions

    con = mod.build(4, 16, "one-hot", seq_len=40)
    params = {k: v.float() for k, v in con.mixer.items()}
    emb = con.embedding.float()
    table = query_only.in_proj_table(con, emb, params["in_proj.weight"], params.get("in_proj.bias"))
    tokens, labels = generate(MQARConfig(4, 16, 40, num_examples=3), 0)
    tokens, pos = torch.from_numpy(tokens), torch.from_numpy(query_positions(labels)[0])
    kind = con.config.kind
    if kind == "mamba":
        form = lambda tc: query_only.mamba_forward_at(params, table, con, tokens, pos, selective_scan_ref,  # noqa
                                                      token_conv=tc)
    elif kind == "mamba2":
        form = lambda tc: query_only.mamba2_forward_at(params, table, con, tokens, pos, ssd_chunk_scan_ref,  # noqa
                                                       token_conv=tc)
    else:
        form = lambda tc: query_only.mamba_s4d_forward_at(params, table, con, tokens, pos, selective_scan_ref,  # noqa
                                                          token_conv=tc)
    want, got = form(None), form(token_conv.rows_conv(table))
    assert got.shape == want.shape
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


@pytest.mark.parametrize("seed, stream, n", [(0, 2, 5000), ((3, 7), 0, 1), (12345, 4, 3 * 1024 + 5)])
def test_bits_kernel_equals_the_torch_draw(seed, stream, n):
    """The kernel's 62 bits per index equal the torch operations' (the CPU draw) exactly, across block edges."""
    w = [int(v) for v in np.random.SeedSequence(mqar._entropy(seed, stream)).generate_state(4, np.uint32)]
    out = torch.empty(n, dtype=torch.int64)
    mqar._bits_kernel[(-(-n // mqar._BITS_BLOCK),)](out, n, *w, BLOCK=mqar._BITS_BLOCK)
    assert torch.equal(out, mqar._bits(seed, stream, (n,), "cpu"))
    assert bool((out >= 0).all()) and len(out.unique()) == n
