"""chunkq's benchmark suite (issue 7): ``python -m tests.benchmarks``.

Not tests: nothing here asserts on speed, and pytest skips this folder (addopts
``--ignore=tests/benchmarks``). Every number is a ratio against a baseline
measured in the same run, so a noisy shared machine moves both sides together.
"""
