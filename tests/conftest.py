"""Shared fixtures: one real local Spark session (local[2], Delta) and one real KRaft Kafka broker.

Both are session-scoped and started lazily: unit tests that need neither never start a JVM.
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


@pytest.fixture(scope="session")
def base_config(tmp_path_factory):
    from dsgd.core.config import load_config

    root = tmp_path_factory.mktemp("dsgd")
    return load_config(profile="local", overrides=[
        f'app.warehouse="{root / "warehouse"}"',
        f'app.checkpoint_root="{root / "checkpoints"}"',
        "spark.shuffle_partitions=2",
        'spark.driver_memory="3g"',
    ])


@pytest.fixture(scope="session")
def spark(base_config):
    from dsgd.store.session import build_session

    session = build_session(base_config)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """A real single-node KRaft broker on 127.0.0.1, free ports, stopped by PID at the end."""
    from dsgd.ops.kafka_broker import KafkaBroker, pid_alive, port_open

    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"), port=0, heap="384m")
    broker.start()
    pid = broker.proc.pid
    yield broker
    broker.stop()
    assert not pid_alive(pid), "broker process survived the fixture"
    assert not port_open(broker.host, broker.port), "broker port still open after the fixture"


_topic_ids = itertools.count()


@pytest.fixture
def topic(kafka_broker, request):
    """A fresh topic with 2 partitions, named after the test."""
    name = f"t{next(_topic_ids)}-{request.node.name[:40]}".replace("[", "-").replace("]", "")
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in name)
    kafka_broker.create_topic(name, partitions=2)
    return name


@pytest.fixture
def cfg(base_config, tmp_path, kafka_broker_bootstrap):
    """A per-test config: its own warehouse and checkpoints, pointed at the test broker."""
    return base_config.replace(app={"warehouse": str(tmp_path / "warehouse"),
                                    "checkpoint_root": str(tmp_path / "checkpoints")},
                               kafka={"bootstrap_servers": kafka_broker_bootstrap})


@pytest.fixture
def kafka_broker_bootstrap(request):
    if "kafka_broker" in request.fixturenames or request.node.get_closest_marker("kafka"):
        return request.getfixturevalue("kafka_broker").bootstrap
    return "127.0.0.1:9092"
