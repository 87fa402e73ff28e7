"""The training loop: one pack of runs (same shapes, data and protocol; any seeds and learning rates) at once.

Every model owns its initialization (generator seeded by its ``seed``), its batch order (epoch permutations seeded by
``(seed, epoch)``), its learning rate and its stopping step, so a model trains identically whatever pack it is in
(tested). Adam is written over the stacked parameters with a per-model learning rate (torch.optim.Adam's update,
betas 0.9/0.999, eps 1e-8, no weight decay); a model that meets its stopping rule gets learning rate 0 from then on
(Adam's update is then exactly zero) and its result is taken at that point.

``train_pack`` returns one result record per run, or None when it stopped at ``deadline`` (after writing
``checkpoint``, from which a rerun continues). SIGINT or SIGTERM while it trains writes ``checkpoint`` at the next
step boundary and raises ``Interrupted`` (a KeyboardInterrupt).
"""
from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from common.errors import require
from common.io import atomic_write
from verify.tasks.mqar import IGNORE
from verify.train import decay, recall_models, registry
from verify.train.models import ModuleModel, PackedModel
from verify.train.spec import RunSpec, pack_key, run_key
from verify.train.step import Adam, Stepper

IMPLS = ("packed", "module")
_DATA_CACHE: dict = {}


def _compact(x: np.ndarray) -> torch.Tensor:
    """The narrowest of int16 and int32 that holds every value (int16: token ids and labels of every registered task
    up to |V| = 32768; int32: Koren et al.'s V x L grid, |V| up to 50000), else as is."""
    lo, hi = (int(x.min()), int(x.max())) if x.size else (0, 0)
    for dtype in (np.int16, np.int32):
        if np.iinfo(dtype).min <= lo and hi <= np.iinfo(dtype).max:
            return torch.from_numpy(x.astype(dtype))
    return torch.from_numpy(x)


def datasets(spec: RunSpec) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """train / val / test (tokens, labels) of a run: generate(config, (data_seed, 0 / 1 / 2)); cached per process.

    The train split is held as int16 where the values fit, else int32 (``_compact``: a quarter or half of the memory,
    on the host and on the device it trains on; 0.66 GB instead of 2.6 GB for the paper's 2.56M sequences of 64
    tokens); the training step casts each batch's rows (``verify.train.step.pack_loss``). val and test stay int64."""
    t, p = registry.task(spec.task), spec.protocol
    # the data's identity: the task's generator configs and the seed (runs of other shapes share it)
    key = (spec.task, spec.data_seed, tuple(repr(t.config(spec, n)) for n in
                                            (p.train_samples, p.val_samples, p.test_samples)))
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        out = {}
        for i, (name, n) in enumerate((("train", p.train_samples), ("val", p.val_samples), ("test", p.test_samples))):
            tok, lab = t.generate(t.config(spec, n), (spec.data_seed, i))
            out[name] = (_compact(tok), _compact(lab)) if name == "train" else (torch.from_numpy(tok),
                                                                                  torch.from_numpy(lab))
            del tok, lab
        _DATA_CACHE[key] = out
    return _DATA_CACHE[key]


def initial_state(spec: RunSpec) -> tuple[dict, dict]:
    """(state dict, masks) of run ``spec`` before training: embedding N(0, 1), mixer as mamba_ssm initializes it,
    readout U(+-1/sqrt(d)); the mixer's frozen entries set and masked."""
    m, t = registry.mixer(spec.mixer), registry.task(spec.task)
    gen = torch.Generator().manual_seed(int(spec.seed))
    if spec.model:  # Koren et al.'s wirings
        return recall_models.initial_state(spec, gen, t.n_tokens(spec))
    cfg = m.block_config(spec)
    emb = torch.randn(t.n_tokens(spec), spec.d_model, generator=gen, dtype=torch.float64)
    mix = m.init(cfg, gen)
    masks = m.freeze(cfg, spec, mix)
    readout = (torch.rand(t.n_classes(spec), spec.d_model, generator=gen, dtype=torch.float64) * 2 - 1) \
        * spec.d_model ** -0.5
    sd = {"embedding.weight": emb, **{f"mixer.{k}": v for k, v in mix.items()}, "readout.weight": readout}
    return sd, {f"mixer.{k}": v for k, v in masks.items()}


def build_model(specs: list[RunSpec], device, impl: str = "packed"):
    require(impl in IMPLS, f"impl must be one of {IMPLS}, got {impl!r}")
    require(len({pack_key(s) for s in specs}) == 1, "a pack needs runs of one shape, task and protocol "
                                                    "(they may differ in seed and lr only)")
    m = registry.mixer(specs[0].mixer)
    cfg = recall_models.block_config(specs[0]) if specs[0].model else m.block_config(specs[0])
    states = [initial_state(s) for s in specs]
    cuda = torch.device(device).type == "cuda"
    if impl == "module":
        require(cuda and m.cuda_module is not None,
                f"impl module needs CUDA and a mamba_ssm module for {specs[0].mixer}")
        require(len(specs) == 1, "impl module trains one model at a time")
        require(not specs[0].model, "impl module trains the one-layer model (a wired model trains packed)")
        model = ModuleModel(m, cfg, states[0][0], states[0][1], device)
    else:
        require(m.packed_forward is not None,
                f"mixer {specs[0].mixer} has no packed forward here (impl module on CUDA)")
        scan = m.packed_cuda_scan() if (cuda and m.packed_cuda_scan) else None
        inits, masks = [s for s, _ in states], states[0][1]
        model = (recall_models.WiredModel(specs[0], m, cfg, inits, masks, device, scan=scan) if specs[0].model
                 else PackedModel(m, cfg, inits, masks, device, scan=scan))
    model.position = registry.task(specs[0].task).position(specs[0])
    return model


def _scored_logits(model, tokens: torch.Tensor, labels: torch.Tensor):
    """(logits (K, q, C), targets (K, q)) of every model at the q labelled positions of rows (tokens, labels) (b, L)
    that every model reads; only those positions go through the readout."""
    K = model.K
    h = model.hidden(tokens[None].expand(K, -1, -1))  # (K, b, L, d)
    idx = (labels != IGNORE).reshape(-1).nonzero()[:, 0]
    logits = torch.einsum("kqd,kcd->kqc", h.reshape(K, -1, h.shape[-1])[:, idx], model.readout)
    return logits, labels.reshape(-1)[idx].expand(K, -1)


@contextmanager
def _evaluation_scan(model):
    """While evaluating, a packed model whose mixer asks for it (``Training.evaluate_on_reference``: Mamba-2) scans with
    the mixer's exact pure-torch reference scan instead of its CUDA kernel."""
    scan = getattr(model, "scan", None)
    if scan is not None and model.mixer.evaluate_on_reference:
        model.scan = model.mixer.reference_scan
    try:
        yield
    finally:
        if scan is not None:
            model.scan = scan


@torch.no_grad()
def evaluate(model, tokens: torch.Tensor, labels: torch.Tensor, device, batch: int = 64, max_elems: int = 2 ** 25):
    """Per model: (mean loss, accuracy, correct, queries) on the whole set (every model sees the same sequences).

    The forwards take a multiple of ``batch`` sequences each (train_pack passes the training batch size), the last
    chunk padded with copies of a row labelled IGNORE (scored nowhere): on CUDA, evaluation then runs batch sizes of
    the divisibility training ran (Triton specialises kernels on integer arguments divisible by 16), one candidate
    cause of the Mamba-2 fault in results/train/README.md. Sequences are independent, so the result is the same.
    A mixer whose scan memory ``sweep.plan`` caps (``Training.scan_bytes``: Mamba-Delta-top, N x d_inner channels a
    model) evaluates one training batch per forward, so evaluation never holds more scan memory than a step (at
    |V| = 40, d 320, N 160 a chunk of 1024 sequences would need 19.5 GiB a tensor, more than an H100 pool leaves a
    process). Chunks hold at most ``max_elems`` hidden values or logits, so the number of classes counts as well as d:
    sized by d alone, recall-vocab's |V| = 16384, d = 32 packs would evaluate 1792 sequences at once, whose logits
    need 15.75 GiB."""
    K, (S, L) = model.K, tokens.shape
    if model.mixer.scan_bytes is not None:
        chunk = batch
    else:
        width = max(model.readout.shape[1:])  # per position: d hidden values, at most C logits (readout (K, C, d))
        chunk = min(max(1, max_elems // max(1, K * L * width * batch)), -(-S // batch)) * batch
    loss = torch.zeros(K, device=device, dtype=torch.float64)
    correct = torch.zeros(K, device=device, dtype=torch.float64)
    total = 0
    with _evaluation_scan(model):
        for i in range(0, S, chunk):
            loss, correct = _evaluate_chunk(model, tokens[i:i + chunk], labels[i:i + chunk], chunk, device, loss,
                                            correct)
            total += int((labels[i:i + chunk] != IGNORE).sum())
    return (loss / total).cpu(), (correct / total).cpu(), correct.cpu(), total


def _evaluate_chunk(model, tok, lab, chunk: int, device, loss, correct):
    """Add one chunk's per-model summed loss and correct count; a short chunk is padded to ``chunk`` rows."""
    K, L = model.K, tok.shape[1]
    if len(tok) < chunk:
        tok = torch.cat([tok, tok[:1].expand(chunk - len(tok), -1)])
        lab = torch.cat([lab, torch.full((chunk - len(lab), L), IGNORE, dtype=lab.dtype)])
    logits, tgt = _scored_logits(model, tok.to(device), lab.to(device))
    logits = logits.float()
    loss = loss + F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                  reduction="none").view(K, -1).double().sum(1)
    correct = correct + (logits.argmax(-1) == tgt).double().sum(1)
    return loss, correct


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM (``signum``) stopped the work."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


@contextmanager
def _interrupts_between_steps():
    """Yield a function that returns the number of the SIGINT or SIGTERM that arrived (0: none). While it is active
    (in the main thread only), the first such signal is held until the step loop reads it, so a pack is checkpointed
    between two steps, never in the middle of an Adam update; a second signal interrupts at once. A Ray task
    cancelled by ``ray.cancel`` receives SIGINT's handler call (``_thread.interrupt_main``), so it stops the same
    way."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: 0
        return
    got = []

    def hold(signum, frame):
        if got:
            raise Interrupted(signum)
        got.append(signum)

    previous = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: got[0] if got else 0
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class _Rows:
    """A dict of stacked tensors seen as a model's ``params`` (for ``load_params``)."""

    def __init__(self, params: dict):
        self.params = params


@torch.no_grad()
def _copy_row(dst: dict, src: dict, k: int, stacked: bool) -> None:
    """Model k's parameters of ``src`` into ``dst`` (row k of stacked tensors, the whole tensor otherwise)."""
    for name, v in src.items():
        if stacked:
            dst[name][k].copy_(v[k])
        else:
            dst[name].copy_(v)


@torch.no_grad()
def load_params(model, params: dict) -> None:
    """Copy a checkpoint's stacked parameters into a freshly built pack."""
    for k, p in model.params.items():
        p.copy_(params[k])


def train_pack(specs: list[RunSpec], device: str = "cpu", impl: str = "packed", checkpoint: str | None = None,
               deadline: float | None = None, checkpoint_every_s: float = 120.0, log=None,
               max_steps: int | None = None) -> list[dict] | None:
    """Train ``specs`` together; one result record per spec (see ``record``), or None at ``deadline``.

    ``max_steps`` truncates the run without changing the protocol (benchmarks only; the records say so).
    """
    for s in specs:
        registry.validate(s)
    proto = specs[0].protocol
    K, dev = len(specs), torch.device(device)
    torch.backends.cuda.matmul.allow_tf32 = proto.matmul == "tf32"  # the protocol's precision (CUDA only)
    t_start = time.time()
    data = datasets(specs[0])
    tr_tok, tr_lab = (x.to(dev) for x in data["train"])
    model = build_model(specs, dev, impl)
    opt = Adam(model.params, model.masks, model.stacked, betas=(0.9, proto.beta2), weight_decay=proto.weight_decay,
               clip=proto.clip)
    st = {"step": 0, "done": [False] * K, "stop_step": [None] * K, "history": [[] for _ in range(K)],
          "best_val_acc": [0.0] * K, "train_loss": [None] * K, "seconds": 0.0}
    keys = [run_key(s) for s in specs]
    # select = best_val: the first state of each model's best validation accuracy (rows of a stacked copy)
    best = {k: v.detach().clone() for k, v in model.params.items()} if proto.select == "best_val" else None
    st["best_step"] = [None] * K
    if checkpoint and os.path.exists(checkpoint):
        ck = torch.load(checkpoint, map_location=dev, weights_only=False)
        if ck["keys"] == keys and ck["impl"] == impl:
            load_params(model, ck["params"])
            opt.load(ck["adam"])
            st = ck["state"]
            st.setdefault("best_step", [None] * K)
            if best is not None and ck.get("best") is not None:
                load_params(_Rows(best), ck["best"])
            if log:
                log(f"resumed {K} runs at step {st['step']}")
    total = min(proto.max_steps, proto.cap_steps or proto.max_steps, max_steps or proto.max_steps)
    stepper = Stepper(model, opt, (tr_tok, tr_lab), [s.seed for s in specs], proto, [s.lr for s in specs],
                      st["step"], graph=impl == "packed" and registry.mixer(specs[0].mixer).graph_safe)
    stepper.set_active(st["done"])

    def save_checkpoint():
        if not checkpoint:
            return
        state = {"keys": keys, "impl": impl, "params": {k: v.detach() for k, v in model.params.items()},
                 "adam": opt.state(), "state": {**st, "seconds": st["seconds"] + time.time() - t_start},
                 "best": best}
        atomic_write(checkpoint, lambda tmp: torch.save(state, tmp))

    with _interrupts_between_steps() as interrupted:
        last_ck = time.time()
        while st["step"] < total and not all(st["done"]):
            if interrupted():
                save_checkpoint()
                raise Interrupted(interrupted())
            per = stepper(st["step"])
            st["step"] += 1
            if st["step"] % proto.eval_every == 0 or st["step"] == total:
                vl, va, _, _ = evaluate(model, *data["val"], dev, proto.batch_size)
                st["train_loss"] = [float(x) for x in per.detach().cpu()]
                for k in range(K):
                    if st["done"][k]:
                        continue
                    st["history"][k].append([st["step"], float(vl[k]), float(va[k])])
                    if st["best_step"][k] is None or float(va[k]) > st["best_val_acc"][k]:
                        st["best_step"][k] = st["step"]
                        if best is not None:
                            _copy_row(best, model.params, k, model.stacked)
                    st["best_val_acc"][k] = max(st["best_val_acc"][k], float(va[k]))
                    hit = (vl[k] < proto.stop_value if proto.stop == "val_loss" else
                           va[k] > proto.stop_value if proto.stop == "val_acc_above" else va[k] >= proto.stop_value)
                    if hit:
                        st["done"][k], st["stop_step"][k] = True, st["step"]
                stepper.set_active(st["done"])
                if log:
                    log(f"step {st['step']}: val acc {[round(float(a), 4) for a in va]}")
            if checkpoint and (time.time() - last_ck > checkpoint_every_s):
                save_checkpoint()
                last_ck = time.time()
            if deadline is not None and time.time() > deadline and st["step"] < total and not all(st["done"]):
                save_checkpoint()
                return None
    if best is not None and any(b is not None for b in st["best_step"]):
        load_params(model, best)  # the tested (and returned) state is each model's best-validation state
    tl, ta, tc, tq = evaluate(model, *data["test"], dev, proto.batch_size)
    seconds = st["seconds"] + time.time() - t_start
    sds = model.state_dicts()
    out = []
    for k, s in enumerate(specs):
        steps = st["stop_step"][k] or st["step"]
        extra = {}
        if s.task == "keep-nth" and decay.has_histogram(s.mixer):  # Fig. 1: e^(-lambda Delta_t) before / from n
            extra["decay_hist"] = decay.decay_histogram(s.mixer, sds[k], data["test"][0], s.arg("n", 5),
                                                        model.position, model.config)
        out.append(record(s, {
            "solved": int(tc[k]) == tq, "test_acc": float(ta[k]), "test_loss": float(tl[k]),
            "test_correct": int(tc[k]), "test_queries": tq,
            "val_loss": st["history"][k][-1][1] if st["history"][k] else None,
            "val_acc": st["history"][k][-1][2] if st["history"][k] else None,
            "best_val_acc": st["best_val_acc"][k], "steps": steps, "epochs": steps / proto.steps_per_epoch,
            "early_stopped": st["stop_step"][k] is not None, "truncated_at": max_steps,
            **({"tested_step": st["best_step"][k]} if best is not None else {}),
            "history": st["history"][k], "train_loss": st["train_loss"][k], **extra},
            impl=impl, device=str(dev), pack_size=K, seconds=seconds, state_dict=sds[k]))
    if checkpoint and os.path.exists(checkpoint):
        os.unlink(checkpoint)
    return out


def record(spec: RunSpec, result: dict, impl: str, device: str, pack_size: int, seconds: float,
           state_dict=None) -> dict:
    """One store line. The trained weights are not stored (the store stays small); ``weights`` is attached in memory
    only, for callers that want to export or check them."""
    try:
        import mamba_ssm

        mv = mamba_ssm.__version__
    except Exception:  # noqa: BLE001  (not installed, or no compiled extension)
        mv = None
    rec = {"key": run_key(spec), "spec": spec.as_dict(), "result": result, "impl": impl, "device": device,
           "pack_size": pack_size, "pack_seconds": round(seconds, 3), "torch": torch.__version__,
           "mamba_ssm": mv, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if state_dict is not None:
        rec["_weights"] = state_dict
    return rec
