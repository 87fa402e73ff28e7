"""``haar``: Theorem 1's S6 layer computes every Haar projection up to a level; checked against the exact projection
within the bound ``symbolic.theorem1`` derives, on the layer's own kernel (unit impulses) and on random
piecewise-constant signals."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import sympy as sp
import torch

from constructions import haar
from common.errors import require
from symbolic import theorem1 as t1
from constructions.layout import Construction
from verify.api import Spec
from verify.blocks import mixer_sizes
from verify.checks import CheckResult, proof_fields, weights_dtype
from verify.memory import check_bytes
from verify.rounding import error_allowance
from verify.specs import batch_for, help_
from verify.tasks.piecewise import PiecewiseConfig, generate, projection

@dataclass(frozen=True)
class HaarParams:
    """Parameters of the Haar check (CLI flags of the same names)."""

    levels: int = field(default=3, metadata=help_("wavelets psi_{j,k} for j = 0..levels (and phi)"))
    seq_len: int = field(default=128, metadata=help_("grid size T, a multiple of 2^(levels+1)"))
    jumps: int = field(default=4, metadata=help_("jumps of each random piecewise-constant signal"))
    samples: int = field(default=64, metadata=help_("random signals checked"))
    seed: int = field(default=0, metadata=help_("signal seed"))
    d_conv: int = field(default=4, metadata=help_("conv width (>= 1; one tap used)"))
    time: str = field(default="input", metadata=help_("input (Theorem 1: time given) or prop1 (time computed by "
                                                      "Proposition 1's layer fed ones)"))

    def task(self) -> PiecewiseConfig:
        return PiecewiseConfig(self.seq_len, self.jumps, self.samples)


TIMES = ("input", "prop1")


def build(p: HaarParams, constants=t1.DEFAULT) -> Construction:
    p.task().validate()
    require(p.time in TIMES, f"Haar check time must be one of {TIMES}, got {p.time!r}")
    return haar.build(p.levels, p.seq_len, d_conv=p.d_conv, constants=constants)


def prop1_time(T: int, engine) -> np.ndarray:
    """Proposition 1: the time 1..T as computed by the time layer fed ones on ``engine``."""
    con = haar.build_time_layer()
    return engine.mixer(con, torch.ones(1, T, 1, dtype=torch.float64))[0, :, 0].double().cpu().numpy()


def inputs(con: Construction, signals: np.ndarray, time_channel: np.ndarray | None = None) -> torch.Tensor:
    """(S, T) signals -> (S, T, d_model) model inputs: coordinate 0 the signal, coordinate 1 the time (raw i, or
    ``time_channel``)."""
    S, T = signals.shape
    x = torch.zeros(S, T, con.config.d_model, dtype=torch.float64)
    x[..., 0] = torch.from_numpy(signals)
    x[..., 1] = torch.arange(1, T + 1, dtype=torch.float64) if time_channel is None else torch.from_numpy(time_channel)
    return x


def outputs(con: Construction, signals: np.ndarray, engine, time_channel: np.ndarray | None = None) -> np.ndarray:
    """The layer's projections at the last step, (S, n_outputs), float64."""
    n_out, res = len(con.info["outputs"]), []
    bs = batch_for(signals.shape[1], con.config.d_inner)
    for i in range(0, len(signals), bs):
        y = engine.mixer(con, inputs(con, signals[i:i + bs], time_channel))[:, -1, :n_out]
        res.append(y.double().cpu().numpy())
    return np.concatenate(res)


def check(con: Construction, p: HaarParams, engine) -> CheckResult:
    """Two claims per wavelet w, both normalised by 2^{j/2} c_w so the bound is eps for every w:
    kernel: sup_i |T K_i - psi_w(s_i)| (K from unit impulses, exact since the layer is linear in x);
    signals: |output - <x, psi_w>| / mean|x|."""
    T, ws = p.seq_len, haar.wavelets(p.levels)
    norms = np.array([b / con.info["eps"] for b in con.info["sup_bounds"]])  # 2^{j/2} c_w
    grid = np.stack([haar.grid_values(j, k, T) for j, k in ws], axis=1)  # (T, W)
    start = time.perf_counter()
    tc, extra = None, {}
    eps = con.proof.error_bound
    if p.time == "prop1":
        tc = prop1_time(T, engine)
        e_time = float(np.abs(tc - np.arange(1, T + 1)).max())
        require(e_time < 0.25, f"Haar check with Proposition 1's time needs a time error < 1/4, got {e_time:.3g}")
        c = con.constants  # the constants the layer was built with (--constant), as the proof's bound uses
        eps = float(sp.N(t1.eps_with_time_error(sp.nsimplify(e_time, rational=True) * (1 + sp.Rational(1, 10**6))
                                                + sp.Rational(1, 10**30), c.kappa, c.lam, sp.Integer(T)), 30))
        extra = {"time": "prop1", "time_max_error": e_time, "eps_with_time_error": eps}
    kernel = outputs(con, np.eye(T), engine, tc) * T  # row i: T K_i
    k_err = np.abs(kernel - grid).max(axis=0) / norms
    signals = generate(p.task(), p.seed)
    got = outputs(con, signals, engine, tc)
    want = projection(signals, grid)
    s_err = np.abs(got - want) / norms[None, :] / np.abs(signals).mean(axis=1, keepdims=True)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    errors = np.concatenate([k_err, s_err.ravel()])
    scale = max(float(np.abs(kernel / norms).max()), float((np.abs(got) / norms[None, :]).max())) + 1.0
    fields = proof_fields(con, engine, T, 0.0)
    allowance = error_allowance(con.config.chain_length(T), engine.dtype_name, weights_dtype(con, engine), scale)
    bound = eps  # Theorem 1's bound (with Proposition 1's time error when the time is computed)
    summary = f"J={p.levels} T={T} m={p.jumps} t={p.time} W={len(ws)} d={con.config.d_model} di={con.config.d_inner} N=1"
    info = {**con.info, **extra, "kernel_max_error": float(k_err.max()),
            "signal_max_error": float(s_err.max()), "normalisation": "error / (2^{j/2} c_w [mean|x|])"}
    fields.update(error_bound=bound, allowance=allowance)
    return CheckResult(con.name, con.theorem, mixer_sizes(con.config), engine.name, engine.dtype_name, len(signals),
                       len(errors), int((errors <= bound + allowance).sum()), float(bound + allowance - errors.max()),
                       seconds=seconds, config={**asdict(p.task()), "seed": p.seed, "levels": p.levels}, info=info,
                       summary=summary, max_error=float(errors.max()),
                       rule="every obligation holds, max error <= proven bound + rounding allowance", **fields)


def memory(p: HaarParams) -> int:
    """The kernel check feeds T unit impulses of length T: T sequences, plus the T x T identity."""
    M = 2 ** min(p.levels + 1, 62)
    d = max(2, M)
    di = -(-(3 * M + 1) // d) * d
    seqs = max(p.samples, p.seq_len)
    return check_bytes(n_tokens=1, n_classes=M, d_model=d, d_inner=di, d_state=1, seq_len=p.seq_len,
                       batch=min(seqs, batch_for(p.seq_len, di)), d_conv=p.d_conv) + 8 * (seqs + M) * (p.seq_len + M)


SPEC = Spec(
    name="haar",
    theorem=haar.THEOREM,
    mixer="Mamba (S6) + time input, gate held constant",
    formulas={"d_model": "2^(J+1) (one output per wavelet + phi; inputs: signal, time)",
              "d_state": "1  (d_inner = 3 channels per jump: 3 * 2^(J+1) + 1)",
              "d_conv": "1 tap used (any d_conv >= 1; default 4)"},
    params=HaarParams,
    defaults=(HaarParams(), HaarParams(time="prop1"), HaarParams(levels=5, seq_len=256, jumps=8, samples=16)),
    build=build,
    check=check,
    constants=t1.DEFAULT,
    memory=memory,
)
