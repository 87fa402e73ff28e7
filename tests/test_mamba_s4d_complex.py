"""Block kind ``mamba-s4d-complex`` (verify.blocks.mamba_s4d_complex): S4D's complex diagonal mixer inside Huang et
al.'s Mamba-S4D block.

* its packed forward (K models, S4D's Vandermonde kernel and an FFT convolution) equals K separate forwards of an
  independent step-by-step complex recurrence written here (outputs and gradients, float64), and a discretisation
  other than ZOH (Euler on B) is told apart;
* its trained-parameter count against the paper's Tables A.2/A.4: the formula the paper's 18 counts fit, checked
  against the paper's printed numbers, and ours beside it;
* a pack trains each model as if alone, and a short CPU training run learns MQAR well above chance.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from common.errors import RequirementError
from paper_figures.params import trained_params
from verify.blocks import KINDS
from verify.blocks.mamba_s4d_complex import MambaS4DComplex, MambaS4DComplexConfig
from verify.train import registry
from verify.train.loop import initial_state, train_pack
from verify.train.spec import RunSpec, protocol

pytestmark = pytest.mark.usefixtures("one_thread")

KIND = "mamba-s4d-complex"
SHAPE = dict(task="mqar", kappa=2, vocab=4, seq_len=8, d_model=8, d_state=4)


def recurrence(p: dict, hidden: torch.Tensor, cfg, euler_b: bool = False) -> torch.Tensor:
    """The block by its definition, one step at a time in complex arithmetic: in_proj, causal conv + SiLU, h_t =
    exp(Delta A) h_{t-1} + B_bar x_t with B_bar = (exp(Delta A) - 1) / A B (ZOH; ``euler_b``: Delta B), y_t = 2 Re(C
    h_t) + D x_t, gate silu(z), out_proj. hidden (b, L, d_model)."""
    w, L = cfg.width, hidden.shape[1]
    xz = F.linear(hidden, p["in_proj.weight"], p.get("in_proj.bias"))
    x, z = xz[..., :w].transpose(1, 2), xz[..., w:]
    wc = p["conv1d.weight"]
    x = F.silu(F.conv1d(x, wc, p.get("conv1d.bias"), padding=wc.shape[-1] - 1, groups=w)[..., :L]).transpose(1, 2)
    A = -torch.exp(p["log_A_real"]) + 1j * p["A_imag"]                 # (w, m)
    dt = torch.exp(p["log_dt"])[:, None]                                # (w, 1)
    Bc = p["B"][:, 0] + 1j * p["B"][:, 1]                               # (m,)
    Cc = p["C"][..., 0] + 1j * p["C"][..., 1]                           # (w, m)
    Bbar = dt * Bc if euler_b else (torch.exp(dt * A) - 1) / A * Bc     # (w, m)
    h = torch.zeros(hidden.shape[0], w, cfg.modes, dtype=A.dtype)
    ys = []
    for t in range(L):
        h = torch.exp(dt * A) * h + Bbar * x[:, t, :, None]
        ys.append(2 * (Cc * h).sum(-1).real + p["D"] * x[:, t])
    y = torch.stack(ys, dim=1) * F.silu(z)
    return F.linear(y, p["out_proj.weight"], p.get("out_proj.bias"))


def _stacked(specs, gen):
    """The K runs' initial mixer state dicts stacked, every trainable entry moved by N(0, 0.1^2) (so that no two models
    share A, B, D ...), the frozen ones (gate off) kept."""
    states = [initial_state(s) for s in specs]
    strip = lambda d: {k[len("mixer."):]: v for k, v in d.items() if k.startswith("mixer.")}  # noqa: E731
    masks = strip(states[0][1])
    out = {}
    for k, v0 in strip(states[0][0]).items():
        v = torch.stack([strip(sd)[k] for sd, _ in states])
        m = masks.get(k, torch.ones_like(v0))
        out[k] = (v + 0.1 * torch.randn(v.shape, generator=gen, dtype=v.dtype) * m).requires_grad_(True)
    return out


@pytest.mark.parametrize("gate,conv", [(True, True), (False, False)])
@pytest.mark.parametrize("K", [1, 3])
def test_packed_forward_and_gradients_are_the_recurrence_per_model(K, gate, conv):
    specs = [RunSpec(mixer=KIND, gate=gate, conv=conv, seed=s, lr=0.01, **SHAPE) for s in range(K)]
    m = registry.mixer(KIND)
    cfg = m.block_config(specs[0])
    gen = torch.Generator().manual_seed(K)
    p = _stacked(specs, gen)
    h = torch.randn(K, 2, 7, cfg.d_model, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(K, 2, 7, cfg.d_model, generator=gen, dtype=torch.float64)
    out = m.packed_forward(p, h, cfg)
    want = torch.stack([recurrence({k: v[i] for k, v in p.items()}, h[i], cfg) for i in range(K)])
    torch.testing.assert_close(out, want, rtol=0, atol=1e-10)
    got_g = torch.autograd.grad((out * weight).sum(), [h, *p.values()])
    want_g = torch.autograd.grad((want * weight).sum(), [h, *p.values()])
    for name, g, w in zip(["hidden", *p], got_g, want_g):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-9, msg=lambda msg, name=name: f"d/d {name}: {msg}")


def test_the_discretisation_is_zoh_not_euler_and_the_module_is_the_forward():
    cfg = MambaS4DComplexConfig(d_model=6, d_state=4)
    sd = KINDS[KIND].training.init(cfg, torch.Generator().manual_seed(3))
    sd["log_dt"] = torch.full_like(sd["log_dt"], math.log(0.5))  # a step large enough for ZOH and Euler to differ
    h = torch.randn(2, 9, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    got = KINDS[KIND].forward(sd, h, cfg)
    torch.testing.assert_close(got, recurrence(sd, h, cfg), rtol=0, atol=1e-10)
    assert (got - recurrence(sd, h, cfg, euler_b=True)).abs().max() > 1e-2
    module = MambaS4DComplex(**cfg.arguments(), dtype=torch.float64)
    module.load_state_dict(sd, strict=True)
    torch.testing.assert_close(module(h), got, rtol=0, atol=1e-6)  # its mixer parameters are float32 (S4D's, mamba_ssm's)


def test_odd_or_zero_state_size_is_refused():
    for n in (0, 1, 3):
        with pytest.raises(RequirementError, match="even d_state"):
            MambaS4DComplexConfig(d_model=4, d_state=n)


# --- parameter counts against the paper --------------------------------------------------------------------------

# Huang et al., Tables A.2 (S4D+PE) and A.4 (S4D, no PE): trained parameters in thousands, rows d = 8, 32, 64,
# columns N = 8, 32, 64 (the same at every T).
PAPER = {True: [(2.1, 2.5, 3.0), (8.7, 10.3, 12.4), (17.5, 20.6, 24.8)],
         False: [(2.2, 2.6, 3.2), (8.8, 10.4, 12.5), (17.7, 20.8, 24.9)]}
CELLS = [(pe, d, n, PAPER[pe][i][j] * 1000) for pe in PAPER for i, d in enumerate((8, 32, 64))
         for j, n in enumerate((8, 32, 64))]


def _paper_formula(d, n, pe, vocab=128):
    """The count all 18 of the paper's S4D cells fit: embedding and readout 2 |V| d (less |V| where the position
    replaces an embedding coordinate), A and C complex (N/2 each per channel: 2 d N), B shared (N), 4 d."""
    return 2 * vocab * d - vocab * pe + 2 * d * n + n + 4 * d


@pytest.mark.parametrize("pe,d,n,paper", CELLS)
def test_the_papers_counts_fit_the_complex_s4d_formula(pe, d, n, paper):
    """The formula reproduces the paper's printed count (rounded to 0.1k, half up); the real-diagonal ablation's
    count 3 d N + 2 d does not at N = 64."""
    assert math.floor(_paper_formula(d, n, pe) / 100 + 0.5) == round(paper / 100)
    if n == 64:
        real = 2 * 128 * d - 128 * pe + 3 * d * n + 2 * d
        assert math.floor(real / 100 + 0.5) != round(paper / 100)


@pytest.mark.parametrize("pe,d,n,paper", CELLS)
def test_our_trained_count_is_the_papers_within_two_percent(pe, d, n, paper):
    """Ours (the paper's architecture: embedding -> S4D -> readout, in/out projections, conv and gate frozen):
    2 d N (A, C) + N (B) + d (log_dt) + d (D), 2 d fewer than the paper's formula (0.7%); within 2% of its printed count."""
    spec = RunSpec(task="keep-nth", mixer=KIND, vocab=128, d_model=d, d_state=n, seed=0, lr=0.01, seq_len=50,
                   gate=False, conv=False, proj=False, task_args=(("n", 5), ("pe", pe)))
    ours = trained_params(spec)
    assert ours == 2 * 128 * d - 128 * pe + 2 * d * n + n + 2 * d == _paper_formula(d, n, pe) - 2 * d
    assert abs(ours / paper - 1) < 0.02  # the paper prints 0.1k: 2072 against 2.1k at d = N = 8 is 1.3%


# --- training ------------------------------------------------------------------------------------------------------

# packing trains each model as if alone: tests/test_train_packed.py (parametrised over the packed kinds)


def test_a_short_cpu_run_learns_mqar_above_chance():
    """kappa = 2, |V| = 4, T = 8, 150 steps: the trained models answer well above chance (1/4), and better than at
    the start (the run's first validation)."""
    proto = protocol("smoke", max_steps=150, train_samples=2048, val_samples=128, test_samples=256)
    specs = [RunSpec(mixer=KIND, seed=s, lr=0.01, protocol=proto, gate=True, **{**SHAPE, "d_model": 16})
             for s in range(2)]
    for rec in train_pack(specs):
        r = rec["result"]
        assert r["test_acc"] > 0.5 and r["history"][-1][2] > r["history"][0][2] - 1e-9, r["history"]


@pytest.mark.cuda
def test_cuda_training_matches_the_cpu():
    """The packed step on CUDA (a CUDA graph: the FFT convolution needs no host synchronisation) trains as on the
    CPU, float32 both."""
    import warnings

    proto = protocol("smoke", max_steps=12, eval_every=4, train_samples=256, val_samples=64, test_samples=64,
                     stop_value=2.0)
    specs = [RunSpec(mixer=KIND, seed=s, lr=0.01, protocol=proto, gate=True, **SHAPE) for s in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed graph capture warns
        gpu = train_pack(specs, device="cuda")
    cpu = train_pack(specs)
    for a, b in zip(gpu, cpu):
        torch.testing.assert_close(torch.tensor(a["result"]["history"]), torch.tensor(b["result"]["history"]),
                                   rtol=1e-3, atol=1e-3)
