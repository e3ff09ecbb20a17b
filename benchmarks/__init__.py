"""Benchmarks of keras_reg against Keras' built-ins and against the memory floor.

Run `make bench` or `python -m benchmarks.run` from the repository root
(`--quick` for a small version, `--help` for the sections). Every figure is a
ratio of two variants timed in the same process, interleaved (A B A B ...,
shuffled within each round), the median over rounds of the per-round ratio.
The figures and how to read them are in BENCHMARKS.md.
"""
