"""Benchmarks: ``python -m benchmarks`` (or ``make bench``) runs them all.

Each benchmark module owns one section of ``benchmarks/RESULTS.md`` and
rewrites only that section (see :mod:`benchmarks.results`).
"""
