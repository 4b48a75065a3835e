"""A big online model served through the int8 screen answers, over HTTP, the items and scores the
full product answers: two real server processes on one factors table, the screen on and off."""

from __future__ import annotations

import importlib.util

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from dsgd.core import metric_names as N
from tests.serve.helpers import ROOT, Server


def _write_model(path, n_items: int, n_users: int, rank: int) -> None:
    spec = importlib.util.spec_from_file_location("bench_serve", ROOT / "bench" / "bench_serve.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.write_model(path, n_items, n_users, rank)  # the benchmark's own synthetic model, via deltalake


def _products(srv: Server) -> float:
    text = httpx.get(srv.url + "/metrics", timeout=30).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name in (N.SERVE_PRODUCTS, f"{N.SERVE_PRODUCTS}_total"))


def test_the_screened_server_answers_what_the_full_product_answers(tmp_path):
    wh = tmp_path / "wh"
    _write_model(wh / "factors", 9000, 200, 16)
    common = [f'app.warehouse="{wh}"', "serve.exclude_seen=false"]
    on = Server([*common, "serve.screen_min_items=0"], tmp_path / "on.log")
    off = Server([*common, "serve.screen_min_items=1000000000"], tmp_path / "off.log")
    with on, off:
        on.wait_ready()
        off.wait_ready()
        rng = np.random.default_rng(5)
        for j in rng.choice(200, 30, replace=False):
            k = int(rng.choice([1, 10, 100]))
            exclude = [f"i{x}" for x in rng.choice(9000, int(rng.choice([0, 3, 40])), replace=False)]
            params = {"k": k, **({"exclude": exclude} if exclude else {})}
            a, b = (httpx.get(f"{s.url}/users/u{j}/recommendations", params=params, timeout=30).json()
                    for s in (on, off))
            assert a["source"] == b["source"] == "model"
            assert [i["item"] for i in a["items"]] == [i["item"] for i in b["items"]], j
            np.testing.assert_allclose([i["score"] for i in a["items"]], [i["score"] for i in b["items"]], rtol=1e-6)
            assert not set(exclude) & {i["item"] for i in a["items"]}
        assert _products(on) == 0  # every answer came from the screen, none from the full product
        assert _products(off) >= 30
