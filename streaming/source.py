"""The Kafka source of the streaming query: its options from the config."""

from __future__ import annotations

from dsgd.core.config import Config

#: Kafka source defaults, overridable through ``kafka.options``; measured in bench/RESULTS.md
#: ("Kafka read": the consumer's own 500 records per poll reads a 250k-record batch slower).
SOURCE_DEFAULTS = {"kafka.max.poll.records": "20000"}


def source_options(cfg: Config) -> dict[str, str]:
    """Options of the Kafka source: from the ``kafka`` config keys and :data:`SOURCE_DEFAULTS`, then
    ``kafka.options`` (validated by the config: it cannot override the keys set here from other keys)."""
    k = cfg.kafka
    opts = {"kafka.bootstrap.servers": k.bootstrap_servers, "subscribe": k.topic,
            "startingOffsets": k.starting_offsets, "failOnDataLoss": str(k.fail_on_data_loss).lower(),
            **SOURCE_DEFAULTS}
    if k.max_offsets_per_trigger:
        opts["maxOffsetsPerTrigger"] = str(k.max_offsets_per_trigger)
    for key, value in k.options.items():
        opts[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return opts
