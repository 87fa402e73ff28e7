"""Task generators: small pure functions of a typed config and a seed (zoology style)."""
