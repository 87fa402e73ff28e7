"""A fuzz test of the whole command line: hypothesis draws argument vectors for every subcommand (valid and invalid
flags, extreme and non-finite numbers, bad paths) and the CLI must answer each with exit 0, 1 or 2, never a
traceback, exactly one stderr line on 2, and strict JSON on --json.

Each vector runs in-process under a time limit: a valid but long command (large sizes that fit in memory) is cut and
counts as answered, since only a crash or a malformed answer is a failure here.
"""
import argparse
import contextlib
import io
import json
import signal
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.profiles import examples
from verify.registry import SPECS
from verify_constructions.cli import main, parser

SECONDS = 3  # per vector


class Cut(BaseException):
    """Raised by the alarm: not an Exception, so the CLI's own handlers cannot turn it into an exit code."""


def _alarm(signum, frame):
    raise Cut


def _flags(prog_path: list[str]) -> list[argparse.Action]:
    p = parser()
    for name in prog_path:
        sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        p = sub.choices[name]
    return [a for a in p._actions if a.option_strings and a.dest != "help"]


COMMANDS = [["list"], ["scaling-law"], ["figures"]] + [[c, n] for c in ("check", "export") for n in SPECS]

NUMBERS = st.one_of(st.integers(-3, 12), st.sampled_from([0, 1, 2, 10 ** 12, -(10 ** 9), 2 ** 63]),
                    st.sampled_from(["nan", "inf", "-inf", "1e308", "-0", "0.5", "1/2", "3.7", "1e-300"]))
TEXT = st.one_of(st.sampled_from(["", "x", "one-hot", "jl", "mqar", "ar", "random", "mamba", "analysis", "input",
                                  "prop1", "ours", "paper", "float32", "bfloat16", "tfloat32", "key_cur=1/2",
                                  "key_cur=x", "nope=1", "="]),
                 st.text(alphabet="abc=-_/.0123456789", max_size=8))


def _value(action, tmp: Path):
    if action.dest in ("out", "results", "from_export"):
        return st.sampled_from([str(tmp / "new"), str(tmp / "file"), "/nonexistent/dir", "/proc/version",
                                str(tmp)])
    if action.type is not None and getattr(action.type, "__name__", "") in ("int", "finite_float"):
        return NUMBERS.map(str)
    return st.one_of(TEXT, NUMBERS.map(str))


@st.composite
def argv(draw, tmp: Path):
    command = draw(st.sampled_from(COMMANDS))
    out = list(command)
    actions = _flags(command)
    for action in draw(st.lists(st.sampled_from(actions), max_size=5)) if actions else []:
        out.append(draw(st.sampled_from(action.option_strings)))
        if action.nargs != 0:
            out.append(draw(_value(action, tmp)))
    if command[0] in ("check", "export") and draw(st.booleans()):
        out += ["--samples", draw(st.sampled_from(["1", "2", "0", "-1", "nan"]))]
    if command[0] == "check" and draw(st.booleans()):
        out.append("--json")
    if draw(st.integers(0, 9)) == 0:  # a stray token or unknown flag
        out.insert(draw(st.integers(0, len(out))), draw(st.sampled_from(["--bogus", "-x", "7", "--", "check"])))
    return out


TMP = Path(tempfile.mkdtemp(prefix="cli-fuzz-"))
(TMP / "file").write_text("not a folder")


@settings(max_examples=examples(40), deadline=None)
@given(args=argv(TMP))
def test_every_argument_vector_gets_a_clean_answer(args):
    out, err = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(SECONDS)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--quiet", *args] if args[0] == "check" else args)
    except Cut:
        return  # valid and long: answered by running
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    stderr = err.getvalue()
    assert "Traceback" not in stderr, (args, stderr)
    assert code in (0, 1, 2), (args, code, stderr)
    if code == 2:
        assert stderr.count("\n") == 1 and stderr.startswith("error: "), (args, stderr)
    if "--json" in args and code in (0, 1):
        json.loads(out.getvalue(), parse_constant=lambda c: (_ for _ in ()).throw(AssertionError(c)))
