"""The hashing mechanism across a trained grid: ``experiments.mechanism`` on every run of a store that kept its weights.

    python -m experiments.mechanism_grid [--store results/train/recall-mechinterp.jsonl]
                                         [--out results/recall_scaling/mechanism/grid.jsonl]
                                         [--facts 16] [--seq-len 64] [--samples 64] [--seed 0] [--quiet]

For each stored run whose kept weights are in ``<store>.weights/<run key>.safetensors`` (a grid whose protocol keeps
weights: ``recall-mechinterp``, the paper's mech-interp grid, V = 256, L = 64, N_f = 16), measures the model as
``python -m experiments.mechanism CHECKPOINT`` does with the same flags, and adds one line to ``--out``:
``{"key", "d_model", "d_state", "best_val_acc", "settings": {facts, seq_len, samples, seed}, "report": {...}}`` (the
report without its maps and without the checkpoint path). Runs already in ``--out`` with the same settings are
skipped, so the command resumes where it stopped; a run measured under other settings is refused (exit 2), never
replaced. The file is rewritten atomically after each run. The figure ``recall-mechanism-grid`` reads it.

Exit codes: 0 done, 2 bad input (one line naming the flag as typed), 3 internal error, 130 interrupted.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from common.errors import RequirementError, require
from common.io import atomic_write
from experiments import mechanism
from verify import cli_support as cli
from verify.train.store import ResultStore, weights_path

MODULE = "experiments.mechanism_grid"
STORE = "results/train/recall-mechinterp.jsonl"
OUT = "results/recall_scaling/mechanism/grid.jsonl"


def parser() -> cli.Parser:
    ap = cli.Parser(prog=f"python -m {MODULE}", description=__doc__)
    ap.add_argument("--store", default=STORE, help="a training store whose runs kept their weights")
    ap.add_argument("--out", default=OUT, help="JSON-lines file of the measurements (added to, never replaced)")
    ap.add_argument("--facts", type=cli.integer(1, 10**6), default=16, help="facts N_f per sequence")
    ap.add_argument("--seq-len", type=cli.integer(3, 10**7), default=64, help="sequence length L")
    ap.add_argument("--samples", type=cli.integer(1, 10**6), default=64, help="sequences measured per run")
    ap.add_argument("--seed", type=cli.integer(0, 2**32 - 1), default=0, help="seed of the sequences")
    return ap


def read_lines(path: Path, flag: str) -> list[dict]:
    if not path.exists():
        return []
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except ValueError as e:
        raise RequirementError(f"{flag} {path}: not a JSON-lines file ({e})") from None


def main(argv) -> int:
    args = parser().parse_args(argv)
    store, out = Path(args.store), Path(args.out)
    require(store.is_file(), f"--store {args.store}: no such file")
    settings = {"facts": args.facts, "seq_len": args.seq_len, "samples": args.samples, "seed": args.seed}
    lines = read_lines(out, "--out")
    for line in lines:
        require(line.get("settings") == settings, f"--out {args.out}: holds run {line.get('key')} measured with "
                                                  f"{line.get('settings')}, not {settings}; give another --out")
    done = {line["key"] for line in lines}
    runs = [r for r in ResultStore(store).records() if weights_path(store, r["key"]).exists()]
    require(runs, f"--store {args.store}: no run has kept weights in {store}.weights")
    todo = [r for r in runs if r["key"] not in done]
    with cli.Progress(len(todo), "mechanism grid", args.quiet) as progress:
        for r in sorted(todo, key=lambda r: (r["spec"]["d_model"], r["spec"]["d_state"])):
            rep = mechanism.measure(str(weights_path(store, r["key"])), args.facts, args.seq_len, args.samples,
                                    args.seed)
            rep.pop("maps")
            lines.append({"key": r["key"], "d_model": r["spec"]["d_model"], "d_state": r["spec"]["d_state"],
                          "best_val_acc": r["result"]["best_val_acc"], "settings": settings, "report": rep})
            text = "".join(cli.dumps(line) + "\n" for line in lines)
            atomic_write(out, lambda tmp: Path(tmp).write_text(text))
            progress.advance(status=f"D={r['spec']['d_model']} N={r['spec']['d_state']}")
    print(f"{len(todo)} runs measured, {len(lines)} in {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
