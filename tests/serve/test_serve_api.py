"""The HTTP API against a real server process: filters and business rules, similar items, batch requests,
fold-in beating the popularity fallback, every bad request a 4xx naming its parameter, /metrics."""

from __future__ import annotations

import json
import random
import shutil

import httpx
import numpy as np
import pytest

from dsgd.core import metric_names as N
from dsgd.core.contract import REASONS, parse_fields
from tests.serve.helpers import Server, cluster_of, planted_events

pytestmark = pytest.mark.spark

UNAVAILABLE = "i0_0"  # from serve.unavailable_items; i0_1 is unavailable in the items table


@pytest.fixture(scope="module")
def srv(planted, tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    shutil.copytree(planted.warehouse, root / "wh")
    server = Server([f'app.warehouse="{root / "wh"}"', "serve.poll_interval_s=0.2", "serve.max_events=50",
                     f'serve.unavailable_items=["{UNAVAILABLE}"]', f'serve.items_table="{planted.items_table}"',
                     "serve.max_body_bytes=4096", "serve.max_batch_users=20"], root / "serve.log")
    server.start()
    server.wait_ready()
    yield server
    server.stop()


def get(srv, path, **params):
    return httpx.get(srv.url + path, params=params, timeout=30)


def post(srv, body, **kw):
    return httpx.post(srv.url + "/recommendations", json=body, timeout=30, **kw)


def items(r) -> list[str]:
    assert r.status_code == 200, r.text
    return [i["item"] for i in r.json()["items"]]


def test_rules_filters_and_seen_items(srv, planted):
    seen_u0 = set(planted.events.loc[planted.events.user == "u0", "item"])
    top = items(get(srv, "/users/u0/recommendations", k=50))
    assert not set(top) & seen_u0  # exclude_seen defaults to serve.exclude_seen = true
    assert UNAVAILABLE not in top and "i0_1" not in top
    with_seen = items(get(srv, "/users/u0/recommendations", k=50, exclude_seen="false"))
    assert set(with_seen) & seen_u0 and UNAVAILABLE not in with_seen and "i0_1" not in with_seen
    # include restricts the candidates and keeps the model's order; exclude removes
    inc = ["i1_3", "i2_3", "i3_3", "i0_5", UNAVAILABLE]
    got = items(get(srv, "/users/u1/recommendations", k=10, include=inc, exclude_seen="false"))
    assert set(got) == set(inc) - {UNAVAILABLE}
    order = [i for i in items(get(srv, "/users/u1/recommendations", k=100, exclude_seen="false")) if i in inc]
    assert got == order
    ex = items(get(srv, "/users/u1/recommendations", k=5, exclude=got[:2], exclude_seen="false"))
    assert not set(ex) & set(got[:2])
    # the popularity fallback of an unknown user obeys the rules too
    cold = get(srv, "/users/nobody/recommendations", k=10)
    assert cold.json()["source"] == "popularity" and UNAVAILABLE not in items(cold) and "i0_1" not in items(cold)
    scores = [i["score"] for i in cold.json()["items"]]
    assert scores == sorted(scores, reverse=True)


def test_similar_items_and_batch_requests(srv):
    sim = get(srv, "/items/i2_0/similar", k=8).json()
    names = [i["item"] for i in sim["items"]]
    assert "i2_0" not in names and len(names) == 8 and UNAVAILABLE not in names
    assert sum(cluster_of(i) == 2 for i in names) >= 6  # planted clusters: neighbours share the cluster
    s = [i["score"] for i in sim["items"]]
    assert s == sorted(s, reverse=True) and all(-1.0 - 1e-6 <= x <= 1.0 + 1e-6 for x in s)

    users = ["u0", "u3", "nobody", "u8"]
    batch = post(srv, {"users": users, "k": 5}).json()
    assert [r["user"] for r in batch["results"]] == users
    for r in batch["results"]:
        one = get(srv, f"/users/{r['user']}/recommendations", k=5).json()
        assert [i["item"] for i in r["items"]] == [i["item"] for i in one["items"]] and r["source"] == one["source"]
        # many users are scored in one matrix product: equal to the one-user scores up to float32 rounding
        np.testing.assert_allclose([i["score"] for i in r["items"]], [i["score"] for i in one["items"]], rtol=1e-6)
    assert [r["source"] for r in batch["results"]] == ["model", "model", "popularity", "model"]


def test_fold_in_of_new_users_beats_the_popularity_fallback_on_planted_data(srv):
    new = planted_events(n_users=60, events_per_user=24, seed=99, prefix="new")
    new = new[new.user.map(lambda u: int(u[3:]) % 2 == 1)]  # home clusters 1..3: popularity favours cluster 0
    hits = {"fold-in": 0, "popularity": 0}
    for user, g in new.groupby("user"):
        observed, held_out = g.iloc[:8], set(g.iloc[8:]["item"]) - set(g.iloc[:8]["item"])
        events = [{"item": i} for i in observed["item"]]
        folded = post(srv, {"user": user, "events": events, "k": 10}).json()
        assert folded["source"] == "fold-in" and folded["events_used"] + folded["events_ignored"] == 8
        # the baseline, same test, same model: the popularity fallback, the observed items left out
        pop = get(srv, f"/users/{user}/recommendations", k=10 + len(observed))
        assert pop.json()["source"] == "popularity"
        pop_top = [i for i in items(pop) if i not in set(observed["item"])][:10]
        hits["fold-in"] += len(held_out & {i["item"] for i in folded["items"]})
        hits["popularity"] += len(held_out & set(pop_top))
    assert hits["fold-in"] > 1.5 * hits["popularity"], hits  # measured 44 vs 25 hits with 20 users


def test_fold_in_rules_known_users_and_too_few_events(srv):
    known = post(srv, {"user": "u2", "events": [{"item": "i3_1"}, {"item": "i3_2"}], "k": 5}).json()
    assert known["source"] == "fold-in"  # a known user is folded in from any number of events
    few = post(srv, {"user": "brand-new", "events": [{"item": "i3_1"}, {"item": "i3_2"}], "k": 5}).json()
    assert few["source"] == "popularity"  # a new user needs serve.foldin_new_user_min_events = 3
    anon = post(srv, {"events": [{"item": "i3_1"}, {"item": "i3_2"}, {"item": "i3_3"}, {"item": "zz"}], "k": 5}).json()
    assert anon["source"] == "fold-in" and anon["events_used"] == 3 and anon["events_ignored"] == 1
    assert not {"i3_1", "i3_2", "i3_3"} & {i["item"] for i in anon["items"]}
    assert sum(cluster_of(i["item"]) == 3 for i in anon["items"]) >= 3


BAD = [  # (method, path or body, expected status, parameter)
    ("get", "/users/u0/recommendations?k=0", 400, "k"),
    ("get", "/users/u0/recommendations?k=1001", 400, "k"),
    ("get", "/users/u0/recommendations?k=abc", 422, "k"),
    ("get", "/users/u0/recommendations?k=2.5", 422, "k"),
    ("get", "/users/u0/recommendations?exclude_seen=maybe", 422, "exclude_seen"),
    ("get", "/users/u0/recommendations?include=no-such-item", 400, "include"),
    ("get", "/users/u0/recommendations?exclude=i1_1&exclude=no-such-item", 400, "exclude"),
    ("get", "/users/" + "x" * 513 + "/recommendations", 400, "user"),
    ("get", "/items/no-such-item/similar", 404, "item"),
    ("get", "/items/i1_1/similar?k=-3", 400, "k"),
    ("post", b'{"users": ["u1",', 422, "body"),
    ("post", b"[1, 2]", 422, "body"),
    ("post", b"", 422, "body"),
    ("post", {"users": ["u1"], "events": [{"item": "i1_1"}]}, 400, "users"),
    ("post", {}, 400, "users"),
    ("post", {"users": ["u1"], "user": "u1"}, 400, "user"),
    ("post", {"users": "u1"}, 422, "users"),
    ("post", {"users": [f"u{j}" for j in range(21)]}, 400, "users"),
    ("post", {"users": ["u1"], "k": 0}, 400, "k"),
    ("post", {"users": ["u1"], "k": "ten"}, 422, "k"),
    ("post", {"users": ["u1"], "exclude_seen": "yes"}, 422, "exclude_seen"),
    ("post", {"users": ["u1"], "include": ["nope"]}, 400, "include"),
    ("post", {"users": ["u1"], "colour": "red"}, 422, "colour"),
    ("post", {"events": []}, 400, "events"),
    ("post", {"events": [{"item": "i1_1"}] * 51}, 400, "events"),
    ("post", {"events": [{"item": "i1_1"}, {"item": "i1_2", "rating": -1}]}, 400, "events[1].rating"),
    ("post", {"events": [{"item": "i1_1"}], "k": 5, "user": True}, 422, "user"),
    ("post", {"events": [{"item": "i1_1", "weight": 2}]}, 422, "events[0].weight"),
    ("post", {"users": ["u1"] * 5, "pad": "z" * 5000}, 413, "body"),
]
#: Fold-in events the event contract refuses (dsgd.core.contract): (body, field, the contract's reason).
CONTRACT = [
    ({"events": [{"item": ["i1_1"]}]}, "events[0].item", "bad_item"),
    ({"events": [{"item": 1.0}]}, "events[0].item", "bad_item"),
    ({"events": [{"item": " i1_1"}]}, "events[0].item", "bad_item"),
    ({"events": [{"item": "i1_1"}, {"item": "a\x07b"}]}, "events[1].item", "bad_item"),
    ({"events": [{"item": 2**64}]}, "events[0].item", "bad_item"),
    ({"events": [{"rating": 1.0}]}, "events[0].item", "missing_item"),
    ({"events": [{"item": "   "}]}, "events[0].item", "missing_item"),
    ({"events": [{"item": "i1_1", "rating": "high"}]}, "events[0].rating", "bad_rating"),
    ({"events": [{"item": "i1_1", "rating": 1e39}]}, "events[0].rating", "non_finite_rating"),
    ({"events": [{"item": "i1_1", "ts": "yesterday"}]}, "events[0].ts", "bad_ts"),
    ({"events": [{"item": "i1_1", "ts": 8 * 10**15}]}, "events[0].ts", "bad_ts"),
    ({"events": [{"item": "i1_1"}], "user": "y" * 600}, "user", "bad_user"),
    ({"events": [{"item": "i1_1"}], "user": 1.5}, "user", "bad_user"),
]


@pytest.mark.parametrize(("method", "what", "status", "parameter"), BAD, ids=[f"{m}:{str(w)[:50]}" for m, w, *_ in BAD])
def test_every_bad_request_is_a_4xx_naming_the_parameter(srv, method, what, status, parameter):
    if method == "get":
        r = httpx.get(srv.url + what, timeout=30)
    elif isinstance(what, bytes):
        r = httpx.post(srv.url + "/recommendations", content=what, headers={"content-type": "application/json"},
                       timeout=30)
    else:
        r = post(srv, what)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["parameter"] == parameter and parameter.split("[")[0] in body["error"], body


@pytest.mark.parametrize(("body", "field", "reason"), CONTRACT, ids=[f"{f}:{r}" for _, f, r in CONTRACT])
def test_fold_in_events_are_checked_with_the_event_contract(srv, body, field, reason):
    if field.startswith("events"):  # the reference itself gives this verdict for the same fields
        ev = body["events"][int(field[7])]
        assert parse_fields({"user": "u", **ev}, default_ts_ms=0, explicit=False, rating_min=0,
                            rating_max=1) == reason
    r = post(srv, body)
    assert r.status_code == 422, r.text
    got = r.json()
    assert got["parameter"] == field and got["reason"] == reason, got
    assert field in got["error"] and reason in got["error"] and REASONS[reason] in got["error"]


def test_user_input_never_causes_a_500(srv):
    rng = random.Random(5)
    junk = ["", "%00", "\u2603", "a" * 700, "-1", "1e9", "true", "[]", "{}", "null", "i1_1", "'", '"', "%ff"]
    for _ in range(150):
        q = {rng.choice(["k", "include", "exclude", "exclude_seen", "x"]): rng.choice(junk) for _ in range(3)}
        path = rng.choice(["/users/u1/recommendations", "/users/%E2%98%83/recommendations", "/items/i1_1/similar",
                           "/items/%00/similar", "/ready", "/health"])
        assert httpx.get(srv.url + path, params=q, timeout=30).status_code < 500
        body = rng.choice([{"users": [rng.choice(junk)]}, {"events": [{"item": rng.choice(junk)}] * rng.randint(0, 3)},
                           {"events": [{"item": "i1_1", "rating": rng.choice([1e308, -0.0, 3])}]},
                           {"users": [1, 2], "k": rng.choice([1, 10**12, -5])}, json.loads('{"k": null}')])
        assert post(srv, body).status_code < 500
    r = httpx.post(srv.url + "/recommendations", content=b"\xff\xfe garbage", timeout=30)
    assert 400 <= r.status_code < 500


def test_metrics_in_the_prometheus_text_format(srv):
    from prometheus_client.parser import text_string_to_metric_families

    def scrape():
        text = httpx.get(srv.url + "/metrics", timeout=30).text
        return {f.name: f for f in text_string_to_metric_families(text)}

    before = scrape()

    def count(fams, endpoint, status):
        return sum(s.value for s in fams[N.SERVE_REQUESTS].samples
                   if s.name.endswith("_total") and s.labels == {"endpoint": endpoint, "status": status})

    for _ in range(7):
        assert get(srv, "/health").status_code == 200
    get(srv, "/users/u0/recommendations", k=0)
    after = scrape()
    assert count(after, "/health", "200") - count(before, "/health", "200") == 7
    assert count(after, "/users/{user}/recommendations", "400") - count(before, "/users/{user}/recommendations", "400") == 1
    hist = {s.name for s in after[N.SERVE_REQUEST_SECONDS].samples}
    assert {f"{N.SERVE_REQUEST_SECONDS}_{x}" for x in ("bucket", "count", "sum")} <= hist
    version = next(iter(after[N.MODEL_VERSION].samples)).value  # the stream's name: one dashboard for both
    ready = get(srv, "/ready").json()
    assert version == ready["model_version"]
    assert 0 <= next(iter(after[N.MODEL_AGE_SECONDS].samples)).value < ready["model_age_s"] + 60
    assert next(iter(after[N.MODEL_COMMIT_TIMESTAMP].samples)).value > 1.7e9
    build = next(iter(after[N.BUILD_INFO].samples))
    assert build.value == 1 and build.labels["process"] == "serve"
    assert any(s.value >= 1 for s in after[N.SERVE_RELOADS].samples if s.labels.get("table") == "factors")
    assert N.SERVE_RELOAD_FAILURES in after and N.SERVE_SEEN_PAIRS in after
    assert next(iter(after[N.SERVE_SEEN_PAIRS].samples)).value > 0


def test_the_bearer_token_is_required_and_never_logged(planted, tmp_path):
    secret = "s3cr3t-" + "".join(random.Random(1).choices("abcdef0123456789", k=24))
    log = tmp_path / "serve.log"
    with Server([f'app.warehouse="{planted.warehouse}"', "app.log_level=\"DEBUG\""], log,
                env={"DSGD_SERVE_TOKEN": secret}) as s:
        assert httpx.get(s.url + "/health", timeout=30).status_code == 200  # liveness needs no token
        s.wait_ready()
        assert httpx.get(s.url + "/users/u0/recommendations", timeout=30).status_code == 401
        bad = httpx.get(s.url + "/users/u0/recommendations", headers={"Authorization": "Bearer nope"}, timeout=30)
        assert bad.status_code == 401 and bad.json()["parameter"] == "Authorization"
        ok = httpx.get(s.url + "/users/u0/recommendations", headers={"Authorization": f"Bearer {secret}"}, timeout=30)
        assert ok.status_code == 200 and ok.json()["source"] == "model"
        assert httpx.get(s.url + "/metrics", timeout=30).status_code == 401
    text = log.read_text()
    assert "listening on http://127.0.0.1:" in text and secret not in text
    with Server([f'app.warehouse="{planted.warehouse}"', f'serve.token="{secret}"'], log) as s:
        assert httpx.get(s.url + "/ready", timeout=30).status_code in (200, 503)
        assert httpx.get(s.url + "/users/u0/recommendations", timeout=30).status_code == 401
    assert secret not in log.read_text()  # the resolved config is logged with the token redacted
