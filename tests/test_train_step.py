"""The training step (verify.train.step): the batch rows and learning rates it computes on the device are the
protocol's definition, and on CUDA the replayed graph trains exactly as the eager step."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from common.errors import RequirementError
from verify.tasks.mqar import IGNORE
from verify.train.loop import build_model, datasets
from verify.train.spec import RunSpec, protocol
from verify.train.step import WARMUP_STEPS, Adam, Stepper, pack_loss, scored_positions

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = dict(task="mqar", mixer="mamba", kappa=2, vocab=8, seq_len=16, d_model=12, d_state=4)


def _pack(proto, mixer="mamba", device="cpu", **kw):
    specs = [RunSpec(seed=s, lr=lr, protocol=proto, **{**SHAPE, "mixer": mixer, **kw})
             for s, lr in ((0, 0.03), (3, 0.01), (5, 0.003))]
    model = build_model(specs, device)
    train = tuple(x.to(device) for x in datasets(specs[0])["train"])
    return specs, model, train


def test_each_step_trains_on_the_documented_rows():
    """Step s of model k: rows [i b, (i+1) b) of default_rng((seed_k, 17, s // steps_per_epoch)).permutation(n);
    checked against its loss before the update, across an epoch boundary, and through the parameter change of a
    model whose learning rate is 0 (stopped) or the schedule's."""
    proto = protocol("smoke", max_steps=12, train_samples=64, batch_size=16)  # 4 steps per epoch
    specs, model, train = _pack(proto)
    stepper = Stepper(model, Adam(model.params, model.masks, True), train, [s.seed for s in specs], proto,
                      [s.lr for s in specs], 0, graph=False)
    stepper.set_active([False, True, False])
    qpos = scored_positions(train[1])
    for step in range(7):
        e, i = divmod(step, 4)
        rows = torch.from_numpy(np.stack([np.random.default_rng((s.seed, 17, e)).permutation(64)[i * 16:(i + 1) * 16]
                                          for s in specs]))
        with torch.no_grad():
            want = pack_loss(model, *train, qpos, rows)
        before = {k: v.detach().clone() for k, v in model.params.items()}
        got = stepper(step)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        moved = [max((model.params[k][j] - before[k][j]).abs().max().item() for k in before) for j in range(3)]
        assert moved[1] == 0 and moved[0] > 0 and moved[2] > 0, moved


@pytest.mark.parametrize("start", [0, 6])
def test_the_first_update_is_the_cosine_rate_with_adams_bias_correction(start):
    """Adam's first update from zero moments at step count t = start + 1 moves every parameter with |g| >> eps by
    lr(start) (0.1 / (1 - 0.9^t)) (sqrt(1 - 0.999^t) / sqrt(0.001)); lr(s) the cosine from the model's lr to
    lr_final over max_steps, 0 for a stopped model."""
    proto = protocol("smoke", max_steps=12, train_samples=64, batch_size=16)
    specs, model, train = _pack(proto)
    stepper = Stepper(model, Adam(model.params, model.masks, True), train, [s.seed for s in specs], proto,
                      [s.lr for s in specs], start, graph=False)
    stepper.set_active([False, True, False])
    before = {k: v.detach().clone() for k, v in model.params.items()}
    stepper(start)
    t = start + 1
    gain = 0.1 / (1 - 0.9 ** t) * math.sqrt(1 - 0.999 ** t) / math.sqrt(0.001)
    for j, s in enumerate(specs):
        lr = 0.0 if j == 1 else proto.lr_final + 0.5 * (s.lr - proto.lr_final) * (1 + math.cos(math.pi * start / 12))
        moved = max((model.params[k][j] - before[k][j]).abs().max().item() for k in before)
        assert moved == pytest.approx(lr * gain, rel=1e-4), (j, moved, lr * gain)


@pytest.mark.parametrize("block_elems", [1, 10, 35, 2 ** 24])
def test_scored_positions_in_blocks_are_the_whole_set_nonzero(block_elems):
    g = torch.Generator().manual_seed(3)
    labels = torch.full((23, 7), IGNORE)
    for r in range(23):  # three scored positions a row, at random
        labels[r, torch.randperm(7, generator=g)[:3]] = r
    got = scored_positions(labels, block_elems=block_elems)
    assert got.dtype == torch.int16
    assert torch.equal(got.long(), (labels != IGNORE).nonzero()[:, 1].view(23, 3))
    labels[22, (labels[22] == IGNORE).nonzero()[0, 0]] = 1  # the last row, in the last block, scores 4
    with pytest.raises(RequirementError, match="this task scores 3-4"):
        scored_positions(labels, block_elems=block_elems)


def test_training_needs_equal_scored_positions_per_sequence():
    labels = torch.full((3, 5), IGNORE)
    labels[0, 1] = labels[1, 2] = labels[2, 3] = 1
    assert scored_positions(labels).tolist() == [[1], [2], [3]]
    labels[2, 4] = 1
    with pytest.raises(RequirementError, match="same number of positions; this task scores 1-2"):
        scored_positions(labels)


@pytest.mark.cuda
@pytest.mark.parametrize("mixer,kw", [("mamba", {}), ("mamba-s4d", {}), ("mamba2", {"task_args": (("headdim", 4),),
                                                                             "d_model": 16})])
def test_cuda_graph_replay_trains_as_the_eager_step(mixer, kw):
    """Replayed steps = eager steps. Mamba-2's Triton kernels compute in TF32 and pick their configurations per
    launch, and 20 Adam steps amplify the rounding: on H100s its parameters differed by 1.2e-5, 3.7e-5 and
    4.4e-5 in three runs of this test, so they get atol 1e-4; a replay that missed an update (a frozen model
    trained, a stale rate) would move them by about the rates, 3e-3 to 3e-2."""
    atol = 1e-4 if mixer == "mamba2" else 1e-6
    proto = protocol("smoke", max_steps=40, train_samples=256)
    runs = []
    for graph in (False, True):
        specs, model, train = _pack(proto, mixer, "cuda", **kw)
        stepper = Stepper(model, Adam(model.params, model.masks, True), train, [s.seed for s in specs], proto,
                          [s.lr for s in specs], 0, graph=graph)
        losses = []
        for step in range(20):
            if step == 10:
                stepper.set_active([False, True, False])
            losses.append(stepper(step).clone())
        assert (stepper.graph is not None) == graph
        runs.append((torch.stack(losses), {k: v.detach().clone() for k, v in model.params.items()}))
    _assert_replay_trains_as_eager(runs, f"{mixer}, 20 steps", atol)


def _assert_replay_trains_as_eager(runs, label: str, atol: float) -> None:
    """runs = [(eager losses, eager params), (replayed losses, replayed params)]: the same losses (rtol 1e-5,
    atol 1e-6) and parameters within ``atol``; the largest differences printed."""
    (le, pe), (lg, pg) = runs
    diff = max((pe[k] - pg[k]).abs().max().item() for k in pe)
    print(f"\n[{label}] graph vs eager: max |dloss| {(le - lg).abs().max().item():.3g}, max |dparam| {diff:.3g} "
          f"({WARMUP_STEPS} eager warmup steps, then replays)")
    torch.testing.assert_close(lg, le, rtol=1e-5, atol=1e-6)
    for k in pe:
        torch.testing.assert_close(pg[k], pe[k], rtol=1e-5, atol=atol)


@pytest.mark.cuda
def test_cuda_a_step_that_cannot_be_captured_trains_eagerly():
    """Mamba-Delta-top's S6 reduction checks Delta > 0 on the host (registry graph_safe=False): forced to capture,
    the step warns, trains on eagerly, and the CUDA context stays usable (same result as the eager step)."""
    proto = protocol("smoke", max_steps=40, train_samples=256)
    kw = dict(task="induction-heads", vocab=4, kappa=0, d_model=8, d_state=4)
    runs = []
    for graph in (False, True):
        specs, model, train = _pack(proto, "mamba-delta-t", "cuda", **kw)
        stepper = Stepper(model, Adam(model.params, model.masks, True), train, [s.seed for s in specs], proto,
                          [s.lr for s in specs], 0, graph=graph)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            losses = torch.stack([stepper(step).clone() for step in range(WARMUP_STEPS + 3)])
        assert stepper.graph is None and any("capture" in str(w.message) for w in caught) == graph
        runs.append(losses)
    torch.testing.assert_close(runs[1], runs[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,tf32", [("budgeted-loss", False), ("budgeted-loss-tf32", True)])
def test_the_protocol_sets_the_matmul_precision_and_is_in_the_run_key(name, tf32):
    from verify.train.loop import train_pack

    proto = protocol(name, max_steps=2, eval_every=1, train_samples=64, val_samples=8, test_samples=8)
    torch.backends.cuda.matmul.allow_tf32 = not tf32
    try:
        train_pack([RunSpec(seed=0, lr=0.01, protocol=proto, **SHAPE)])
        assert torch.backends.cuda.matmul.allow_tf32 == tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
    assert RunSpec(seed=0, lr=0.01, protocol=proto, **SHAPE).as_dict()["protocol"]["matmul"] == \
        ("tf32" if tf32 else "float32")


def test_the_train_split_is_held_as_int16_and_trains_as_the_int64_one():
    """datasets() holds the train split as int16 (the generator's int64 values, unchanged); Stepper on it gives the
    losses and parameters of Stepper on the int64 split, bitwise; values that do not fit int16 are held as int32
    (|V| up to 2^31: Koren et al.'s V x L grid reaches 50000), the rest stay int64, each value unchanged."""
    from verify.train.loop import _compact

    proto = protocol("smoke", max_steps=12, train_samples=64, batch_size=16)
    specs, _, train = _pack(proto)
    assert train[0].dtype == train[1].dtype == torch.int16
    from verify.train import registry
    t = registry.task(specs[0].task)
    tok, lab = t.generate(t.config(specs[0], proto.train_samples), (specs[0].data_seed, 0))
    assert (train[0].numpy() == tok).all() and (train[1].numpy() == lab).all()
    runs = []
    for data in (train, (torch.from_numpy(tok), torch.from_numpy(lab)),
                 (torch.from_numpy(tok.astype(np.int32)), torch.from_numpy(lab.astype(np.int32)))):
        model = build_model(specs, "cpu")
        stepper = Stepper(model, Adam(model.params, model.masks, True), data, [s.seed for s in specs], proto,
                          [s.lr for s in specs], 0, graph=False)
        runs.append(([stepper(s) for s in range(6)], {k: v.detach().clone() for k, v in model.params.items()}))
    for other in runs[1:]:
        for a, b in zip(runs[0][0], other[0]):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        for k in runs[0][1]:
            torch.testing.assert_close(runs[0][1][k], other[1][k], rtol=0, atol=0)
    for values, dtype in (([-(1 << 15), (1 << 15) - 1], torch.int16), ([-100, 1 << 15], torch.int32),
                          ([-(1 << 15) - 1, 0], torch.int32), ([-100, 49_999], torch.int32),
                          ([-(1 << 31), (1 << 31) - 1], torch.int32), ([0, 1 << 31], torch.int64),
                          ([-(1 << 31) - 1, 0], torch.int64), ([], torch.int16)):
        x = np.array(values, dtype=np.int64)
        held = _compact(x)
        assert held.dtype == dtype, (values, held.dtype)
        assert (held.long().numpy() == x).all()


@pytest.mark.cuda
def test_cuda_linear_mamba_trains_on_an_int32_split_in_chunks_as_eagerly():
    """Koren et al.'s V x L grid on the device: |V| = 40000 holds the split as int32, L = 400 runs the linear Mamba's
    chunked form over four chunks. Its float32 forward and gradients on the GPU match the float64 attention form,
    and the replayed graph trains as the eager step: the same losses, and parameters within atol 1e-4. On an H100, 6 of
    the 1.92 million parameters differed by up to 3.0e-6 after 13 steps, all in embedding rows of tokens that the 256
    training sequences hold a few times: the two steps round the near-zero gradients of those rows differently, and
    Adam's m / (sqrt(v) + eps) turns that rounding into a visible part of the step. A replay that missed an update
    (a frozen model trained, a stale rate) would move parameters by about the rate, 1e-2."""
    from verify.blocks.linear_mamba import packed_linear_forward
    from verify.engines.linear import CHUNK, linear_mamba_forward

    kw = dict(task="mqar-zoology", mixer="linear-mamba", vocab=40_000, kappa=100, seq_len=400, d_model=16, d_state=4,
              model=(("wiring", "tied"),), d_conv=2, expand=2)
    assert kw["seq_len"] > 2 * CHUNK
    proto = protocol("koren-smoke", max_steps=40, warmup_steps=5, flat_steps=5, train_samples=256, val_samples=16,
                     test_samples=16, batch_size=16)
    specs, model, train = _pack(proto, **kw)
    assert train[0].dtype == torch.int32
    p32 = {k[len("mixer."):]: v.detach().cuda().requires_grad_() for k, v in model.params.items()
           if k.startswith("mixer.")}
    p64 = {k: v.detach().double().requires_grad_() for k, v in p32.items()}
    # drawn on the host: after a failed capture in the same process (the test above), the device's default generator
    # refused draws on an H200 ("Offset increment outside graph capture encountered unexpectedly")
    g = torch.Generator().manual_seed(0)
    h, w = (torch.randn(3, 4, 400, 16, generator=g, dtype=torch.float64).cuda() for _ in range(2))
    out = packed_linear_forward(p32, h.float(), model.config)
    ref = linear_mamba_forward(p64, h, model.config, mode="attention")
    g32 = torch.autograd.grad((out * w.float()).sum(), list(p32.values()))
    g64 = torch.autograd.grad((ref * w).sum(), list(p64.values()))
    errs = {"out": (out.double() - ref).abs().max().item() / ref.abs().max().item(),
            **{k: ((a.double() - b).abs().max() / b.abs().max()).item() for k, a, b in zip(p32, g32, g64)}}
    print(f"\n[linear-mamba, chunked float32 vs attention float64] max relative difference: {errs}")
    assert max(errs.values()) < 1e-4, errs
    runs = []
    for graph in (False, True):
        specs, model, train = _pack(proto, device="cuda", **kw)
        stepper = Stepper(model, Adam(model.params, model.masks, True), train, [s.seed for s in specs], proto,
                          [s.lr for s in specs], 0, graph=graph)
        losses = torch.stack([stepper(step).clone() for step in range(WARMUP_STEPS + 10)])
        assert (stepper.graph is not None) == graph
        runs.append((losses, {k: v.detach().clone() for k, v in model.params.items()}))
    _assert_replay_trains_as_eager(runs, f"linear-mamba, {WARMUP_STEPS + 10} steps", 1e-4)
