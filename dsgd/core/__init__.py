"""The core: ids and hashing, the SGD kernel and its NumPy reference, strata, learning-rate schedules,
parameters, the config declarations, the in-memory factors, scoring and metrics.

numpy/numba/pyarrow only: nothing here imports Spark, Delta or Kafka (a test enforces it), so every
process (driver, executor, the server) can use it.
"""
