"""Figure 1's measurement: e^{-lambda Delta_t} of trained KEEP n-TH models (verify.train.decay)."""
from __future__ import annotations

import torch

from verify.train import decay
from verify.train.loop import build_model, initial_state, train_pack
from verify.train.models import with_position
from verify.train.spec import RunSpec, protocol

KEEP = dict(task="keep-nth", vocab=6, seq_len=9, d_model=8, d_state=4, lr=0.03, task_args=(("n", 3), ("pe", True)))


def _decay_by_hand(mixer, sd, tokens, config):
    """e^{-lambda Delta_t} from the block's formulas, written out (b, L, d_inner, N): an independent computation."""
    import torch.nn.functional as F

    p = {k[len("mixer."):]: v for k, v in sd.items() if k.startswith("mixer.")}
    lam = torch.exp(p["A_log"])
    b, L = tokens.shape
    if mixer == "mamba-s4d":
        return torch.exp(-F.softplus(p["dt_bias"]).expand(b, L, -1)[..., None] * lam)
    x = with_position(sd["embedding.weight"][tokens], True)
    u = (x @ p["in_proj.weight"].T + p["in_proj.bias"])[..., :config.d_inner]  # (b, L, d_inner)
    w = p["conv1d.weight"][:, 0]  # (d_inner, d_conv): causal taps, the last one on the current token
    pad = torch.cat([u.new_zeros(b, w.shape[1] - 1, u.shape[-1]), u], dim=1)
    u = F.silu(sum(pad[:, j:j + L] * w[:, j] for j in range(w.shape[1])) + p.get("conv1d.bias", 0))
    dt = (u @ p["x_proj.weight"].T)[..., :config.rank] @ p["dt_proj.weight"].T + p["dt_proj.bias"]
    return torch.exp(-F.softplus(dt)[..., None] * lam)


HISTOGRAM_MIXERS = ("mamba", "mamba-s4d")  # the paper's Fig. 1 compares these two


def test_the_histogram_is_stored_for_the_figures_mixers_only():
    assert [m for m in ("mamba", "mamba2", "mamba-delta-t", "mamba-s4d", "linear-mamba", "s4d")
            if decay.has_histogram(m)] == list(HISTOGRAM_MIXERS)


def test_decay_factors_are_the_block_formulas():
    tokens = torch.randint(0, 6, (5, 9))
    for mixer in HISTOGRAM_MIXERS:
        spec = RunSpec(mixer=mixer, seed=1, **KEEP)
        sd, _ = initial_state(spec)
        config = build_model([spec], "cpu").config
        want = _decay_by_hand(mixer, sd, tokens, config)
        got = decay.decay_factors(mixer, sd, tokens, True, config)
        assert got.shape == want.shape and torch.allclose(got, want, rtol=1e-12, atol=1e-14), mixer
        if mixer == "mamba-s4d":  # input-independent Delta: every position has the same factors
            assert torch.equal(got, got[:1, :1].expand_as(got))


def test_keep_nth_runs_store_the_histogram_before_and_from_n():
    proto = protocol("smoke", max_steps=40, eval_every=20, train_samples=256, val_samples=64, test_samples=64)
    for mixer in HISTOGRAM_MIXERS:
        (rec,) = train_pack([RunSpec(mixer=mixer, seed=0, protocol=proto, conv=False, **KEEP)])
        h = rec["result"]["decay_hist"]
        assert len(h["edges"]) == decay.BINS + 1 and h["n"] == 3 and h["sequences"] == 64
        for part in ("before_n", "from_n"):
            assert len(h[part]) == decay.BINS and abs(sum(h[part]) - 1) < 1e-5 and min(h[part]) >= 0
            assert 0 < h[f"mean_{part}"] < 1
        f = decay.decay_factors(mixer, rec["_weights"], torch.as_tensor(_test_tokens(rec)), True,
                                build_model([RunSpec(mixer=mixer, seed=0, protocol=proto, conv=False, **KEEP)],
                                            "cpu").config)
        assert abs(h["mean_before_n"] - float(f[:, :2].mean())) < 1e-9


def _test_tokens(rec):
    from verify.train.loop import datasets

    return datasets(RunSpec.from_dict(rec["spec"]))["test"][0][:64]


def test_other_tasks_store_no_histogram():
    proto = protocol("smoke", max_steps=5, eval_every=5, train_samples=64, val_samples=32, test_samples=32)
    (rec,) = train_pack([RunSpec(task="mqar", mixer="mamba", kappa=2, vocab=4, seq_len=8, d_model=8, d_state=4,
                                 seed=0, lr=0.03, protocol=proto)])
    assert "decay_hist" not in rec["result"]
