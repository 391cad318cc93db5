"""Benchmarks: ``python -m bench.NAME`` prints one JSON object with what it measured."""
