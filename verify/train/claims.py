"""Several sweep processes sharing one store on one machine: each claims a pack before training it.

Static shards (``--shard I/N``) split a grid by a hash of the pack key, so one process can draw three of the largest
packs and another one small pack: on the H100 (fifth session) shard processes of ``fig2-loss`` ended after 130 s
beside others that ran the call's whole 500 s, and the largest packs started late and were cut. With claims, every
process plans the same missing packs, takes them largest first (``pack_cost``), and trains only those it claimed, so
each stays busy until the queue is empty and the largest packs start first.

A claim is the file ``<store>.claims/<pack id>`` holding ``host pid``, created under an exclusive ``flock`` on
``<store>.claims/.lock``. A claim whose process is gone (same host, pid not alive: a crash, or a call cut at its
deadline) is stale and is taken over, so a rerun resumes the pack from its checkpoint; a claim from another host is
always respected (stores shared across machines should use Ray instead, ``verify.train.ray_sweep``).
"""
from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from verify.train.spec import RunSpec


# Per-token cost a mixer has whatever d is, in units of d^2. Mamba-2's SSD kernels: on the H100 (fifth session, 8
# processes side by side) its fig2 packs of d = 8, 16, 24 and 48 each took 283-292 s, about what Mamba's largest
# (d = 156, N = 64: d (d + N) = 34k) took beside 13 others.
MIXER_OVERHEAD = {"mamba2": 2 ** 15}


def pack_cost(pack: list[RunSpec]) -> int:
    """A proxy of a pack's GPU time, for ordering only: models x tokens x (d^2 of the projections + d N of the scan
    + the mixer's fixed overhead)."""
    s = pack[0]
    return len(pack) * s.seq_len * (s.d_model * (s.d_model + s.d_state) + MIXER_OVERHEAD.get(s.mixer, 0))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _stale(text: str) -> bool:
    host, _, pid = text.partition(" ")
    return host == socket.gethostname() and pid.isdigit() and not _alive(int(pid))


def claim(store_path: str | os.PathLike, pack_id: str) -> bool:
    """True iff this process now holds the claim on ``pack_id`` (new, or taken over from a dead process)."""
    d = Path(f"{store_path}.claims")
    d.mkdir(parents=True, exist_ok=True)
    me = f"{socket.gethostname()} {os.getpid()}"
    with open(d / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        f = d / pack_id
        held = f.read_text() if f.exists() else me
        if held != me and not _stale(held):
            return False
        f.write_text(me)
        return True
