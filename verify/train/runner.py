"""Train the missing runs of a sweep into a store: Ray schedules the packs, the driver alone writes the store.

``run_sweep`` plans the packs (``sweep.plan``), largest first (``sweep.pack_cost``), and hands them to an executor:

* ``ray`` (the scheduler; optional extra ``pip install 'mamba-constructions[sweep]'``): each pack is one Ray task
  asking for ``gpus_per_pack`` GPUs (a fraction: 0.1 runs ten packs side by side on one GPU) and ``cpus_per_pack``
  CPUs. Local by default (``ray.init`` starts a one-machine cluster whose workers import this checkout); ``address``
  joins an existing cluster (``"auto"``, ``"ray://host:10001"``), whose nodes need the package installed and, for a
  cut pack to resume on another node, the store's folder on a filesystem every node sees (else it restarts).
  ``mps``: start the CUDA MPS daemon first (local only), so that the packs' kernels on one GPU run side by side
  instead of time-sliced; one process's kernel fault then ends every process on that GPU. Each task also reserves
  the host memory its process needs at most (``pack_host_bytes``, Ray's ``memory`` resource), so that packs side by
  side never draw more training sets at once than the host holds (ten packs of Koren et al.'s V x L grid at
  L = 4000, 30 GB each, would not fit a 128 GB host).
* ``inline``: the packs one after another in this process, for a machine without Ray.

Workers return their records and the driver appends them (``ResultStore.append``: a run key is stored once), so no
run is trained twice into the store. A pack is checkpointed (``<store>.ckpt/<pack id>.pt``) every two minutes, when
the time budget ``minutes`` runs out, and when the sweep is interrupted (SIGINT, SIGTERM: the driver cancels the Ray
tasks, and each pack's training loop stops at its next step boundary, ``loop.train_pack``); the same command run
again resumes every cut pack from its checkpoint. A run whose protocol keeps its weights (``keep_weights``) has its
tested state written to ``<store>.weights/<run key>.safetensors`` (``store.write_weights``) before its record.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import RequirementError, require
from verify.train.spec import RunSpec, run_key
from verify.train.store import ResultStore
from verify.train.sweep import pack_cost, pack_id, plan

ROOT = Path(__file__).resolve().parents[2]
CANCEL_WAIT_S = 120  # how long an interrupted sweep waits for its packs to write their checkpoints
HOST_BASE_BYTES = 2 << 30  # a training process before its data (torch and the CUDA libraries loaded)
TRAIN_BYTES_PER_POSITION = 28  # drawing the train split: int64 tokens and labels (16), the generator's temporaries
HELD_BYTES_PER_POSITION = 16  # the val and test splits, held as int64 tokens and labels


def pack_host_bytes(pack: list[RunSpec]) -> int:
    """Host memory (bytes) that the process training ``pack`` needs at most: ``HOST_BASE_BYTES``, plus 28 bytes a
    position of the train split while it is drawn (its int64 tokens and labels, 16 bytes, and the generator's
    temporaries: numpy's peak, traced, was 1.38-1.50 times those 16 for mqar-zoology at L = 1000-4000,
    V = 5696-50000, so 1.75 times leaves a margin; the split is then held as int16 or int32), plus 16 bytes a position
    of the val and test splits (int64). A pack's runs share one data set (``loop.datasets`` of its first run).
    Koren et al.'s V x L grid at L = 4000: 30.3 GB."""
    s = pack[0]
    p = s.protocol
    return (HOST_BASE_BYTES + TRAIN_BYTES_PER_POSITION * p.train_samples * s.seq_len
            + HELD_BYTES_PER_POSITION * (p.val_samples + p.test_samples) * s.seq_len)


def train_one(spec_dicts: list[dict], device: str, impl: str, checkpoint: str, deadline: float | None,
              threads: int) -> list[dict] | None:
    """One pack: its records (in-memory fields dropped), or None where ``deadline`` passed (checkpointed if begun)."""
    import torch

    from verify.train.loop import train_pack

    if deadline is not None and time.time() > deadline:
        return None
    if device == "cpu":
        torch.set_num_threads(threads)
    res = train_pack([RunSpec.from_dict(d) for d in spec_dicts], device=device, impl=impl, checkpoint=checkpoint,
                     deadline=deadline)
    keep = [bool(d["protocol"].get("keep_weights")) for d in spec_dicts]  # the weights travel to the driver
    return None if res is None else [{k: v for k, v in r.items() if not k.startswith("_") or (k == "_weights" and kp)}
                                     for r, kp in zip(res, keep)]


@dataclass
class Progress:
    """What the driver knows, for the progress display."""

    packs: int
    runs: int
    packs_done: int = 0
    runs_done: int = 0
    start: float = field(default_factory=time.time)

    def line(self) -> str:
        s = int(time.time() - self.start)
        return (f"sweep: {self.packs_done}/{self.packs} packs, {self.runs_done}/{self.runs} runs stored, "
                f"{s // 60}m{s % 60:02d}s")


class Inline:
    """The packs one after another in this process."""

    def __init__(self, device, impl, threads):
        self.device, self.impl, self.threads = device, impl, threads
        self.queue: list = []

    def submit(self, pack, checkpoint, deadline):
        self.queue.append((pack, checkpoint, deadline))
        return len(self.queue) - 1

    def wait(self, pending, timeout):
        """Train the next pack; [(handle, records or None or the exception)]."""
        h = min(pending)
        pack, ck, deadline = self.queue[h]
        try:
            return [(h, train_one([s.as_dict() for s in pack], self.device, self.impl, ck, deadline, self.threads))]
        except Exception as e:  # noqa: BLE001  (reported per pack; the sweep goes on)
            return [(h, e)]

    def cancel(self, pending):
        return []  # the interrupt reached the pack in this process, which checkpointed itself

    def close(self):
        pass


class RayExecutor:
    """Each pack one Ray task; see the module docstring."""

    def __init__(self, device, impl, threads, address=None, gpus_per_pack=None, cpus_per_pack=1.0, num_cpus=None,
                 mps=False):
        require(":" not in device, f"--device {device}: Ray assigns each pack its GPU, pass --device cuda "
                                   f"(or --no-ray to train on this one)")
        ray = _ray()
        self.ray, self.device, self.impl, self.threads, self.mps_started = ray, device, impl, threads, False
        self.owns = not ray.is_initialized()
        if mps:
            require(address is None, "--mps starts the CUDA MPS daemon on this machine: not with --address")
            self.mps_started = start_mps()
        if self.owns:
            self._init(address, num_cpus, device)
        gpus = (gpus_per_pack or 0.1) if device.startswith("cuda") else 0
        if gpus and ray.cluster_resources().get("GPU", 0) == 0:
            self.close()
            raise RequirementError(f"--device {device}: the Ray cluster ({address or 'local'}) has no GPU")
        self.remote = ray.remote(num_gpus=gpus, num_cpus=cpus_per_pack, max_retries=1)(train_one)

    def _init(self, address, num_cpus, device):
        """Start or join Ray, keeping this process's SIGINT and SIGTERM handlers (ray.init installs its own, which
        would end the driver without checkpointing the packs)."""
        import logging

        main = threading.current_thread() is threading.main_thread()
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
        kw = dict(log_to_driver=False, logging_level=logging.ERROR)
        if address:
            self.ray.init(address=address, **kw)
        else:
            import torch

            path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
            gpus = torch.cuda.device_count() if device.startswith("cuda") else None  # None: Ray looks for itself
            self.ray.init(num_cpus=num_cpus, num_gpus=gpus, include_dashboard=False,
                          runtime_env={"env_vars": {"PYTHONPATH": path}}, **kw)  # workers import this checkout
        for s, h in handlers.items():
            signal.signal(s, h)

    def submit(self, pack, checkpoint, deadline):
        """One Ray task for ``pack``, reserving its host memory (``pack_host_bytes``; at most the largest node's
        memory resource, so that a pack larger than any node still runs, alone)."""
        memory, largest = pack_host_bytes(pack), self.node_memory()
        memory = min(memory, largest) if largest else memory
        return self.remote.options(memory=memory).remote([s.as_dict() for s in pack], self.device, self.impl,
                                                         checkpoint, deadline, self.threads)

    def node_memory(self) -> float:
        """The largest ``memory`` resource of the cluster's live nodes (bytes; 0 if none reports one)."""
        return max((n["Resources"].get("memory", 0) for n in self.ray.nodes() if n.get("Alive")), default=0)

    def wait(self, pending, timeout):
        done, _ = self.ray.wait(list(pending), num_returns=1, timeout=timeout)
        return [(h, self._get(h)) for h in done]

    def _get(self, h):
        try:
            return self.ray.get(h)
        except Exception as e:  # noqa: BLE001  (a pack that failed or was cancelled: reported, the sweep goes on)
            return e

    def cancel(self, pending):
        """Interrupt every pending pack (KeyboardInterrupt in the running ones, which checkpoint) and wait for them;
        [(handle, result)] of those that finished meanwhile."""
        for h in pending:
            self.ray.cancel(h)
        done, _ = self.ray.wait(list(pending), num_returns=len(pending), timeout=CANCEL_WAIT_S)
        return [(h, self._get(h)) for h in done]

    def close(self):
        if self.owns and self.ray.is_initialized():
            self.ray.shutdown()
        if self.mps_started:
            stop_mps()


def _ray():
    try:
        import ray
    except ImportError:
        raise RequirementError("sweeps run on Ray: pip install 'mamba-constructions[sweep]' (or pass --no-ray to "
                               "train the packs one after another in this process)") from None
    return ray


def start_mps() -> bool:
    """Start the CUDA MPS control daemon unless one runs; True iff this call started it."""
    exe = shutil.which("nvidia-cuda-mps-control")
    require(exe is not None, "--mps needs nvidia-cuda-mps-control on PATH (CUDA MPS)")
    probe = subprocess.run([exe], input="get_server_list\n", capture_output=True, text=True, timeout=30)
    if probe.returncode == 0:
        return False  # a daemon answers: leave it to its owner
    require(subprocess.run([exe, "-d"], capture_output=True, timeout=30).returncode == 0,
            "--mps: nvidia-cuda-mps-control -d could not start the daemon")
    return True


def stop_mps() -> None:
    subprocess.run(["nvidia-cuda-mps-control"], input="quit\n", capture_output=True, text=True, timeout=30)


@dataclass
class Outcome:
    finished_now: int
    remaining: int
    total: int
    checkpointed: int  # packs cut by the time budget or the interrupt, resumable from their checkpoints
    failed: list[str]  # one line per pack that raised
    interrupted: int = 0  # the signal that stopped the sweep (SIGINT, SIGTERM), 0 if none

    def counts(self) -> dict:
        return {"finished_now": self.finished_now, "remaining": self.remaining, "total": self.total,
                "checkpointed": self.checkpointed, "failed": len(self.failed)}


def run_sweep(specs: list[RunSpec], store: ResultStore, device: str = "cpu", impl: str = "packed",
              pack_size: int = 64, minutes: float | None = None, executor: str = "ray", address: str | None = None,
              gpus_per_pack: float | None = None, cpus_per_pack: float = 1.0, num_cpus: int | None = None,
              mps: bool = False, report=None, progress_every: float = 5.0) -> Outcome:
    """Train the runs of ``specs`` missing from ``store``. ``report(line)`` gets a progress line at start, after
    each pack and every ``progress_every`` seconds (None: silent). A KeyboardInterrupt (SIGINT, or SIGTERM turned
    into ``loop.Interrupted`` by the caller) checkpoints the packs in flight and returns with ``interrupted`` set to
    the signal."""
    packs = sorted(plan(specs, store.keys(), 1 if impl == "module" else pack_size), key=pack_cost, reverse=True)
    deadline = None if minutes is None else time.time() + 60 * minutes
    checkpoint = {pack_id(p): os.path.join(f"{store.path}.ckpt", pack_id(p) + ".pt") for p in packs}
    prog = Progress(len(packs), sum(map(len, packs)))
    out = Outcome(0, 0, len(specs), 0, [])
    threads = max(1, int(cpus_per_pack))
    if report:
        how = "none: a time budget of 0 minutes" if packs and minutes == 0 else \
            "on Ray" if executor == "ray" else "one after another in this process"
        report(f"sweep: {len(specs) - prog.runs} of {len(specs)} runs stored; {prog.runs} to train in {len(packs)} "
               f"packs on {device} ({how})")
    run = None
    if packs and minutes != 0:
        run = (RayExecutor(device, impl, threads, address, gpus_per_pack, cpus_per_pack, num_cpus, mps)
               if executor == "ray" else Inline(device, impl, threads))
    pending: dict = {}
    ticker = _Ticker(report, progress_every, prog.line)
    got: list[int] = []
    try:
        with _signals_interrupt(got):
            if run is not None:
                ticker.start()
            for p in packs if run is not None else ():
                pending[run.submit(p, checkpoint[pack_id(p)], deadline)] = p
            while pending:
                for h, res in run.wait(pending, timeout=1.0):
                    _collect(pending.pop(h), res, store, prog, out)
                    ticker.now()
    except KeyboardInterrupt as e:
        out.interrupted = got[0] if got else getattr(e, "signum", signal.SIGINT)
        for h, res in run.cancel(pending) if run is not None else []:
            if not isinstance(res, BaseException):  # cancelled or interrupted packs raise: their checkpoints stay
                _collect(pending.pop(h), res, store, prog, out)
    finally:
        ticker.stop()
        if run is not None:
            run.close()
    keys = store.keys()
    out.finished_now = prog.runs_done
    out.checkpointed = sum(os.path.exists(checkpoint[pack_id(p)]) for p in packs
                           if not {run_key(s) for s in p} <= keys)
    out.remaining = sum(map(len, plan(specs, keys, pack_size)))
    return out


@contextmanager
def _signals_interrupt(got: list):
    """In the main thread: SIGINT and SIGTERM raise ``loop.Interrupted`` here, their number appended to ``got``."""
    from verify.train.loop import Interrupted

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        got.append(signum)
        raise Interrupted(signum)

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _collect(pack, res, store, prog, out) -> None:
    """A finished pack's records into the store; a failed one's error into ``out.failed``; None (cut by the time
    budget, checkpointed) nothing."""
    if isinstance(res, BaseException):
        first = (str(res).strip().splitlines() or [type(res).__name__])[-1]
        out.failed.append(f"{pack[0].mixer} d={pack[0].d_model} N={pack[0].d_state} kappa={pack[0].kappa} "
                          f"|V|={pack[0].vocab} ({len(pack)} runs): {first}")
    elif res is not None:
        from verify.train.store import write_weights

        for r in res:
            if "_weights" in r:  # protocol keep_weights: the file first, then the record that promises it
                write_weights(store.path, r)
        store.append(res)
        prog.packs_done += 1
        prog.runs_done += len(res)


class _Ticker:
    """Calls ``report(line())`` now and then: at start, on ``now()``, and every ``every`` seconds from a thread."""

    def __init__(self, report, every, line):
        self.report, self.every, self.line = report, every, line
        self.stop_event, self.lock = threading.Event(), threading.Lock()
        self.thread = None

    def start(self):
        if self.report is None:
            return
        self.now()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stop_event.wait(self.every):
            self.now()

    def now(self):
        if self.report is not None:
            with self.lock:
                self.report(self.line())

    def stop(self):
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join()
