"""The export folder: ``model.safetensors`` and ``config.json`` written as one unit, and read back.

What config.json says and how a folder loads into a construction or a real module is ``verify.export``'s (it needs
the block kinds of ``verify.blocks``); this module is the file mechanics every export shares: ``write_folder`` writes
the pair into a temporary folder beside the target (mode 0644) and renames it into place, so a reader sees either no
export or a whole one; ``check_target`` refuses a target that is not new, empty or (with ``force``) an export;
``read_folder`` returns the pair (the atomic mechanics are ``common.io``'s).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from common.errors import require
from common.io import write_folder_atomic


def write_folder(out_dir: str | Path, tensors: dict[str, torch.Tensor], config: dict, *, force: bool = False) -> Path:
    """Write ``tensors`` as ``model.safetensors`` and ``config`` as ``config.json`` (strict JSON, UTF-8) into
    ``out_dir`` as one unit. ``out_dir`` may be missing or an empty folder; an existing export there is replaced only
    with ``force``."""
    out = Path(out_dir)
    check_target(out, force)

    def fill(tmp: Path) -> None:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(config, indent=2, allow_nan=False, ensure_ascii=False) + "\n",
                                         encoding="utf-8")

    return write_folder_atomic(out, fill)


def read_folder(out_dir: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config.json as a dict, the tensors of model.safetensors) of an export folder."""
    out = Path(out_dir)
    return json.loads((out / "config.json").read_text(encoding="utf-8")), load_file(str(out / "model.safetensors"))


def check_target(out: Path, force: bool) -> None:
    """``out`` may be new, an empty folder, or (with ``force``) an existing export; never a file or other content."""
    require(not out.exists() or out.is_dir(), f"{out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        require((out / "config.json").exists(), f"{out} is not empty and holds no export: choose a new folder")
        require(force, f"{out} already holds an export: pass --force to replace it")
