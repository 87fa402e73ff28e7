"""A construction as a folder (``model.safetensors`` + ``config.json``), and loaders that put it into real modules.

config.json says what the file is, each fact once (``describe``):

* ``format``: "mamba-constructions mixer export", ``format_version`` 2;
* ``construction``, ``theorem``; ``dtype`` (of the stored tensors); ``record`` (how the export was built: the
  construction's parameters and constant overrides) and ``proof`` (what its proof claims), which
  ``check --from-export`` reads;
* ``model``: the wiring in words (logits = readout of the mixer of the embedding, no norm, no residual, and the +PE
  position channel where there is one), ``position_channel``, ``n_classes`` and every tensor's shape;
* ``block``: the block kind's name and title, its constructor ``arguments`` with every default resolved (the one
  source of the block's configuration: ``verify.blocks.KINDS[kind].config(**arguments)``), its ``update_rule`` in
  words, its ``sizes`` (the kind's formulas: d_model, d_inner, d_state, state size, parameter count) and, per code
  base, the module that loads it and the loader here that does the layout work, or why there is none;
* ``tokens`` (MQAR constructions: the token counts and id ranges), ``channels`` (the name of each embedding
  coordinate), ``info`` (construction-specific facts).

Loaders: ``load(DIR)`` (a ``Construction``: every engine of this project runs it), ``mamba_ssm_mixer(DIR)`` (the
block's mamba_ssm module, or this project's module on mamba_ssm's kernels, strictly loaded; a GPU) and
``transformers_mixer(DIR)`` (transformers' mixer, the Mamba-2 rows permuted and padded; the CPU). A loader for another
code base is one more function of the same form over ``read``. Exports of format 1 (config.json with a ``block``
name, ``block_config`` and ``mamba_kwargs``, Mamba-S4D named ``mamba_s4d``) are read too.
"""
from __future__ import annotations

from pathlib import Path

import torch

from common.errors import RequirementError
from constructions.export import read_folder, write_folder
from constructions.layout import Construction, MQARTokens, from_state_dict
from verify import blocks

FORMAT, FORMAT_VERSION = "mamba-constructions mixer export", 2

# config.json's "modules" key per code base -> the loader of this module that loads the block there
LOADERS = {"mamba_ssm": "verify.export.mamba_ssm_mixer(DIR) (on a CUDA GPU)",
           "transformers": "verify.export.transformers_mixer(DIR) (on the CPU)"}
PROJECT = {"module": "this project's Construction, which every engine of it runs (verify-constructions check NAME "
                     "--from-export DIR checks the stored weights against the proof)",
           "loader": "verify.export.load(DIR)"}


def wiring(con: Construction) -> str:
    """The model around the block, in words."""
    text = ("logits[t] = readout.weight @ mixer(x)[t] at every position t, with x = embedding.weight[tokens] "
            "(batch, L, d_model) and mixer = the block below, whose tensors are mixer.<name> (load_state_dict into "
            "the block's module with the prefix 'mixer.' stripped); one block, no normalisation, no residual "
            "connection, no readout bias")
    if con.position_channel is not None:
        text += (f". +PE: before the block, coordinate {con.position_channel} of x is replaced by the raw position "
                 f"t = 1, 2, ..., L (column {con.position_channel} of embedding.weight is not read)")
    return text + "."


def _modules(kind: blocks.BlockKind) -> dict:
    out = {}
    for where, loader in LOADERS.items():
        real = getattr(kind, where)
        out[where] = {"none": real} if isinstance(real, str) else {"module": real.loads, "loader": loader}
    out["mamba-constructions"] = dict(PROJECT)
    return out


def describe(con: Construction, dtype: torch.dtype, record: dict | None = None) -> dict:
    """config.json of ``con`` stored in ``dtype`` (module docstring)."""
    kind = blocks.of(con.config)
    tensors = con.state_dict()
    sizes = {**kind.sizes(con.config), "parameters": kind.parameter_count(con.config)}
    tokens = {"counts": vars(con.tokens), **con.tokens.as_dict()} if con.tokens else None
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "construction": con.name, "theorem": con.theorem,
        "dtype": str(dtype).removeprefix("torch."),
        "model": {"wiring": wiring(con), "position_channel": con.position_channel,
                  "n_classes": int(con.readout.shape[0]),
                  "tensors": {k: list(v.shape) for k, v in tensors.items()}},
        "block": {"kind": kind.name, "title": kind.title, "arguments": con.config.arguments(),
                  "update_rule": kind.update_rule, "sizes": sizes, "modules": _modules(kind)},
        "tokens": tokens, "channels": con.channels, "info": con.info,
        "proof": con.proof.as_dict() if con.proof else None,
        "record": record or {},
    }


def save(con: Construction, out_dir: str | Path, dtype: torch.dtype = torch.float32, *, record: dict | None = None,
         force: bool = False) -> Path:
    """Write ``con`` into ``out_dir`` (``constructions.export.write_folder``: one unit, an existing export replaced
    only with ``force``), its tensors in ``dtype``. ``record`` (the parameters and constants the construction was
    built from) is stored under ``config["record"]``."""
    tensors = {k: v.detach().to(dtype, copy=True) for k, v in con.state_dict().items()}  # untied
    return write_folder(out_dir, tensors, describe(con, dtype, record), force=force)


def block_config(config: dict):
    """(the block kind, its config) of a config.json of either format."""
    if isinstance(config.get("block"), dict):  # format 2
        kind = blocks.kind(config["block"]["kind"])
        return kind, kind.config(**config["block"]["arguments"])
    kind = blocks.kind(blocks.canonical(config["block"]))  # format 1: the name, then every config field
    return kind, kind.config(**config["block_config"])


def read(out_dir: str | Path) -> tuple[dict, blocks.BlockKind, object, dict[str, torch.Tensor]]:
    """(config.json, the block kind, the block's config, the tensors) of an export folder of either format."""
    config, tensors = read_folder(out_dir)
    kind, cfg = block_config(config)
    return config, kind, cfg, tensors


def load(out_dir: str | Path) -> Construction:
    """The construction an export holds (either format)."""
    config, _, cfg, tensors = read(out_dir)
    if "format" in config:
        counts = config["tokens"]["counts"] if config.get("tokens") else None
        position = config["model"]["position_channel"]
    else:  # format 1
        counts, position = config.get("token_counts"), config.get("position_channel")
    return from_state_dict(tensors, cfg, name=config["construction"], theorem=config["theorem"],
                           channels=config["channels"], tokens=MQARTokens(**counts) if counts else None,
                           info=config["info"], position_channel=position)


def mixer_state_dict(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The block's tensors under its module's names (``mixer.`` stripped)."""
    return {k[len("mixer."):]: v for k, v in tensors.items() if k.startswith("mixer.")}


def _mixer(out_dir, where: str, device, dtype):
    _, kind, cfg, tensors = read(out_dir)
    return kind.real(where).load(cfg, mixer_state_dict(tensors), device=device, dtype=dtype)


def mamba_ssm_mixer(out_dir: str | Path, device="cuda", dtype: torch.dtype = torch.float32):
    """The export's block as its mamba_ssm module (``mamba_ssm.Mamba``, ``mamba_ssm.Mamba2``, or this project's
    ``MambaS4D`` / ``MambaDeltaT`` on mamba_ssm's selective scan), strictly loaded, on ``device`` in ``dtype``.
    Needs mamba_ssm; RequirementError for a block it cannot run (the reason)."""
    try:
        return _mixer(out_dir, "mamba_ssm", device, dtype)
    except ImportError as e:
        raise RequirementError(f"loading into mamba_ssm needs the mamba_ssm package with its compiled kernels "
                               f"({e})") from None


def transformers_mixer(out_dir: str | Path, dtype: torch.dtype = torch.float32):
    """The export's block as transformers' ``MambaMixer`` / ``Mamba2Mixer`` (the layout work done: Mamba-2's rows
    permuted and padded, its gated norm the identity), strictly loaded, on the CPU in ``dtype``. Needs transformers;
    RequirementError for a block it does not have (the reason)."""
    try:
        return _mixer(out_dir, "transformers", None, dtype)
    except ImportError as e:
        raise RequirementError(f"loading into transformers needs the transformers package ({e})") from None
