"""Shared test settings.

* ``@pytest.mark.cuda`` tests run only where torch sees a GPU and mamba_ssm imports; elsewhere they are skipped
  (and reported as skipped, never as passed).
* hypothesis profiles: ``ci`` (default, bounded) and ``long`` (thousands of examples). Choose with
  ``MC_HYPOTHESIS_PROFILE=long pytest`` or ``pytest --hypothesis-profile=long``.
"""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=3000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("MC_HYPOTHESIS_PROFILE", "ci"))


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


def pytest_collection_modifyitems(config, items):
    reason = _cuda_ready()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"cuda test: {reason}")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
