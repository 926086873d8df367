"""Benchmarks behind ``dequiformer bench ...`` (speed and f-evaluation counts, never asserted in tests)."""
