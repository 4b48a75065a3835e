"""Prometheus metrics of ``dsgd serve`` (its own registry, text format at ``/metrics``).

| metric | type | labels |
|---|---|---|
| ``dsgd_serve_requests_total`` | counter | ``endpoint`` (route template), ``status`` |
| ``dsgd_serve_request_seconds`` | histogram | ``endpoint`` |
| ``dsgd_serve_recommendations_total`` | counter | ``source`` (model, fold-in, popularity) |
| ``dsgd_serve_model_version`` | gauge | the served factors version (-1: none yet) |
| ``dsgd_serve_model_age_seconds`` | gauge | seconds since the served version was committed |
| ``dsgd_serve_model_items``, ``dsgd_serve_model_users`` | gauge | |
| ``dsgd_serve_reloads_total`` | counter | ``table`` (factors, events, items), ``kind`` (full, incremental) |
| ``dsgd_serve_reload_failures_total`` | counter | ``table`` |
| ``dsgd_serve_reload_seconds`` | histogram | ``table`` |
| ``dsgd_serve_seen_pairs``, ``dsgd_serve_seen_bytes`` | gauge | |
| ``dsgd_serve_seen_dropped_pairs_total`` | counter | pairs over ``serve.seen_max_pairs`` |
| ``dsgd_serve_score_products_total``, ``dsgd_serve_score_product_users_total`` | counter | batched scoring (users / products = mean batch) |

One process serves (requests run in its thread pool), so no multiprocess mode is needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class _ModelCollector(Collector):
    """Gauges read from the served state at scrape time (version, age, sizes, seen sets)."""

    def __init__(self, state: Callable[[], object | None]) -> None:
        self.state = state

    def collect(self):
        st = self.state()
        values = {"model_version": -1.0, "model_age_seconds": float("nan"), "model_items": 0.0,
                  "model_users": 0.0, "seen_pairs": 0.0, "seen_bytes": 0.0}
        if st is not None:
            commit = st.commit_time if st.commit_time is not None else st.loaded_at
            values.update(model_version=float(st.version), model_age_seconds=max(0.0, time.time() - commit),
                          model_items=float(len(st.model)), model_users=float(len(st.factors.users.factors)),
                          seen_pairs=float(st.seen.pairs), seen_bytes=float(st.seen.nbytes))
        for name, value in values.items():
            yield GaugeMetricFamily(f"dsgd_serve_{name}", name.replace("_", " "), value=value)


class Metrics:
    """The counters and histograms the app and the reloader update."""

    def __init__(self, state: Callable[[], object | None]) -> None:
        disable_created_metrics()  # no *_created series: one family per metric
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("dsgd_serve_requests", "HTTP requests", ["endpoint", "status"], registry=r)
        self.latency = Histogram("dsgd_serve_request_seconds", "HTTP request latency", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.recommendations = Counter("dsgd_serve_recommendations", "Users answered, by source", ["source"],
                                       registry=r)
        self.reloads = Counter("dsgd_serve_reloads", "Table versions loaded", ["table", "kind"], registry=r)
        self.reload_failures = Counter("dsgd_serve_reload_failures", "Failed loads (the old state kept serving)",
                                       ["table"], registry=r)
        self.reload_seconds = Histogram("dsgd_serve_reload_seconds", "Seconds per load", ["table"],
                                        buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60), registry=r)
        self.products = Counter("dsgd_serve_score_products", "Matrix products that scored concurrent one-user "
                                "requests together", registry=r)
        self.product_users = Counter("dsgd_serve_score_product_users", "Users those products scored", registry=r)
        self.seen_dropped = Counter("dsgd_serve_seen_dropped_pairs", "Seen pairs over serve.seen_max_pairs",
                                    registry=r)
        r.register(_ModelCollector(state))

    def render(self) -> bytes:
        return generate_latest(self.registry)
