"""Prometheus metrics of ``dsgd serve`` (its own registry, text format at ``/metrics``).

Names come from :mod:`dsgd.core.metric_names`: the model's version, commit time and age and the build
info are the ones the streaming trainer exports too (``process="serve"``), so one dashboard and one
alert rule cover both; the rest are the server's own.

| metric | type | labels |
|---|---|---|
| ``dsgd_model_version`` | gauge | the served factors version (-1: none yet; shared with the stream) |
| ``dsgd_model_commit_timestamp_seconds`` | gauge | Unix time the served version was committed (shared) |
| ``dsgd_model_age_seconds`` | gauge | seconds since then, at scrape time (shared) |
| ``dsgd_build_info`` | gauge | ``version``, ``process="serve"`` (shared) |
| ``dsgd_serve_requests_total`` | counter | ``endpoint`` (route template), ``status`` |
| ``dsgd_serve_request_seconds`` | histogram | ``endpoint`` |
| ``dsgd_serve_recommendations_total`` | counter | ``source`` (model, fold-in, popularity) |
| ``dsgd_serve_model_items``, ``dsgd_serve_model_users`` | gauge | |
| ``dsgd_serve_reloads_total`` | counter | ``table`` (factors, events, items), ``kind`` (full, incremental) |
| ``dsgd_serve_reload_failures_total`` | counter | ``table`` |
| ``dsgd_serve_reload_seconds`` | histogram | ``table`` |
| ``dsgd_serve_seen_pairs``, ``dsgd_serve_seen_bytes`` | gauge | |
| ``dsgd_serve_seen_dropped_pairs_total`` | counter | pairs over ``serve.seen_max_pairs`` |
| ``dsgd_serve_score_products_total``, ``dsgd_serve_score_product_users_total`` | counter | batched scoring (users / products = mean batch) |

With ``serve.workers`` > 1 the workers count in Prometheus's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``,
set by :func:`dsgd.serve.server.serve` before a worker imports prometheus_client): counters and
histograms are summed over the workers (``dsgd_serve_reloads_total`` then counts each worker's load); the
model gauges are those of the worker that answers the scrape (every worker loads every version).
"""

from __future__ import annotations

import os
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

from dsgd import __version__
from dsgd.core import metric_names as N

CONTENT_TYPE = CONTENT_TYPE_LATEST


class _ModelCollector(Collector):
    """Gauges read from the served state at scrape time (version, commit time, age, sizes, seen sets)."""

    HELP = {N.MODEL_VERSION: "Delta version of the factors table this process's model is.",
            N.MODEL_COMMIT_TIMESTAMP: "Unix time that model version was committed or first seen.",
            N.MODEL_AGE_SECONDS: "Seconds since that model version was committed or first seen.",
            N.SERVE_MODEL_ITEMS: "Items of the served model.", N.SERVE_MODEL_USERS: "Users of the served model.",
            N.SERVE_SEEN_PAIRS: "(user, item) pairs in the seen sets.", N.SERVE_SEEN_BYTES: "Bytes of the seen sets."}

    def __init__(self, state: Callable[[], object | None]) -> None:
        self.state = state

    def collect(self):
        st = self.state()
        values = dict.fromkeys(self.HELP, 0.0)
        values.update({N.MODEL_VERSION: -1.0, N.MODEL_COMMIT_TIMESTAMP: float("nan"),
                       N.MODEL_AGE_SECONDS: float("nan")})
        if st is not None:
            commit = st.commit_time if st.commit_time is not None else st.loaded_at
            values.update({N.MODEL_VERSION: float(st.version), N.MODEL_COMMIT_TIMESTAMP: float(commit),
                           N.MODEL_AGE_SECONDS: max(0.0, time.time() - commit),
                           N.SERVE_MODEL_ITEMS: float(len(st.model)),
                           N.SERVE_MODEL_USERS: float(len(st.factors.users.factors)),
                           N.SERVE_SEEN_PAIRS: float(st.seen.pairs), N.SERVE_SEEN_BYTES: float(st.seen.nbytes)})
        for name, value in values.items():
            yield GaugeMetricFamily(name, self.HELP[name], value=value)
        info = GaugeMetricFamily(N.BUILD_INFO, "Always 1; the labels name the build.", labels=["version", "process"])
        info.add_metric([__version__, "serve"], 1.0)
        yield info


def multiprocess() -> bool:
    """Whether this process counts in Prometheus's multiprocess mode (``serve.workers`` > 1)."""
    mine = os.environ.get("DSGD_SERVE_MULTIPROC")  # set by serve for its workers, not a user's global setting
    return bool(mine) and mine == os.environ.get("PROMETHEUS_MULTIPROC_DIR")


class Metrics:
    """The counters and histograms the app and the reloader update."""

    def __init__(self, state: Callable[[], object | None]) -> None:
        disable_created_metrics()  # no *_created series: one family per metric
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(N.SERVE_REQUESTS, "HTTP requests", ["endpoint", "status"], registry=r)
        self.latency = Histogram(N.SERVE_REQUEST_SECONDS, "HTTP request latency", ["endpoint"],
                                 buckets=N.SERVE_LATENCY_BUCKETS, registry=r)
        self.recommendations = Counter(N.SERVE_RECOMMENDATIONS, "Users answered, by source", ["source"], registry=r)
        self.reloads = Counter(N.SERVE_RELOADS, "Table versions loaded", ["table", "kind"], registry=r)
        self.reload_failures = Counter(N.SERVE_RELOAD_FAILURES, "Failed loads (the old state kept serving)",
                                       ["table"], registry=r)
        self.reload_seconds = Histogram(N.SERVE_RELOAD_SECONDS, "Seconds per load", ["table"],
                                        buckets=N.SERVE_RELOAD_BUCKETS, registry=r)
        self.products = Counter(N.SERVE_PRODUCTS, "Matrix products that scored concurrent one-user requests "
                                "together", registry=r)
        self.product_users = Counter(N.SERVE_PRODUCT_USERS, "Users those products scored", registry=r)
        self.seen_dropped = Counter(N.SERVE_SEEN_DROPPED, "Seen pairs over serve.seen_max_pairs", registry=r)
        self.model = _ModelCollector(state)
        r.register(self.model)

    def render(self) -> bytes:
        if not multiprocess():
            return generate_latest(self.registry)
        from prometheus_client import multiprocess as mp

        summed = CollectorRegistry()
        mp.MultiProcessCollector(summed)
        summed.register(self.model)
        return generate_latest(summed)
