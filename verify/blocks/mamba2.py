"""Block kind ``mamba2``: the Mamba-2 block with its SSD mixer, as ``mamba_ssm.Mamba2`` (Dao & Gu 2024).

Config ``constructions.layout.Mamba2Config`` (``mamba_ssm.Mamba2``'s constructor arguments). The reference forward
``mamba2_forward`` is ``mamba_ssm.Mamba2.forward`` on its ``use_mem_eff_path=False`` path (no inference cache); it
never imports mamba_ssm. Every op has the signature and semantics of the mamba_ssm op it mirrors:

* ``verify.engines.scan.ssd_scan_ref`` ~ ``mamba_chunk_scan_combined`` (see there; ``ssd_chunk_scan_ref`` below is it
  with the kernel's full signature, for the packed training forward);
* ``verify.engines.scan.rms_norm_gated_ref`` ~ ``layernorm_gated.rms_norm_ref`` (see there);
* ``mamba2_forward``: in_proj rows [z0 | x0 | z | xBC | dt]; causal depthwise conv over xBC + SiLU; split x | B | C;
  A = -exp(A_log); the scan (gate inside it when rmsnorm is off); RMSNormGated when on; ``silu(z0) * x0`` prepended
  when d_ssm < d_inner; out_proj.

Real modules: ``mamba_ssm.Mamba2`` (``verify.engines.cuda.mamba2_module``: its unfused path with its torch conv), and
transformers' ``Mamba2Mixer`` through the layout below.

transformers' layout (``transformers_state_dict``; the engine ``verify.engines.hf`` and the export's loader use it).
The names are mamba_ssm's, but transformers has no ``d_ssm < d_inner`` split: its in_proj rows are
[z | x | B | C | dt] with ``intermediate_size = expand * d_model`` SSM channels, mamba_ssm's [z0 | x0 | z | x | B | C |
dt]. The gated-MLP rows z0 and x0 are dropped (exact only when they are zero, which is required), the x and z rows,
the x conv channels and out_proj's SSM columns are padded with zeros up to the smallest multiple of d_model that holds
d_ssm (one head: the head grows; a zero x channel carries nothing through the scan, its y is 0 and its out_proj column
is 0), and out_proj's gated-MLP columns are dropped.

Gated RMSNorm. transformers always applies ``norm(y, z) = w * g / sqrt(mean(g^2) + eps)`` with ``g = y * silu(z)``
(groups of ``intermediate_size / n_groups`` channels) and has no switch for mamba_ssm's ``rmsnorm=False``
(``y * silu(z)`` only), which the constructions use. The module is built with ``eps = 2^100`` and the layout sets
``w = 2^50`` (``NORM_EPS``, ``NORM_WEIGHT``), both free parameters of transformers' module that the construction
does not set. In float32, the norm's arithmetic, ``mean(g^2) + 2^100`` rounds to 2^100 whenever ``mean(g^2) < 2^75``
(half an ulp of 2^100 is 2^76), ``rsqrt(2^100) = 2^-50`` and the products with 2^-50 and 2^50 are exact (powers of
two; below |g| = 2^-76, where g 2^-50 is subnormal, the error is under 2^-99 absolute), so the norm returns g and the
margins are comparable with every other engine's. In real arithmetic the factor is ``(1 + mean(g^2) / 2^100)^(-1/2)``
in (0, 1]: it can only shrink a margin, never create one. ``mean(g^2) < 2^75`` (|g| below ~2e11) holds for every
construction here by many orders of magnitude.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from common.errors import require
from constructions.layout import Mamba2Config
from verify.blocks import BlockKind, RealModule, Training
from verify.blocks.common import causal_conv, cuda_ssd_scan, freezer, lg, log_uniform_dt, out_proj_packed, uniform
from verify.engines.scan import rms_norm_gated_ref, ssd_scan_ref, work_dtype


UPDATE_RULE = (
    "Mamba-2 (SSD), per head h < nheads (headdim channels each, B and C of group g = h // (nheads / ngroups)): "
    "state_t[h] = exp(Delta_t[h] A[h]) state_{t-1}[h] + Delta_t[h] x_t[h] B_t[g]^T (headdim x d_state; A a scalar "
    "per head), y_t[h] = state_t[h] C_t[g] + D[h] x_t[h]. Here in_proj(u) rows are [z0 | x0 | z | x | B | C | dt] "
    "(z0, x0: the gated MLP silu(z0) * x0 of the d_inner - d_ssm channels outside the SSM), [x | B | C] pass a causal "
    "depthwise conv1d + SiLU, Delta = softplus(dt + dt_bias), A = -exp(A_log); out = out_proj([silu(z0) * x0 | "
    "y * silu(z)]) (rmsnorm=True: the gated RMSNorm of y * silu(z) instead of y * silu(z)).")

# Mamba-2's gated norm made the identity on g = y * silu(z) (module docstring, "Gated RMSNorm"): eps 2^100, weight 2^50.
NORM_EPS, NORM_WEIGHT = 2.0 ** 100, 2.0 ** 50

# transformers' Mamba2Mixer in_proj row blocks, in its order, from mamba_ssm's (``Mamba2Config.in_proj_rows``);
# True: padded with zero rows up to transformers' intermediate size. mamba_ssm's gated-MLP rows are dropped.
MAMBA2_IN_PROJ = (("z", True), ("x", True), ("B", False), ("C", False), ("dt", False))
MAMBA2_DROPPED = ("z0", "x0")


def mamba2_forward(params: dict[str, torch.Tensor], hidden: torch.Tensor, config) -> torch.Tensor:
    """``mamba_ssm.Mamba2.forward`` on hidden (batch, L, d_model) with mamba_ssm's parameter names."""
    c, L = config, hidden.shape[1]
    zxbcdt = F.linear(hidden, params["in_proj.weight"], params.get("in_proj.bias"))
    rows = c.in_proj_rows()
    z0, x0, z, dt = (zxbcdt[..., rows[k]] for k in ("z0", "x0", "z", "dt"))
    xbc = zxbcdt[..., rows["x"].start:rows["C"].stop].transpose(1, 2).contiguous()
    w = params["conv1d.weight"]
    xbc = F.silu(F.conv1d(xbc, w, params.get("conv1d.bias"), padding=w.shape[-1] - 1, groups=w.shape[0])[..., :L])
    xbc = xbc.transpose(1, 2)
    ch = c.conv_channels()
    x, B, C = (xbc[..., ch[k]] for k in ("x", "B", "C"))
    heads = (c.nheads, c.head_dim)
    A = -torch.exp(params["A_log"].to(work_dtype(hidden)))
    D = params["D"].view(heads) if c.D_has_hdim else params["D"]
    y = ssd_scan_ref(x.unflatten(-1, heads), dt, A, B.unflatten(-1, (c.ngroups, c.d_state)),
                     C.unflatten(-1, (c.ngroups, c.d_state)), D=D,
                     z=None if c.rmsnorm else z.unflatten(-1, heads), dt_bias=params["dt_bias"], dt_softplus=True)
    y = y.flatten(-2)
    if c.rmsnorm:
        y = rms_norm_gated_ref(y, params["norm.weight"], z, group_size=c.ssm_width // c.ngroups,
                               norm_before_gate=c.norm_before_gate)
    if c.d_mlp > 0:
        y = torch.cat([F.silu(z0) * x0, y], dim=-1)
    return F.linear(y, params["out_proj.weight"], params.get("out_proj.bias"))


def ssd_chunk_scan_ref(x, dt, A, B, C, chunk_size=None, D=None, z=None, dt_bias=None, initial_states=None,
                       seq_idx=None, cu_seqlens=None, dt_softplus=False, dt_limit=(0.0, float("inf")),
                       return_final_states=False, return_varlen_states=False):
    """mamba_ssm's ``mamba_chunk_scan_combined`` signature on the pure-torch SSD reference
    (``verify.engines.scan.ssd_scan_ref``, an exact sequential scan: ``chunk_size`` only tiles the
    kernel, so it is ignored). x, z (b, L, h, p); dt (b, L, h); A (h,); B, C (b, L, g, n); D (h,) or (h, p);
    dt_bias (h,). Initial/final states and variable-length batches are not supported here."""
    require(initial_states is None and seq_idx is None and cu_seqlens is None and not return_final_states
            and not return_varlen_states, "the reference SSD scan takes no initial states, seq_idx or cu_seqlens "
                                          "and returns y only")
    return ssd_scan_ref(x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=dt_limit)


def packed_mamba2_forward(p: dict, hidden: torch.Tensor, config, scan=ssd_chunk_scan_ref) -> torch.Tensor:
    """K ``mamba_ssm.Mamba2`` blocks (``mamba2_forward``) at once, with one SSD
    ``scan`` call of ``mamba_chunk_scan_combined``'s signature: the K models' heads folded to K*nheads (model k's
    heads k*nheads ..), their B/C groups to K*ngroups, so head k*nheads + j reads group k*ngroups + j // (nheads /
    ngroups), model k's own. RMSNormGated (when on) keeps the K axis: groups of d_ssm / ngroups channels per model,
    weight (K, d_ssm) broadcast."""
    c = config
    K, b, L, _ = hidden.shape
    h, hp, g, n, ds = c.nheads, c.head_dim, c.ngroups, c.d_state, c.ssm_width
    zxbcdt = torch.einsum("kbld,kod->kblo", hidden, p["in_proj.weight"])
    if "in_proj.bias" in p:
        zxbcdt = zxbcdt + p["in_proj.bias"][:, None, None, :]
    rows, ch = c.in_proj_rows(), c.conv_channels()
    by_model = lambda t: t.permute(1, 2, 0, 3)  # noqa: E731  (K, b, L, m) -> (b, L, K, m)
    xbc = zxbcdt[..., rows["x"].start:rows["C"].stop]  # (K, b, L, conv_dim)
    xbc = causal_conv(xbc.permute(1, 0, 3, 2).reshape(b, K * c.conv_dim, L), p)  # (b, K*conv_dim, L)
    xbc = xbc.view(b, K, c.conv_dim, L).permute(0, 3, 1, 2)  # (b, L, K, conv_dim)
    # contiguous copies with a unit last stride (as mamba_ssm.Mamba2's torch.split views of its (b, L, conv_dim) conv
    # output have): the conv's L-major views here (unit stride along L) preceded the H100 faults in
    # mamba_chunk_scan_combined described in results/train/README.md, which these copies did not remove
    heads = lambda t: t.reshape(b, L, K * h, hp).contiguous()  # noqa: E731  (b, L, K, d_ssm) -> (b, L, K*nheads, headdim)
    groups = lambda t: t.reshape(b, L, K * g, n).contiguous()  # noqa: E731  (b, L, K, g*n) -> (b, L, K*ngroups, d_state)
    x, B, C = heads(xbc[..., ch["x"]]), groups(xbc[..., ch["B"]]), groups(xbc[..., ch["C"]])
    z = by_model(zxbcdt[..., rows["z"]])  # (b, L, K, d_ssm)
    dt = by_model(zxbcdt[..., rows["dt"]]).reshape(b, L, K * h).contiguous()
    A = -torch.exp(p["A_log"].to(work_dtype(hidden))).reshape(K * h)
    D = p["D"].reshape(K * h, hp) if c.D_has_hdim else p["D"].reshape(K * h)
    y = scan(x, dt, A, B, C, c.chunk_size, D=D, z=None if c.rmsnorm else heads(z),
             dt_bias=p["dt_bias"].reshape(K * h), dt_softplus=True)
    y = y.reshape(b, L, K, ds)
    if c.rmsnorm:
        y = rms_norm_gated_ref(y, p["norm.weight"], z, group_size=ds // g, norm_before_gate=c.norm_before_gate)
    if c.d_mlp > 0:
        y = torch.cat([F.silu(by_model(zxbcdt[..., rows["z0"]])) * by_model(zxbcdt[..., rows["x0"]]), y], dim=-1)
    return out_proj_packed(y.permute(0, 2, 3, 1), p)


def init_mamba2(config, gen: torch.Generator) -> dict:
    """A fresh ``mamba_ssm.Mamba2`` state dict (float64) as its constructor draws it: nn.Linear / nn.Conv1d defaults,
    dt_bias = softplus^-1(dt) with dt log-uniform in [1e-3, 0.1], A_log = log(U[1, 16]) per head, D = 1, norm 1."""
    sd = config.zeros()
    d, di = config.d_model, config.d_inner
    for k, v in sd.items():
        if k.startswith("in_proj."):
            v.copy_(uniform(gen, v.shape, d ** -0.5))
        elif k.startswith("conv1d."):
            v.copy_(uniform(gen, v.shape, config.d_conv ** -0.5))
        elif k.startswith("out_proj."):
            v.copy_(uniform(gen, v.shape, di ** -0.5))
    sd["dt_bias"] = log_uniform_dt(gen, config.nheads)
    sd["A_log"] = torch.log(1 + 15 * torch.rand(config.nheads, generator=gen, dtype=torch.float64))
    sd["D"] = torch.ones_like(sd["D"])
    if "norm.weight" in sd:
        sd["norm.weight"] = torch.ones_like(sd["norm.weight"])
    return sd


def transformers_width(config) -> int:
    """transformers' intermediate size: the smallest multiple of d_model that holds d_ssm."""
    return -(-config.ssm_width // config.d_model) * config.d_model


def _transformers_module(config, device, dtype):
    """transformers' Mamba2Mixer for a mamba_ssm.Mamba2 config (its SSM channels padded to ``transformers_width``)."""
    import transformers
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

    width = transformers_width(config)
    require(not config.rmsnorm, "transformers' Mamba2Mixer runs Mamba-2 with rmsnorm=False only (its gated norm is "
                                "made the identity); this block sets rmsnorm=True")
    require(not config.D_has_hdim, "transformers' Mamba2Mixer needs Mamba-2's D per head (it has no D_has_hdim); "
                                   "this block sets D_has_hdim=True")
    require(width == config.ssm_width or config.nheads == 1,
            f"transformers' Mamba2Mixer takes Mamba-2's d_ssm={config.ssm_width} padded to {width} channels only "
            f"with one head, got nheads={config.nheads}")
    heads = config.nheads
    hf = transformers.Mamba2Config(hidden_size=config.d_model, state_size=config.d_state, conv_kernel=config.d_conv,
                                   expand=width // config.d_model, num_heads=heads, head_dim=width // heads,
                                   n_groups=config.ngroups, use_bias=config.bias, use_conv_bias=config.conv_bias,
                                   chunk_size=config.chunk_size, layer_norm_epsilon=NORM_EPS, hidden_act="silu",
                                   num_hidden_layers=1, time_step_limit=(0.0, float("inf")))
    return Mamba2Mixer(hf, layer_idx=0).to(device=device, dtype=dtype)


def _pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.cat([t, t.new_zeros(rows - t.shape[0], *t.shape[1:])]) if rows > t.shape[0] else t


def transformers_state_dict(config, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mamba_ssm.Mamba2's state dict in transformers' Mamba2Mixer layout (module docstring, ``MAMBA2_IN_PROJ``)."""
    rows, width = config.in_proj_rows(), transformers_width(config)
    for block in MAMBA2_DROPPED:
        for key in ("in_proj.weight", "in_proj.bias"):
            require(key not in sd or not sd[key][rows[block]].any(),
                    f"transformers' Mamba2Mixer needs Mamba-2's gated-MLP rows ({block} of {key}) to be zero: "
                    f"transformers' Mamba2Mixer has no d_ssm < d_inner part to load them into")
    out = {k: v for k, v in sd.items() if not k.startswith(("in_proj.", "conv1d.", "out_proj.weight"))}
    for key in ("in_proj.weight", "in_proj.bias"):
        if key in sd:
            out[key] = torch.cat([_pad_rows(sd[key][rows[b]], width) if pad else sd[key][rows[b]]
                                  for b, pad in MAMBA2_IN_PROJ])
    ch = config.conv_channels()
    for key in ("conv1d.weight", "conv1d.bias"):
        if key in sd:
            out[key] = torch.cat([_pad_rows(sd[key][ch["x"]], width), sd[key][ch["B"]], sd[key][ch["C"]]])
    out["out_proj.weight"] = _pad_rows(sd["out_proj.weight"][:, config.d_mlp:].T, width).T
    out["norm.weight"] = torch.full((width,), NORM_WEIGHT, dtype=sd["out_proj.weight"].dtype)
    return out


def _mamba_ssm_module(config, device, dtype):
    from mamba_ssm import Mamba2  # noqa: F401  (an ImportError here where mamba_ssm is missing)

    from verify.engines.cuda import mamba2_module

    return mamba2_module(config, device, dtype)


def _run_config(s) -> Mamba2Config:
    return Mamba2Config(d_model=s.d_model, d_state=s.d_state, d_conv=s.d_conv, expand=s.expand,
                        headdim=s.arg("headdim"))


KIND = BlockKind(
    name="mamba2", title="Mamba-2 (SSD)", config=Mamba2Config, update_rule=UPDATE_RULE,
    forward=mamba2_forward, width=lambda c: c.d_inner, state_size=lambda c: c.ssm_width * c.d_state,
    # mamba_ssm.Mamba2 casts A_log and dt_bias to the module dtype but creates D in float32.
    float32_params=frozenset({"D"}),
    mamba_ssm=RealModule(_mamba_ssm_module, "mamba_ssm.Mamba2(**arguments) (pass use_mem_eff_path=False where "
                                            "causal_conv1d is not installed): the same parameter names and shapes"),
    transformers=RealModule(
        _transformers_module, "transformers.models.mamba2.modeling_mamba2.Mamba2Mixer(Mamba2Config(hidden_size="
        "d_model, state_size=d_state, conv_kernel=d_conv, expand=W / d_model, num_heads=H, head_dim=W / H, "
        "n_groups=ngroups, use_bias=bias, use_conv_bias=conv_bias, chunk_size=chunk_size, layer_norm_epsilon=2^100, "
        "time_step_limit=(0, inf)), layer_idx=0), H = d_ssm / headdim heads, W = d_ssm rounded up to a multiple of "
        "d_model (H = 1 where it differs from d_ssm); its in_proj rows "
        "are [z | x | B | C | dt]: the rows z0 and x0 dropped (they must be zero), the x and z rows, the conv's x "
        "channels and out_proj's SSM columns padded with zeros to W, out_proj's gated-MLP columns dropped, "
        "norm.weight = 2^50 (the gated RMSNorm is then the identity on y * silu(z)); rmsnorm=False and D per head "
        "only. verify.export.transformers_mixer does this layout", layout=transformers_state_dict),
    training=Training(
        _run_config, init_mamba2, freezer(lambda c: c.in_proj_rows()["z"]),
        packed_forward=packed_mamba2_forward, cuda_module=_mamba_ssm_module, packed_cuda_scan=cuda_ssd_scan,
        reference_scan=ssd_chunk_scan_ref, evaluate_on_reference=True, pack_overhead=2 ** 15,
        gate_default=False, d_bound=lambda kappa, vocab: lg(kappa) + lg(vocab),
        n_base={"fig2": lambda kappa, vocab: 8 * math.log(kappa), "a3": lambda kappa, vocab: math.log(kappa)},
        d_multiple=8,
        note="mamba_ssm.Mamba2(use_mem_eff_path=False), one head unless task_args headdim; gate off = its in_proj z "
             "rows frozen; packed = one SSD scan (mamba_chunk_scan_combined) per pack"),
)
