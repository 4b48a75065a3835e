"""Spark and Delta at the edge: the session factory, the warehouse tables, the factor store (the model's
source of truth) and the Delta internals it relies on (:mod:`dsgd.store.delta_log`, the only module
that reaches into Delta's JVM classes or log files)."""
