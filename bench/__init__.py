"""Benchmarks; run them as scripts (`python bench/orders.py`), see docs/performance.md."""
