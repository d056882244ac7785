"""Benchmarks of every stage at scale: `python -m benchmarks.run` (see benchmarks/results/README.md)."""
