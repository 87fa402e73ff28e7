"""The append-only results store: one JSON line per finished run.

Appends are atomic in the sense a reader needs: every batch of lines is one ``os.write`` on an ``O_APPEND``
descriptor under an exclusive ``flock`` (several processes on one machine may share a store), followed by ``fsync``.
A line cut short by a crash has no newline: readers skip it, and the next append first ends it with a newline, so a
cut line never merges with a good one. A run counts as finished iff a complete line with its key is present; a rerun
skips finished runs, so an interrupted sweep loses at most the runs in flight and never duplicates a finished one.
"""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path


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
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a crash
                continue
        return out

    def keys(self) -> set[str]:
        return {r["key"] for r in self.records() if "key" in r}

    def append(self, records: list[dict]) -> int:
        """Append the records whose run key the store does not hold yet, in one atomic write (dropping in-memory-only
        fields, those starting with '_'); returns how many. The keys are read under the lock, so processes that add
        the same runs at once (``sweep.adopt`` in a pool) add each once."""
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
