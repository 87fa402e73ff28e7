"""``MC_REQUIRE_CUDA=1`` turns every skip of a cuda test into a failure (tests/conftest.py). An inner suite runs with
this repository's conftest, CUDA hidden (``CUDA_VISIBLE_DEVICES=""``) so it behaves the same on any machine, and,
for the skips raised by the tests themselves, with a conftest that reports CUDA as ready."""
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

HERE = Path(__file__).parent

INNER = '''
import pytest

@pytest.mark.cuda
def test_needs_gpu():
    pass

@pytest.mark.cuda
def test_skips_in_its_body():
    pytest.skip("skipped in the body")

@pytest.mark.cuda
def test_importorskip_in_its_body():
    pytest.importorskip("no_such_module_for_this_test")

@pytest.fixture
def skipping_fixture():
    pytest.skip("skipped in a fixture")

@pytest.mark.cuda
def test_skips_in_a_fixture(skipping_fixture):
    pass

@pytest.mark.cuda
@pytest.mark.skipif(True, reason="skipif mark")
def test_skipif_mark():
    pass

@pytest.mark.cuda
@pytest.mark.xfail(reason="known to fail", strict=True)
def test_xfail():
    assert False

def test_plain_skip_stays_a_skip():
    pytest.skip("not a cuda test")
'''

MODULE_SKIP = '''
import pytest
pytestmark = pytest.mark.cuda
pytest.importorskip("no_such_module_at_import")

def test_never_collected():
    pass
'''

RUNTIME_SKIPS = {"test_skips_in_its_body": "skipped in the body",
                 "test_importorskip_in_its_body": "could not import 'no_such_module_for_this_test'",
                 "test_skips_in_a_fixture": "skipped in a fixture", "test_skipif_mark": "skipif mark"}
CUDA_TESTS = ["test_needs_gpu", "test_xfail", *RUNTIME_SKIPS]
FAILED = "MC_REQUIRE_CUDA=1 and this cuda test would skip: "


def _run(pytester, monkeypatch, require: bool, cuda_ready: bool):
    conftest = (HERE / "conftest.py").read_text()
    pytester.makeconftest(conftest + ("\n_cuda_ready = lambda: None\n" if cuda_ready else ""))
    pytester.makepyfile(profiles=(HERE / "profiles.py").read_text())
    pytester.makeini("[pytest]\nmarkers =\n    cuda: needs a CUDA GPU and mamba_ssm\n")
    pytester.makepyfile(test_inner=INNER, test_module_skip=MODULE_SKIP)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    if require:
        monkeypatch.setenv("MC_REQUIRE_CUDA", "1")
    else:
        monkeypatch.delenv("MC_REQUIRE_CUDA", raising=False)
    result = pytester.runpytest_subprocess("-rfEsx", "--continue-on-collection-errors")
    return result, result.stdout.str()


def test_without_the_switch_cuda_tests_skip_with_their_reason(pytester, monkeypatch):
    result, out = _run(pytester, monkeypatch, require=False, cuda_ready=False)
    result.assert_outcomes(skipped=len(CUDA_TESTS) + 2)  # + the plain skip and the module skipped at import
    assert "cuda test: no CUDA GPU visible" in out
    assert "no_such_module_at_import" in out and result.ret == pytest.ExitCode.OK


def test_with_the_switch_a_cuda_test_on_a_machine_without_gpu_fails(pytester, monkeypatch):
    result, out = _run(pytester, monkeypatch, require=True, cuda_ready=False)
    result.assert_outcomes(failed=len(CUDA_TESTS), skipped=1, errors=1)
    assert all(f"FAILED test_inner.py::{name}" in out for name in CUDA_TESTS)
    assert FAILED + "cuda test: no CUDA GPU visible" in out
    assert "SKIPPED [1] test_inner.py" in out and "not a cuda test" in out
    assert "MC_REQUIRE_CUDA=1 and this module of cuda tests skips at import" in out
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_with_the_switch_every_skip_inside_a_cuda_test_fails_with_its_reason(pytester, monkeypatch):
    result, out = _run(pytester, monkeypatch, require=True, cuda_ready=True)
    result.assert_outcomes(passed=1, failed=len(RUNTIME_SKIPS), skipped=1, xfailed=1, errors=1)
    for name, reason in RUNTIME_SKIPS.items():
        assert f"FAILED test_inner.py::{name}" in out, name
        assert FAILED + reason in out, reason
