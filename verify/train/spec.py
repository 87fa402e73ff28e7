"""What one training run is: ``RunSpec`` (task, mixer, sizes, seed, lr) and its ``Protocol``; a run's key.

A ``RunSpec`` is frozen and JSON-able; ``run_key`` hashes all of it (protocol included) together with the key schema
``SCHEMA``, so a store never confuses two runs that differ in anything. ``pack_key`` drops seed and lr: runs with the
same pack key have the same shapes and data and can be trained together in one packed model.

Key schemas. A spec dict carries ``"schema": SCHEMA`` and every field, defaults included. Schema 1 (dicts without a
``schema`` field) left out ``proj`` when True and ``protocol.matmul`` when "float32"; schemas 1 and 2 named two mixers
by their aliases (``s4d``, ``delta-top``), schema 3 by the block kind's one name (``mamba-s4d``,
``mamba-delta-t``; ``verify.blocks.ALIASES`` maps them). ``upgrade`` checks an older record's key against its spec
as written and re-keys it under the current schema, so every stored run keeps its identity (``verify.train.store``
upgrades records as it reads them). A field added later gets a default equal to the behaviour before it existed, and
the schema number goes up with a rule in ``upgrade`` for the older dicts. The exception, so that no stored key moves:
the fields added within schema 3 for Koren et al.'s models and recipes (``RunSpec.model`` and the protocol fields of
``ADDED``) are written only where they differ from their defaults, which are the behaviour before they existed.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields, replace

from common.errors import require

SCHEMA = 3  # the run-key schema of this code (see the module docstring)


@dataclass(frozen=True)
class Protocol:
    """Optimizer, data and stopping rule of a run (see the package docstring for the two protocols)."""

    name: str
    batch_size: int
    train_samples: int
    val_samples: int
    test_samples: int
    max_steps: int
    eval_every: int  # steps between validations
    # "val_loss" (stop when val loss < stop_value), "val_acc" (stop when val accuracy >= stop_value) or "val_acc_above"
    # (stop when val accuracy > stop_value: Koren et al.'s threshold rule, 1 = never)
    stop: str
    stop_value: float
    lr_final: float = 1e-6  # cosine annealing from the run's lr to this over max_steps
    lrs: tuple[float, ...] = (0.03,)  # the learning-rate sweep a grid uses by default
    n_seeds: int = 7  # best of this many seeds by default
    cap_steps: int = 0  # > 0: stop after this many steps, the schedule still spanning max_steps (a truncated run)
    # float32 matrix products on CUDA: "float32" (full precision, torch's default) or "tf32" (the tensor cores'
    # 10-bit-mantissa mode, as mamba_ssm's Mamba-2 kernels use for their own products), for the projections
    matmul: str = "float32"
    # Koren et al.'s recipe (verify.train.recall_models); the defaults are the behaviour of the protocols above
    beta2: float = 0.999  # Adam's second-moment decay (beta1 is 0.9)
    weight_decay: float = 0.0  # decoupled (AdamW), on trainable entries
    warmup_steps: int = 0  # > 0 or flat_steps > 0: lr rises linearly over warmup_steps ((s+1)/warmup of the peak),
    flat_steps: int = 0  # stays at the peak for flat_steps, then cosine-decays to lr_final at max_steps
    label_smoothing: float = 0.0  # of the training loss (validation and test losses are plain cross-entropy)
    clip: float = 0.0  # > 0: each model's gradient clipped to this global norm (torch's clip_grad_norm_ rule)
    select: str = "last"  # the state tested: "last" or "best_val" (the first state of the best validation accuracy)
    keep_weights: bool = False  # the tested state written beside the store (verify.train.runner)

    def validate(self) -> None:
        require(self.stop in STOPS, f"protocol stop must be one of {', '.join(STOPS)}, got {self.stop!r}")
        require(self.matmul in ("float32", "tf32"), f"protocol matmul must be float32 or tf32, got {self.matmul!r}")
        require(min(self.batch_size, self.train_samples, self.val_samples, self.test_samples, self.max_steps,
                    self.eval_every) >= 1, f"protocol {self.name}: sizes and step counts must be >= 1")
        require(self.train_samples >= self.batch_size,
                f"protocol {self.name}: train_samples ({self.train_samples}) < batch_size ({self.batch_size})")
        require(self.select in ("last", "best_val"), f"protocol select must be last or best_val, got {self.select!r}")
        require(0 <= self.beta2 < 1 and self.weight_decay >= 0 and self.clip >= 0 and 0 <= self.label_smoothing < 1,
                f"protocol {self.name}: needs 0 <= beta2 < 1, weight_decay >= 0, clip >= 0, 0 <= label_smoothing < 1")
        require(self.warmup_steps >= 0 and self.flat_steps >= 0
                and self.warmup_steps + self.flat_steps < self.max_steps,
                f"protocol {self.name}: warmup_steps + flat_steps ({self.warmup_steps} + {self.flat_steps}) must be "
                f">= 0 and below max_steps ({self.max_steps})")

    @property
    def steps_per_epoch(self) -> int:
        return self.train_samples // self.batch_size


REFERENCE = Protocol("reference", batch_size=16, train_samples=100_000, val_samples=1_000, test_samples=100_000,
                     max_steps=600 * 6250, eval_every=6250, stop="val_loss", stop_value=1e-6, lrs=(0.03,), n_seeds=7)
BUDGETED = Protocol("budgeted", batch_size=64, train_samples=100_000, val_samples=1_000, test_samples=10_000,
                    max_steps=4000, eval_every=200, stop="val_acc", stop_value=1.0, lrs=(3e-3, 1e-2, 3e-2), n_seeds=7)
BUDGETED_LOSS = replace(BUDGETED, name="budgeted-loss", stop="val_loss", stop_value=1e-6)  # the reference's rule
BUDGETED_LOSS_TF32 = replace(BUDGETED_LOSS, name="budgeted-loss-tf32", matmul="tf32")
SMOKE = Protocol("smoke", batch_size=32, train_samples=4096, val_samples=256, test_samples=512, max_steps=400,
                 eval_every=25, stop="val_acc", stop_value=1.0, lrs=(0.03,), n_seeds=1)
# Koren et al. 2026's recipes (their configs): AdamW (0.9, 0.95), linear warm-up / flat / cosine to 0, label smoothing
# 0.1, gradient clipping, batch 128, a fresh batch every step (train set = steps x batch, one epoch), validation and
# test on 10^4 sequences, the best-validation state tested, early stop when val accuracy exceeds the threshold (1:
# never); a cell is the best of its seeds. Validation every 100 steps (linear) / 500 (full) is our choice: the configs'
# evaluate_any_num_steps is not in the notes.
KOREN_LINEAR = Protocol("koren-linear", batch_size=128, train_samples=2000 * 128, val_samples=10_000,
                        test_samples=10_000, max_steps=2000, eval_every=100, stop="val_acc_above", stop_value=1.0,
                        lr_final=0.0, lrs=(1e-2,), n_seeds=3, beta2=0.95, warmup_steps=100, flat_steps=400,
                        label_smoothing=0.1, clip=1.5, select="best_val")
KOREN_FULL = replace(KOREN_LINEAR, name="koren-full", train_samples=20_000 * 128, max_steps=20_000, eval_every=500,
                     stop_value=0.999, n_seeds=5, flat_steps=5900, clip=0.75)
# the mech-interp grid: the linear recipe, one seed, the best state of each cell kept
KOREN_MECH = replace(KOREN_LINEAR, name="koren-mech", n_seeds=1, keep_weights=True)
# N x Lambda and N x M grids: 4000 steps (100 / 1400 / 2500), clip 2.5 (layers) and 5 (heads)
KOREN_LAYERS = replace(KOREN_LINEAR, name="koren-layers", train_samples=4000 * 128, max_steps=4000,
                       flat_steps=1400, clip=2.5)
KOREN_HEADS = replace(KOREN_LAYERS, name="koren-heads", clip=5.0)
# the appendix's Lambda x N_k repeated-keys grid: batch 32, 7500 steps (500 / 2000 / 5000), lr 3e-3, weight decay 0.1,
# clip 1 (no early stop: the configs name no threshold, and 1 is the linear grids'); validation every 250 steps (30 in
# all; our choice, as above: at batch 32 a validation of 10^4 sequences every 100 steps would cost more than training)
KOREN_REPEATS = replace(KOREN_LINEAR, name="koren-repeats", batch_size=32, train_samples=7500 * 32, max_steps=7500,
                        eval_every=250, lrs=(3e-3,), warmup_steps=500, flat_steps=2000, weight_decay=0.1, clip=1.0)
# the appendix's V x L large-vocabulary grid: micro-batches of 5 accumulated 4 times, taken here as one step of batch
# 20 (the same gradient: every sequence scores N_f = L/4 queries, so the mean over 20 sequences is the mean of the 4
# micro-batch means), 12000 steps (500 / 3500 / 8000), lr 3e-3, no weight decay, clip 2.5, one seed. The 12000 are read
# as optimizer steps (240000 fresh sequences); the configs' train split of max_num_steps x batch_size (60000 at batch
# 5) admits the reading of 12000 micro-batches, i.e. 3000 updates. Fewer updates would not bring the probit slope
# to the law's -1: at no validation step of our runs does it come near -1 at L = 1000-2000 (recall-vocab-long's
# figure, third panel). Validation every
# 500 steps (24 in all; our choice, as above: a validation of 10^4 sequences of up to 4000 tokens scored against up
# to 50000 logits costs more than 500 training steps)
KOREN_VOCAB_LONG = replace(KOREN_LINEAR, name="koren-vocab-long", batch_size=20, train_samples=12_000 * 20,
                           max_steps=12_000, eval_every=500, lrs=(3e-3,), warmup_steps=500, flat_steps=3500,
                           clip=2.5, n_seeds=1)
# the same rules at a CPU-test size
KOREN_SMOKE = replace(KOREN_LINEAR, name="koren-smoke", batch_size=32, train_samples=300 * 32, val_samples=256,
                      test_samples=256, max_steps=300, eval_every=50, warmup_steps=20, flat_steps=80, lrs=(1e-2,),
                      n_seeds=1)
PROTOCOLS = {p.name: p for p in (REFERENCE, BUDGETED, BUDGETED_LOSS, BUDGETED_LOSS_TF32, SMOKE, KOREN_LINEAR,
                                 KOREN_FULL, KOREN_MECH, KOREN_LAYERS, KOREN_HEADS, KOREN_REPEATS, KOREN_VOCAB_LONG,
                                 KOREN_SMOKE)}
STOPS = ("val_loss", "val_acc", "val_acc_above")


def protocol(name: str, **overrides) -> Protocol:
    require(name in PROTOCOLS, f"protocol must be one of {', '.join(PROTOCOLS)}, got {name!r}")
    p = replace(PROTOCOLS[name], **{k: v for k, v in overrides.items() if v is not None})
    p.validate()
    return p


@dataclass(frozen=True)
class RunSpec:
    """One training run. ``task_args`` holds task-specific settings as sorted (name, value) pairs."""

    task: str
    mixer: str
    vocab: int
    d_model: int
    d_state: int
    seed: int
    lr: float
    kappa: int = 0  # MQAR keys (0 where the task has none)
    seq_len: int = 100
    gate: bool = False
    conv: bool = True  # False: conv frozen at the identity (current-token tap 1), "no convolution" (KEEP n-TH)
    proj: bool = True  # False: in_proj's x rows and out_proj frozen at the identity (embedding -> SSM -> readout)
    d_conv: int = 4
    expand: int = 1
    data_seed: int = 0  # train / val / test sets are generate(config, (data_seed, 0 / 1 / 2))
    protocol: Protocol = field(default=BUDGETED)
    task_args: tuple = ()
    # the model around the mixer, sorted (name, value) pairs (verify.train.recall_models): () is the one-layer model
    # of the constructions; Koren et al.'s wirings set "wiring" ("tied", "lm") and "layers", "heads", "head_pattern",
    # "residual"
    model: tuple = ()

    def as_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}
        d["protocol"] = {f.name: getattr(self.protocol, f.name) for f in fields(Protocol)
                         if f.name not in ADDED or getattr(self.protocol, f.name) != ADDED[f.name]}
        d["task_args"] = [list(kv) for kv in self.task_args]
        if self.model:
            d["model"] = [list(kv) for kv in self.model]
        d["schema"] = SCHEMA
        return d

    @staticmethod
    def from_dict(d: dict) -> "RunSpec":
        """The spec of a dict of any schema up to ``SCHEMA`` (fields a schema-1 dict left out take their defaults; the
        mixer's alias in a schema 1 or 2 dict mapped to the kind's name)."""
        d = dict(d)
        schema = d.pop("schema", 1)
        require(schema in (1, 2, SCHEMA), f"run spec of key schema {schema!r}; this code reads schemas 1 to {SCHEMA}")
        if schema < 3:
            from verify.blocks import canonical

            d["mixer"] = canonical(d["mixer"])
        d["protocol"] = Protocol(**{**d["protocol"], "lrs": tuple(d["protocol"]["lrs"])})
        d["task_args"] = tuple(tuple(kv) for kv in d.get("task_args", ()))
        d["model"] = tuple(tuple(kv) for kv in d.get("model", ()))
        return RunSpec(**d)

    def arg(self, name: str, default=None):
        return dict(self.task_args).get(name, default)

    def model_arg(self, name: str, default=None):
        return dict(self.model).get(name, default)


# protocol fields added within schema 3 -> their defaults (written into a spec dict only where they differ)
ADDED = {f.name: f.default for f in fields(Protocol) if f.name in (
    "beta2", "weight_decay", "warmup_steps", "flat_steps", "label_smoothing", "clip", "select", "keep_weights")}


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:20]


def run_key(spec: RunSpec) -> str:
    return _hash(spec.as_dict())


def upgrade(record: dict) -> dict:
    """A stored record under the current key schema. An older record (its spec has no ``schema`` field, or schema 2)
    whose key is the hash of its spec as written gets the spec's full current dict and its current key
    (``_key_stored``, in memory only, keeps the stored one); a record of the current schema, or one that is not a run
    (no key or spec), comes back as it is. An older record whose key does not match its spec is left alone: it is no
    run this code can vouch for."""
    spec = record.get("spec")
    if not isinstance(spec, dict) or "key" not in record or spec.get("schema", 1) == SCHEMA:
        return record
    if _hash(spec) != record["key"]:
        return record
    current = RunSpec.from_dict(spec).as_dict()
    return {**record, "key": _hash(current), "spec": current, "_key_stored": record["key"]}


def pack_key(spec: RunSpec) -> str:
    d = spec.as_dict()
    d.pop("seed"), d.pop("lr")
    return _hash(d)
