"""Grid files: an experiment's training runs declared as data (TOML, one file per figure or table).

The files live in ``experiments/grids/`` at the top of the repository; the file's stem is the grid's name and its
store is ``results/train/<name>.jsonl``. ``read`` parses and validates one file and returns the keyword arguments of
``verify.train.sweep.Grid``; any problem is one ``RequirementError`` line naming the file and the key.

Keys (``GRID_KEYS``; the required ones first):

=================== ======================= ==============================================================
key                 type                    meaning (default)
=================== ======================= ==============================================================
task                string                  a registered task (``verify.train.registry.TASKS``)
mixers              list of strings         mixers (block kinds that train, ``verify.blocks``)
vocabs              list of ints >= 1       |V|
seeds               list of ints >= 0       seeds (distinct)
protocol            string                  a protocol of ``verify.train.spec.PROTOCOLS``
note                string                  what the grid is for (shown by ``sweep --list``)
kappas              list of ints >= 0       MQAR keys kappa ([0]: the task has none)
seq_lens            list of ints >= 1       sequence lengths T ([100])
d_models            list of ints >= 1       explicit d values (else the d grid around the bound)
d_multipliers       list of floats > 0      d = ceil(m * bound), m in this list ([0.25, 0.5, 1, 2, 4])
d_states            list of ints >= 1       explicit N values (else by rule)
n_rule              string                  "fig2", "a3" or "vocab": the base N (sweep.n_base) ("fig2")
n_multipliers       list of floats > 0      N = ceil(m * base) ([1.0])
lrs                 list of floats > 0      learning rates ([]: the protocol's)
protocol_overrides  table                   protocol fields to change (e.g. {cap_steps = 50000})
gate                bool                    the gate on or off (absent: per mixer, its Training.gate_default)
conv, proj          bool                    conv and in/out projections trained (true)
d_conv, expand      int >= 1                conv width (4), inner width factor (1)
task_args           list of tables          task variants, e.g. [{n = 5, pe = true}] ([{}])
reuses              list of grid names      grids whose stores may hold runs of this one ([])
model               table                   the model around the mixer (verify.train.recall_models: wiring,
                                            layers, heads, head_pattern, residual, norm) ({}: the one-layer model)
models              list of tables          model variants, one grid axis (e.g. layers 1..5 of Koren et al.'s
                                            N x Lambda grid, heads 1..6 of a multi-head grid) ([model])
n_at_most_d         bool                    only cells with N <= d (Koren et al.'s D-N grids) (false)
lambda_times_n      int >= 1                only cells whose layers x N is this (Koren et al.'s Lambda x N_k
                                            grid fixes Lambda N = 60) (absent: every cell)
seq_len_per_kappa   int >= 1                kappa = T / this for each T, instead of ``kappas`` (Koren et
                                            al.'s V x L grid: L = 4 N_f) (absent: ``kappas``)
vocab_above_seq_len bool                    only cells with |V| > T (zoology's task needs it; the V x L grid
                                            skips the others as the paper does) (false)
=================== ======================= ==============================================================

``d_models`` and ``d_multipliers`` exclude each other, as do ``d_states`` and ``n_rule`` / ``n_multipliers``, and
``model`` and ``models``. A mixer
named by an alias (``s4d``, ``delta-top``: the names run-key schemas 1 and 2 use, ``verify.train.spec``) is read as
the kind's name (``verify.blocks.canonical``).
"""
from __future__ import annotations

import math
import os
from dataclasses import fields
from pathlib import Path

from common.errors import RequirementError
from verify.blocks import canonical

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

REQUIRED = ("task", "mixers", "vocabs", "seeds", "protocol", "note")
N_RULES = ("fig2", "a3", "vocab")


def _int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _num(x) -> bool:
    return (_int(x) or isinstance(x, float)) and math.isfinite(x)


def _ints(lo):
    return lambda v: isinstance(v, list) and bool(v) and all(_int(x) and x >= lo for x in v), \
        f"a non-empty list of integers >= {lo}"


def _positives():
    return lambda v: isinstance(v, list) and bool(v) and all(_num(x) and x > 0 for x in v), \
        "a non-empty list of finite numbers > 0"


def _strs():
    return lambda v: isinstance(v, list) and bool(v) and all(isinstance(x, str) for x in v), \
        "a non-empty list of strings"


def _is(t, what):
    return lambda v: isinstance(v, t) and not (t is int and isinstance(v, bool)), what


# key -> (type check, what the type is)
GRID_KEYS = {
    "task": _is(str, "a string"), "mixers": _strs(), "vocabs": _ints(1), "seeds": _ints(0),
    "protocol": _is(str, "a string"), "note": _is(str, "a string"),
    "kappas": _ints(0), "seq_lens": _ints(1), "d_models": _ints(1), "d_multipliers": _positives(),
    "d_states": _ints(1), "n_rule": _is(str, "a string"), "n_multipliers": _positives(),
    "lrs": (lambda v: isinstance(v, list) and all(_num(x) and x > 0 for x in v), "a list of finite numbers > 0"),
    "protocol_overrides": _is(dict, "a table"), "gate": _is(bool, "true or false"), "conv": _is(bool, "true or false"),
    "proj": _is(bool, "true or false"), "d_conv": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "expand": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "task_args": (lambda v: isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v),
                  "a non-empty list of tables"),
    "reuses": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of grid names"),
    "model": _is(dict, "a table"), "n_at_most_d": _is(bool, "true or false"),
    "lambda_times_n": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "seq_len_per_kappa": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "vocab_above_seq_len": _is(bool, "true or false"),
    "models": (lambda v: isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v),
               "a non-empty list of tables"),
}


def display(path: Path) -> str:
    """``path`` relative to the working directory where it lies below it, else as given."""
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else str(path)


def read(path: str | os.PathLike) -> dict:
    """The validated keyword arguments of ``Grid`` (``name`` = the file's stem) of the grid file ``path``."""
    path = Path(path)
    where = display(path)

    def fail(message: str):
        raise RequirementError(f"{where}: {message}")

    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        fail("no such grid file")
    except (OSError, UnicodeDecodeError) as e:
        fail(f"cannot be read ({e})")
    except tomllib.TOMLDecodeError as e:
        fail(f"not valid TOML ({e})")
    for key in data:
        if key not in GRID_KEYS:
            fail(f"unknown key {key!r}; known: {', '.join(GRID_KEYS)}")
    for key in REQUIRED:
        if key not in data:
            fail(f"missing key {key!r}")
    for key, value in data.items():
        ok, what = GRID_KEYS[key]
        if not ok(value):
            fail(f"key {key!r} must be {what}, got {value!r}")
    _check_values(data, path, fail)
    out = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()
           if k not in ("protocol_overrides", "model", "models")}
    if "model" in data:
        out["model"] = tuple(sorted(data["model"].items()))
    if "models" in data:
        out["models"] = tuple(tuple(sorted(m.items())) for m in data["models"])
    out["mixers"] = tuple(canonical(m) for m in data["mixers"])
    if "task_args" in data:
        out["task_args"] = tuple(tuple(sorted(t.items())) for t in data["task_args"])
    if "protocol_overrides" in data:
        out["protocol_overrides"] = tuple(sorted(data["protocol_overrides"].items()))
    return {"name": path.stem, **out}


def _check_values(data: dict, path: Path, fail) -> None:
    from verify.blocks import trainable
    from verify.train import registry
    from verify.train.spec import PROTOCOLS, Protocol, protocol

    if data["task"] not in registry.TASKS:
        fail(f"key 'task': unknown task {data['task']!r}; known: {', '.join(registry.TASKS)}")
    for m in data["mixers"]:
        if canonical(m) not in trainable():
            fail(f"key 'mixers': unknown mixer {m!r}; known: {', '.join(trainable())}")
    if len({canonical(m) for m in data["mixers"]}) != len(data["mixers"]):
        fail(f"key 'mixers' names a mixer twice: {data['mixers']}")
    if data["protocol"] not in PROTOCOLS:
        fail(f"key 'protocol': unknown protocol {data['protocol']!r}; known: {', '.join(PROTOCOLS)}")
    if data.get("n_rule", "fig2") not in N_RULES:
        fail(f"key 'n_rule' must be one of {', '.join(N_RULES)}, got {data['n_rule']!r}")
    if len(set(data["seeds"])) != len(data["seeds"]):
        fail(f"key 'seeds' has a seed twice: {data['seeds']}")
    if "d_models" in data and "d_multipliers" in data:
        fail("keys 'd_models' and 'd_multipliers' exclude each other (explicit d values, or d around the bound)")
    if "d_states" in data and ({"n_rule", "n_multipliers"} & set(data)):
        fail("key 'd_states' excludes 'n_rule' and 'n_multipliers' (explicit N values, or N by rule)")
    if "model" in data and "models" in data:
        fail("keys 'model' and 'models' exclude each other (one model, or a list of model variants)")
    if "seq_len_per_kappa" in data:
        if "kappas" in data:
            fail("keys 'kappas' and 'seq_len_per_kappa' exclude each other (explicit kappa values, or kappa = T / it)")
        r = data["seq_len_per_kappa"]
        for t in data.get("seq_lens", [100]):
            if t % r:
                fail(f"key 'seq_len_per_kappa' = {r} must divide every sequence length, got seq_lens {t}")
    base = PROTOCOLS[data["protocol"]]
    names = sorted(f.name for f in fields(Protocol) if isinstance(getattr(base, f.name), (int, float, str))
                   and f.name != "name")
    for k, v in data.get("protocol_overrides", {}).items():
        if k not in names:
            fail(f"key 'protocol_overrides': unknown or non-scalar protocol field {k!r}; known: {', '.join(names)}")
        default = getattr(base, k)
        ok = (isinstance(v, str) if isinstance(default, str) else isinstance(v, bool) if isinstance(default, bool)
              else _int(v) if isinstance(default, int) else _num(v))
        if not ok:
            fail(f"key 'protocol_overrides': {k} must be of the type of {default!r}, got {v!r}")
    try:
        protocol(data["protocol"], **data.get("protocol_overrides", {}))
    except (RequirementError, TypeError) as e:
        fail(f"key 'protocol_overrides': {e}")
    for other in data.get("reuses", ()):
        if not (path.parent / f"{other}.toml").exists():
            fail(f"key 'reuses': no grid {other!r} beside this file")
