"""The hashing mechanism of Koren et al. 2026, measured in one model (designed or trained).

    python -m experiments.mechanism CHECKPOINT [--facts 16] [--seq-len 64] [--samples 64] [--seed 0] [--layer 0]
                                    [--json] [--out FILE] [--arrays FILE.npz] [--overwrite] [--quiet]

builds the model's effective operators (E_in, Pi_k, Pi_q, Pi_v_in, Pi_v_out), the invariant operators G_kq and G_vv,
the decoded state H'' against the fact table H and the alpha maps (``verify.hash_operators``), on ``--samples``
zoology-style MQAR sequences (V = the checkpoint's vocabulary, N_f = ``--facts``, L = ``--seq-len``, random fillers,
seed ``--seed``), and reports them as numbers:

* ``key_block`` / ``value_block``: G_kq's (previous token written x current token read) block on the key tokens
  1..V/2-1 and G_vv's (output x current token written) block on the value tokens V/2..V-1, each divided by its mean
  diagonal: relative Frobenius distance to I, effective dimension (1 / mean off-diagonal^2: N and D for the designed
  circuit), fraction of columns whose diagonal entry is the maximum;
* ``decoded_state``: H'' at the end of the context: fraction of facts whose decoded entry is the maximum of what
  their key decodes to, and the distance to H;
* ``attention``: alpha at the ideal positions (x_{tau-1} = x_t) against elsewhere;
* ``a_logits`` (sigma^2 measured on the logits) and ``a_recall`` (the law inverted at the measured recall): the
  effective a of the law at D = the embedding width and N_eff = Lambda N; ``pair_additivity_error`` and
  ``constant_part`` say how well the additive pair operators describe a nonlinear (Mamba block) model.

**What CHECKPOINT must contain.** A trained run's kept weights (``results/train/<grid>.jsonl.weights/<run key>
.safetensors``, written by a sweep whose protocol keeps weights, e.g. the grid ``recall-mechinterp``): the run's spec
in the file's metadata says the model, Koren et al.'s simplified linear Mamba (tied head) or their full model
(MambaLMHeadModel, one layer: measured on its block, the embedding folded through the first RMSNorm and the readout
through the final norm's weight, the logits and recall the whole model's; ``verify.hash_operators.trained_model``).
Or a folder written by ``verify-constructions export`` (``model.safetensors`` and
``config.json``), or a folder holding ``model.safetensors`` alone, a ``.safetensors`` file, or a ``.pt`` file of a
state dict (``torch.save``; a dict under ``state_dict`` is taken). The tensors are named as in
``constructions.layout``: ``embedding.weight`` (V, d_model), ``readout.weight`` (V, d_model; the paper ties it to
the embedding: store the same tensor twice) and ``mixer.<name>``, either the simplified linear Mamba
(``LinearMambaConfig``: ``mixer.layers.<l>.in_proj.weight``, ``conv1d.weight``, ``x_proj.weight`` = [S_B; S_C],
``D``, ``out_proj.weight``; one head) or ``mamba_ssm.Mamba``'s own names (``MambaConfig``: ``mixer.in_proj.weight``,
``conv1d.weight``, ``x_proj.weight``, ``dt_proj.weight``, ``dt_proj.bias``, ``A_log``, ``D``, ``out_proj.weight``
and the optional biases). Without ``config.json`` the sizes are read off the shapes (a linear stack of several layers
is taken with the residual connection, as the paper's). Nothing else may be in the file: the tool measures one
block between an embedding and a readout, without norms; a model with an RMSNorm before the block is measured by
folding the norm into the embedding (rows e_x / rms(e_x) * weight) first.

Exit codes: 0 done, 2 bad input (one line on stderr naming the flag or the checkpoint as typed), 3 internal error,
130 interrupted. ``--json`` prints one strict JSON object (undefined values are null, listed under
``undefined_values``); ``--out`` writes it atomically and ``--arrays`` the maps (G_E and G_Ev on keys and values,
H'' and H and alpha and its ideal for the first sequence); neither replaces an existing file unless ``--overwrite``.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import torch

from common.errors import RequirementError, require
from common.io import atomic_write
from constructions.layout import Construction, LinearMambaConfig, MambaConfig
from verify import cli_support as cli
from verify import hash_operators as ho
from verify.tasks.mqar import MQARConfig, generate

MODULE = "experiments.mechanism"
STEPS = ("operators", "logits", "decoded state", "attention")


# ---------------------------------------------------------------------------------------------------------------------
# Reading a checkpoint
# ---------------------------------------------------------------------------------------------------------------------


def _tensors(path: Path, typed: str) -> tuple[dict, dict | None]:
    """(state dict, config.json or None) of a checkpoint path."""
    from safetensors.torch import load_file

    require(path.exists(), f"CHECKPOINT {typed}: no such file or folder")
    config = None
    if path.is_dir():
        if (path / "config.json").exists():
            try:
                config = json.loads((path / "config.json").read_text())
            except ValueError as e:
                raise RequirementError(f"CHECKPOINT {typed}: config.json is not JSON ({e})") from None
        path = path / "model.safetensors"
        require(path.exists(), f"CHECKPOINT {typed}: the folder holds no model.safetensors")
    try:
        if path.suffix == ".safetensors":
            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
            if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
                sd = sd["state_dict"]
    except Exception as e:  # noqa: BLE001 -- any unreadable file is bad input, named
        raise RequirementError(f"CHECKPOINT {typed}: not a readable state dict ({type(e).__name__}: {e})") from None
    require(isinstance(sd, dict) and sd and all(isinstance(v, torch.Tensor) for v in sd.values()),
            f"CHECKPOINT {typed}: not a state dict of tensors")
    return sd, config


def infer_config(sd: dict, typed: str):
    """The block config read off the tensor shapes (``LinearMambaConfig`` or ``MambaConfig``)."""
    for key in ("embedding.weight", "readout.weight"):
        require(key in sd, f"CHECKPOINT {typed}: no tensor {key!r}")
    d_model = sd["embedding.weight"].shape[1]
    layers = sorted({int(m.group(1)) for k in sd if (m := re.match(r"mixer\.layers\.(\d+)\.", k))})
    if layers:
        require(not any(k.endswith(("B_proj.weight", "W_heads")) for k in sd),
                f"CHECKPOINT {typed}: a multi-head linear Mamba; the hash operators are defined for one head")
        require(layers == list(range(len(layers))), f"CHECKPOINT {typed}: layers {layers} are not 0..n-1")
        for key in ("in_proj.weight", "x_proj.weight", "conv1d.weight"):
            require(f"mixer.layers.0.{key}" in sd, f"CHECKPOINT {typed}: no tensor 'mixer.layers.0.{key}'")
        require(not any(k.endswith(("conv1d.bias", "z_proj.weight")) for k in sd),
                f"CHECKPOINT {typed}: a linear Mamba with SiLU or gate (the ablation's rows A, B); the hash operators "
                f"are defined for the simplified model")
        d_inner = sd["mixer.layers.0.in_proj.weight"].shape[0]
        require(d_inner % d_model == 0, f"CHECKPOINT {typed}: d_inner {d_inner} is not a multiple of d_model "
                                        f"{d_model}")
        return LinearMambaConfig(d_model=d_model, d_state=sd["mixer.layers.0.x_proj.weight"].shape[0] // 2,
                                 d_conv=sd["mixer.layers.0.conv1d.weight"].shape[-1], expand=d_inner // d_model,
                                 n_layers=len(layers), residual=len(layers) > 1)
    if "mixer.A_log" in sd:
        for key in ("in_proj.weight", "conv1d.weight", "dt_proj.weight"):
            require(f"mixer.{key}" in sd, f"CHECKPOINT {typed}: no tensor 'mixer.{key}'")
        d_inner, n = sd["mixer.A_log"].shape
        require(d_inner % d_model == 0, f"CHECKPOINT {typed}: d_inner {d_inner} is not a multiple of d_model "
                                        f"{d_model}")
        return MambaConfig(d_model=d_model, d_state=n, d_conv=sd["mixer.conv1d.weight"].shape[-1],
                           expand=d_inner // d_model, dt_rank=sd["mixer.dt_proj.weight"].shape[1],
                           bias="mixer.in_proj.bias" in sd, conv_bias="mixer.conv1d.bias" in sd)
    raise RequirementError(f"CHECKPOINT {typed}: neither a linear Mamba (mixer.layers.<l>.*) nor a Mamba block "
                           f"(mixer.A_log) state dict")


def _run_spec(path: Path, typed: str):
    """The run spec in a safetensors file's metadata (kept training weights), or None."""
    from safetensors import safe_open

    from verify.train.spec import RunSpec

    if not (path.is_file() and path.suffix == ".safetensors"):
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 -- any unreadable file is bad input, named
        raise RequirementError(f"CHECKPOINT {typed}: not a readable safetensors file ({type(e).__name__}: {e})") \
            from None
    if "spec" not in meta:
        return None
    try:
        return RunSpec.from_dict(json.loads(meta["spec"]))
    except (ValueError, TypeError, KeyError, RequirementError) as e:
        raise RequirementError(f"CHECKPOINT {typed}: the run spec in its metadata cannot be read ({e})") from None


def load(typed: str):
    """(the model a CHECKPOINT holds as the tools measure it, the logits function of a trained wired model or None)."""
    spec = _run_spec(Path(typed), typed)
    if spec is None or not spec.model:
        return load_checkpoint(typed), None
    sd, _ = _tensors(Path(typed), typed)
    from verify.train import recall_models as rm

    require(rm.wiring(spec) == "tied" or rm.layers(spec) == 1,
            f"CHECKPOINT {typed}: a full model of {rm.layers(spec)} layers; the tool measures one layer's block")
    require(spec.model_arg("heads", 1) == 1, f"CHECKPOINT {typed}: {spec.model_arg('heads')} heads; the tool "
                                             f"measures one")
    try:
        model, fn = ho.trained_model(spec, sd)
        expected = {k: tuple(v.shape) for k, v in rm.initial_state(spec, torch.Generator(), sd["embedding.weight"]
                                                                   .shape[0])[0].items()}
    except (KeyError, RequirementError) as e:
        raise RequirementError(f"CHECKPOINT {typed}: not the weights of its run spec ({e})") from None
    expected["readout.weight"] = expected["embedding.weight"]
    require(set(sd) == set(expected) and all(tuple(sd[k].shape) == expected[k] for k in sd),
            f"CHECKPOINT {typed}: its tensors are not those of its run spec's model")
    require(all(bool(torch.isfinite(v).all()) for v in sd.values()), f"CHECKPOINT {typed}: non-finite values")
    return model, fn


def load_checkpoint(typed: str) -> Construction:
    """The model a CHECKPOINT holds, in float64, its tensors checked against its config's names and shapes."""
    from verify.export import block_config

    sd, config = _tensors(Path(typed), typed)
    if config and "block" in config:  # an export (verify.export, either format)
        kind, cfg = block_config(config)
        require(kind.name in ho.KINDS, f"CHECKPOINT {typed}: block {kind.name!r}; the tool measures {ho.KINDS}")
    else:
        cfg = infer_config(sd, typed)
    require(getattr(cfg, "n_heads", 1) == 1, f"CHECKPOINT {typed}: {getattr(cfg, 'n_heads', 1)} heads; the tool measures one")
    V = sd["embedding.weight"].shape[0] if "embedding.weight" in sd else 0
    expected = {"embedding.weight": (V, cfg.d_model), "readout.weight": (V, cfg.d_model),
                **{f"mixer.{k}": tuple(v.shape) for k, v in cfg.zeros().items()}}
    for key in sorted(set(sd) | set(expected)):
        require(key in sd, f"CHECKPOINT {typed}: no tensor {key!r}")
        require(key in expected, f"CHECKPOINT {typed}: unexpected tensor {key!r} (one block between an embedding and "
                                 f"a readout, no norms: see --help)")
        require(tuple(sd[key].shape) == expected[key], f"CHECKPOINT {typed}: {key} has shape "
                                                       f"{tuple(sd[key].shape)}, expected {expected[key]}")
    sd = {k: v.double() for k, v in sd.items()}
    for key, v in sd.items():
        require(bool(torch.isfinite(v).all()), f"CHECKPOINT {typed}: {key} holds non-finite values")
    info = (config or {}).get("info") or {}
    mixer = {k[len("mixer."):]: v for k, v in sd.items() if k.startswith("mixer.")}
    return Construction(str((config or {}).get("construction", "checkpoint")), "", cfg, sd["embedding.weight"], mixer,
                        sd["readout.weight"], [], None, info)


# ---------------------------------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------------------------------


def parser() -> cli.Parser:
    ap = cli.Parser(prog=f"python -m {MODULE}", description=__doc__)
    ap.add_argument("checkpoint", metavar="CHECKPOINT", help="model folder or file (see above)")
    ap.add_argument("--facts", type=cli.integer(1, 10**6), default=16, help="facts N_f per sequence")
    ap.add_argument("--seq-len", type=cli.integer(3, 10**7), default=None, help="sequence length L (default 4 N_f)")
    ap.add_argument("--samples", type=cli.integer(1, 10**6), default=64, help="sequences measured")
    ap.add_argument("--seed", type=cli.integer(0, 2**32 - 1), default=0, help="seed of the sequences")
    ap.add_argument("--layer", type=cli.integer(0, 10**4), default=0, help="layer measured (linear stacks)")
    ap.add_argument("--json", action="store_true", help="print one strict JSON object")
    ap.add_argument("--out", default=None, help="also write the JSON result to this file")
    ap.add_argument("--arrays", default=None, help="write the maps to this .npz file")
    ap.add_argument("--overwrite", action="store_true", help="replace existing --out / --arrays files")
    return ap


def memory_bytes(V: int, d_inner: int, n: int, samples: int, L: int, facts: int) -> int:
    """float64: G_kq and G_vv and their blocks (~8 V^2), the probes, the sequences' activations and states, H''."""
    return 8 * (8 * V * V + 6 * (2 * V + 1) * d_inner + samples * L * (6 * d_inner + 2 * L + 2 * V)
                + 3 * samples * d_inner * n + 2 * samples * V * facts)


def _lines(rep: dict) -> list[str]:
    k, v, h, at, al = rep["key_block"], rep["value_block"], rep["decoded_state"], rep["attention"], rep["a_logits"]
    return [f"model: {rep['model']['kind']} V={rep['model']['vocab']} d_model={rep['model']['d_model']} "
            f"N={rep['model']['d_state']} layers={rep['model']['layers']} (layer {rep['layer']} measured)",
            f"recall {rep['recall']:.4f} on {rep['task']['queries']} queries (N_f={rep['task']['facts']}, "
            f"L={rep['task']['seq_len']})",
            f"G_kq key block: distance to I {k['relative_frobenius_distance']:.4g}, effective dim "
            f"{k['effective_dim']:.4g}, diagonal max {k['diagonal_is_column_max']:.4f}",
            f"G_vv value block: distance to I {v['relative_frobenius_distance']:.4g}, effective dim "
            f"{v['effective_dim']:.4g}, diagonal max {v['diagonal_is_column_max']:.4f}",
            f"H'' vs H: facts decoded {h['facts_decoded']:.4f}, distance {h['relative_frobenius_distance']:.4g}",
            f"alpha: match {at['alpha_match']:.4g}, leak rms {at['alpha_leak_rms']:.4g}, effective hash dim "
            f"{at['effective_hash_dim']:.4g}, argmax at ideal {at['argmax_at_ideal']:.4f}",
            f"effective a: {al['a']:.4g} (logits, sigma^2 = {al['sigma2']:.4g}), {rep['a_recall']:.4g} (recall) at "
            f"D={rep['law_D']:g}, N_eff={rep['law_N_eff']:g}"]


def measure(typed: str, facts: int = 16, seq_len: int | None = None, samples: int = 64, seed: int = 0,
            layer: int = 0, quiet: bool = True) -> dict:
    """The report of one CHECKPOINT (``typed`` as given: the flag names in its errors are the command's) on
    ``samples`` zoology MQAR sequences of ``facts`` facts and length ``seq_len`` (default 4 facts), the maps under
    ``"maps"``; a progress line per step unless ``quiet``."""
    con, logits_fn = load(typed)
    V, cfg = con.embedding.shape[0], con.config
    layers = getattr(cfg, "n_layers", 1)
    require(layer < layers, f"--layer {layer}: the model has {layers} layer(s)")
    L = seq_len if seq_len is not None else 4 * facts
    task = MQARConfig(facts, V, L, num_examples=samples, layout="zoology")
    try:
        task.validate()
    except RequirementError as e:
        raise RequirementError(f"--facts {facts} --seq-len {L} with V={V} from CHECKPOINT: {e}") from None
    cli.require_memory(memory_bytes(V, cfg.d_inner, cfg.d_state, samples, L, facts), f"V={V} --samples {samples}",
                       "--samples")
    tokens, labels = generate(task, seed)
    with cli.Progress(len(STEPS), "mechanism", quiet) as progress:
        rep = ho.mechanism_report(con, tokens, labels, facts, layer, on_step=lambda name: progress.advance(status=name),
                                  logits_fn=logits_fn)
    return {"layer": layer,
            "model": {"kind": cfg.kind, "vocab": V, "d_model": cfg.d_model, "d_state": cfg.d_state, "layers": layers,
                      **({"run": con.info["run"]} if "run" in con.info else {})},
            "task": {"facts": facts, "seq_len": L, "samples": samples, "seed": seed,
                     "queries": int((labels != ho.IGNORE).sum())}, **rep}


def main(argv) -> int:
    args = parser().parse_args(argv)
    out = cli.output_file(args.out, "--out", args.overwrite) if args.out else None
    arrays = cli.output_file(args.arrays, "--arrays", args.overwrite) if args.arrays else None
    rep = measure(args.checkpoint, args.facts, args.seq_len, args.samples, args.seed, args.layer, args.quiet)
    rep = {"checkpoint": args.checkpoint, "command": cli.command_line(MODULE, argv), **rep}
    maps = rep.pop("maps")
    if out:
        cli.write_json(out, rep)
    if arrays:
        atomic_write(arrays, lambda tmp: np.savez_compressed(tmp, **maps), suffix=".npz")
    print(cli.dumps(rep) if args.json else "\n".join(_lines(rep)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
