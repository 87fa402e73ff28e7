"""``export NAME`` and ``check NAME --from-export DIR``: write a construction, and check the weights a folder holds.

An export records how it was built (``config["record"]``: the construction's name, its parameters and any
``--constant`` overrides) and what its proof claims (``config["proof"]``). ``check --from-export`` rebuilds the
construction from that record and compares it with the stored tensors: the proof covers the stored weights only if
every tensor equals the rebuilt one rounded to the file's dtype, which is an obligation of the check (a changed
weight FAILS it, naming the first tensor and index that differ). The stored weights themselves are then run, and the
rounding allowance accounts for the file's dtype (``verify.rounding``).
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch

from constructions import lm
from common.errors import RequirementError, require
from constructions.export import check_target
from constructions.layout import Construction
from symbolic.proofs import Obligation
from verify import export as store
from verify_constructions import building

FILE_DTYPES = ("float64", "float32", "bfloat16", "float16")
FORMATS = ("mixer", "lm")


def require_writable_folder(path: str, flag: str) -> Path:
    """A folder that exists and is writable, or can be created under a writable parent; never a file."""
    p = Path(path)
    require(not p.exists() or p.is_dir(), f"{flag} {path}: is a file, not a folder")
    parent = p
    while not parent.exists():
        parent = parent.parent
    require(parent.is_dir() and os.access(parent, os.W_OK | os.X_OK), f"{flag} {path}: {parent} is not writable")
    return p


def cmd_export(spec, params, constants, args, out, build) -> int:
    require(args.dtype in FILE_DTYPES, f"--dtype {args.dtype}: the file dtype must be one of {FILE_DTYPES}")
    require(args.format in FORMATS, f"--format {args.format}: one of {', '.join(FORMATS)}")
    require(args.format != "lm" or spec.name in lm.SUPPORTED,
            f"--format lm: a language-model export is proven for {', '.join(lm.SUPPORTED)}, not {spec.name}")
    target = require_writable_folder(args.out, "--out")
    check_target(target, args.force)  # before any work
    con = build()
    record = {"construction": spec.name, "params": asdict(params), "constants": _overrides(spec, constants)}
    if con.proof is not None and con.proof.outside:
        print(f"warning: {spec.name} at these parameters is outside its proof ({con.proof.outside}); the export "
              f"records it as measured only", file=sys.stderr)
    if args.format == "lm":
        return _export_lm(con, target, args, record, constants, out)
    path = store.save(con, target, dtype=getattr(torch, args.dtype), record=record, force=args.force)
    if not getattr(args, "quiet", False):
        out.print(f"wrote {path / 'model.safetensors'} and {path / 'config.json'}")
    return 0


def _export_lm(con, target: Path, args, record: dict, constants, out) -> int:
    """``--format lm``: the construction as a language model (``constructions.lm``), its proof in config.json."""
    path = lm.save_lm(con, target, dtype=getattr(torch, args.dtype), constants=constants, record=record,
                      force=args.force)
    proof = lm.read_config(path)["construction"]["proof"]
    if not proof["holds"]:
        failed = [o["name"] for o in proof["obligations"] if not o["holds"]]
        print(f"warning: {len(failed)} obligation(s) of the language model fail: {'; '.join(failed)}", file=sys.stderr)
    if not getattr(args, "quiet", False):
        out.print(f"wrote {path / 'model.safetensors'}, {path / 'config.json'} (transformers) and "
                  f"{path / lm.MAMBA_SSM_FOLDER} (mamba_ssm); obligations {proof['held']}/{proof['total']} hold, "
                  f"margin after the norm >= {proof['margin_after_norm']:.6g}")
    return 0


def _overrides(spec, constants) -> dict:
    """The constants that differ from the spec's defaults, as exact strings ("1/2")."""
    if spec.constants is None or constants is None:
        return {}
    return {f.name: str(getattr(constants, f.name)) for f in fields(spec.constants)
            if getattr(constants, f.name) != getattr(spec.constants, f.name)}


def _read(folder: Path) -> tuple[dict, Construction]:
    """config.json and the stored construction; a missing, corrupted or truncated file is one line of bad input."""
    require(folder.is_dir(), f"--from-export {folder}: no such folder")
    for name in ("config.json", "model.safetensors"):
        require((folder / name).is_file(), f"--from-export {folder}: {name} is missing")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise RequirementError(f"--from-export {folder}: config.json is not valid JSON ({e})")
    require(not (isinstance(config, dict) and "construction" in config and "model_type" in config),
            f"--from-export {folder}: holds a language-model export (--format lm); load it with transformers' "
            f"MambaForCausalLM or mamba_ssm's MambaLMHeadModel (constructions.lm)")
    require(isinstance(config, dict) and isinstance(config.get("record"), dict) and "params" in config["record"],
            f"--from-export {folder}: config.json has no 'record' of how the export was built (written by an older "
            f"version?): export it again")
    try:
        con = store.load(folder)
    except RequirementError:
        raise
    except Exception as e:  # safetensors raises its own types for truncated or corrupted headers
        raise RequirementError(f"--from-export {folder}: model.safetensors or config.json is corrupted or truncated "
                               f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
    return config, con


def _first_difference(stored: dict, rebuilt: dict, dtype: torch.dtype) -> str | None:
    if set(stored) != set(rebuilt):
        return f"tensor names differ: {sorted(set(stored) ^ set(rebuilt))}"
    for k in sorted(rebuilt):
        want = rebuilt[k].detach().to(dtype)
        got = stored[k]
        if got.shape != want.shape:
            return f"{k}: shape {tuple(got.shape)} != {tuple(want.shape)}"
        diff = (got.double() != want.double()) & ~(got.isnan() & want.isnan())
        if diff.any():
            idx = tuple(int(i) for i in diff.nonzero()[0])
            return f"{k}{list(idx)}: stored {float(got[idx]):.9g}, the construction's {float(want[idx]):.9g}"
    return None


def _layout_difference(stored: Construction, rebuilt: Construction) -> str | None:
    """The first of the block config, the token layout and the position channel (what config.json records besides
    the tensors, and what the engines read) in which the stored construction differs from the rebuilt one."""
    def layout(con: Construction) -> dict:  # the block's arguments with every default resolved (dt_rank: a number)
        return {"block": (type(con.config).__name__, con.config.arguments()), "tokens": con.tokens,
                "position_channel": con.position_channel}

    have, want = layout(stored), layout(rebuilt)
    for name in want:
        if have[name] != want[name]:
            return f"{name}: stored {have[name]!r}, the construction's {want[name]!r}"
    return None


def load_export(spec, args):
    """The weights stored in ``args.from_export``, as a construction carrying the proof of the construction they
    record (plus the obligation that they are its weights), and the recorded parameters: (construction, params)."""
    folder = Path(args.from_export)
    config, stored = _read(folder)
    record = config["record"]
    require(record.get("construction") == spec.name, f"--from-export {folder}: it holds "
                                                     f"{record.get('construction')!r}, not {spec.name!r}")
    names = {f.name for f in fields(spec.params)}
    typed = sorted(k for k in vars(args) if k in names and k != "samples")
    require(not typed and not getattr(args, "constant", []),
            f"--from-export: the construction's parameters come from {folder}/config.json; only --samples may be "
            f"typed (got --{(typed or ['constant'])[0].replace('_', '-')})")
    try:
        params = replace(spec.params(**record["params"]), **({"samples": args.samples} if "samples" in vars(args)
                                                             else {}))
    except TypeError as e:
        raise RequirementError(f"--from-export {folder}: recorded parameters do not fit {spec.name}: {e}")
    constants = building.constants_of(spec, [f"{k}={v}" for k, v in record.get("constants", {}).items()])
    rebuilt = building.build(spec, params, constants)
    file_dtype = getattr(torch, config.get("dtype", "float32"))
    difference = _first_difference(stored.state_dict(), rebuilt.state_dict(), file_dtype) or \
        _layout_difference(stored, rebuilt)
    same = Obligation(f"stored weights are the construction's, rounded to {config.get('dtype')}",
                      difference or "every tensor equal", difference is None)
    proof = rebuilt.proof
    stored.proof = replace(proof, obligations=lambda: (*proof.decide(), same)) if proof else None
    for k, v in vars(rebuilt).items():  # attributes beyond the dataclass fields (e.g. hash-recall's hashes)
        if k not in vars(stored):
            setattr(stored, k, v)
    stored.info = {**rebuilt.info, "from_export": str(folder)}  # derived from the parameters: the file's is not read
    return stored, params

