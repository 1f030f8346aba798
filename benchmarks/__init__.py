"""Benchmark harness for apeewee and its peers (run with ``python -m benchmarks``).

Nothing in here is imported by the library or by the test suite. The worker side
(``benchmarks.worker``, ``benchmarks.workload``, ``benchmarks.systems``) imports only
the standard library at module level, so it also runs inside the separate
peewee-async virtual environment.
"""
