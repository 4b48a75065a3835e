"""Checks of config values that need more than a type and a range: the Kafka source options.

Split from :mod:`dsgd.core.config` (which re-exports :class:`ConfigError`) to keep that module short.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config key or value is invalid; the message names the key and what is allowed."""


#: Kafka source options the trainer derives from other config keys (option -> the key to set instead).
KAFKA_MANAGED = {"kafka.bootstrap.servers": "kafka.bootstrap_servers", "subscribe": "kafka.topic",
                 "assign": "kafka.topic", "subscribePattern": "kafka.topic",
                 "startingOffsets": "kafka.starting_offsets", "maxOffsetsPerTrigger": "kafka.max_offsets_per_trigger",
                 "failOnDataLoss": "kafka.fail_on_data_loss"}
#: Options the Spark Kafka source itself refuses (it manages them) or that make no sense for a stream.
KAFKA_REFUSED = ("kafka.group.id", "kafka.auto.offset.reset", "kafka.key.deserializer",
                 "kafka.value.deserializer", "kafka.enable.auto.commit", "kafka.interceptor.classes",
                 "endingOffsets", "endingOffsetsByTimestamp")
#: Source options (not prefixed ``kafka.``) accepted in ``kafka.options``.
KAFKA_SOURCE_OPTIONS = ("minPartitions", "groupIdPrefix", "includeHeaders", "kafkaConsumer.pollTimeoutMs",
                        "fetchOffset.numRetries", "fetchOffset.retryIntervalMs", "minOffsetsPerTrigger",
                        "maxTriggerDelay", "startingTimestamp", "startingOffsetsByTimestamp",
                        "startingOffsetsByTimestampStrategy")


def check_kafka_options(options: dict) -> None:
    """Refuse ``kafka.options`` keys set from other config keys or managed by the Spark Kafka source."""
    for key, value in options.items():
        where = f"config key kafka.options: option {key!r}"
        if key in KAFKA_MANAGED:
            raise ConfigError(f"{where} is set from config key {KAFKA_MANAGED[key]}; set that key instead")
        if key in KAFKA_REFUSED:
            raise ConfigError(f"{where} is not allowed: the streaming Kafka source manages it (offsets live in "
                              "the query checkpoint)")
        if not key.startswith("kafka.") and key not in KAFKA_SOURCE_OPTIONS:
            raise ConfigError(f"{where} is unknown; allowed: Kafka consumer settings prefixed 'kafka.' or one of "
                              f"{', '.join(KAFKA_SOURCE_OPTIONS)}")
        if not isinstance(value, str | int | float | bool):
            raise ConfigError(f"{where}: expected a string, number or boolean, got {value!r}")
