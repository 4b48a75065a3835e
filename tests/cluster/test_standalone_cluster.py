"""The cluster path, end to end: a real Spark standalone cluster on 127.0.0.1 (one master, two
workers from the installed pyspark), the streaming trainer and the weekly retrain submitted to it with
``spark-submit --py-files <zip> --jars <.jars/spark>``, file:// URIs for every table and checkpoint,
the real Kafka broker; results asserted in Delta; every process started is stopped by PID and no
process or port is left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from dsgd.ops.kafka_broker import port_open
from dsgd.ops.packaging import build_pyfiles_zip
from dsgd.ops.processes import listening_ports, process_tree, stop_pids
from dsgd.ops.standalone import StandaloneCluster, spark_jars, spark_submit_command
from dsgd.store.factor_store import FactorStore
from tests.kafka.stream_helpers import known_stream, produce

pytestmark = [pytest.mark.cluster, pytest.mark.kafka, pytest.mark.spark, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
N_EVENTS = 1500
BAD = [(b"not json at all", "malformed_json"), (b'{"item": "i1", "ts": 1600000000000}', "missing_user")]
SUBMIT_TIMEOUT_S = 600  # generous: the suite may run next to other Spark tests on 2 cores

PROBE = '''
"""Where the engine's modules come from on the driver and the executors (must be the --py-files zip)."""
import json

from pyspark.sql import SparkSession


def origins(_):
    import batch.retrain
    import dsgd.core.kernel
    import streaming.trainer

    yield json.dumps({"dsgd": dsgd.core.kernel.__file__, "streaming": streaming.trainer.__file__,
                      "batch": batch.retrain.__file__})


spark = SparkSession.builder.appName("dsgd-probe").getOrCreate()
from dsgd.core.config import load_config  # noqa: E402
from dsgd.core.paths import conf_dir  # noqa: E402

cfg = load_config(profile="local")
executors = spark.sparkContext.parallelize(range(4), 4).mapPartitions(origins).collect()
print("PROBE " + json.dumps({"driver": json.loads(next(origins(None))), "conf_dir": str(conf_dir()),
                             "local_master": cfg.spark.master, "executors": [json.loads(e) for e in executors]}))
spark.stop()
'''


def _submit(cluster: StandaloneCluster, app: Path, args: list[str], *, py_files: Path, tmp: Path, name: str,
            started: list[int]) -> str:
    """spark-submit in client mode; returns stdout; the driver's process tree is gone afterwards."""
    cmd = spark_submit_command(
        cluster.spark_home, cluster.master_url, app, args, py_files=[py_files], jars=spark_jars(),
        conf={"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
              "spark.driver.memory": "1g", "spark.executor.memory": "1g", "spark.executor.cores": "1",
              "spark.cores.max": "2", "spark.ui.enabled": "false"})
    t0 = time.monotonic()
    local = tmp / f"{name}-local"
    local.mkdir()
    log_path = tmp / f"{name}.log"
    with log_path.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                env=cluster.env({"SPARK_LOCAL_DIRS": str(local)}), cwd=tmp, start_new_session=True)
        started.append(proc.pid)
        try:
            out, _ = proc.communicate(timeout=SUBMIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            stop_pids(process_tree([proc.pid]))
            proc.communicate()
            pytest.fail(f"{name} did not finish in {SUBMIT_TIMEOUT_S}s:\n" + _tail(log_path))
    deadline = time.monotonic() + 20
    while process_tree([proc.pid]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not process_tree([proc.pid]), f"{name}: driver processes left after spark-submit returned"
    print(f"{name}: spark-submit took {time.monotonic() - t0:.1f}s")
    text = out.decode(errors="replace")
    (tmp / f"{name}.out").write_text(text)  # the driver's Python stdout + stderr (spark-submit merges them)
    assert proc.returncode == 0, f"{name} exited with {proc.returncode}:\n{text[-3000:]}\n{_tail(log_path)}"
    return text


def _tail(path: Path, n: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def _json_line(text: str, prefix: str = "") -> dict:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith(prefix + "{"):
            return json.loads(line[len(prefix):])
    raise AssertionError(f"no JSON line {prefix!r} in the job's stdout:\n{text[-2000:]}")


def test_stream_and_retrain_run_under_spark_submit_on_a_standalone_cluster(spark, kafka_broker, topic, tmp_path):
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    # the --py-files zip, built with the layout of dist/dsgd_pyfiles.zip from the current sources
    pyfiles = build_pyfiles_zip(ROOT, tmp_path / "dsgd_pyfiles.zip")
    names = set(zipfile.ZipFile(pyfiles).namelist())
    assert {"dsgd/conf/dsgd.toml", "dsgd/conf/local.toml", "streaming/main.py", "batch/retrain_main.py"} <= names

    events = known_stream(N_EVENTS)
    produce(kafka_broker.bootstrap, topic, events, bad=BAD)
    as_of = int(events["ts"].max())

    warehouse = (tmp_path / "warehouse").as_uri()  # file:///... URIs end to end
    checkpoints = (tmp_path / "checkpoints").as_uri()
    assert warehouse.startswith("file:///")
    conf = tmp_path / "cluster.toml"
    conf.write_text(f"""
[app]
name = "cluster-test"
warehouse = "{warehouse}"
checkpoint_root = "{checkpoints}"
[spark]
jars_dir = "none"          # shipped with --jars
shuffle_partitions = 2
[kafka]
bootstrap_servers = "{kafka_broker.bootstrap}"
topic = "{topic}"
max_offsets_per_trigger = 800
[stream]
trigger = "available_now"
eval_max_events = 300
[retrain]
als_max_iter = 3           # the cluster path is under test here, not ALS convergence
""")
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)

    started: list[int] = []
    seen_pids: set[int] = set()
    seen_ports: set[int] = set()
    t0 = time.monotonic()
    cluster = StandaloneCluster(tmp_path / "cluster", workers=2, cores=1, memory="1g", python=sys.executable)
    with cluster:
        seen_ports |= set(cluster.ports())
        seen_pids |= set(cluster.processes())
        assert cluster.alive_workers() == 2

        out = _submit(cluster, probe, [], py_files=pyfiles, tmp=tmp_path, name="probe", started=started)
        got = _json_line(out, "PROBE ")
        for origin in [got["driver"], *got["executors"]]:
            for module, path in origin.items():
                # the zip itself on the driver's PYTHONPATH, or the copy SparkContext distributed
                assert "/dsgd_pyfiles.zip/" in path, f"{module} was not imported from the --py-files zip: {path}"
        assert got["local_master"] == "local[2]"  # the bundled conf/*.toml are read from the zip

        _submit(cluster, ROOT / "streaming" / "main.py", ["--conf", str(conf)], py_files=pyfiles, tmp=tmp_path,
                name="stream", started=started)
        seen_pids |= set(cluster.processes())
        out = _submit(cluster, ROOT / "batch" / "retrain_main.py",
                      ["--conf", str(conf), "--as-of", str(as_of), "--policy", "replace"],
                      py_files=pyfiles, tmp=tmp_path, name="retrain", started=started)
        retrain = _json_line(out)
        assert retrain["status"] == "blended", retrain
        assert retrain["snapshot_id"] == f"asof-{as_of}"

        apps = cluster.applications()
        assert not apps["active"]
        assert len(apps["completed"]) == 3
        assert {a["state"] for a in apps["completed"]} == {"FINISHED"}
        seen_pids |= set(cluster.processes())
        seen_pids |= set(process_tree(started))
        seen_ports |= listening_ports(seen_pids)
    elapsed = time.monotonic() - t0

    # everything started is gone: master, workers, executors, python workers, drivers; and their ports
    assert not process_tree(list(seen_pids) + started), "processes left after the cluster stopped"
    assert not [p for p in seen_ports if port_open("127.0.0.1", p)], "ports left open after the cluster stopped"
    assert not cluster.state_file.exists()

    # results in Delta, read back through the same file:// URIs
    assert spark.read.format("delta").load(f"{warehouse}/events").count() == N_EVENTS
    quarantine = spark.read.format("delta").load(f"{warehouse}/quarantine")
    assert sorted(r.reason for r in quarantine.select("reason").collect()) == sorted(r for _, r in BAD)
    metrics = spark.read.format("delta").load(f"{warehouse}/metrics")
    m = metrics.agg(F.count("*").alias("rows"), F.countDistinct("batch_id").alias("batches"),
                    F.sum("rows_valid").alias("valid"), F.sum("rows_quarantined").alias("bad")).first()
    assert m.rows == m.batches >= 2  # max_offsets_per_trigger = 800 over 1502 records
    assert (m.valid, m.bad) == (N_EVENTS, len(BAD))

    factors = FactorStore(spark, f"{warehouse}/factors").current()
    sides = {r.side: r["count"] for r in factors.groupBy("side").count().collect()}
    assert sides["u"] == events["user"].nunique()
    assert sides["i"] == events["item"].nunique()
    meta = json.loads(factors.where("side = 'm'").select("meta").first().meta)
    assert meta["snapshot_as_of"] == as_of
    assert meta["blend_policy"] == "replace"

    snap = spark.read.format("delta").load(f"{warehouse}/snapshots").where(F.col("as_of") == as_of)
    snap_sides = {r.side: r["count"] for r in snap.groupBy("side").count().collect()}
    assert snap_sides == {"u": events["user"].nunique(), "i": events["item"].nunique(), "m": 1}
    assert DeltaTable.isDeltaTable(spark, f"{warehouse}/snapshots")
    assert os.path.isdir(tmp_path / "checkpoints" / "stream" / "offsets")
    print(f"cluster run took {elapsed:.0f}s")
