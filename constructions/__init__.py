"""Concrete weights for real layers, one module per theorem, built from the exact constants in ``symbolic``."""
