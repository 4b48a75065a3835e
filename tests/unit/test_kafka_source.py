"""The trainer's Kafka side without a broker: source options from the config, the lag probe's back-off."""

from __future__ import annotations

import socket
import time

from dsgd.core.config import load_config
from streaming.lag import LAG_RETRY_S, LagProbe
from streaming.source import SOURCE_DEFAULTS, source_options


def test_kafka_options_reach_the_source_and_win_over_its_defaults():
    cfg = load_config(overrides=['kafka.options={"kafka.security.protocol"="SSL", minPartitions=4, '
                                 'includeHeaders=true}', "kafka.max_offsets_per_trigger=7", "kafka.topic=t"])
    opts = source_options(cfg)
    assert opts["kafka.security.protocol"] == "SSL" and opts["minPartitions"] == "4"
    assert opts["includeHeaders"] == "true" and opts["subscribe"] == "t" and opts["maxOffsetsPerTrigger"] == "7"
    assert set(SOURCE_DEFAULTS) <= set(opts)
    key = next(iter(SOURCE_DEFAULTS))
    assert source_options(load_config(overrides=[f'kafka.options={{"{key}"="9"}}']))[key] == "9"


def test_a_failed_lag_probe_rests_instead_of_delaying_every_batch():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    probe = LagProbe(f"127.0.0.1:{port}")
    offs = {"t:0": [0, 5]}
    assert probe.lag(offs) == -1
    assert probe._retry_at >= time.monotonic() + LAG_RETRY_S - 60
    t0 = time.monotonic()
    assert probe.lag(offs) == -1
    assert time.monotonic() - t0 < 0.5
    probe.close()


def test_a_failed_batch_is_logged_by_its_python_exception_not_the_proxy_wrapper():
    from streaming.trainer import failure_cause

    text = ("org.apache.spark.sql.execution.streaming.sources.ForeachBatchUserFuncException: [FOREACH_BATCH_USER_"
            "FUNCTION_ERROR] Reason: An exception was raised by the Python Proxy. Return Message: Traceback (most "
            "recent call last):\n  File \"/x/pipeline.py\", line 98, in run\n    raise e\n"
            "streaming.model_state.ModelTooLarge: the model holds 200 factor rows\n\tat org.apache.Foo(Foo.java:1)\n\n"
            "=== Streaming Query ===\nIdentifier: dsgd-trainer [id = 1, runId = 2]\nCurrent Committed Offsets: {}")
    assert failure_cause(text) == "streaming.model_state.ModelTooLarge: the model holds 200 factor rows"
    wrapped = ("Traceback (most recent call last):\n  File \"a.py\", line 1\npy4j.protocol.Py4JJavaError: An error "
               "occurred while calling o7.save.\n: io.delta.exceptions.ConcurrentAppendException: Files were added")
    assert failure_cause(wrapped).endswith("ConcurrentAppendException: Files were added")
