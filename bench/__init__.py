"""hookrelay benchmark suite: `python -m bench` (see BENCHMARKS.md).

Every party runs in its own process; every figure is a ratio against a baseline measured in the
same run, in alternating rounds, with CPU time per event from /proc/<pid>/stat.
"""
