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
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from constructions.errors import require
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


def save(con: Construction, out_dir: str | Path, dtype: torch.dtype = torch.float32, *, record: dict | None = None,
         force: bool = False) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``out_dir`` as one unit.

    Both files are written into a temporary folder beside ``out_dir`` (mode 0644) and the folder is renamed into
    place, so a reader sees either no export or a whole one. ``out_dir`` may be missing or an empty folder; an
    existing export there is replaced only with ``force``. ``record`` (for example the parameters and constants the
    construction was built from) is stored under ``config["record"]``.
    """
    out = Path(out_dir)
    check_target(out, force)
    tensors = {k: v.detach().to(dtype, copy=True).contiguous() for k, v in con.state_dict().items()}  # untied
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
        "proof": con.proof.as_dict() if con.proof else None,
        "position_channel": con.position_channel,
        "dtype": str(dtype).removeprefix("torch."),
        "record": record or {},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        save_file(tensors, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(config, indent=2, allow_nan=False))
        for f in tmp.iterdir():
            f.chmod(0o644)
        tmp.chmod(0o755)
        _swap_in(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def check_target(out: Path, force: bool) -> None:
    """``out`` may be new, an empty folder, or (with ``force``) an existing export; never a file or other content."""
    require(not out.exists() or out.is_dir(), f"{out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        require((out / "config.json").exists(), f"{out} is not empty and holds no export: choose a new folder")
        require(force, f"{out} already holds an export: pass --force to replace it")


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is moved aside first and removed after."""
    if not out.exists():
        os.rename(tmp, out)
        return
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
    os.rename(out, old / "export")
    os.rename(tmp, out)
    shutil.rmtree(old)


def load(out_dir: str | Path) -> Construction:
    out = Path(out_dir)
    config = json.loads((out / "config.json").read_text())
    mc = config_from_dict(config["block"], config["block_config"])
    tokens = MQARTokens(**config["token_counts"]) if config.get("token_counts") else None
    return from_state_dict(load_file(str(out / "model.safetensors")), mc, name=config["construction"],
                           theorem=config["theorem"], channels=config["channels"], tokens=tokens, info=config["info"],
                           position_channel=config.get("position_channel"))
