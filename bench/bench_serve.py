"""``dsgd serve`` latency and throughput over real HTTP, beside the in-process numpy floor and the Spark
path (``dsgd recommend``), and the reload time of a big model. One run, JSON out.

For each model size (``--items``, rank ``--rank``, ``--users`` users) a ``factors`` table is written
in the trainer's layout (one row per key plus the metadata row, partitioned by ``side``) with the
``deltalake`` writer (a Spark write of 10^6 rank-64 rows takes minutes and measures Spark, not the
server). Then:

- ``reload``: the server's full load of that table in-process (``Holder.refresh``: read + latest row per
  key + contiguous arrays + the blend model + its Gram/norm caches), best and median of ``--reloads``;
  and an incremental reload after an append of 1% of the item rows;
- ``floor``: the same top-``k`` in-process (``BlendModel.recommend`` for one user, exclude_seen off; the full
  product and the served path, through the int8 screen from ``serve.screen_min_items`` items),
  thread CPU and wall time per call;
- ``http``: a real ``dsgd serve`` process (port 0) and a load-generator process with ``c`` keep-alive
  HTTP/1.1 connections (asyncio, uvloop), each sending ``GET /users/{random user}/recommendations?k=&
  exclude_seen=false`` back to back for ``--seconds``; latency percentiles (client side), requests/s,
  non-200 answers, and the CPU seconds the server and the client used;
- ``spark``: ``batch.serving.recommend`` (what ``dsgd recommend`` runs) on a warm Spark session
  (``--spark-calls`` calls), and one ``dsgd recommend`` CLI process (JVM start included) on the
  smallest model.

Goals (issue 17, 2 cores): p99 < 10 ms at 10^5 items and 8 connections; >= 1,000 requests/s; reload of
a 10^6-item model <= 5 s. The machine's load average is recorded: other jobs share the two cores.

    .venv/bin/python bench/bench_serve.py --items 10000,100000,1000000 --out bench/out/serve.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dsgd.core.blend import UserFactors  # noqa: E402
from dsgd.core.config import load_config  # noqa: E402
from dsgd.core.factors import list_array  # noqa: E402
from dsgd.core.hashing import id_key  # noqa: E402


def _rows(side: str, ids: list[str], rank: int, seq: int, rng: np.random.Generator) -> pa.Table:
    n = len(ids)
    return pa.table({"side": pa.array([side] * n), "id": pa.array(ids), "key": pa.array(id_key(ids)),
                     "vec": list_array(rng.standard_normal((n, rank)).astype(np.float32) * 0.3),
                     "bias": pa.array(np.zeros(n, np.float32)),
                     "count": pa.array(rng.zipf(1.5, n).clip(max=10**6).astype(np.int64)),
                     "last_batch": pa.array(np.zeros(n, np.int64)),
                     "updated_at": pa.array(np.full(n, int(time.time() * 1e6)).astype("datetime64[us]"),
                                           pa.timestamp("us", "UTC")),
                     "meta": pa.array([None] * n, pa.string()), "model_seq": pa.array(np.full(n, seq, np.int64))})


def write_model(path: Path, n_items: int, n_users: int, rank: int, seq: int = 1) -> None:
    """A factors table in the trainer's layout (rows + metadata row, partitioned by side), via deltalake."""
    from deltalake import write_deltalake

    rng = np.random.default_rng(n_items)
    meta = {"rank": rank, "kind": "implicit", "mu": 0.0, "last_batch": 0, "n_ratings": 0}
    meta_row = _rows("m", ["model"], rank, seq, rng).set_column(3, "vec", pa.array([None], pa.list_(pa.float32())))
    meta_row = meta_row.set_column(8, "meta", pa.array([json.dumps(meta)]))
    for part in (meta_row, _rows("i", [f"i{j}" for j in range(n_items)], rank, seq, rng),
                 _rows("u", [f"u{j}" for j in range(n_users)], rank, seq, rng)):
        write_deltalake(str(path), part, partition_by=["side"], mode="append")


def bench_reload(wh: Path, n_items: int, rank: int, reloads: int) -> dict:
    from deltalake import write_deltalake

    from dsgd.serve.holder import Holder

    cfg = load_config(overrides=[f'app.warehouse="{wh}"'])
    full, cpu = [], []
    for _ in range(reloads):
        h = Holder(cfg)
        t0, c0 = time.perf_counter(), time.process_time()
        assert h.refresh() and h.state is not None
        full.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)  # all threads of this process (deltalake's readers too)
    rng = np.random.default_rng(1)
    inc = []
    for seq in (2, 3):  # two appends of 1% of the items (the first change-feed read of a process is slower)
        changed = [f"i{j}" for j in rng.choice(n_items, max(1, n_items // 100), replace=False)]
        write_deltalake(str(wh / "factors"), _rows("i", changed, rank, seq, rng), partition_by=["side"], mode="append")
        t0 = time.perf_counter()
        assert h.refresh() and h.state.version == seq + 1
        inc.append(round(time.perf_counter() - t0, 3))
    return {"full_s_best": round(min(full), 3), "full_s_median": round(float(np.median(full)), 3),
            "full_s_all": [round(x, 3) for x in full], "full_cpu_s_all": [round(x, 3) for x in cpu],
            "load_avg": os.getloadavg(), "incremental_1pct_items_s": inc, "rss_mb_after": _rss_mb()}


def bench_floor(wh: Path, k: int, n: int = 300) -> dict:
    """The in-process top-k of one user, CPU and wall: the full float32 product (``full``), and what the
    server runs (``served``: the int8 screen and the exact scores of its candidates where
    ``serve.screen_min_items`` says so, else the full product)."""
    from dsgd.serve.holder import Holder

    cfg = load_config(overrides=[f'app.warehouse="{wh}"'])
    h = Holder(cfg)
    h.refresh()
    st = h.state
    users = st.factors.users.factors
    rng = np.random.default_rng(2)
    st.model.prepare(cfg.serve.screen_min_items)
    out: dict = {"calls": n, "screened": st.model.screens(cfg.serve.screen_min_items)}
    picks = rng.integers(0, len(users), n)  # the same users for both paths
    for name in ("full", "served"):
        cpu, wall = [], []
        for j in picks:
            uf = UserFactors.one(st.model.rank, online=(users.vec[j], float(users.bias[j])))
            c0, w0 = time.thread_time(), time.perf_counter()
            rows = st.model.screened_rows(uf, k, cfg.serve.screen_min_items) if name == "served" else None
            st.model.recommend(uf, k, candidates=rows)
            cpu.append(time.thread_time() - c0)
            wall.append(time.perf_counter() - w0)
        out.update({f"{name}_cpu_ms_p50": _ms(cpu, 50), f"{name}_cpu_ms_p99": _ms(cpu, 99),
                    f"{name}_wall_ms_p50": _ms(wall, 50), f"{name}_wall_ms_p99": _ms(wall, 99)})
    return out


def _ms(xs: list[float], q: float) -> float:
    return round(float(np.percentile(xs, q)) * 1e3, 3)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def _cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants (the workers of ``serve.workers`` > 1)."""
    from dsgd.ops.processes import process_tree

    total = 0.0
    for p in process_tree([pid]):
        try:
            with open(f"/proc/{p}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    return total


# ---- the load generator (its own process) ---------------------------------------------------------------
async def _client(host: str, port: int, paths: list[str], until: float, lat: list[float], bad: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    rnd = random.Random(len(lat) + port)
    while time.perf_counter() < until:
        path = paths[rnd.randrange(len(paths))]
        t0 = time.perf_counter()
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        lat.append(time.perf_counter() - t0)
        if status != 200:
            bad.append(status)
    writer.close()


def _load(url: str, paths: list[str], conns: int, seconds: float, out: mp.Queue) -> None:
    import uvloop

    host, port = url.removeprefix("http://").split(":")
    lat: list[float] = []
    bad: list[int] = []

    async def run() -> None:
        until = time.perf_counter() + seconds
        await asyncio.gather(*[_client(host, int(port), paths, until, lat, bad) for _ in range(conns)])

    c0 = time.process_time()
    t0 = time.perf_counter()
    uvloop.run(run())
    out.put({"lat": lat, "bad": bad, "wall": time.perf_counter() - t0, "client_cpu_s": time.process_time() - c0})


def bench_http(wh: Path, n_users: int, k: int, conns: list[int], seconds: float, threads: int,
               overrides: tuple[str, ...] = ()) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    sets = [x for o in (f"serve.threads={threads}", 'app.log_level="WARNING"', *overrides) for x in ("--set", o)]
    proc = subprocess.Popen([sys.executable, "-m", "dsgd", "serve", "--port", "0", "--set", f'app.warehouse="{wh}"',
                             *sets],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = json.loads(proc.stdout.readline())["serving"]
        import httpx

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/ready", timeout=10).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        workers = next((int(o.split("=")[1]) for o in overrides if o.startswith("serve.workers=")), 1)
        while time.monotonic() < deadline and _factor_loads(url) < workers:  # every worker, not the first
            time.sleep(0.2)
        rng = np.random.default_rng(3)
        paths = [f"/users/u{j}/recommendations?k={k}&exclude_seen=false" for j in rng.integers(0, n_users, 2000)]
        httpx.get(url + paths[0], timeout=30)  # warm
        out = {}
        for c in conns:
            ctx = mp.get_context("spawn")  # no fork of a process that may hold a JVM
            q = ctx.Queue()
            s0, m0 = _cpu_s(proc.pid), _products(url)
            p = ctx.Process(target=_load, args=(url, paths, c, seconds, q))
            p.start()
            r = q.get()
            p.join()
            lat = r["lat"]
            out[str(c)] = {"requests": len(lat), "rps": round(len(lat) / r["wall"], 1), "p50_ms": _ms(lat, 50),
                           "p90_ms": _ms(lat, 90), "p99_ms": _ms(lat, 99), "non_200": len(r["bad"]),
                           "server_cpu_ms_per_request": round((_cpu_s(proc.pid) - s0) / max(1, len(lat)) * 1e3, 3),
                           "client_cpu_s": round(r["client_cpu_s"], 2), "load_avg": os.getloadavg(),
                           "users_per_product": _per_product(m0, _products(url))}
        return out
    finally:
        proc.terminate()
        proc.wait(30)


def _products(url: str) -> tuple[float, float]:
    """(matrix products, users scored in them) so far, from the server's /metrics."""
    import httpx

    got = {"dsgd_serve_score_products_total": 0.0, "dsgd_serve_score_product_users_total": 0.0}
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        name, _, value = line.partition(" ")
        if name in got:
            got[name] = float(value)
    return got["dsgd_serve_score_products_total"], got["dsgd_serve_score_product_users_total"]


def _factor_loads(url: str) -> float:
    """Loads of the factors table so far, summed over the server's workers."""
    import httpx

    return sum(float(line.rsplit(" ", 1)[1]) for line in httpx.get(url + "/metrics", timeout=30).text.splitlines()
               if line.startswith('dsgd_serve_reloads_total{') and 'table="factors"' in line)


def _per_product(before: tuple[float, float], after: tuple[float, float]) -> float:
    products, users = after[0] - before[0], after[1] - before[1]
    return round(users / products, 2) if products else 0.0


def bench_spark(wh: Path, k: int, calls: int, cli: bool) -> dict:
    from batch.serving import recommend
    from dsgd.store.session import build_session

    cfg = load_config(profile="local", overrides=[f'app.warehouse="{wh}"', "spark.shuffle_partitions=2"])
    spark = build_session(cfg)
    times = []
    for j in range(calls):
        t0 = time.perf_counter()
        recommend(spark, cfg, f"u{j}", k=k, filter_seen=False)
        times.append(time.perf_counter() - t0)
    out = {"recommend_s_per_call": [round(t, 2) for t in times]}
    if cli:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dsgd", "recommend", "--profile", "local", "--user", "u1", "-k", str(k),
                        "--include-seen", "--set", f'app.warehouse="{wh}"'], cwd=ROOT, env=env, check=True,
                       capture_output=True)
        out["cli_process_s"] = round(time.perf_counter() - t0, 2)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", default="10000,100000,1000000")
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("-k", type=int, default=100)
    ap.add_argument("--conns", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--threads", type=int, default=4, help="serve.threads")
    ap.add_argument("--workers", default="1", help="serve.workers, a comma list: the HTTP points for each "
                    "(http for the first, http_workers<N> for the others)")
    ap.add_argument("--reloads", type=int, default=3)
    ap.add_argument("--full-product-too", action="store_true",
                    help="also every HTTP point with serve.screen_min_items out of reach (no int8 screen)")
    ap.add_argument("--spark-calls", type=int, default=2, help="0: skip the Spark path")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, "blas")  # as the server runs
    res: dict = {"load_avg_start": os.getloadavg(), "cores": os.cpu_count(), "rank": a.rank, "k": a.k,
                 "users": a.users, "seconds_per_point": a.seconds, "threads": a.threads, "sizes": {}}
    root = Path(tempfile.mkdtemp(prefix="dsgd-bench-serve-"))
    try:
        for j, n in enumerate(int(x) for x in a.items.split(",")):
            wh = root / f"wh{n}"
            t0 = time.perf_counter()
            write_model(wh / "factors", n, a.users, a.rank)
            size = {"write_s": round(time.perf_counter() - t0, 1)}
            size["reload"] = bench_reload(wh, n, a.rank, a.reloads)
            size["floor"] = bench_floor(wh, a.k)
            conns = [int(c) for c in a.conns.split(",")]
            workers = [int(w) for w in a.workers.split(",")]
            for w in workers:
                key = "http" if w == workers[0] else f"http_workers{w}"
                size[key] = bench_http(wh, a.users, a.k, conns, a.seconds, a.threads, (f"serve.workers={w}",))
            if a.full_product_too:  # the same points with the int8 screen off, side by side
                size["http_full_product"] = bench_http(wh, a.users, a.k, conns, a.seconds, a.threads,
                                                       (f"serve.workers={workers[0]}",
                                                        "serve.screen_min_items=1000000000000"))
            if a.spark_calls:
                size["spark"] = bench_spark(wh, a.k, a.spark_calls, cli=j == 0)
            res["sizes"][str(n)] = size
            print(json.dumps({str(n): size}), file=sys.stderr, flush=True)
            shutil.rmtree(wh, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    res["load_avg_end"] = os.getloadavg()
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)
    return res


if __name__ == "__main__":
    main()
