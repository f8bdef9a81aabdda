"""Benchmarks of issue 7 (plain Python): `python -m benchmarks.cpu`, `python benchmarks/gpu.py`."""
