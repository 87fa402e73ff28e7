"""Figure 1's measurement: e^{-lambda Delta_t} of trained KEEP n-TH models (verify.train.decay)."""
from __future__ import annotations

import torch

from verify.engines.mamba_s4d import mamba_s4d_forward
from verify.engines.reference import mamba_forward, selective_scan_ref
from verify.train import decay
from verify.train.loop import build_model, initial_state, train_pack
from verify.train.models import with_position
from verify.train.spec import RunSpec, protocol

KEEP = dict(task="keep-nth", vocab=6, seq_len=9, d_model=8, d_state=4, lr=0.03, task_args=(("n", 3), ("pe", True)))


def _captured_decay(forward, sd, x, config):
    """exp(delta A) as the engine's own scan sees it (delta after bias and softplus), shape (b, L, d_inner, N)."""
    seen = {}

    def scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
        d = delta + delta_bias[:, None] if delta_bias is not None else delta
        d = torch.nn.functional.softplus(d) if delta_softplus else d
        seen["f"] = torch.exp(d.transpose(1, 2)[..., None] * A)
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus)

    mix = {k[len("mixer."):]: v for k, v in sd.items() if k.startswith("mixer.")}
    forward(mix, x, config, scan)
    return seen["f"]


def test_decay_factors_are_what_the_engine_scans_with():
    tokens = torch.randint(0, 6, (5, 9))
    for mixer, forward in (("mamba", mamba_forward), ("s4d", mamba_s4d_forward)):
        spec = RunSpec(mixer=mixer, seed=1, **KEEP)
        sd, _ = initial_state(spec)
        config = build_model([spec], "cpu").config
        x = with_position(sd["embedding.weight"][tokens], True)
        want = _captured_decay(forward, sd, x, config)
        got = decay.decay_factors(mixer, sd, tokens, True, config)
        assert got.shape == want.shape and torch.allclose(got, want, rtol=1e-12, atol=1e-14), mixer
        if mixer == "s4d":  # input-independent Delta: every position has the same factors
            assert torch.equal(got, got[:1, :1].expand_as(got))


def test_keep_nth_runs_store_the_histogram_before_and_from_n():
    proto = protocol("smoke", max_steps=40, eval_every=20, train_samples=256, val_samples=64, test_samples=64)
    for mixer in decay.MIXERS:
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
