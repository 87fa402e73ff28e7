"""What every command line of the project shares: exit codes, flag types that refuse bad numbers, output paths checked
before any work, memory estimates checked before allocation, progress on stderr and strict JSON.

Exit codes (``run_main``): 0 done (every check passed), 1 a check failed (``CheckFailed``), 2 bad input (a
``RequirementError``: one line on stderr naming the requirement and the flag as typed), 3 an internal error (one line;
``--debug`` prints the traceback), 130 interrupted (one line).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from common.errors import RequirementError
from common.io import write_json_atomic
from verify import memory

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class CheckFailed(Exception):
    """A check the tool runs did not pass: exit 1, the message on stderr."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def out_of_memory(e: BaseException) -> bool:
    """An allocation failure: Python's MemoryError, torch's CUDA OutOfMemoryError (or a RuntimeError saying "out of
    memory"), torch's CPU allocator refusing (a RuntimeError "can't allocate memory"), or a size too large to
    allocate at all (torch's element count or storage size overflowing 64 bits, numpy's "array is too big" /
    "maximum allowed dimension exceeded")."""
    text = str(e).lower()
    return (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"
            or (isinstance(e, RuntimeError) and any(m in text for m in (
                "can't allocate memory", "out of memory", "integer multiplication overflow",
                "storage size calculation overflowed")))
            or (isinstance(e, ValueError) and any(m in text for m in (
                "array is too big", "maximum allowed dimension exceeded"))))


def run_main(main, argv=None) -> int:
    """Run ``main(argv)`` and map its outcome to the exit codes above (``--debug`` in argv: tracebacks too)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv

    def say(line: str) -> None:
        if debug:
            traceback.print_exc()
        print(_one_line(line), file=sys.stderr, flush=True)

    try:
        return main(argv) or EXIT_OK
    except RequirementError as e:
        say(f"error: {e}")
        return EXIT_BAD_INPUT
    except CheckFailed as e:
        say(f"FAILED: {e}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        say("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (``| head``): nothing left to say to it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as e:  # noqa: BLE001 -- anything else is a bug of ours: one line, not a failed check
        if out_of_memory(e):  # an allocation an estimate did not foresee: the input was too large for this machine
            say("error: out of memory: the sizes asked for do not fit in this machine's memory; lower them")
            return EXIT_BAD_INPUT
        say(f"internal error: {type(e).__name__}: {e}" + ("" if debug else " (--debug prints the traceback)"))
        return EXIT_INTERNAL


# ---------------------------------------------------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------------------------------------------------


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every flag's default after its help (unless the help states it, or the flag is a switch); the description
    kept as written."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS) or action.nargs == 0:
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (exit 2 through ``run_main``, no usage dump), that takes no
    abbreviated flags (the flag in a message is the flag as typed), shows every default, and has ``--debug`` and (for
    tools that report progress) ``--quiet``."""

    def __init__(self, *args, progress: bool = True, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        # "-inf", "-1e4" and "-nan" are values (refused by the flag's type, naming it), not unknown options
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$|^-(inf|infinity|nan)$", re.I)
        self.add_argument("--debug", action="store_true", help="on an internal error, print the traceback")
        if progress:
            self.add_argument("--quiet", action="store_true", help="no progress display on stderr")

    def error(self, message):
        raise RequirementError(f"{self.prog}: {message}")


def _need(lo, hi, lo_open: bool = False) -> str:
    parts = ([f"{'>' if lo_open else '>='} {lo}"] if lo is not None else []) + ([f"<= {hi}"] if hi is not None else [])
    return "".join(" " + p for p in [" and ".join(parts)] if p)


def integer(lo: int | None = None, hi: int | None = None):
    """Flag type: an integer in [lo, hi] (no floats, no NaN)."""
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            value = None
        if value is None or (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be an integer{_need(lo, hi)}, got {text!r}")
        return value
    return parse


def real(lo: float | None = None, hi: float | None = None, lo_open: bool = False):
    """Flag type: a finite number in [lo, hi] (``lo_open``: > lo); NaN and inf are refused."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or (hi is not None and value > hi) or \
                (lo is not None and (value <= lo if lo_open else value < lo)):
            raise argparse.ArgumentTypeError(f"must be a finite number{_need(lo, hi, lo_open)}, got {text!r}")
        return value
    return parse


def names(known):
    """Flag type: a comma-separated list of distinct names from ``known``."""
    known = list(known)

    def parse(text: str) -> list[str]:
        items = text.split(",")
        for item in items:
            if item not in known:
                raise argparse.ArgumentTypeError(f"unknown name {item!r} in {text!r}; known: {', '.join(known)}")
        if len(set(items)) != len(items):
            raise argparse.ArgumentTypeError(f"names repeat in {text!r}")
        return items
    return parse


def integers(lo: int | None = None, hi: int | None = None):
    """Flag type: a comma-separated list of distinct integers in [lo, hi]."""
    one = integer(lo, hi)

    def parse(text: str) -> list[int]:
        try:
            values = [one(t) for t in text.split(",")]
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"must be comma-separated integers{_need(lo, hi)}, got {text!r}") from None
        if len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(f"values repeat in {text!r}")
        return values
    return parse


# ---------------------------------------------------------------------------------------------------------------------
# Output paths, checked before any work
# ---------------------------------------------------------------------------------------------------------------------


def _writable_ancestor(path: Path, flag: str, typed: str) -> None:
    """The nearest existing ancestor of ``path`` is a folder we can create files in (probed: permissions alone
    say nothing for root or a read-only mount)."""
    p = path.absolute()
    while not p.exists():
        p = p.parent
    if not p.is_dir():
        raise RequirementError(f"{flag} {typed}: {p} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=p):
            pass
    except OSError as e:
        raise RequirementError(f"{flag} {typed}: cannot write in {p} ({e.strerror or e})") from None


def output_dir(typed: str, flag: str = "--out") -> Path:
    """A folder the tool may write into: not an existing file, inside a writable folder. Not created here."""
    path = Path(typed)
    if path.exists() and not path.is_dir():
        raise RequirementError(f"{flag} {typed}: is an existing file; a folder is expected")
    _writable_ancestor(path, flag, typed)
    return path


def output_file(typed: str, flag: str = "--out", overwrite: bool = False) -> Path:
    """A result file the tool may write: not a folder, inside a writable folder, and not an existing file unless
    ``overwrite`` (a stored result is never replaced silently)."""
    path = Path(typed)
    if path.is_dir():
        raise RequirementError(f"{flag} {typed}: is a folder; a file name is expected")
    if path.exists() and not overwrite:
        raise RequirementError(f"{flag} {typed}: a stored result exists; pass --overwrite to replace it, or another "
                               f"{flag}")
    _writable_ancestor(path.absolute().parent, flag, typed)  # the file's folder (the file itself may exist)
    return path


def resumable_file(path: Path, settings: dict, flag: str, overwrite: bool) -> bool:
    """Whether the result file at ``path`` is resumed: absent -> False; stored with the same ``settings`` -> True;
    with other settings (or unreadable) -> refused unless ``overwrite`` (then False: it is started over)."""
    if not path.exists():
        return False
    if path.is_dir():
        raise RequirementError(f"{flag}: {path} is a folder; a result file is expected there")
    try:
        stored = json.loads(path.read_text()).get("settings")
    except (OSError, ValueError, AttributeError) as e:
        if overwrite:
            return False
        raise RequirementError(f"{flag}: {path} is not a readable result file ({_one_line(e)}); pass --overwrite "
                               "to replace it") from None
    if stored == settings:
        return True
    if overwrite:
        return False
    stored = stored if isinstance(stored, dict) else {}
    diff = "; ".join(f"{k}: stored {_short(stored.get(k))}, asked {_short(settings.get(k))}"
                     for k in sorted(set(stored) | set(settings)) if stored.get(k) != settings.get(k))
    raise RequirementError(f"{flag}: {path} holds a result of other settings ({diff}); pass --overwrite to replace "
                           f"it, or another {flag}")


def _short(value, width: int = 40) -> str:
    text = json.dumps(value)
    return text if len(text) <= width else text[:width - 3] + "..."


# ---------------------------------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------------------------------


require_memory = memory.require_memory  # (estimate, what, flags): exit 2 naming the estimate and what is available


# ---------------------------------------------------------------------------------------------------------------------
# Strict JSON
# ---------------------------------------------------------------------------------------------------------------------


def strict(obj):
    """``obj`` with every NaN / inf float replaced by null; a dict gets ``undefined_values``: where each was and why.

    JSON has no NaN or Infinity (strict parsers reject them); a value the computation left undefined is null."""
    found: dict[str, str] = {}

    def walk(x, path):
        if isinstance(x, float) and not math.isfinite(x):
            found[path or "."] = f"{x} (not a finite number: undefined for this computation)"
            return None
        if isinstance(x, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(x)]
        return x

    clean = walk(obj, "")
    if found and isinstance(clean, dict):
        clean["undefined_values"] = found
    return clean


def dumps(obj, **kwargs) -> str:
    """Strict JSON text (``strict`` first, then ``allow_nan=False``)."""
    return json.dumps(strict(obj), allow_nan=False, **kwargs)


def write_json(path: Path, obj, indent: int = 1) -> Path:
    """Strict JSON, written atomically."""
    return write_json_atomic(path, json.loads(dumps(obj)), indent=indent)


# ---------------------------------------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------------------------------------


class Progress:
    """Progress of ``total`` steps on stderr: a rich bar on a terminal; piped, one plain line at the start and then
    every ``every`` seconds (also while one long step runs); nothing with ``quiet``. A context manager."""

    def __init__(self, total: int, description: str, quiet: bool = False, every: float = 5.0, stream=None):
        self.total, self.description, self.quiet, self.every = total, description, quiet, every
        self.stream = stream or sys.stderr
        self.done, self.status, self._start = 0, "", time.monotonic()
        self._bar = self._task = self._thread = None
        self._stop = threading.Event()

    def __enter__(self):
        if self.quiet:
            return self
        if self.stream.isatty():
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                                     console=Console(file=self.stream), transient=False)
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total, status="")
        else:
            self._line()
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, kind, value, tb):
        self._stop.set()
        if self._bar is not None:
            self._bar.stop()
        elif self._thread is not None:
            self._thread.join(timeout=1)
            if kind is None:
                self._line(final=True)
        return False

    def advance(self, steps: int = 1, status: str | None = None) -> None:
        self.done += steps
        self.update(status)

    def update(self, status: str | None = None) -> None:
        if status is not None:
            self.status = status
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, status=self.status)

    def _line(self, final: bool = False) -> None:
        elapsed = time.monotonic() - self._start
        status = f", {self.status}" if self.status else ""
        word = "done in" if final else "elapsed"
        print(f"{self.description}: {self.done}/{self.total}{status}, {word} {elapsed:.0f} s", file=self.stream,
              flush=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            self._line()


def command_line(module: str, argv) -> str:
    """The command as a user would retype it, for a result file's ``command``."""
    import shlex

    return shlex.join(["python", "-m", module, *argv])
