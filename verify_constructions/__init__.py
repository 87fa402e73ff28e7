"""The ``verify-constructions`` command line."""
