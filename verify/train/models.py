"""Trainable one-layer models: the packed pure-torch/kernel model and the real mamba_ssm module model.

Both expose ``params`` (leaf tensors), ``masks`` (1 = trainable, 0 = frozen, same shapes), ``stacked`` (whether every
parameter has a leading model axis of size K), ``hidden(tokens)`` for tokens (K, batch, L) -> (K, batch, L, d),
``readout`` (K, classes, d), and ``state_dicts()`` (one ``constructions.layout`` state dict per model, on CPU).

The packed model runs its mixer's packed forward (``packed_mamba_forward``, ``packed_s4d_forward``,
``packed_delta_t_forward``, ``packed_mamba2_forward``): the K models in ONE scan call, the scan pluggable (the
registry's ``reference_scan`` in pure torch off CUDA, ``packed_cuda_scan()``, mamba_ssm's kernel, on CUDA).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from constructions.errors import RequirementError, require
from constructions.layout import MambaConfig
from verify.engines.scan import selective_scan_ref
from verify.engines.reference_mamba2 import _work_dtype  # float64 kept, float32 otherwise (A, B, C too)
from verify.train import GATE_OFF_Z


# ---------------------------------------------------------------------------------------------------------------
# Initialization: mamba_ssm.Mamba.__init__'s, drawn from a per-run generator (so packing never changes a model)
# ---------------------------------------------------------------------------------------------------------------


def _uniform(gen, shape, bound):
    return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound


def init_mamba(config: MambaConfig, gen: torch.Generator, dt_min=1e-3, dt_max=0.1, dt_floor=1e-4) -> dict:
    """A fresh ``mamba_ssm.Mamba`` state dict (float64) as its constructor draws it: nn.Linear / nn.Conv1d defaults
    (U(+-1/sqrt(fan_in))), dt_proj weight U(+-dt_rank^-1/2), dt_proj bias = softplus^-1(dt), dt log-uniform in
    [dt_min, dt_max] floored at dt_floor, A_log = log(1..N) (S4D-real), D = 1."""
    c = config
    di, n, r, d = c.d_inner, c.d_state, c.rank, c.d_model
    sd = {"in_proj.weight": _uniform(gen, (2 * di, d), d ** -0.5),
          "conv1d.weight": _uniform(gen, (di, 1, c.d_conv), c.d_conv ** -0.5),
          "x_proj.weight": _uniform(gen, (r + 2 * n, di), di ** -0.5),
          "dt_proj.weight": _uniform(gen, (di, r), r ** -0.5)}
    dt = torch.exp(torch.rand(di, generator=gen, dtype=torch.float64) * (math.log(dt_max) - math.log(dt_min))
                   + math.log(dt_min)).clamp(min=dt_floor)
    sd["dt_proj.bias"] = dt + torch.log(-torch.expm1(-dt))
    sd["A_log"] = torch.log(torch.arange(1, n + 1, dtype=torch.float64)).repeat(di, 1)
    sd["D"] = torch.ones(di, dtype=torch.float64)
    sd["out_proj.weight"] = _uniform(gen, (d, di), di ** -0.5)
    return _add_biases(sd, c, gen, d, di)


def _add_biases(sd: dict, config, gen: torch.Generator, d: int, di: int) -> dict:
    """nn.Linear / nn.Conv1d default biases (in_proj, out_proj if ``config.bias``; conv1d if ``config.conv_bias``)."""
    if config.bias:
        sd["in_proj.bias"] = _uniform(gen, (2 * di,), d ** -0.5)
        sd["out_proj.bias"] = _uniform(gen, (d,), di ** -0.5)
    if config.conv_bias:
        sd["conv1d.bias"] = _uniform(gen, (di,), config.d_conv ** -0.5)
    return sd


def conv_off(config: MambaConfig, sd: dict) -> dict:
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


# ---------------------------------------------------------------------------------------------------------------
# The packed forwards: K blocks of one shape, every parameter with a leading K axis, hidden (K, batch, L, d_model).
# Projections are einsums over the K axis, the causal depthwise conv is one grouped conv over the K*channels, and the
# K models' channels (heads for Mamba-2) are folded into ONE scan call whose B, C (and, for Delta-top, Delta) are
# grouped by model: one set of kernel launches for the whole pack on CUDA.
# ---------------------------------------------------------------------------------------------------------------


def _causal_conv(x: torch.Tensor, p: dict) -> torch.Tensor:
    """SiLU of the K blocks' causal depthwise conv1d on x (b, K*c, L); conv1d.weight (K, c, 1, d_conv)."""
    w = p["conv1d.weight"].flatten(0, 1)
    cb = p["conv1d.bias"].flatten() if "conv1d.bias" in p else None
    return F.silu(F.conv1d(x, w, cb, padding=w.shape[-1] - 1, groups=w.shape[0])[..., :x.shape[-1]])


def _mamba_front(p: dict, hidden: torch.Tensor, di: int) -> tuple[torch.Tensor, torch.Tensor]:
    """in_proj (rows [x | z]) and conv + SiLU on x of K Mamba-style blocks: x, z of shape (b, K*di, L)."""
    K, b, L, _ = hidden.shape
    xz = torch.einsum("kbld,kod->kbol", hidden, p["in_proj.weight"])
    if "in_proj.bias" in p:
        xz = xz + p["in_proj.bias"][:, None, :, None]
    fold = lambda t: t.transpose(0, 1).reshape(b, K * di, L)  # noqa: E731  (K, b, di, L) -> (b, K*di, L)
    return _causal_conv(fold(xz[:, :, :di]), p), fold(xz[:, :, di:])


def _out_proj(y: torch.Tensor, p: dict) -> torch.Tensor:
    """out_proj of K blocks: y (b, K, c, L) -> (K, b, L, d_model)."""
    out = torch.einsum("bkil,koi->kblo", y, p["out_proj.weight"])
    if "out_proj.bias" in p:
        out = out + p["out_proj.bias"][:, None, None, :]
    return out


def packed_mamba_forward(p: dict, hidden: torch.Tensor, config: MambaConfig, scan=selective_scan_ref) -> torch.Tensor:
    """K ``mamba_ssm.Mamba`` blocks at once: hidden (K, batch, L, d_model) -> (K, batch, L, d_model).

    The K*d_inner channels are folded into one scan call with B, C grouped by model, which is the call signature of
    mamba_ssm's ``selective_scan_fn``; with K = 1 this is ``verify.engines.reference.mamba_forward`` operation for
    operation.
    """
    K, b, L, _ = hidden.shape
    di, n, r = config.d_inner, config.d_state, config.rank
    x, z = _mamba_front(p, hidden, di)
    x_dbl = torch.einsum("bkil,kri->bkrl", x.view(b, K, di, L), p["x_proj.weight"])  # (b, K, r + 2N, L)
    dt, B, C = torch.split(x_dbl, [r, n, n], dim=2)
    dt = torch.einsum("bkrl,kir->bkil", dt, p["dt_proj.weight"]).reshape(b, K * di, L)
    work = _work_dtype(hidden)
    A = -torch.exp(p["A_log"].to(work)).reshape(K * di, n)
    y = scan(x, dt, A, B.contiguous(), C.contiguous(), p["D"].reshape(K * di).to(work), z=z,
             delta_bias=p["dt_proj.bias"].reshape(K * di).to(work), delta_softplus=True)
    return _out_proj(y.view(b, K, di, L), p)


def packed_s4d_forward(p: dict, hidden: torch.Tensor, config, scan=selective_scan_ref) -> torch.Tensor:
    """K Mamba-S4D blocks (``verify.engines.mamba_s4d.mamba_s4d_forward``) at once, one ``selective_scan_fn``-style
    call over the K*width channels: B, C input-independent of shape (K*width, N) (cast to A's dtype, as the CUDA
    kernel needs for real B/C), delta zeros with delta_bias = dt_bias."""
    K, b, L, _ = hidden.shape
    w, n = config.width, config.d_state
    x, z = _mamba_front(p, hidden, w)
    x = x.contiguous()
    work = _work_dtype(hidden)
    A = -torch.exp(p["A_log"].to(work)).reshape(K * w, n)
    B, C = p["B"].to(work).reshape(K * w, n), p["C"].to(work).reshape(K * w, n)
    y = scan(x, torch.zeros_like(x), A, B, C, p["D"].reshape(K * w).to(work), z=z.contiguous(),
             delta_bias=p["dt_bias"].reshape(K * w).to(work), delta_softplus=True)
    return _out_proj(y.view(b, K, w, L), p)


def packed_delta_t_forward(p: dict, hidden: torch.Tensor, config, scan=selective_scan_ref) -> torch.Tensor:
    """K Mamba-Delta-top blocks (``verify.engines.delta_t.MambaDeltaT``) at once: one S6 ``scan`` call through
    ``selective_scan_delta_t_via_s6``'s grouped form (group = model; K*N*d_inner channels of state size 1, B/C in
    K*N groups)."""
    from verify.engines.delta_t import selective_scan_delta_t_via_s6

    K, b, L, _ = hidden.shape
    di, n, r = config.d_inner, config.d_state, config.rank
    x, z = _mamba_front(p, hidden, di)
    x_dbl = torch.einsum("bkil,kri->bkrl", x.view(b, K, di, L), p["x_proj.weight"])  # (b, K, r + 2N, L)
    dt, B, C = torch.split(x_dbl, [r, n, n], dim=2)
    dt = torch.einsum("bkrl,knr->bknl", dt, p["dt_proj.weight"])  # (b, K, N, L)
    A = -torch.exp(p["A_log"].to(_work_dtype(hidden))).reshape(K * di, n)
    y = selective_scan_delta_t_via_s6(x, dt, A, B, C, p["D"].reshape(K * di), z, delta_bias=p["dt_proj.bias"],
                                      delta_softplus=True, scan_fn=scan)
    return _out_proj(y.view(b, K, di, L), p)


def ssd_chunk_scan_ref(x, dt, A, B, C, chunk_size=None, D=None, z=None, dt_bias=None, initial_states=None,
                       seq_idx=None, cu_seqlens=None, dt_softplus=False, dt_limit=(0.0, float("inf")),
                       return_final_states=False, return_varlen_states=False):
    """mamba_ssm's ``mamba_chunk_scan_combined`` signature on the pure-torch SSD reference
    (``verify.engines.reference_mamba2.ssd_scan_ref``, an exact sequential scan: ``chunk_size`` only tiles the
    kernel, so it is ignored). x, z (b, L, h, p); dt (b, L, h); A (h,); B, C (b, L, g, n); D (h,) or (h, p);
    dt_bias (h,). Initial/final states and variable-length batches are not supported here."""
    from verify.engines.reference_mamba2 import ssd_scan_ref

    require(initial_states is None and seq_idx is None and cu_seqlens is None and not return_final_states
            and not return_varlen_states, "the reference SSD scan takes no initial states, seq_idx or cu_seqlens "
                                          "and returns y only")
    return ssd_scan_ref(x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=dt_limit)


def packed_mamba2_forward(p: dict, hidden: torch.Tensor, config, scan=ssd_chunk_scan_ref) -> torch.Tensor:
    """K ``mamba_ssm.Mamba2`` blocks (``verify.engines.reference_mamba2.mamba2_forward``) at once, with one SSD
    ``scan`` call of ``mamba_chunk_scan_combined``'s signature: the K models' heads folded to K*nheads (model k's
    heads k*nheads ..), their B/C groups to K*ngroups, so head k*nheads + j reads group k*ngroups + j // (nheads /
    ngroups), model k's own. RMSNormGated (when on) keeps the K axis: groups of d_ssm / ngroups channels per model,
    weight (K, d_ssm) broadcast."""
    from verify.engines.reference_mamba2 import rms_norm_gated_ref

    c = config
    K, b, L, _ = hidden.shape
    h, hp, g, n, ds = c.nheads, c.head_dim, c.ngroups, c.d_state, c.ssm_width
    zxbcdt = torch.einsum("kbld,kod->kblo", hidden, p["in_proj.weight"])
    if "in_proj.bias" in p:
        zxbcdt = zxbcdt + p["in_proj.bias"][:, None, None, :]
    rows, ch = c.in_proj_rows(), c.conv_channels()
    by_model = lambda t: t.permute(1, 2, 0, 3)  # noqa: E731  (K, b, L, m) -> (b, L, K, m)
    xbc = zxbcdt[..., rows["x"].start:rows["C"].stop]  # (K, b, L, conv_dim)
    xbc = _causal_conv(xbc.permute(1, 0, 3, 2).reshape(b, K * c.conv_dim, L), p)  # (b, K*conv_dim, L)
    xbc = xbc.view(b, K, c.conv_dim, L).permute(0, 3, 1, 2)  # (b, L, K, conv_dim)
    # contiguous copies with a unit last stride (as mamba_ssm.Mamba2's torch.split views of its (b, L, conv_dim) conv
    # output have): the conv's L-major views here (unit stride along L) preceded the H100 faults in
    # mamba_chunk_scan_combined described in results/train/README.md, which these copies did not remove
    heads = lambda t: t.reshape(b, L, K * h, hp).contiguous()  # noqa: E731  (b, L, K, d_ssm) -> (b, L, K*nheads, headdim)
    groups = lambda t: t.reshape(b, L, K * g, n).contiguous()  # noqa: E731  (b, L, K, g*n) -> (b, L, K*ngroups, d_state)
    x, B, C = heads(xbc[..., ch["x"]]), groups(xbc[..., ch["B"]]), groups(xbc[..., ch["C"]])
    z = by_model(zxbcdt[..., rows["z"]])  # (b, L, K, d_ssm)
    dt = by_model(zxbcdt[..., rows["dt"]]).reshape(b, L, K * h).contiguous()
    A = -torch.exp(p["A_log"].to(_work_dtype(hidden))).reshape(K * h)
    D = p["D"].reshape(K * h, hp) if c.D_has_hdim else p["D"].reshape(K * h)
    y = scan(x, dt, A, B, C, c.chunk_size, D=D, z=None if c.rmsnorm else heads(z),
             dt_bias=p["dt_bias"].reshape(K * h), dt_softplus=True)
    y = y.reshape(b, L, K, ds)
    if c.rmsnorm:
        y = rms_norm_gated_ref(y, p["norm.weight"], z, group_size=ds // g, norm_before_gate=c.norm_before_gate)
    if c.d_mlp > 0:
        y = torch.cat([F.silu(by_model(zxbcdt[..., rows["z0"]])) * by_model(zxbcdt[..., rows["x0"]]), y], dim=-1)
    return _out_proj(y.permute(0, 2, 3, 1), p)


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


def with_position(hidden: torch.Tensor, position: bool) -> torch.Tensor:
    """The "+PE" input (KEEP n-TH): the last embedding coordinate replaced by the raw 1-based position t, as
    ``constructions.layout.embed`` writes ``Construction.position_channel``."""
    if not position:
        return hidden
    L = hidden.shape[-2]
    t = torch.arange(1, L + 1, device=hidden.device, dtype=hidden.dtype).view(L, 1).expand(*hidden.shape[:-1], 1)
    return torch.cat([hidden[..., :-1], t], dim=-1)


class PackedModel:
    """K models of one shape, parameters stacked on a leading axis, trained in one set of kernel launches."""

    stacked = True
    position = False  # True: the last embedding coordinate is the position (the task's "+PE")

    def __init__(self, mixer, config, inits: list[dict], masks: dict, device, dtype=torch.float32, scan=None):
        self.mixer, self.config, self.K = mixer, config, len(inits)
        self.scan = scan or mixer.reference_scan
        self.params = {k: torch.stack([sd[k] for sd in inits]).to(device, dtype).requires_grad_(True)
                       for k in inits[0]}
        self.masks = {k: torch.stack([m for _ in inits]).to(device, dtype) for k, m in masks.items()}

    @property
    def readout(self) -> torch.Tensor:  # (K, classes, d)
        return self.params["readout.weight"]

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """Mixer output (K, batch, L, d) for tokens (K, batch, L), model k reading tokens[k]."""
        p = self.params
        emb = p["embedding.weight"]  # (K, n_tokens, d)
        hidden = torch.gather(emb, 1, tokens.reshape(self.K, -1, 1).expand(-1, -1, emb.shape[-1]))
        hidden = with_position(hidden.view(*tokens.shape, emb.shape[-1]), self.position)
        mix = {k[len("mixer."):]: v for k, v in p.items() if k.startswith("mixer.")}
        return self.mixer.packed_forward(mix, hidden, self.config, self.scan)

    def state_dicts(self) -> list[dict]:
        return [{k: v[i].detach().cpu().clone() for k, v in self.params.items()} for i in range(self.K)]


class ModuleModel:
    """One real mamba_ssm module (K = 1) with the embedding and readout as plain parameters."""

    stacked = False
    position = False

    def __init__(self, mixer, config, init: dict, masks: dict, device, dtype=torch.float32):
        self.K, self.config, self.mixer = 1, config, mixer
        self.module = mixer.cuda_module(config, device, dtype)
        self.module.load_state_dict({k[len("mixer."):]: v for k, v in init.items() if k.startswith("mixer.")},
                                    strict=True)
        self.emb = init["embedding.weight"].to(device, dtype).requires_grad_(True)
        self.readout_weight = init["readout.weight"].to(device, dtype).requires_grad_(True)
        self.params = {"embedding.weight": self.emb, "readout.weight": self.readout_weight,
                       **{f"mixer.{k}": v for k, v in self.module.named_parameters()}}
        self.masks = {k: m.to(device, dtype) for k, m in masks.items()}

    @property
    def readout(self) -> torch.Tensor:
        return self.readout_weight[None]

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.module(with_position(self.emb[tokens[0]], self.position))[None]

    def state_dicts(self) -> list[dict]:
        return [{k: v.detach().cpu().clone() for k, v in self.params.items()}]


# ---------------------------------------------------------------------------------------------------------------
# Mamba-2, Mamba-S4D, Mamba-Delta-top: initial state dicts and gate off (their packed forwards are above)
# ---------------------------------------------------------------------------------------------------------------


def _log_uniform_dt(gen, n, dt_min=1e-3, dt_max=0.1, dt_floor=1e-4) -> torch.Tensor:
    """softplus^-1(dt), dt log-uniform in [dt_min, dt_max] floored at dt_floor (mamba_ssm's dt init)."""
    dt = torch.exp(torch.rand(n, generator=gen, dtype=torch.float64) * (math.log(dt_max) - math.log(dt_min))
                   + math.log(dt_min)).clamp(min=dt_floor)
    return dt + torch.log(-torch.expm1(-dt))


def init_mamba2(config, gen: torch.Generator) -> dict:
    """A fresh ``mamba_ssm.Mamba2`` state dict (float64) as its constructor draws it: nn.Linear / nn.Conv1d defaults,
    dt_bias = softplus^-1(dt) with dt log-uniform in [1e-3, 0.1], A_log = log(U[1, 16]) per head, D = 1, norm 1."""
    sd = config.zeros()
    d, di = config.d_model, config.d_inner
    for k, v in sd.items():
        if k.startswith("in_proj."):
            v.copy_(_uniform(gen, v.shape, d ** -0.5))
        elif k.startswith("conv1d."):
            v.copy_(_uniform(gen, v.shape, config.d_conv ** -0.5))
        elif k.startswith("out_proj."):
            v.copy_(_uniform(gen, v.shape, di ** -0.5))
    sd["dt_bias"] = _log_uniform_dt(gen, config.nheads)
    sd["A_log"] = torch.log(1 + 15 * torch.rand(config.nheads, generator=gen, dtype=torch.float64))
    sd["D"] = torch.ones_like(sd["D"])
    if "norm.weight" in sd:
        sd["norm.weight"] = torch.ones_like(sd["norm.weight"])
    return sd


def init_s4d(config, gen: torch.Generator) -> dict:
    """A fresh Mamba-S4D state dict (float64): in_proj / conv1d / out_proj as ``init_mamba``; the S4D mixer as
    S4D-real (A_log = log(1..N) per channel, B = 1, C ~ N(0, 1/N)), dt_bias = softplus^-1(dt) as Mamba's, D = 1."""
    d, di, n = config.d_model, config.width, config.d_state
    sd = {"in_proj.weight": _uniform(gen, (2 * di, d), d ** -0.5),
          "conv1d.weight": _uniform(gen, (di, 1, config.d_conv), config.d_conv ** -0.5),
          "dt_bias": _log_uniform_dt(gen, di),
          "A_log": torch.log(torch.arange(1, n + 1, dtype=torch.float64)).repeat(di, 1),
          "B": torch.ones(di, n, dtype=torch.float64),
          "C": torch.randn(di, n, generator=gen, dtype=torch.float64) * n ** -0.5,
          "D": torch.ones(di, dtype=torch.float64),
          "out_proj.weight": _uniform(gen, (d, di), di ** -0.5)}
    return _add_biases(sd, config, gen, d, di)


def init_delta_t(config, gen: torch.Generator) -> dict:
    """``init_mamba`` with dt_proj of Mamba-Delta-top's shape: weight (d_state, dt_rank) U(+-dt_rank^-1/2), bias
    softplus^-1(dt) of d_state log-uniform draws."""
    sd = init_mamba(config, gen)
    sd["dt_proj.weight"] = _uniform(gen, (config.d_state, config.rank), config.rank ** -0.5)
    sd["dt_proj.bias"] = _log_uniform_dt(gen, config.d_state)
    return sd


def gate_off_rows(sd: dict, rows: slice) -> dict:
    """Freeze the gate of a block whose gate pre-activation z is rows ``rows`` of in_proj: weight 0, bias GATE_OFF_Z
    (silu(z) constant). Returns the masks (1 = trainable)."""
    require("in_proj.bias" in sd, "gate off needs in_proj.bias (bias=True) to hold silu(z) constant")
    sd["in_proj.weight"][rows] = 0.0
    sd["in_proj.bias"][rows] = GATE_OFF_Z
    wm, bm = torch.ones_like(sd["in_proj.weight"]), torch.ones_like(sd["in_proj.bias"])
    wm[rows], bm[rows] = 0.0, 0.0
    return {"in_proj.weight": wm, "in_proj.bias": bm}
