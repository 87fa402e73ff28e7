"""GPU: the language-model export of Theorem 2's construction in ``mamba_ssm``'s own ``MambaLMHeadModel``.

The same export as ``tests/test_lm_export.py`` (``export mqar-mamba --format lm``), loaded with
``MambaLMHeadModel.from_pretrained(DIR/mamba_ssm)`` (a strict ``load_state_dict``), runs the same MQAR queries three
ways: the whole-sequence forward (fused add + RMSNorm Triton kernels, and separately the unfused norms; the mixer's
fast path ``mamba_inner_fn`` where causal_conv1d is installed, and the slow path with ``selective_scan_fn``), greedy
``generate`` of one token per query, and the recurrent decoding path (``Mamba.step``: one token at a time,
``selective_state_update``) fed the sequence by ``decode``'s ``teacher_outputs``. Every query's next-token argmax must
be its value's token, with margin at least the proof's margin after the norm.

Run on a machine with a GPU and mamba_ssm: ``python3 -m pytest -m cuda -s tests/test_lm_export_cuda.py``.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from constructions import lm, mqar_mamba
from verify.tasks.mqar import IGNORE, MQARConfig, generate

pytestmark = pytest.mark.cuda

KAPPA, VOCAB, T = 8, 128, 100


@pytest.fixture(scope="module", params=["one-hot", "jl"])
def export(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("lm") / request.param
    lm.save_lm(mqar_mamba.build(KAPPA, VOCAB, request.param, seq_len=T), out)
    return out


def _queries(query_passes: int, seed: int, n: int = 4):
    tokens, labels = generate(MQARConfig(KAPPA, VOCAB, T, num_examples=n, query_passes=query_passes), seed)
    rows, cols = np.nonzero(labels != IGNORE)
    return torch.from_numpy(tokens).cuda(), rows, cols, torch.from_numpy(labels[rows, cols] + KAPPA).cuda()


def _check(logits: torch.Tensor, want: torch.Tensor, bound: float, what: str) -> float:
    """Every query's argmax is its value's token and the min margin meets the proven bound; returns the margin."""
    assert torch.equal(logits.argmax(-1), want), f"{what}: a query's next-token argmax is not its value"
    idx = torch.arange(len(want), device=want.device)
    others = logits.clone()
    others[idx, want] = -torch.inf
    margin = (logits[idx, want] - others.max(-1).values).min().item()
    print(f"\n{what}: {len(want)} queries, min margin {margin:.4g} >= proven {bound:.4g}")
    assert margin >= bound
    return margin


def _bound(folder) -> float:
    return lm.read_config(folder)["construction"]["proof"]["margin_after_norm"]


def test_mamba_ssm_loads_the_export_strictly(export):
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    model = lm.load_mamba_ssm(export)  # from_pretrained: MambaConfig(**config.json), then a strict load_state_dict
    assert isinstance(model, MambaLMHeadModel)
    stored = torch.load(export / lm.MAMBA_SSM_FOLDER / "pytorch_model.bin", weights_only=True)
    assert set(stored) == set(model.state_dict())
    assert all(torch.equal(stored[k].cuda(), v) for k, v in model.state_dict().items())
    assert model.lm_head.weight.data_ptr() != model.backbone.embedding.weight.data_ptr()  # untied


@pytest.mark.parametrize("fused_add_norm", [True, False])
@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("query_passes", [1, 3])
def test_forward_argmax_is_the_queried_value_at_every_query(export, fused_add_norm, fast_path, query_passes):
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    sibling = export / lm.MAMBA_SSM_FOLDER
    if fused_add_norm:
        model = lm.load_mamba_ssm(export)
    else:  # the same checkpoint with the unfused add + RMSNorm (config.json says fused_add_norm = true)
        config = MambaConfig(**{**json.loads((sibling / "config.json").read_text()), "fused_add_norm": False})
        model = MambaLMHeadModel(config, device="cuda", dtype=torch.float32)
        model.load_state_dict(torch.load(sibling / "pytorch_model.bin", weights_only=True))
        model.eval()
    model.backbone.layers[0].mixer.use_fast_path = fast_path  # fast: mamba_inner_fn, only with causal_conv1d
    tokens, rows, cols, want = _queries(query_passes, seed=query_passes)
    with torch.no_grad():
        logits = model(tokens).logits
    _check(logits[rows, cols], want, _bound(export),
           f"mamba_ssm forward (fused_add_norm={fused_add_norm}, fast_path={fast_path}, passes={query_passes})")
    non_values = torch.cat([logits[rows, cols][:, :KAPPA], logits[rows, cols][:, KAPPA + VOCAB:]], 1)
    assert not non_values.any(), "keys and noise must get the logit 0"


def test_generate_emits_every_queried_value(export):
    model = lm.load_mamba_ssm(export)
    tokens, rows, cols, want = _queries(1, seed=7)
    for b, q, w in zip(rows, cols, want.tolist()):
        out = model.generate(tokens[b:b + 1, :q + 1], max_length=int(q) + 2)  # greedy (top_k=1), one new token
        assert out.shape == (1, q + 2) and torch.equal(out[0, :q + 1], tokens[b, :q + 1])
        assert out[0, -1].item() == w, f"sequence {b}, query at {q}"


@pytest.mark.parametrize("query_passes", [1, 3])
def test_recurrent_decoding_answers_every_query(export, query_passes):
    """Decode one token at a time (``Mamba.step``) after the key-value section, the tokens taken from the sequence
    itself (``teacher_outputs``): the scores at every query position are the step path's logits."""
    model = lm.load_mamba_ssm(export)
    tokens, rows, cols, want = _queries(query_passes, seed=20 + query_passes)
    prefix = 2 * KAPPA  # every query lies after the key-value section
    assert cols.min() >= prefix
    scores = []
    for b in range(tokens.shape[0]):
        out = model.generate(tokens[b:b + 1, :prefix], max_length=T + 1, teacher_outputs=tokens[b:b + 1],
                             output_scores=True, return_dict_in_generate=True)
        assert torch.equal(out.sequences[0, :T], tokens[b])
        scores.append(torch.cat(out.scores))  # row k: the logits at position prefix - 1 + k
    logits = torch.stack(scores)[rows, cols - prefix + 1]
    _check(logits, want, _bound(export), f"mamba_ssm step decoding (passes={query_passes})")
