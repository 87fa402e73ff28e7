"""Pieces several block kinds share (``verify.blocks``): mamba_ssm's initial draws, the freezing rules of training, the
packed (K models at once) projections and conv of Mamba-style blocks, and mamba_ssm's CUDA scans (imported when
asked for).

The packed forwards run K blocks of one shape, every parameter with a leading K axis, hidden (K, batch, L, d_model).
Projections are einsums over the K axis, the causal depthwise conv is one grouped conv over the K*channels, and the
K models' channels (heads for Mamba-2) are folded into ONE scan call whose B, C (and, for Delta-top, Delta) are
grouped by model: one set of kernel launches for the whole pack on CUDA.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from common.errors import RequirementError, require

GATE_OFF_Z = 1.0  # frozen z pre-activation when the gate is off: silu(1) ~ 0.731 everywhere


def lg(x: float) -> int:
    """ceil(log2 x), at least 1: the logarithm of the sweeps' bound convention (``verify.train.sweep``)."""
    return max(1, math.ceil(math.log2(x)))


# ---------------------------------------------------------------------------------------------------------------
# Initialization: mamba_ssm's draws, from a per-run generator (so packing never changes a model)
# ---------------------------------------------------------------------------------------------------------------


def uniform(gen, shape, bound):
    """U(-bound, bound) of ``shape``, float64 (nn.Linear / nn.Conv1d's default init with bound 1/sqrt(fan_in))."""
    return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound


def log_uniform_dt(gen, n, dt_min=1e-3, dt_max=0.1, dt_floor=1e-4) -> torch.Tensor:
    """softplus^-1(dt), dt log-uniform in [dt_min, dt_max] floored at dt_floor (mamba_ssm's dt init)."""
    dt = torch.exp(torch.rand(n, generator=gen, dtype=torch.float64) * (math.log(dt_max) - math.log(dt_min))
                   + math.log(dt_min)).clamp(min=dt_floor)
    return dt + torch.log(-torch.expm1(-dt))


def add_biases(sd: dict, config, gen: torch.Generator, d: int, di: int) -> dict:
    """nn.Linear / nn.Conv1d default biases (in_proj, out_proj if ``config.bias``; conv1d if ``config.conv_bias``)."""
    if config.bias:
        sd["in_proj.bias"] = uniform(gen, (2 * di,), d ** -0.5)
        sd["out_proj.bias"] = uniform(gen, (d,), di ** -0.5)
    if config.conv_bias:
        sd["conv1d.bias"] = uniform(gen, (di,), config.d_conv ** -0.5)
    return sd


# ---------------------------------------------------------------------------------------------------------------
# Freezing rules (training): gate off, conv at the identity, in/out projections at the identity
# ---------------------------------------------------------------------------------------------------------------


def gate_off_rows(sd: dict, rows: slice) -> dict:
    """Freeze the gate of a block whose gate pre-activation z is rows ``rows`` of in_proj: weight 0, bias GATE_OFF_Z
    (silu(z) constant). Returns the masks (1 = trainable)."""
    require("in_proj.bias" in sd, "gate off needs in_proj.bias (bias=True) to hold silu(z) constant")
    sd["in_proj.weight"][rows] = 0.0
    sd["in_proj.bias"][rows] = GATE_OFF_Z
    wm, bm = torch.ones_like(sd["in_proj.weight"]), torch.ones_like(sd["in_proj.bias"])
    wm[rows], bm[rows] = 0.0, 0.0
    return {"in_proj.weight": wm, "in_proj.bias": bm}


def conv_off(config, sd: dict) -> dict:
    """Freeze the conv at the identity (current-token tap 1, others and bias 0); x = silu(in_proj x) remains."""
    sd["conv1d.weight"].zero_()
    sd["conv1d.weight"][:, 0, -1] = 1.0
    masks = {"conv1d.weight": torch.zeros_like(sd["conv1d.weight"])}
    if "conv1d.bias" in sd:
        sd["conv1d.bias"].zero_()
        masks["conv1d.bias"] = torch.zeros_like(sd["conv1d.bias"])
    return masks


def proj_off(sd: dict, x_rows: slice, masks: dict) -> dict:
    """Freeze in_proj's x rows and out_proj at the identity (biases 0): the block reads the embedding itself and
    writes the SSM's output itself, as the paper's KEEP n-TH models (embedding -> SSM -> linear output; the block's
    SiLU after the conv stays). Needs a mixer width equal to d_model. Updates and returns ``masks`` (1 = trainable)."""
    w, out = sd["in_proj.weight"], sd["out_proj.weight"]
    width = x_rows.stop - x_rows.start
    require(width == w.shape[1] == out.shape[0] == out.shape[1],
            f"in/out projections off need the mixer width to equal d_model, got {width} and {w.shape[1]}")
    w[x_rows] = torch.eye(width, dtype=w.dtype)
    out.copy_(torch.eye(width, dtype=out.dtype))
    masks.setdefault("in_proj.weight", torch.ones_like(w))[x_rows] = 0.0
    masks["out_proj.weight"] = torch.zeros_like(out)
    for name, rows in (("in_proj.bias", x_rows), ("out_proj.bias", slice(None))):
        if name in sd:
            sd[name][rows] = 0.0
            masks.setdefault(name, torch.ones_like(sd[name]))[rows] = 0.0
    return masks


def freezer(z_rows, x_rows=None):
    """The ``Training.freeze`` of a block whose gate pre-activation is rows ``z_rows(config)`` of in_proj (and whose SSM
    input is rows ``x_rows(config)``, where the in/out projections can be frozen): gate off unless ``spec.gate``, conv
    at the identity unless ``spec.conv``, projections at the identity unless ``spec.proj``."""
    def freeze(config, spec, sd: dict) -> dict:
        masks = {} if spec.gate else gate_off_rows(sd, z_rows(config))
        if not spec.conv:
            masks.update(conv_off(config, sd))
        if not spec.proj:
            require(x_rows is not None, f"{spec.mixer} has no in/out projections-off setting (proj=False)")
            proj_off(sd, x_rows(config), masks)
        return masks
    return freeze


# ---------------------------------------------------------------------------------------------------------------
# Packed forwards: the parts Mamba-style blocks share
# ---------------------------------------------------------------------------------------------------------------


def causal_conv(x: torch.Tensor, p: dict) -> torch.Tensor:
    """SiLU of the K blocks' causal depthwise conv1d on x (b, K*c, L); conv1d.weight (K, c, 1, d_conv)."""
    w = p["conv1d.weight"].flatten(0, 1)
    cb = p["conv1d.bias"].flatten() if "conv1d.bias" in p else None
    return F.silu(F.conv1d(x, w, cb, padding=w.shape[-1] - 1, groups=w.shape[0])[..., :x.shape[-1]])


def mamba_front(p: dict, hidden: torch.Tensor, di: int) -> tuple[torch.Tensor, torch.Tensor]:
    """in_proj (rows [x | z]) and conv + SiLU on x of K Mamba-style blocks: x, z of shape (b, K*di, L)."""
    K, b, L, _ = hidden.shape
    xz = torch.einsum("kbld,kod->kbol", hidden, p["in_proj.weight"])
    if "in_proj.bias" in p:
        xz = xz + p["in_proj.bias"][:, None, :, None]
    fold = lambda t: t.transpose(0, 1).reshape(b, K * di, L)  # noqa: E731  (K, b, di, L) -> (b, K*di, L)
    return causal_conv(fold(xz[:, :, :di]), p), fold(xz[:, :, di:])


def out_proj_packed(y: torch.Tensor, p: dict) -> torch.Tensor:
    """out_proj of K blocks: y (b, K, c, L) -> (K, b, L, d_model)."""
    out = torch.einsum("bkil,koi->kblo", y, p["out_proj.weight"])
    if "out_proj.bias" in p:
        out = out + p["out_proj.bias"][:, None, None, :]
    return out


# ---------------------------------------------------------------------------------------------------------------
# mamba_ssm's CUDA scans, imported when asked for
# ---------------------------------------------------------------------------------------------------------------


def cuda_scan():
    """mamba_ssm's selective-scan kernel (the one ``mamba_ssm.Mamba`` calls), or a RequirementError."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError as e:
        raise RequirementError(f"packed training on CUDA needs mamba_ssm's selective_scan_fn ({e})") from None
    return selective_scan_fn


def cuda_ssd_scan():
    """mamba_ssm's chunked SSD scan (the Triton kernels ``mamba_ssm.Mamba2`` calls), or a RequirementError."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except ImportError as e:
        raise RequirementError(f"packed Mamba-2 training on CUDA needs mamba_ssm's mamba_chunk_scan_combined "
                               f"({e})") from None
    return mamba_chunk_scan_combined
