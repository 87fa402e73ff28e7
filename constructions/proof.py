"""What a construction's proof guarantees, carried by the construction itself.

A ``Proof`` names the claim, the bound the proof derives at the construction's own parameters (a lower bound on
every scored logit margin, or an upper bound on every scored error), and the obligations the proof rests on: the
named identities and inequalities of ``symbolic/``, decided exactly by sympy at those parameters. A check PASSES only
when every obligation holds *and* the measurement meets the bound (``verify.checks``); a construction built outside
what its proof covers says why in ``outside`` and is reported as measured only.

Deciding obligations can take seconds (sympy), so ``obligations_of`` defers the call until a check asks for it and
caches the verdicts per (function, arguments): building a construction stays cheap, and a bare run that checks the
same construction at several sizes decides each distinct set of obligations once.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import sympy as sp

from symbolic.proofs import Obligation, positive

CLAIMS = ("margin", "error", "probabilistic")


@lru_cache(maxsize=256)
def _decide(fn, args: tuple, kwargs: tuple) -> tuple[Obligation, ...]:
    return tuple(fn(*args, **dict(kwargs)))


def obligations_of(fn: Callable, *args, **kwargs) -> Callable[[], tuple[Obligation, ...]]:
    """A thunk returning ``fn(*args, **kwargs)`` as a tuple of ``Obligation``, decided once per distinct arguments.

    Arguments must be hashable (sympy numbers, frozen constants dataclasses, ints)."""
    return lambda: _decide(fn, args, tuple(sorted(kwargs.items())))


def margin_obligation(bound, where: str) -> Obligation:
    """The construction's own margin bound is positive (sympy decides the exact expression)."""
    return Obligation(f"proven margin > 0 at {where}", f"margin bound = {sp.N(bound, 8)} > 0", positive(bound))


@dataclass(frozen=True)
class Proof:
    """The claim a construction's proof makes at the construction's parameters, and what it rests on.

    claim: ``margin`` (argmax at every scored position, with logit margin >= ``margin``), ``error`` (every scored
    real-valued output within ``error_bound`` of the exact value) or ``probabilistic`` (a predicted recall; the check
    states its rule). ``obligations()`` returns the sympy-decided obligations. ``outside`` is set when the parameters
    are outside what the proof covers; the check then reports the measurement only, never a PASS.
    """

    claim: str
    statement: str
    obligations: Callable[[], tuple[Obligation, ...]]
    margin: float | None = None
    error_bound: float | None = None
    outside: str | None = None

    def __post_init__(self):
        if self.claim not in CLAIMS:
            raise ValueError(f"Proof.claim must be one of {CLAIMS}, got {self.claim!r}")

    def decide(self) -> tuple[Obligation, ...]:
        return tuple(self.obligations())

    def as_dict(self) -> dict:
        """The recorded form (an export's config.json): the claim and bound, without deciding the obligations."""
        return {"claim": self.claim, "statement": self.statement, "margin": self.margin,
                "error_bound": self.error_bound, "outside": self.outside}
