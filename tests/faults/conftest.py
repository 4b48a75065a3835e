"""Fixtures of the fault suite."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest

from dsgd.core.config import Config
from streaming.trainer import StreamTrainer
from tests.faults.helpers import REFERENCE_BATCH, REFERENCE_EVENTS, REFERENCE_SEED, metrics, stream_cfg
from tests.kafka.stream_helpers import known_stream, produce


@dataclass(frozen=True)
class FaultFreeRun:
    events: pd.DataFrame  # what was produced, in order
    cfg: Config  # the config of the run (its warehouse holds the reference factors and metrics)
    batches: int


@pytest.fixture(scope="session")
def fault_free_run(spark, kafka_broker, base_config, tmp_path_factory) -> FaultFreeRun:
    """One fault-free run of the reference stream, shared by the tests that replay it with faults.

    The factors depend only on the events, their partitions (keyed by user) and the batch size, not on
    the topic or broker, so a faulty run of the same records on any topic must end with these factors.
    """
    df = known_stream(REFERENCE_EVENTS, seed=REFERENCE_SEED)
    kafka_broker.create_topic("fault-free-reference", partitions=2)
    produce(kafka_broker.bootstrap, "fault-free-reference", df)
    base = base_config.replace(kafka={"bootstrap_servers": kafka_broker.bootstrap})
    clean = stream_cfg(base, "fault-free-reference", tmp_path_factory.mktemp("fault-free"),
                       kafka={"max_offsets_per_trigger": REFERENCE_BATCH})
    assert StreamTrainer(spark, clean).run(timeout_s=400) == 0
    n = len(metrics(spark, clean))
    assert n == REFERENCE_EVENTS // REFERENCE_BATCH
    return FaultFreeRun(events=df, cfg=clean, batches=n)
