"""Engines that run a construction's state dict, task generators, checks."""
