"""Atomic writes: a file or a folder is written beside its target under a temporary name and renamed into place,
so a reader (or a run cut by a signal or a crash) sees either the old content or the new one, never a part of it.

``atomic_write(path, write)`` is the one mechanism: ``write(tmp)`` fills a temporary file in the target's folder
(same file system, so ``os.replace`` is atomic on POSIX), which then replaces ``path``; the temporary file is
removed on any failure. ``write_json_atomic`` and ``write_text_atomic`` are its two common uses. A folder is written
the same way: ``write_folder_atomic(out, fill)`` has ``fill(tmp)`` write a temporary folder beside ``out`` (files
0644, folders 0755), which ``swap_folder`` then puts in place of ``out``.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, write: Callable[[str], object], *, suffix: str = "", mode: int = 0o644) -> Path:
    """Write ``path`` through ``write(tmp)`` into a temporary file renamed into place (parents created, ``mode``).
    ``suffix`` is the temporary file's (for writers that append one, e.g. numpy's ``.npz``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """``text`` (UTF-8) into ``path``, atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | Path, obj, indent: int = 1) -> Path:
    """``obj`` as JSON into ``path``, atomically (mode 0644, parents created)."""
    return write_text_atomic(path, json.dumps(obj, indent=indent))


def write_folder_atomic(out: str | Path, fill: Callable[[Path], object]) -> Path:
    """The folder ``out`` as ``fill(tmp)`` writes it into a temporary folder beside it (parents created; files 0644,
    folders 0755), then renamed into place (``swap_folder``: an existing ``out`` is replaced). The caller decides
    whether an existing ``out`` may be replaced before calling."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        fill(tmp)
        for f in tmp.rglob("*"):
            f.chmod(0o755 if f.is_dir() else 0o644)
        tmp.chmod(0o755)
        swap_folder(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def swap_folder(tmp: Path, out: Path) -> None:
    """Rename the folder ``tmp`` to ``out``; an existing ``out`` is moved aside first and removed after, so ``out``
    is at every moment the old folder, missing for the instant between two renames, or the new one."""
    if not out.exists():
        os.rename(tmp, out)
        return
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
    os.rename(out, old / "export")
    os.rename(tmp, out)
    shutil.rmtree(old)
