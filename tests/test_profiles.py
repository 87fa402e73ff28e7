"""Every property test's example count follows the hypothesis profile (tests/profiles.py): no test module fixes a
literal ``max_examples``, ``ci`` draws new examples on each run and prints a failure's reproduction blob, and
``MC_HYPOTHESIS_PROFILE=long`` multiplies every count (checked on an inner suite that loads tests/profiles.py as
tests/conftest.py does)."""
import ast
from pathlib import Path

import profiles

pytest_plugins = ["pytester"]

HERE = Path(__file__).parent
MODULES = sorted(p for p in HERE.glob("*.py") if p.name != "profiles.py")


def _trees(modules):
    for path in modules:
        yield path, ast.parse(path.read_text(), filename=str(path))


def _given_tests(modules):
    return [node for _, tree in _trees(modules) for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
            and any(isinstance(d, ast.Call) and getattr(d.func, "id", None) == "given" for d in node.decorator_list)]


def _keywords(modules, name):
    return [(path, node) for path, tree in _trees(modules) for node in ast.walk(tree)
            if isinstance(node, ast.keyword) and node.arg == name]


def _fixed_counts(modules):
    """``max_examples=...`` written other than as ``examples(n)``, as "file:line: max_examples=value"."""
    return [f"{path.name}:{kw.value.lineno}: max_examples={ast.unparse(kw.value)}"
            for path, kw in _keywords(modules, "max_examples")
            if not (isinstance(kw.value, ast.Call) and getattr(kw.value.func, "id", None) == "examples")]


def test_no_test_module_fixes_its_example_count():
    assert len(_given_tests(MODULES)) >= 15  # the property tests are seen
    fixed = _fixed_counts(MODULES)
    assert not fixed, "use max_examples=examples(n) so the profile scales the count:\n" + "\n".join(fixed)


def test_no_test_module_derandomizes():
    assert not [f"{path.name}:{kw.value.lineno}" for path, kw in _keywords(MODULES, "derandomize")]


def test_the_check_names_a_literal_or_computed_count(tmp_path):
    bad = tmp_path / "test_bad.py"
    bad.write_text("from hypothesis import given, settings, strategies as st\n\n"
                   "@settings(max_examples=40)\n@given(st.integers())\ndef test_x(x):\n    pass\n\n"
                   "@settings(max_examples=examples(40), deadline=None)\n@given(st.integers())\ndef test_y(x):\n"
                   "    pass\n\n"
                   "@settings(max_examples=settings.default.max_examples // 4)\n@given(st.integers())\n"
                   "def test_z(x):\n    pass\n")
    assert len(_given_tests([bad])) == 3
    assert _fixed_counts([bad]) == ["test_bad.py:3: max_examples=40",
                                    "test_bad.py:13: max_examples=settings.default.max_examples // 4"]


INNER = '''
from hypothesis import given, settings, strategies as st
from profiles import examples

def _record(name, x):
    with open(name, "a") as f:
        f.write(f"{x}\\n")

@given(st.integers(0, 2**62))
def test_default_count(x):
    _record("default.txt", x)

@settings(max_examples=examples(3))
@given(st.integers(0, 2**62))
def test_own_count(x):
    _record("own.txt", x)

@given(st.integers(0, 10))
def test_fails(x):
    assert x < 5
'''


def _inner_run(pytester, monkeypatch, profile):
    monkeypatch.setenv("MC_HYPOTHESIS_PROFILE", profile)
    for name in ("default.txt", "own.txt"):
        (pytester.path / name).unlink(missing_ok=True)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    draws = {name: (pytester.path / name).read_text().split() for name in ("default.txt", "own.txt")}
    return result.stdout.str(), draws


def test_profiles_set_every_count_draw_anew_and_print_the_blob(pytester, monkeypatch):
    pytester.makeconftest("import profiles  # noqa: F401\n")
    pytester.makepyfile(profiles=(HERE / "profiles.py").read_text(), test_inner=INNER)
    out, first = _inner_run(pytester, monkeypatch, "ci")
    # hypothesis names the example "Falsifying example" (6.155) or "Failing test case" (6.170)
    assert "@reproduce_failure(" in out
    assert "Falsifying example: test_fails(" in out or "Failing test case: test_fails(" in out
    assert len(first["default.txt"]) == 200 and len(first["own.txt"]) == 3
    _, second = _inner_run(pytester, monkeypatch, "ci")
    assert set(first["default.txt"]) != set(second["default.txt"])  # not derandomized: new draws each run
    _, long = _inner_run(pytester, monkeypatch, "long")
    assert len(long["default.txt"]) == 200 * profiles.LONG_FACTOR >= 2000
    assert len(long["own.txt"]) == 3 * profiles.LONG_FACTOR
