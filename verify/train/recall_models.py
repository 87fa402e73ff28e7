"""Koren et al. 2026's trained models (the recall scaling laws): the model around the mixer, as a run's ``model``.

A run with an empty ``RunSpec.model`` is the constructions' one-layer model, ``readout(mixer(embedding[x]))`` with an
untied readout (``verify.train.models.PackedModel``). ``model`` (sorted (name, value) pairs, grid key ``model``)
selects one of the paper's wirings instead, trained by ``WiredModel`` (K models of one shape packed as every mixer):

* ``wiring = "tied"``: the simplified linear Mamba of the paper's §2.1 (mixer ``linear-mamba``): logits_t = E^T y_t,
  y = the mixer stack of E[x] (``verify.engines.linear``), the lm_head tied to the embedding E, no norm. ``layers`` Λ
  (default 1) stacks Λ layers, added to the residual stream when ``residual`` (default: Λ > 1, the paper's §2.3);
  ``heads`` M and ``head_pattern`` (MHA, MQA, MKA, MVA; default 1, MHA) are §2.4's multi-head patterns. A = 1, Δ = 1
  and the D skip 0 and frozen (``verify.blocks.linear_mamba``). ``silu = true`` (a conv bias and SiLU after the conv)
  and the run's ``gate = true`` (the output gated by silu(z) as Mamba-1's) give the circuit-minimality ablation's rows
  B and A (§4.4: Mamba-1 without Δ and decay, with and without its gate).
* ``wiring = "lm"``: the full model of §2.2, mamba_ssm's ``MambaLMHeadModel`` (mixer ``mamba``, gate on): per layer
  h <- h + mixer(RMSNorm(h)), logits = E^T RMSNorm_f(h) (RMSNorm eps 1e-5 with a weight, the residual kept in float32
  as the model is, lm_head tied), ``layers`` Λ layers. The block is ``mamba_ssm.Mamba(d_model, d_state, d_conv,
  expand, bias=False)`` with every other default (dt_rank = ceil(d/16), conv bias on, S4D-real A, D = 1, SiLU, gate).
  ``norm = false`` drops both RMSNorms (h <- h + mixer(h), logits = E^T h): the Base row of the paper's
  circuit-minimality ablation (§4.4: residual kept, no norms), up to its full-rank Delta projection (ours is Mamba-1's
  low-rank dt_proj).

Names of a wired state dict: ``embedding.weight`` (V, d); tied: ``mixer.<LinearMambaConfig names>``; lm:
``layers.<l>.norm.weight``, ``layers.<l>.mixer.<MambaConfig names>``, ``norm_f.weight`` (MambaLMHeadModel's own names
without its ``backbone.`` prefix); ``state_dicts()`` adds ``readout.weight``, a copy of the embedding (the tied head),
so that a wired state dict reads like every other one.

Initialisation. lm: ``MambaLMHeadModel._init_weights`` (embedding N(0, 0.02^2); the block as ``mamba_ssm.Mamba``
draws it, ``verify.blocks.mamba.init_mamba``, with ``out_proj.weight`` divided by sqrt(Λ), the prenorm-residual
rescale of one residual per layer; norm weights 1). tied: the notes do not give mamba_tiny's init (a gap): we take
PyTorch's defaults for the modules it is built of, embedding N(0, 1) (nn.Embedding) and every projection U(±1/sqrt
(fan_in)) (``verify.blocks.linear_mamba.init_linear``).
"""
from __future__ import annotations

import math

import torch

from common.errors import RequirementError, require
from verify import blocks
from verify.train.models import PackedModel, with_position

WIRINGS = ("tied", "lm")
MODEL_KEYS = ("wiring", "layers", "heads", "head_pattern", "residual", "norm", "silu")
NORM_EPS = 1e-5  # MambaLMHeadModel's norm_epsilon
EMBED_STD_LM = 0.02  # MambaLMHeadModel's initializer_range


def wiring(spec) -> str | None:
    """The run's wiring, or None for the constructions' one-layer model."""
    return spec.model_arg("wiring") if spec.model else None


def layers(spec) -> int:
    return spec.model_arg("layers", 1)


def normed(spec) -> bool:
    """The lm wiring's RMSNorms on (the default, MambaLMHeadModel's) or off (``norm = false``)."""
    return spec.model_arg("norm", True)


def validate(spec) -> None:
    """Every requirement of a run's ``model``, as one RequirementError."""
    if not spec.model:
        return
    args = dict(spec.model)
    for k in args:
        require(k in MODEL_KEYS, f"model: unknown key {k!r}; known: {', '.join(MODEL_KEYS)}")
    w = args.get("wiring")
    require(w in WIRINGS, f"model: wiring must be one of {', '.join(WIRINGS)}, got {w!r}")
    for k in ("layers", "heads"):
        v = args.get(k, 1)
        require(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f"model: {k} must be an integer >= 1, "
                                                                           f"got {v!r}")
    for k in ("residual", "norm", "silu"):
        require(isinstance(args.get(k, True), bool), f"model: {k} must be true or false, got {args.get(k)!r}")
    if spec.mixer == "linear-mamba":
        require(w == "tied", "model: the simplified linear Mamba (mixer linear-mamba) takes wiring 'tied' (the "
                             "paper's linear models have no norms)")
        require("norm" not in args, "model: norm is an option of the full model (wiring lm); the simplified linear "
                                    "Mamba has no norms")
    else:
        require(w == "lm", f"model: mixer {spec.mixer} takes wiring 'lm' (the full model); 'tied' is the simplified "
                           f"linear Mamba's")
        for k in ("heads", "head_pattern", "residual", "silu"):
            require(k not in args, f"model: {k} is an option of the linear Mamba, not of mixer {spec.mixer} (the lm "
                                   f"wiring always adds each layer to the residual stream)")
        require(spec.gate, "model: the full model (wiring lm) keeps the gate (gate = true)")


def block_config(spec):
    """The mixer's config of a wired run (one layer of the lm wiring; the whole stack for the linear Mamba)."""
    cfg = blocks.KINDS[spec.mixer].training.block_config(spec)
    if wiring(spec) == "lm" and hasattr(cfg, "bias"):
        from dataclasses import replace

        cfg = replace(cfg, bias=False)  # the paper's ssm_cfg: bias = False
    return cfg


def initial_state(spec, gen: torch.Generator, n_tokens: int) -> tuple[dict, dict]:
    """(state dict, masks) of a wired run before training (see the module docstring)."""
    train = blocks.KINDS[spec.mixer].training
    cfg = block_config(spec)
    if wiring(spec) == "tied":
        emb = torch.randn(n_tokens, spec.d_model, generator=gen, dtype=torch.float64)
        mix = train.init(cfg, gen)
        masks = train.freeze(cfg, spec, mix)
        return ({"embedding.weight": emb, **{f"mixer.{k}": v for k, v in mix.items()}},
                {f"mixer.{k}": v for k, v in masks.items()})
    emb = torch.randn(n_tokens, spec.d_model, generator=gen, dtype=torch.float64) * EMBED_STD_LM
    sd, masks, n = {"embedding.weight": emb}, {}, layers(spec)
    for layer in range(n):
        mix = train.init(cfg, gen)
        for k in list(mix):
            if k.endswith(".bias") and k in ("in_proj.bias", "out_proj.bias"):
                mix[k].zero_()  # _init_weights zeroes nn.Linear biases (dt_proj's is exempt)
        mix["out_proj.weight"] /= math.sqrt(n)
        m = train.freeze(cfg, spec, mix)
        if normed(spec):
            sd[f"layers.{layer}.norm.weight"] = torch.ones(spec.d_model, dtype=torch.float64)
        sd.update({f"layers.{layer}.mixer.{k}": v for k, v in mix.items()})
        masks.update({f"layers.{layer}.mixer.{k}": v for k, v in m.items()})
    if normed(spec):
        sd["norm_f.weight"] = torch.ones(spec.d_model, dtype=torch.float64)
    return sd, masks


def rms_norm(h: torch.Tensor, weight: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """RMSNorm over the last axis: h / sqrt(mean(h^2) + eps) * weight (mamba_ssm's and transformers')."""
    return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * weight


def _sub(params: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def wired_hidden(params: dict, hidden: torch.Tensor, spec_wiring: str, n_layers: int, mixer, config, scan,
                 norm_on: bool = True):
    """The last hidden state (before the tied head) of K wired models: hidden (K, b, L, d) = E[x] of each model; the
    lm wiring's RMSNorms applied where ``norm_on``."""
    if spec_wiring == "tied":
        return mixer.packed_forward(_sub(params, "mixer."), hidden, config, scan)

    def norm(h, name):
        return rms_norm(h, params[name][:, None, None, :]) if norm_on else h

    h = hidden
    for layer in range(n_layers):
        h = h + mixer.packed_forward(_sub(params, f"layers.{layer}.mixer."), norm(h, f"layers.{layer}.norm.weight"),
                                     config, scan)
    return norm(h, "norm_f.weight")


class WiredModel(PackedModel):
    """K wired models of one shape (``PackedModel``'s packing and interface; the readout is the embedding)."""

    def __init__(self, spec, mixer, config, inits: list[dict], masks: dict, device, dtype=torch.float32, scan=None):
        super().__init__(mixer, config, inits, masks, device, dtype, scan)
        self.wiring, self.n_layers, self.norm_on = wiring(spec), layers(spec), normed(spec)

    @property
    def readout(self) -> torch.Tensor:  # (K, V, d): the tied head
        return self.params["embedding.weight"]

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        emb = self.params["embedding.weight"]
        hidden = torch.gather(emb, 1, tokens.reshape(self.K, -1, 1).expand(-1, -1, emb.shape[-1]))
        hidden = with_position(hidden.view(*tokens.shape, emb.shape[-1]), self.position)
        return wired_hidden(self.params, hidden, self.wiring, self.n_layers, self.mixer, self.config, self.scan,
                            self.norm_on)

    def state_dicts(self) -> list[dict]:
        return [{**sd, "readout.weight": sd["embedding.weight"].clone()} for sd in super().state_dicts()]


def logits(spec, state_dict: dict, tokens: torch.Tensor, dtype=torch.float64) -> torch.Tensor:
    """One wired model's logits (batch, L, V) for tokens (batch, L), from its state dict (``readout.weight`` may be
    present: it is the embedding); the reference scan."""
    require(wiring(spec) is not None, "logits: the run has no wiring (model is empty)")
    train = blocks.KINDS[spec.mixer].training
    sd = {k: v for k, v in state_dict.items() if k != "readout.weight"}
    if "readout.weight" in state_dict and not torch.equal(state_dict["readout.weight"], state_dict["embedding.weight"]):
        raise RequirementError("logits: readout.weight differs from embedding.weight (the wired head is tied)")
    model = WiredModel(spec, train, block_config(spec), [sd], {}, "cpu", dtype)
    with torch.no_grad():
        h = model.hidden(tokens[None])
        return torch.einsum("kbld,kvd->kblv", h, model.readout)[0]


def cell_accuracy(records: list[dict], value: str = "best_val_acc") -> dict[tuple, dict]:
    """Per grid cell (everything of the spec but seed and lr): the paper's aggregation, the best over seeds (and lrs)
    of ``value`` (default the best validation accuracy over the run's evaluations, the paper's logger value; or
    "test_acc", the tested state's), with the mean and the count of runs beside it. Keys: (mixer, vocab, kappa,
    seq_len, d_model, d_state, model)."""
    cells: dict[tuple, list[float]] = {}
    for r in records:
        s = r["spec"]
        key = (s["mixer"], s["vocab"], s["kappa"], s["seq_len"], s["d_model"], s["d_state"],
               tuple(tuple(kv) for kv in s.get("model", ())))
        cells.setdefault(key, []).append(float(r["result"][value]))
    return {k: {"best": max(v), "mean": sum(v) / len(v), "runs": len(v)} for k, v in cells.items()}
