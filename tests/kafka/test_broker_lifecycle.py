from __future__ import annotations

import pytest

from dsgd.cli.kafka import stop_report
from dsgd.ops.kafka_broker import BrokerError, KafkaBroker, pid_alive, port_open

pytestmark = pytest.mark.kafka


def test_broker_starts_serves_and_leaves_no_process_or_port(tmp_path):
    broker = KafkaBroker(tmp_path / "kb", port=0, heap="256m")
    with broker:
        pid = broker.pid()
        assert pid and pid_alive(pid)
        assert port_open(broker.host, broker.port)
        broker.create_topic("lifecycle", partitions=3)
        assert "lifecycle" in broker.list_topics()
        assert broker.status()["running"]
        report = stop_report(broker)  # what `dsgd kafka stop` prints
        assert report["stopped_pid"] == pid and not report["running"], report
    assert not pid_alive(pid)
    assert not port_open(broker.host, broker.port)
    assert not port_open(broker.host, broker.controller_port)
    assert broker.status() == {**broker.status(), "running": False, "pid": None}


def test_second_broker_on_same_home_is_refused_with_a_clear_message(tmp_path):
    with KafkaBroker(tmp_path / "kb", port=0, heap="256m"):
        with pytest.raises(BrokerError, match="already running"):
            KafkaBroker(tmp_path / "kb", port=0, heap="256m").start()


def test_stop_by_pid_file_from_another_manager(tmp_path):
    first = KafkaBroker(tmp_path / "kb", port=0, heap="256m").start()
    pid = first.pid()
    first.proc = None  # as if started by another process (`dsgd kafka start`)
    KafkaBroker(tmp_path / "kb", port=first.port, controller_port=first.controller_port).stop()
    assert not pid_alive(pid)


def test_cluster_id_never_starts_with_a_dash_which_the_storage_tool_would_parse_as_an_option():
    from dsgd.ops.kafka_broker import _cluster_id

    ids = [_cluster_id() for _ in range(3000)]  # without the guard ~47 of them would start with "-"
    assert not [c for c in ids if c.startswith("-")]
    assert all(len(c) == 22 for c in ids) and len(set(ids)) == len(ids)
