"""``dsgd serve``: an HTTP service on the live Delta model, without a JVM.

- :mod:`dsgd.serve.delta_read`: the warehouse's Delta tables read with ``deltalake``;
- :mod:`dsgd.serve.loader`: the current model (latest row per key), full or incremental, and the snapshot;
- :mod:`dsgd.serve.seen`: per-user seen sets from ``events``;
- :mod:`dsgd.serve.state`, :mod:`dsgd.serve.holder`: the served state and the hot reload that swaps it;
- :mod:`dsgd.serve.service`: the answers (scores by :class:`dsgd.core.blend.BlendModel`, the one definition
  ``dsgd recommend`` uses too);
- :mod:`dsgd.serve.app`, :mod:`dsgd.serve.guard`, :mod:`dsgd.serve.metrics`, :mod:`dsgd.serve.server`: HTTP.

It imports no Spark, Delta-Spark or Kafka code (an import-linter contract in pyproject.toml).
"""
