"""Numpy/numba-only core: no Spark imports."""
