"""Exact (sympy) descriptions of the layers and of each construction's proof obligations.

Nothing here touches torch: a construction's constants are sympy numbers, its identities are checked by
``sympy.simplify(lhs - rhs) == 0`` and its inequalities by sympy's exact sign evaluation.
"""
