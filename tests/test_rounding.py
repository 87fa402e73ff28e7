"""The rounding allowance (verify.rounding): its formula, and that it covers what rounding does to every construction.

For every construction at small sizes, the margin (or Haar error) measured with weights stored in, or an engine
computing in, float32, bfloat16 and float16 differs from the float64 measurement by at most the allowance the check
reports; in float64 the allowance is negligible, and where it reaches the proven bound the verdict is UNPROVEN."""
import contextlib
import io
import json
import math

import pytest

from verify import rounding
from verify_constructions.cli import main
from tests.test_failure_injection import SMALL


def test_gamma_is_highams():
    u = 2.0 ** -24
    assert rounding.gamma(10, u) == pytest.approx(10 * u / (1 - 10 * u), rel=1e-15)
    assert rounding.gamma(2 ** 24, u) == math.inf and rounding.gamma(0, u) == 0


def test_relative_error_grows_with_coarser_dtypes_and_longer_chains():
    errs = [rounding.relative_error(1000, d, d) for d in ("float64", "float32", "float16", "bfloat16")]
    assert errs == sorted(errs) and errs[0] < 1e-12
    assert rounding.relative_error(2000, "float32", "float32") > rounding.relative_error(1000, "float32", "float32")
    # weights stored coarser than the engine computes: the file's dtype counts
    assert rounding.relative_error(1000, "float64", "bfloat16") > rounding.relative_error(1000, "float64", "float32")
    # TF32 rounds matmul inputs to 2^-11 but accumulates in float32
    assert rounding.relative_error(1000, "tfloat32", "float32") == pytest.approx(
        rounding.gamma(1000, 2.0 ** -24) + rounding.gamma(rounding.ROUNDED_TENSORS, 2.0 ** -11)
        + rounding.gamma(rounding.ROUNDED_WEIGHTS, 2.0 ** -24))


def run(*argv):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main([*argv, "--json", "--quiet"])
    return code, json.loads(buf.getvalue())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_allowance_covers_rounding_of_every_construction(tmp_path, name):
    _, exact = run("check", name, *SMALL[name])
    key = "max_error" if exact["claim"] == "error" else "min_margin"
    bound = exact["error_bound"] if exact["claim"] == "error" else exact["proven_margin"]
    assert exact["verdict"] == "PASS" and exact["allowance"] < 1e-9 * abs(bound)
    for dtype in ("float32", "bfloat16", "float16"):
        folder = tmp_path / dtype
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["export", name, *SMALL[name], "--out", str(folder), "--dtype", dtype, "--quiet"]) == 0
        for how, argv in (("stored", ["--from-export", str(folder)]), ("engine", [*SMALL[name], "--dtype", dtype])):
            code, r = run("check", name, *argv)
            allowance = math.inf if r["allowance"] is None else r["allowance"]
            diff = abs(r[key] - exact[key])
            print(f"{name} {dtype} {how}: |diff| {diff:.3g} <= allowance {allowance:.3g} ({r['verdict']})")
            assert diff <= allowance, (dtype, how, diff, allowance)
            assert r["verdict"] in ("PASS", "UNPROVEN") and (code == 0) == (r["verdict"] == "PASS")
            if not allowance < abs(bound):  # the dtype cannot decide the claim: never a PASS
                assert r["verdict"] == "UNPROVEN" and any(x.startswith("undecidable") for x in r["reasons"])
            if dtype == "float32":  # float32 decides every claim here
                assert r["verdict"] == "PASS", r["reasons"]
