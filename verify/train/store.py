"""The append-only results store: one JSON line per finished run.

Appends are atomic in the sense a reader needs: every batch of lines is one ``os.write`` on an ``O_APPEND``
descriptor under an exclusive ``flock`` (several processes on one machine may share a store), followed by ``fsync``.
A line cut short by a crash has no newline: readers skip it, and the next append first ends it with a newline, so a
cut line never merges with a good one. A run counts as finished iff a complete line with its key is present; a rerun
skips finished runs, so an interrupted sweep loses at most the runs in flight and never duplicates a finished one.

Records are read under the current run-key schema (``verify.train.spec.upgrade``): lines written under an older
schema stay as they are on disk and are recognised by their current key.

A store holds runs of one device type (``cpu``, ``cuda``): the paper's evidence is GPU runs, and a CPU run among them
would change a figure without a word. ``check_target`` refuses, before any training, a path that cannot be a store
(a folder, a file that is not JSON lines of runs, a place that cannot be written) and a store of another device type
unless mixing is asked for.
"""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from common.errors import RequirementError, require
from verify.train.spec import upgrade


def device_type(device) -> str:
    """'cuda' for 'cuda', 'cuda:1'; 'cpu' for 'cpu'; the part before ':' of any other device string."""
    return str(device).split(":")[0]


class ResultStore:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_bytes().split(b"\n"):
            if not line.strip():
                continue
            try:
                out.append(upgrade(json.loads(line)))
            except json.JSONDecodeError:  # a line cut short by a crash
                continue
        return out

    def keys(self) -> set[str]:
        return {r["key"] for r in self.records() if "key" in r}

    def device_types(self) -> set[str]:
        """The device types of the stored runs (records without a device are not counted)."""
        return {device_type(r["device"]) for r in self.records() if r.get("device")}

    def append(self, records: list[dict]) -> int:
        """Append the records whose run key the store does not hold yet, in one atomic write (dropping in-memory-only
        fields, those starting with '_'); returns how many. The keys are read under the lock, so processes that add
        the same runs at once add each once."""
        if not records:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            seen, fresh = self.keys(), []
            for r in records:
                if "key" in r:
                    if r["key"] in seen:
                        continue
                    seen.add(r["key"])
                fresh.append(r)
            if not fresh:
                return 0
            blob = b"".join(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}, sort_keys=True,
                                       default=float).encode() + b"\n" for r in fresh)
            size = os.fstat(fd).st_size
            if size:
                with open(self.path, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        blob = b"\n" + blob
            view = memoryview(blob)
            while view:  # os.write on a regular file writes everything; the loop only guards a short write
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
            return len(fresh)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _writable_dir(path: Path) -> bool:
    """Whether ``path`` is a folder this process can create files in, or could be created as one."""
    p = path
    while not p.exists():
        if p.parent == p:
            return False
        p = p.parent
    return p.is_dir() and os.access(p, os.W_OK | os.X_OK)


def _is_store(path: Path) -> bool:
    """Every complete line is a JSON object with a run key (the last line may be cut short by a crash)."""
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            if i == len(lines) - 1:  # no newline after it: cut short
                continue
            return False
        if not isinstance(r, dict) or "key" not in r:
            return False
    return True


def check_target(path: str | os.PathLike, device: str | None, flag: str = "--store", allow_mixed: bool = False) -> None:
    """Refuse (RequirementError naming ``flag``) a store path that training could not append to, or a store holding
    runs of a device type other than ``device``'s unless ``allow_mixed`` (``device`` None: no runs will be added)."""
    p = Path(path)
    if p.exists():
        require(not p.is_dir(), f"{flag} {path}: is a folder, not a results file")
        require(os.access(p, os.W_OK), f"{flag} {path}: the file is not writable")
        try:
            ok = _is_store(p)
        except OSError as e:
            raise RequirementError(f"{flag} {path}: cannot be read ({e.strerror})") from None
        require(ok, f"{flag} {path}: exists and is not a results store (JSON lines of runs); "
                    f"name a new file or an existing store")
        other = ResultStore(p).device_types() - {device_type(device)} if device else set()
        require(allow_mixed or not other,
                f"{flag} {path}: holds runs trained on {', '.join(sorted(other))} and this sweep trains on "
                f"{device_type(device)}; name another {flag} (or pass --allow-mixed-devices to add them to it)")
    else:
        require(_writable_dir(p.parent), f"{flag} {path}: its folder cannot be created or written")
    require(_writable_dir(Path(f"{p}.ckpt")), f"{flag} {path}: the checkpoint folder {p}.ckpt cannot be written")


def weights_path(store_path: str | os.PathLike, key: str) -> Path:
    """Where a run's kept weights lie (protocol ``keep_weights``): ``<store>.weights/<run key>.safetensors``."""
    return Path(f"{store_path}.weights") / f"{key}.safetensors"


def write_weights(store_path: str | os.PathLike, record: dict) -> Path:
    """A record's in-memory ``_weights`` (its tested state) as float32 safetensors whose metadata holds the run's spec
    (JSON under "spec"), written atomically before the record is stored: a stored record of a keep_weights run has
    its file. A file already there has no record yet (a write cut off before the store line): it is the same run key,
    so it is replaced."""
    import tempfile

    import torch
    from safetensors.torch import save_file

    path = weights_path(store_path, record["key"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", dtype=torch.float32).contiguous() for k, v in record["_weights"].items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"spec": json.dumps(record["spec"], sort_keys=True)})
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_weights(path: str | os.PathLike) -> tuple[dict, dict]:
    """(state dict, spec dict) of a file ``write_weights`` wrote."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        sd = {k: f.get_tensor(k) for k in f.keys()}
    require("spec" in meta, f"{path}: no run spec in its metadata (not a file of kept training weights)")
    return sd, json.loads(meta["spec"])

