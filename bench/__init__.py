"""Benchmark harness for predq: compute ceiling, hand-written baseline, load generator."""
