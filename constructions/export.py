"""Write and read a construction as ``model.safetensors`` + ``config.json``.

The tensors use the flat names of ``constructions.layout`` (``embedding.weight``, ``mixer.<mamba_ssm name>``,
``readout.weight``); strip ``mixer.`` to ``load_state_dict(strict=True)`` into the mamba_ssm module named by
``config["block"]`` (``mamba`` -> ``mamba_ssm.Mamba``; ``mamba2`` -> ``mamba_ssm.Mamba2``, add
``use_mem_eff_path=False`` without causal_conv1d; ``mamba_s4d`` -> ``verify.engines.mamba_s4d.MambaS4D``) built with
``**config["mamba_kwargs"]``.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from constructions.layout import Construction, MQARTokens, config_from_dict, config_to_dict, from_state_dict


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(path: str | Path, obj, indent: int = 1) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (temp file + rename; parents created; mode 0644)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda p: Path(p).write_text(json.dumps(obj, indent=indent)))
    path.chmod(0o644)
    return path


def save(con: Construction, out_dir: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(dtype).contiguous() for k, v in con.state_dict().items()}
    config = {
        "construction": con.name,
        "theorem": con.theorem,
        "block": con.config.kind,
        "block_config": config_to_dict(con.config),
        "mamba_kwargs": con.config.mamba_kwargs(),
        "sizes": con.sizes(),
        "tokens": con.tokens.as_dict() if con.tokens else None,
        "token_counts": vars(con.tokens) if con.tokens else None,
        "n_classes": int(con.readout.shape[0]),
        "channels": con.channels,
        "info": con.info,
        "position_channel": con.position_channel,
        "dtype": str(dtype).removeprefix("torch."),
    }
    _atomic_write(out / "model.safetensors", lambda p: save_file(tensors, p))
    _atomic_write(out / "config.json", lambda p: Path(p).write_text(json.dumps(config, indent=2)))
    return out


def load(out_dir: str | Path) -> Construction:
    out = Path(out_dir)
    config = json.loads((out / "config.json").read_text())
    mc = config_from_dict(config["block"], config["block_config"])
    tokens = MQARTokens(**config["token_counts"]) if config.get("token_counts") else None
    return from_state_dict(load_file(str(out / "model.safetensors")), mc, name=config["construction"],
                           theorem=config["theorem"], channels=config["channels"], tokens=tokens, info=config["info"],
                           position_channel=config.get("position_channel"))
