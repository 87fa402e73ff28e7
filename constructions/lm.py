"""A construction as a whole language model: transformers' ``MambaForCausalLM`` / ``Mamba2ForCausalLM`` and
``mamba_ssm``'s ``MambaLMHeadModel``.

The construction (``logits = readout(mixer(embedding[tokens]))``, no norm, no residual) is placed inside the real
model's one block: token embedding, pre-norm RMSNorm, the mixer on the residual stream, the final RMSNorm and an untied
LM head over every token. ``symbolic.language_model`` states the wrapping and proves each step; in short (d' = d + 4):

==================  ===========================================================================================
embedding           token x -> [E[x] ; P[x]]: the construction's row, then 4 integer pads with |row|^2 = 256 d'
                    for every token (Lagrange: a sum of four squares), so RMSNorm divides every token by
                    sqrt(256 + eps)
pre-norm weight     sqrt(256 + eps) on the construction's d coordinates, 0 on the pads: the mixer's input is
                    [E[x] ; 0], the construction's own (float32: sqrt(256 + 1e-5) rounds to 16 and 256 + 1e-5 to
                    256, so the pre-norm returns E[x] bit for bit)
mixer               the construction's, padded with zeros to width d' (expand 1: 4 inert channels; the mixer
                    reads and writes the construction's coordinates only); the residual carries E'[x] past it.
                    Mamba-2: transformers' layout (in_proj rows [z | x | B | C | dt], no gated-MLP part, one head of
                    d' channels), and its gated RMSNorm, which transformers always applies, with weight
                    ``GATED_WEIGHT``: a positive factor per position on the mixer's output
final norm          weight ``FINAL_WEIGHT`` = 2^10 everywhere: the logits are f_t times the construction's, and the
                    factor 2^10 (exact) makes the softmax, not only the argmax, answer a query
LM head             row of value token v = [readout row of class v ; 0]; keys' and noise tokens' rows 0 (blind to
                    the residual at a query key: H E'[key] = 0); untied (``tie_word_embeddings`` / ``tie_embeddings``
                    false in each config)
==================  ===========================================================================================

At a query the LM's logits are f_t (Mamba-2: f_t phi_t) times the construction's on the value tokens and 0 on every
other token, with f_t = 2^10 / sqrt(|h1_t|^2 / d' + eps) > 0: greedy decoding emits the queried value, and the margin
is at least f_min phi_min min(margin, target_logit) (``symbolic.language_model.margin_after_norm``), with the
construction's bounds from its theorem's module (``BOUNDS``). Every norm uses eps = 1e-5 (mamba_ssm's
``MambaLMHeadModel`` has no other).

An export is one folder (written into a temporary folder and renamed into place):

* ``config.json`` + ``model.safetensors``: ``MambaForCausalLM`` (``Mamba2ForCausalLM``) ``.from_pretrained(DIR)``;
  ``config.json`` also holds ``"construction"``: what was built, the token ranges, the layout and the proof (every
  obligation, the bounds, the margin after the norms);
* Mamba only, ``mamba_ssm/config.json`` (mamba_ssm's ``MambaConfig`` fields only: it refuses any other key) +
  ``mamba_ssm/pytorch_model.bin``: ``MambaLMHeadModel.from_pretrained(DIR + "/mamba_ssm")``; ``mamba_ssm/proof.json``
  holds the same proof. (No mamba_ssm checkpoint is written for the Mamba-2 model.)

The prompt a query is asked with: the sequence up to and including the query key; the next token is the answer.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import sympy as sp
import torch
from safetensors.torch import load_file, save_file

from common.errors import require
from common.io import write_folder_atomic
from constructions.export import check_target
from constructions.jl import exact_ratio
from constructions.layout import Construction, Mamba2Config, MambaConfig
from symbolic import language_model as lm_proof
from symbolic.proofs import Obligation

PADS = 4
MEAN_SQUARE = 256
EPS = sp.Rational(1, 100000)
FINAL_WEIGHT = 2**10
GATED_WEIGHT = 1  # Mamba-2's gated RMSNorm weight (transformers always applies that norm)
MAMBA_SSM_FOLDER = "mamba_ssm"
WIRING = ("h0 = embedding[x]; h1 = h0 + mixer(rmsnorm(h0) * norm.weight); logits = lm_head(rmsnorm(h1) * "
          "norm_f.weight), rmsnorm(h) = h / sqrt(mean(h^2) + eps) (one layer, pre-norm, residual, untied head)")


def _theorem2_bounds(con: Construction, constants) -> dict:
    from symbolic import theorem2 as th

    c = constants if constants is not None else th.DEFAULT
    variant, p, T = con.info["variant"], sp.Integer(con.info["value_dim"]), con.info["seq_len"]
    mu = exact_ratio(con.info["coherence"], con.info["value_dim"]) if variant == "jl" else None
    p_ = p if variant == "jl" else None
    return {"margin": th.margin_lower_bound(c, variant, p_, mu),
            "target_logit": th.target_logit_lower_bound(c, variant, p_, mu),
            "output_bound": th.mixer_output_bound(c, variant, p_, T),
            "obligations": lambda: th.lm_obligations(c, variant, p_, mu)}


def _theorem3_bounds(con: Construction, constants) -> dict:
    from symbolic import theorem3 as th

    c = constants if constants is not None else th.DEFAULT
    T = con.info["seq_len"]
    if con.info["variant"] == "one-hot":
        args = (c, 1)
    else:
        args = (c, 2, sp.Integer(con.info["key_dim"]), sp.Integer(con.info["value_dim"]),
                exact_ratio(con.info["coherence"], con.info["value_dim"]),
                exact_ratio(con.info["key_interference"], con.info["key_dim"]))
    return {"margin": th.margin_lower_bound(*args), "target_logit": th.target_logit_lower_bound(*args),
            "gated_input_bound": th.gated_output_bound(*args[:4], seq_len=T),
            "obligations": lambda: th.lm_obligations(*args)}


# construction name -> its theorem's bounds at the construction's parameters (margin, target_logit, output_bound and
# the obligations they rest on; Mamba-2: the bound on the gated SSM output instead of the mixer output), exact.
BOUNDS: dict[str, Callable] = {"mqar-mamba": _theorem2_bounds, "mqar-mamba2": _theorem3_bounds}
SUPPORTED = tuple(BOUNDS)


@dataclass
class LanguageModel:
    """A construction wrapped as a one-layer language model (module docstring), in exact values.

    Tensors are float64 and integer-valued where the proof reads them (embedding, LM head); ``prenorm``,
    ``final_norm`` and (Mamba-2) ``gated``, the mixer's gated RMSNorm, are the exact (sympy) norm weights, every
    coordinate; ``mixer`` is the padded state dict (mamba_ssm's names, which transformers shares for these blocks);
    ``config`` the padded block's (Mamba-2: ``d_ssm = d_inner``, one head, the layout of transformers' Mamba2Mixer).
    """

    con: Construction
    config: MambaConfig | Mamba2Config
    embedding: torch.Tensor
    prenorm: tuple
    mixer: dict[str, torch.Tensor]
    final_norm: tuple
    lm_head: torch.Tensor
    bounds: dict
    gated: tuple = ()
    eps: sp.Expr = EPS
    mean_square: int = MEAN_SQUARE
    _decided: tuple | None = field(default=None, repr=False)

    @property
    def d(self) -> int:
        return self.con.config.d_model

    @property
    def d_lm(self) -> int:
        return self.config.d_model

    def scored_tokens(self) -> range:
        """The tokens at whose positions the construction's claim is made: the MQAR keys (queries)."""
        return range(self.con.tokens.kappa)

    def wrapping(self) -> lm_proof.Wrapping:
        emb, head = _integers(self.embedding), _integers(self.lm_head)
        scored = list(self.scored_tokens())
        support = tuple(int(k) for k in head.abs().sum(0).nonzero().flatten())
        pads = emb[scored, self.d:]
        return lm_proof.Wrapping(
            d=self.d, d_lm=self.d_lm, eps=self.eps, mean_square=sp.Integer(self.mean_square),
            row_sq_norms=tuple(sp.Integer(int(n)) for n in (emb * emb).sum(1)),
            prenorm=self.prenorm, final_norm=tuple(self.final_norm[k] for k in support), head_support=support,
            head_on_scored=tuple(sp.Integer(int(v)) for v in (head @ emb[scored].T).flatten()),
            pad_sq_min=sp.Integer(int((pads * pads).sum(1).min())),
            margin=self.bounds["margin"], target_logit=self.bounds["target_logit"], **self._mixer_bounds())

    def _mixer_bounds(self) -> dict:
        if not self.gated:
            return {"output_bound": self.bounds["output_bound"]}
        out = self.mixer["out_proj.weight"]
        read = [int(k) for k in out.abs().sum(0).nonzero().flatten()]
        exact = lambda t: [sum(sp.Rational(float(v)) for v in row if v) for row in t.abs()]  # noqa: E731
        return {"gated": tuple(self.gated[k] for k in read),
                "gated_group": self.config.ssm_width // self.config.ngroups,
                "gated_input_bound": self.bounds["gated_input_bound"],
                "out_proj_norm": sp.sqrt(max(exact(out)) * max(exact(out.T)))}  # Schur: |A|_2^2 <= |A|_1 |A|_inf

    def decide(self) -> tuple[Obligation, ...]:
        """Every obligation of the wrapped model: the construction's own, its bounds', the tensor layout's and the
        wrapping's (``symbolic.language_model``); decided once."""
        if self._decided is None:
            own = self.con.proof.decide() if self.con.proof is not None else ()
            self._decided = (*own, *self.bounds["obligations"](), *self._layout_obligations(),
                             *lm_proof.obligations(self.wrapping()))
        return self._decided

    def _layout_obligations(self) -> list[Obligation]:
        padded = _padded_mixer(self.con, self.config, self.gated)
        differing = [k for k in padded if k in self.mixer and not torch.equal(padded[k], self.mixer[k])] + sorted(
            set(self.mixer) ^ set(padded))
        tokens = self.con.tokens
        want = torch.zeros_like(self.lm_head)
        want[tokens.values_start:tokens.noise_start, :self.d] = self.con.readout
        return [Obligation("the LM's mixer is the construction's padded with zeros" + (
                           ", with a gated norm" if self.gated else ""),
                           f"reads and writes the first d = {self.d} coordinates only (tensors differing: "
                           f"{differing or 'none'})", not differing),
                Obligation("LM head: value tokens' rows are the construction's readout, every other row 0",
                           f"rows {tokens.values_start}..{tokens.noise_start - 1} = readout, others 0",
                           torch.equal(want, self.lm_head))]

    def margin_after_norm(self):
        return lm_proof.margin_after_norm(self.wrapping())

    def state_dict(self, names: str = "transformers", dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """The model's weights in ``transformers``' or ``mamba_ssm``'s parameter names, in ``dtype``."""
        require(names in ("transformers", "mamba_ssm"), f"names must be transformers or mamba_ssm, got {names!r}")
        emb = "backbone.embeddings.weight" if names == "transformers" else "backbone.embedding.weight"
        sd = {emb: self.embedding, "backbone.layers.0.norm.weight": _tensor(self.prenorm),
              **{f"backbone.layers.0.mixer.{k}": v for k, v in self.mixer.items()},
              "backbone.norm_f.weight": _tensor(self.final_norm), "lm_head.weight": self.lm_head}
        return {k: v.detach().to(dtype, copy=True).contiguous() for k, v in sd.items()}


def _integers(t: torch.Tensor) -> torch.Tensor:
    require(bool((t == t.round()).all()), "a language-model export needs an integer-valued embedding and readout "
                                          "(the pads make every row's squared norm the same integer)")
    return t.round().to(torch.int64)


def _tensor(values: tuple) -> torch.Tensor:
    return torch.tensor([float(sp.N(v, 30)) for v in values], dtype=torch.float64)


def four_squares(n: int) -> tuple[int, int, int, int]:
    """Integers a >= b >= c >= e >= 0 with a^2 + b^2 + c^2 + e^2 = n (Lagrange: one exists for every n >= 0)."""
    require(n >= 0, f"four_squares needs n >= 0, got {n}")
    for a in range(math.isqrt(n), -1, -1):
        for b in range(min(a, math.isqrt(n - a * a)), -1, -1):
            rest = n - a * a - b * b
            for c in range(min(b, math.isqrt(rest)), -1, -1):
                e = math.isqrt(rest - c * c)
                if e * e == rest - c * c and e <= c:
                    return a, b, c, e
                if 2 * c * c < rest:
                    break
    raise AssertionError(f"no four squares for {n}")  # unreachable (Lagrange's four-square theorem)


def _pad_mamba(sd: dict[str, torch.Tensor], small: MambaConfig, big: MambaConfig) -> dict[str, torch.Tensor]:
    """mamba_ssm.Mamba's state dict of width ``small`` placed in a zero one of width ``big`` (same d_state, d_conv,
    dt_rank, expand): in_proj x and z rows, conv, dt_proj, A_log and D per inner channel, x_proj's and out_proj's
    columns per inner channel, in_proj's columns and out_proj's rows per model coordinate."""
    out = big.zeros(dtype=torch.float64)
    di, Di, d = small.d_inner, big.d_inner, small.d_model
    for k, v in sd.items():
        if k.startswith("in_proj."):  # rows [x | z], each d_inner
            for half in (0, 1):
                rows = out[k][half * Di:half * Di + di]
                (rows[:, :d] if v.dim() == 2 else rows)[:] = v[half * di:(half + 1) * di]
        elif k == "x_proj.weight":
            out[k][:, :di] = v
        elif k == "out_proj.weight":
            out[k][:d, :di] = v
        elif k == "out_proj.bias":
            out[k][:d] = v
        else:  # conv1d.weight / .bias, dt_proj.weight / .bias, A_log, D: per inner channel
            out[k][:di] = v
    return out


def _pad_mamba2(sd: dict[str, torch.Tensor], small: Mamba2Config, big: Mamba2Config) -> dict[str, torch.Tensor]:
    """mamba_ssm.Mamba2's state dict (one head, one group, a zero gated MLP) placed in a zero one of ``big``
    (``d_ssm = d_inner = d'``, one head): each in_proj row block z / x / B / C / dt and conv channel block x / B / C at
    the start of its block, out_proj's SSM columns first; the gated-MLP rows z0, x0 (zero) are dropped, as is
    out_proj's gated-MLP part (it multiplies silu(0) * 0)."""
    rows, big_rows, d = small.in_proj_rows(), big.in_proj_rows(), small.d_model
    for key in ("in_proj.weight", "in_proj.bias"):
        require(key not in sd or not sd[key][rows["z0"]].any() and not sd[key][rows["x0"]].any(),
                "a Mamba-2 language-model export needs the gated-MLP rows z0, x0 of in_proj to be zero")
    out = big.zeros(dtype=torch.float64)
    for key in ("in_proj.weight", "in_proj.bias"):
        for block in ("z", "x", "B", "C", "dt"):
            src = sd[key][rows[block]]
            dst = out[key][big_rows[block].start:big_rows[block].start + src.shape[0]]
            (dst[:, :d] if src.dim() == 2 else dst)[:] = src
    ch, big_ch = small.conv_channels(), big.conv_channels()
    for key in ("conv1d.weight", "conv1d.bias"):
        for block in ("x", "B", "C"):
            src = sd[key][ch[block]]
            out[key][big_ch[block].start:big_ch[block].start + src.shape[0]] = src
    out["out_proj.weight"][:d, :small.ssm_width] = sd["out_proj.weight"][:, small.d_mlp:]
    out["out_proj.bias"][:d] = sd["out_proj.bias"]
    for key in ("dt_bias", "A_log", "D"):
        out[key][:] = sd[key]
    return out


def _padded_mixer(con: Construction, big, gated: tuple) -> dict[str, torch.Tensor]:
    if big.kind == "mamba":
        return _pad_mamba(con.mixer, con.config, big)
    return {**_pad_mamba2(con.mixer, con.config, big), "norm.weight": _tensor(gated)}


def _lm_block(con: Construction, d_lm: int):
    """The LM's block config at width d_lm, and the exact gated-norm weights (Mamba-2; empty for Mamba)."""
    c = con.config
    if c.kind == "mamba":
        return MambaConfig(d_model=d_lm, d_state=c.d_state, d_conv=c.d_conv, expand=c.expand, dt_rank=c.rank,
                           bias=c.bias, conv_bias=c.conv_bias), ()
    require(c.nheads == 1 and c.ngroups == 1 and not c.D_has_hdim and not c.rmsnorm and c.bias and c.expand == 1,
            f"{con.name}: a Mamba-2 language-model export needs one head, one group, D per head, rmsnorm=False, "
            f"bias=True and expand=1")
    big = Mamba2Config(d_model=d_lm, d_state=c.d_state, d_conv=c.d_conv, expand=1, headdim=d_lm, ngroups=1,
                       rmsnorm=True, bias=True, conv_bias=c.conv_bias, chunk_size=c.chunk_size)
    return big, (sp.Integer(GATED_WEIGHT),) * d_lm


def wrap(con: Construction, constants=None) -> LanguageModel:
    """The construction inside the one-layer language model (module docstring), exactly."""
    require(con.name in BOUNDS, f"a language-model export is proven for {', '.join(SUPPORTED)}, not {con.name}")
    require(con.config.kind in ("mamba", "mamba2") and con.tokens is not None and con.position_channel is None,
            f"{con.name}: a language-model export needs a Mamba or Mamba-2 block and an MQAR vocabulary")
    require(con.proof is not None and con.proof.margin is not None and not con.proof.outside,
            f"{con.name}: these parameters are outside the construction's proof, so no language model can be proven "
            f"({con.proof.outside if con.proof is not None else 'no proof'})")
    bounds = BOUNDS[con.name](con, constants)
    built = float(bounds["margin"])
    require(math.isclose(built, con.proof.margin, rel_tol=1e-12),
            f"{con.name}: the constants given to the export (margin {built:.9g}) are not those the construction "
            f"was built with (margin {con.proof.margin:.9g})")
    d, d_lm, tokens = con.config.d_model, con.config.d_model + PADS, con.tokens
    emb = _integers(con.embedding)
    embedding = torch.zeros(tokens.n_tokens, d_lm, dtype=torch.float64)
    embedding[:, :d] = con.embedding
    for x, n in enumerate((emb * emb).sum(1).tolist()):
        require(n < MEAN_SQUARE * d_lm, f"{con.name}: token {x}'s embedding has squared norm {n}, not below "
                                        f"{MEAN_SQUARE} d' = {MEAN_SQUARE * d_lm}")
        embedding[x, d:] = torch.tensor(four_squares(MEAN_SQUARE * d_lm - n), dtype=torch.float64)
    config, gated = _lm_block(con, d_lm)
    head = torch.zeros(tokens.n_tokens, d_lm, dtype=torch.float64)
    head[tokens.values_start:tokens.noise_start, :d] = con.readout
    scale = sp.sqrt(MEAN_SQUARE + EPS)
    return LanguageModel(con, config, embedding, (scale,) * d + (sp.Integer(0),) * PADS,
                         _padded_mixer(con, config, gated), (sp.Integer(FINAL_WEIGHT),) * d_lm, head, bounds, gated)


# ----------------------------------------------------------------------------------------------------------------
# The two checkpoints
# ----------------------------------------------------------------------------------------------------------------


def transformers_config(lm: LanguageModel, dtype: torch.dtype) -> dict:
    """config.json for ``MambaForCausalLM`` / ``Mamba2ForCausalLM`` (no pad, bos or eos token: noise tokens are
    content, and a pad id would make ``generate`` mask them)."""
    c = lm.config
    common = {"vocab_size": lm.con.tokens.n_tokens, "hidden_size": c.d_model, "state_size": c.d_state,
              "num_hidden_layers": 1, "layer_norm_epsilon": float(lm.eps), "expand": c.expand, "conv_kernel": c.d_conv,
              "use_bias": c.bias, "use_conv_bias": c.conv_bias, "hidden_act": "silu", "residual_in_fp32": True,
              "tie_word_embeddings": False, "pad_token_id": None, "bos_token_id": None, "eos_token_id": None,
              "use_cache": True, "dtype": str(dtype).removeprefix("torch.")}
    if c.kind == "mamba":
        return {"architectures": ["MambaForCausalLM"], "model_type": "mamba", **common, "time_step_rank": c.rank}
    return {"architectures": ["Mamba2ForCausalLM"], "model_type": "mamba2", **common, "num_heads": c.nheads,
            "head_dim": c.head_dim, "n_groups": c.ngroups, "chunk_size": c.chunk_size}


def mamba_ssm_config(lm: LanguageModel) -> dict:
    c = lm.config
    return {"d_model": c.d_model, "d_intermediate": 0, "n_layer": 1, "vocab_size": lm.con.tokens.n_tokens,
            "ssm_cfg": {"layer": "Mamba1", "d_state": c.d_state, "d_conv": c.d_conv, "expand": c.expand,
                        "dt_rank": c.rank, "bias": c.bias, "conv_bias": c.conv_bias},
            "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True, "residual_in_fp32": True,
            "fused_add_norm": True, "pad_vocab_size_multiple": 1, "tie_embeddings": False}


def proof_record(lm: LanguageModel) -> dict:
    """The proof as stored in the export: every obligation and the bounds (exact expressions and their values)."""
    obs = lm.decide()
    w = lm.wrapping()
    f_min, f_max = lm_proof.factor_bounds(w)
    num = lambda e: float(sp.N(e, 17))  # noqa: E731
    after = lm.margin_after_norm()
    return {
        "claim": "at every query of every MQAR sequence of length <= seq_len, the next-token argmax is the queried "
                 "value's token, with logit margin >= margin_after_norm over every other token",
        "holds": all(o.holds for o in obs), "held": sum(o.holds for o in obs), "total": len(obs),
        "construction_margin": num(lm.bounds["margin"]), "target_logit": num(lm.bounds["target_logit"]),
        "mixer_output_bound": num(lm_proof.mixer_output_bound(w)),
        "gated_factor_min": num(lm_proof.gated_factor_min(w)),
        "final_factor": [num(f_min), num(f_max)],
        "margin_after_norm": num(after), "margin_after_norm_exact": str(after),
        "obligations": [{"name": o.name, "statement": o.statement, "holds": bool(o.holds)} for o in obs],
    }


def describe(lm: LanguageModel, record: dict | None) -> dict:
    con, tokens = lm.con, lm.con.tokens
    return {"name": con.name, "theorem": con.theorem, "record": record or {}, "wiring": WIRING,
            "tokens": tokens.as_dict(), "scored_tokens": [0, tokens.kappa],
            "coordinates": con.channels + [f"pad[{k}]" for k in range(PADS)],
            "layout": {"d": lm.d, "d_lm": lm.d_lm, "mean_square": lm.mean_square, "eps": str(lm.eps),
                       "final_norm_weight": FINAL_WEIGHT, "gated_norm_weight": GATED_WEIGHT if lm.gated else None,
                       "mamba_ssm_folder": MAMBA_SSM_FOLDER if lm.config.kind == "mamba" else None},
            "info": con.info, "proof": proof_record(lm)}


def save_lm(con: Construction, out_dir: str | Path, dtype: torch.dtype = torch.float32, *, constants=None,
            record: dict | None = None, force: bool = False) -> Path:
    """Write ``con`` as a language model into ``out_dir`` (module docstring): the transformers checkpoint, the
    mamba_ssm one in ``out_dir/mamba_ssm``, and the proof in both. ``constants``: the proof constants the
    construction was built with (default: its theorem's). As ``constructions.export.save``: ``out_dir`` new or empty,
    or an export replaced only with ``force``; written into a temporary folder renamed into place (files 0644)."""
    out = Path(out_dir)
    check_target(out, force)
    lm = wrap(con, constants)
    about = describe(lm, record)

    def fill(tmp: Path) -> None:
        save_file(lm.state_dict("transformers", dtype), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        _write_json(tmp / "config.json", {**transformers_config(lm, dtype), "construction": about})
        if lm.config.kind == "mamba":
            sub = tmp / MAMBA_SSM_FOLDER
            sub.mkdir()
            torch.save(lm.state_dict("mamba_ssm", dtype), sub / "pytorch_model.bin")
            _write_json(sub / "config.json", mamba_ssm_config(lm))
            _write_json(sub / "proof.json", about)

    return write_folder_atomic(out, fill)


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, allow_nan=False))


# ----------------------------------------------------------------------------------------------------------------
# Loaders and the check of a stored export
# ----------------------------------------------------------------------------------------------------------------


def read_config(folder: str | Path) -> dict:
    """The export's ``config.json`` (transformers' fields and ``"construction"``)."""
    return json.loads((Path(folder) / "config.json").read_text())


def load_transformers(folder: str | Path):
    """``transformers.MambaForCausalLM`` (or ``Mamba2ForCausalLM``, as config.json says) ``.from_pretrained(folder)``,
    refusing any missing, unexpected or mismatched key."""
    import transformers

    cls = getattr(transformers, read_config(folder)["architectures"][0])
    with torch.random.fork_rng():  # the model draws initial weights before loading: the caller's seed stays put
        model, info = cls.from_pretrained(str(folder), output_loading_info=True)
    bad = {k: v for k, v in info.items() if v}
    require(not bad, f"{folder}: transformers loaded the checkpoint with {bad}")
    return model.eval()


def load_mamba_ssm(folder: str | Path, device: str = "cuda", dtype: torch.dtype = torch.float32):
    """``mamba_ssm``'s ``MambaLMHeadModel.from_pretrained(folder/mamba_ssm)`` (its ``load_state_dict`` is strict)."""
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    with torch.random.fork_rng(devices=[] if device == "cpu" else None):  # initial weights drawn before the load
        model = MambaLMHeadModel.from_pretrained(str(Path(folder) / MAMBA_SSM_FOLDER), device=device, dtype=dtype)
    return model.eval()


def stored_obligation(folder: str | Path, lm: LanguageModel) -> Obligation:
    """Both checkpoints in ``folder`` hold exactly ``lm``'s weights rounded to the file's dtype (the proof covers
    the stored weights only then)."""
    folder = Path(folder)
    dtype = getattr(torch, read_config(folder)["dtype"])
    stored = {"transformers": load_file(str(folder / "model.safetensors"))}
    if lm.config.kind == "mamba":
        stored["mamba_ssm"] = torch.load(folder / MAMBA_SSM_FOLDER / "pytorch_model.bin", weights_only=True)
    difference = next((d for names, sd in stored.items()
                       if (d := _first_difference(sd, lm.state_dict(names, dtype), names))), None)
    return Obligation(f"stored weights are the language model's, rounded to {dtype}".replace("torch.", ""),
                      difference or "every tensor of both checkpoints equal", difference is None)


def _first_difference(stored: dict, want: dict, where: str) -> str | None:
    if set(stored) != set(want):
        return f"{where}: tensor names differ: {sorted(set(stored) ^ set(want))}"
    for k in sorted(want):
        if stored[k].shape != want[k].shape:
            return f"{where} {k}: shape {tuple(stored[k].shape)} != {tuple(want[k].shape)}"
        diff = stored[k].double() != want[k].double()
        if diff.any():
            idx = tuple(int(i) for i in diff.nonzero()[0])
            return f"{where} {k}{list(idx)}: stored {float(stored[k][idx]):.9g}, the model's {float(want[k][idx]):.9g}"
    return None
