"""Benchmark scripts (run them as ``./arbiter bench <name>``) and their code."""
