"""Hypothesis profiles and the example count of every ``@given`` test.

* ``ci`` (default): 200 examples for a test that sets no count, new examples on every run (not derandomized), and a
  failure prints its ``@reproduce_failure`` blob; no deadline.
* ``long``: the same, with every count ``LONG_FACTOR`` times larger.

Importing this module (tests/conftest.py does) loads the profile named by ``MC_HYPOTHESIS_PROFILE`` (default ``ci``);
``pytest --hypothesis-profile=NAME`` overrides it.

A test that sets its own count writes ``@settings(max_examples=examples(n))``: n under ``ci``, scaled like the profile's
default count elsewhere (``n * LONG_FACTOR`` under ``long``), so no property test is fixed at one size whatever the
profile. ``tests/test_profiles.py`` checks that no test module sets a literal count.
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

CI_EXAMPLES = 200
LONG_FACTOR = 10

settings.register_profile("ci", max_examples=CI_EXAMPLES, deadline=None, derandomize=False, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", parent=settings.get_profile("ci"), max_examples=CI_EXAMPLES * LONG_FACTOR)
settings.load_profile(os.environ.get("MC_HYPOTHESIS_PROFILE", "ci"))


def examples(n: int) -> int:
    """The example count of a test that runs n examples under ``ci``, scaled to the active profile."""
    return max(1, n * settings.default.max_examples // CI_EXAMPLES)
