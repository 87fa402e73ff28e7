"""Registry entries that are long enough for their own module (see ``verify.registry``)."""
