"""Shared test settings.

* ``@pytest.mark.cuda`` tests run only where torch sees a GPU and mamba_ssm imports; elsewhere they are skipped
  (and reported as skipped, never as passed). With ``MC_REQUIRE_CUDA=1`` in the environment (GPU runs), a cuda test
  never skips: one that would (no GPU, no mamba_ssm, a ``skipif`` mark, or ``pytest.skip`` / ``importorskip`` in its
  fixtures or body) FAILS with the skip's reason, and a cuda-marked module that skips at import is a collection error.
* GPU runs: mamba_ssm's SSD kernels (Mamba-2) autotune over 9-11 tile configurations per kernel for every new
  (chunk_size, headdim, d_state, dtype), compiling each one, in every xdist worker: 40-65 s per Mamba-2 test on the
  H100, the bulk of the ``-m cuda`` run. ``MAMBA_DETERMINISTIC=1`` (set here unless the environment sets it, before
  mamba_ssm is imported; read by mamba_ssm at import) makes mamba_ssm run the cheapest configuration of each kernel
  instead, and its backward reductions deterministic. The tests assert the same with it; the kernels' numbers differ
  from an autotuned run's only by the tiles' summation order. The benchmarks run the autotuned kernels.
  ``MAMBA_DETERMINISTIC=0`` restores the autotuning here (``TRITON_CACHE_AUTOTUNING=1`` with Triton >= 3.4 also does,
  and caches the timings in Triton's cache directory, which every worker shares).
* hypothesis profiles (``tests/profiles.py``): ``ci`` (default: 200 examples, new ones every run, a failure prints its
  reproduction blob) and ``long`` (every test's count times ``profiles.LONG_FACTOR``). Choose with
  ``MC_HYPOTHESIS_PROFILE=long pytest`` or ``pytest --hypothesis-profile=long``. A test that sets its own count uses
  ``@settings(max_examples=examples(n))`` so the profile scales it.
"""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

import profiles  # noqa: F401 (registers the profiles, loads MC_HYPOTHESIS_PROFILE's)

REQUIRE_CUDA = os.environ.get("MC_REQUIRE_CUDA") == "1"
os.environ.setdefault("MAMBA_DETERMINISTIC", "1")  # one tile configuration per SSD kernel (docstring)


@pytest.fixture
def one_thread():
    """torch on one CPU thread for the test (tiny training runs), restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cuda_ready() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA GPU visible"
    try:
        import mamba_ssm  # noqa: F401
    except ImportError as e:
        return f"mamba_ssm not importable ({e})"
    return None


def pytest_report_header(config):
    reason = _cuda_ready()
    state = "run" if reason is None else ("FAIL" if REQUIRE_CUDA else "skipped") + f" ({reason})"
    return [f"cuda tests: {state}; MC_REQUIRE_CUDA={'1' if REQUIRE_CUDA else 'unset'}; "
            f"MAMBA_DETERMINISTIC={os.environ['MAMBA_DETERMINISTIC']}",
            f"hypothesis profile: {settings.get_current_profile_name()} ({settings.default.max_examples} examples "
            "for a test that sets no count)"]


def pytest_collection_modifyitems(config, items):
    reason = _cuda_ready()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"cuda test: {reason}")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def _reason(report) -> str:
    """The reason of a skipped report (its longrepr is (path, line, "Skipped: reason"))."""
    text = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    return text.removeprefix("Skipped: ")


def _required(reason: str, when: str) -> pytest.CallInfo:
    msg = f"MC_REQUIRE_CUDA=1 and this cuda test would skip: {reason}"
    return pytest.CallInfo.from_call(lambda: pytest.fail(msg, pytrace=False), when)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under MC_REQUIRE_CUDA=1 a cuda test's skip (setup or body) becomes a failure of the test; xfail is left alone.
    A skip at setup is reported as the test's failure, not as an error, since the test itself never ran."""
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_CUDA and report.skipped and "cuda" in item.keywords and not hasattr(report, "wasxfail"):
        when = "call" if call.when == "setup" else call.when
        outcome.force_result(pytest.TestReport.from_item_and_call(item, _required(_reason(report), when)))


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """Under MC_REQUIRE_CUDA=1 a module that marks cuda tests and skips at import (``importorskip`` at the top)
    is a collection error rather than a silent skip of all its tests."""
    outcome = yield
    report = outcome.get_result()
    if (REQUIRE_CUDA and report.skipped and isinstance(collector, pytest.Module)
            and "pytest.mark.cuda" in collector.path.read_text()):
        report.outcome = "failed"
        report.longrepr = f"MC_REQUIRE_CUDA=1 and this module of cuda tests skips at import: {_reason(report)}"
