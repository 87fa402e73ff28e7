"""One Adam step of every model of a pack, with nothing computed on the host between steps.

A step reads its batch rows, learning rates and Adam bias corrections from tensors on the device (the epoch's row
permutation of every model, a step counter that the step itself increments), so the same code runs eagerly or, on
CUDA, is captured once as a CUDA graph and replayed, which removes the host's launch work and its
synchronisations from every step. Measured on the H100 (``results/train/bench_h100_graph.json``, one process, 21
models): 3116 -> 3265 model-steps/s (Mamba, d = 39, N = 64) and 3563 -> 4663 (S4D, d = 112): a pack of this size is
mostly GPU-bound, so the gain alone is modest; a sweep runs about ten such packs side by side on one GPU
(``verify.train.runner``).

What the step computes is ``loop.train_pack``'s definition of training, unchanged: model k's batch at step s is rows
[i b, (i+1) b) of the permutation of epoch s // steps_per_epoch drawn from default_rng((seed_k, 17, epoch)), its
learning rate the cosine schedule times 0 once the model stopped, and its update torch.optim.Adam's. Only the
per-model loss is computed as a sum over the pack's (equal) scored positions instead of a scatter-add (on the CPU
both give bitwise equal weights and histories, checked in five mixer/task cases).

The capture needs a step without host synchronisation, so it is used only where the step has none: on CUDA, for a
mixer whose scan kernels are capturable (``verify.blocks.Training.graph_safe``: not Mamba-Delta-top, whose S6 reduction
checks Delta > 0 on the host), and when every training sequence scores the same number of positions (every task
registered here). Everything else runs the same step eagerly, as does a step whose capture fails (with a warning).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from common.errors import require
from verify.tasks.mqar import IGNORE

WARMUP_STEPS = 3  # eager steps (on a side stream) before the capture: lazy initialisation and Triton autotuning


class Adam:
    """torch.optim.Adam's update on (possibly stacked) parameters with a learning rate per model; the step count t
    (for the bias corrections) is a tensor, so the update can run inside a CUDA graph. ``weight_decay`` > 0 adds
    torch.optim.AdamW's decoupled decay (p <- p (1 - lr wd), trainable entries only) and ``clip`` > 0 scales each
    model's masked gradient to at most that global norm first (``torch.nn.utils.clip_grad_norm_``'s rule, per model):
    Koren et al.'s recipe. At 0 both are skipped, so the update is the one of the protocols without them."""

    def __init__(self, params: dict, masks: dict, stacked: bool, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay: float = 0.0, clip: float = 0.0):
        self.params, self.masks, self.stacked, self.betas, self.eps = params, masks, stacked, betas, eps
        self.weight_decay, self.clip = weight_decay, clip
        self.m = {k: torch.zeros_like(p) for k, p in params.items()}
        self.v = {k: torch.zeros_like(p) for k, p in params.items()}

    def _per_model(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return x.view(-1, *([1] * (p.dim() - 1))) if self.stacked else x[0]

    def _grads(self) -> dict:
        """The masked gradients, clipped per model where ``clip`` > 0."""
        grads = {k: (p.grad * self.masks[k] if k in self.masks else p.grad)
                 for k, p in self.params.items() if p.grad is not None}
        if self.clip > 0 and grads:
            sq = sum((g ** 2).flatten(1).sum(1) if self.stacked else (g ** 2).sum()[None]
                     for g in grads.values())
            scale = torch.clamp(self.clip / (sq.sqrt() + 1e-6), max=1.0)
            grads = {k: g * self._per_model(scale, g).to(g.dtype) for k, g in grads.items()}
        return grads

    @torch.no_grad()
    def step(self, lr: torch.Tensor, t: torch.Tensor) -> None:
        """One update with per-model learning rates ``lr`` (K,) at step count ``t`` (1 for the first update)."""
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** t, torch.sqrt(1 - b2 ** t)
        grads = self._grads()
        for k, p in self.params.items():
            g = grads.get(k)
            if g is None:
                continue
            step = self._per_model(lr, p)
            if self.weight_decay > 0:
                decay = step * self.weight_decay * p
                p.sub_(decay * self.masks[k] if k in self.masks else decay)
            self.m[k].mul_(b1).add_(g, alpha=1 - b1)
            self.v[k].mul_(b2).addcmul_(g, g, value=1 - b2)
            p.sub_(step / c1 * self.m[k] / (self.v[k].sqrt() / c2 + self.eps))
            p.grad = None

    def state(self) -> dict:
        return {"m": self.m, "v": self.v}

    def load(self, st: dict) -> None:
        for k in self.m:
            self.m[k].copy_(st["m"][k]), self.v[k].copy_(st["v"][k])


def scored_positions(labels: torch.Tensor, block_elems: int = 2 ** 24) -> torch.Tensor:
    """(n, q): the q scored positions (labels != IGNORE) of every sequence, ascending; every sequence must score the
    same number (it does for every registered task), so that a batch's scored positions have a fixed shape.

    int16 where the sequence length fits (``pack_loss`` casts a batch's rows), found in blocks of at most
    ``block_elems`` labels: ``nonzero`` on CUDA takes an int64 buffer the size of its input, 2.4 GiB for the paper's
    2.56M training sequences of 128 tokens (Koren et al.'s regime_1), enough to run a GPU shared by twenty training
    processes out of memory; held as int64 the positions alone would take 0.66 GB a process there."""
    n, L = labels.shape
    q = int((labels[:1] != IGNORE).sum()) if n else 0
    out = torch.empty(n, q, dtype=torch.int16 if L <= 2 ** 15 else torch.long, device=labels.device)
    rows = max(1, block_elems // max(1, L))
    for a in range(0, n, rows):
        mask = labels[a:a + rows] != IGNORE
        counts = mask.sum(1)
        require(bool((counts == q).all()), f"training needs every sequence to score the same number of positions; "
                                           f"this task scores {min(q, int(counts.min()))}-{max(q, int(counts.max()))}")
        out[a:a + rows] = mask.nonzero()[:, 1].view(-1, q)
    return out


def pack_loss(model, tokens: torch.Tensor, labels: torch.Tensor, qpos: torch.Tensor, idx: torch.Tensor,
              label_smoothing: float = 0.0):
    """Per-model mean cross-entropy (with ``label_smoothing``) over the scored positions of rows ``idx`` (K, b) of
    (tokens, labels) (any integer dtype: the rows taken are cast to int64; so are their scored positions ``qpos``,
    from ``scored_positions``)."""
    K, b = idx.shape
    L = tokens.shape[1]
    h = model.hidden(tokens[idx].long())  # (K, b, L, d)
    flat = (qpos[idx].long() + torch.arange(b, device=idx.device)[:, None] * L).view(K, -1)  # (K, b q), row-major
    hq = h.reshape(K, b * L, h.shape[-1]).gather(1, flat[..., None].expand(-1, -1, h.shape[-1]))
    logits = torch.einsum("kqd,kcd->kqc", hq, model.readout)
    tgt = labels[idx].long().reshape(K, b * L).gather(1, flat)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tgt.reshape(-1), reduction="none",
                         label_smoothing=label_smoothing)
    return ce.view(K, -1).sum(1) / flat.shape[1]


def learning_rate(p, lr0: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """The learning rate of 0-based step ``step`` (tensors, no host synchronisation): cosine annealing from ``lr0`` to
    ``p.lr_final`` over ``p.max_steps``; with a warm-up or flat phase (Koren et al.), (s + 1)/warmup_steps of the peak
    during the warm-up, the peak for flat_steps, then the cosine over the remaining steps."""
    s = torch.clamp(step, max=p.max_steps)
    if not (p.warmup_steps or p.flat_steps):
        return p.lr_final + 0.5 * (lr0 - p.lr_final) * (1 + torch.cos(math.pi * s / p.max_steps))
    w, f = p.warmup_steps, p.flat_steps
    progress = torch.clamp((s - w - f) / (p.max_steps - w - f), min=0.0)
    mult = torch.where(s < w, (s + 1) / max(w, 1), torch.where(s < w + f, torch.ones_like(s),
                                                                0.5 * (1 + torch.cos(math.pi * progress))))
    return p.lr_final + (lr0 - p.lr_final) * mult


class Stepper:
    """``stepper(step)`` trains every model of ``model`` one step (the ``step``-th, 0-based, in order) and returns
    their losses (K,) on the device. ``set_active(done)`` stops models (learning rate 0 from the next step)."""

    def __init__(self, model, opt: Adam, train: tuple[torch.Tensor, torch.Tensor], seeds, proto, lr0, step: int,
                 graph: bool):
        self.model, self.opt, self.proto, self.seeds = model, opt, proto, [int(s) for s in seeds]
        self.tokens, self.labels = train
        dev = self.tokens.device
        self.qpos = scored_positions(self.labels)
        self.n, self.b, self.spe = self.tokens.shape[0], proto.batch_size, proto.steps_per_epoch
        self.perm = torch.empty(len(self.seeds), self.n, dtype=torch.long, device=dev)
        self.epoch = None
        self.step_t = torch.tensor(float(step), dtype=torch.float64, device=dev)
        self.lr0 = torch.as_tensor(lr0, dtype=torch.float64).to(dev)
        self.active = torch.ones(len(self.seeds), dtype=torch.float64, device=dev)
        self.rows = torch.arange(self.b, device=dev)
        self.graph, self.eager_steps, self.per = None, 0, None
        self.use_graph = graph and dev.type == "cuda"

    def set_active(self, done: list[bool]) -> None:
        self.active.copy_(torch.tensor([0.0 if d else 1.0 for d in done], dtype=torch.float64))

    def _load_epoch(self, step: int) -> None:
        e = step // self.spe
        if e != self.epoch:
            perms = np.stack([np.random.default_rng((s, 17, e)).permutation(self.n) for s in self.seeds])
            self.perm.copy_(torch.from_numpy(perms))
            self.epoch = e

    def _step(self) -> torch.Tensor:
        i = torch.remainder(self.step_t, self.spe).long()
        idx = self.perm[:, i * self.b + self.rows]  # (K, b)
        per = pack_loss(self.model, self.tokens, self.labels, self.qpos, idx, self.proto.label_smoothing)
        per.sum().backward()
        lr = learning_rate(self.proto, self.lr0, self.step_t) * self.active
        self.opt.step(lr.float(), self.step_t + 1)
        self.step_t += 1
        return per.detach()

    def __call__(self, step: int) -> torch.Tensor:
        self._load_epoch(step)
        if not self.use_graph:
            return self._step()
        if self.graph is None and self.eager_steps < WARMUP_STEPS:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                per = self._step()
            torch.cuda.current_stream().wait_stream(side)
            self.eager_steps += 1
            return per
        if self.graph is None:
            try:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    self.per = self._step()
            except Exception as e:  # noqa: BLE001  (a step that synchronises: train on eagerly, and say so; the
                # device's default generator may refuse draws after a failed capture, and training draws none there:
                # every initial draw is on the host, with the run's own generator)
                for p in self.model.params.values():
                    p.grad = None
                self.use_graph = False
                warnings.warn(f"CUDA graph capture of the training step failed, training eagerly: {e}")
                return self._step()
            self.graph = graph
        self.graph.replay()
        return self.per
