"""The application config: one frozen, typed, validated object built from TOML plus overrides.

Every key is declared once, in :mod:`dsgd.core.config_keys`, with its default and its contract (``doc``,
allowed ``choices`` or a numeric range). ``conf/dsgd.toml`` documents the same keys for humans and a test keeps them in
step; ``dsgd config --reference`` prints the reference generated from these declarations.

Precedence (later wins): declared defaults < ``conf/dsgd.toml`` < profile (``--profile local`` reads
``conf/local.toml``) < ``--conf FILE`` < ``--set section.key=value``.

Example
-------
>>> cfg = load_config(profile="local", overrides=["model.rank=16"])
>>> cfg.model.rank
16
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsgd.core.config_keys import (  # noqa: F401 - the sections are part of this module's API
    POLICIES,
    AppConfig,
    BrokerConfig,
    KafkaConfig,
    ModelConfig,
    RetrainConfig,
    ServeConfig,
    SparkConfig,
    StreamConfig,
)
from dsgd.core.paths import conf_dir


class ConfigError(ValueError):
    """A config key or value is invalid; the message names the key and what is allowed."""


@dataclass(frozen=True)
class Config:
    app: AppConfig = field(default_factory=AppConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """The resolved config as JSON, secrets (``serve.token``, ``serve.storage_options``) redacted: what is logged."""
        return json.dumps(self.redacted(), sort_keys=True)

    def redacted(self) -> dict[str, dict[str, Any]]:
        data = self.to_dict()
        for sec, cls in SECTIONS.items():
            for f in dataclasses.fields(cls):
                if f.metadata.get("secret") and data[sec][f.name]:
                    data[sec][f.name] = "<redacted>"
        return data

    def describe(self, sections: tuple[str, ...] | None = None) -> str:
        """The keys of ``sections`` (default: all) that differ from their declared defaults, one
        ``section.key = value`` per line (the whole config is ``dsgd config``)."""
        ours, base = self.to_dict(), Config().to_dict()
        lines = [f"  {sec}.{key} = {value!r}" for sec in (sections or tuple(ours)) for key, value in ours[sec].items()
                 if value != base[sec][key]]
        return "\n".join(lines) if lines else "  (all keys at their defaults)"

    def replace(self, **sections: dict[str, Any]) -> Config:
        """A copy with some keys changed, validated: ``cfg.replace(model={"rank": 16})``."""
        data = self.to_dict()
        for sec, values in sections.items():
            if sec not in data:
                raise ConfigError(f"unknown config section [{sec}]; allowed: {', '.join(data)}")
            data[sec].update(values)
        return from_dict(data)


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(Config)}  # type: ignore[misc]


def _check_value(sec: str, f: dataclasses.Field, value: Any) -> Any:
    key = f"{sec}.{f.name}"
    want = type(f.default) if f.default is not dataclasses.MISSING else type(f.default_factory())  # type: ignore[misc]
    meta = f.metadata
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if want is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
    elif want is int and isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        value = int(value)
    elif want is float and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    elif want in (dict, list) and isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
    if not isinstance(value, want) or (want is int and isinstance(value, bool)) or \
            (want is list and not all(isinstance(v, str) for v in value)):
        raise ConfigError(f"config key {key}: expected {want.__name__}{' of strings' * (want is list)}, got {value!r}")
    if meta.get("choices") and value not in meta["choices"]:
        allowed = ", ".join(repr(c) for c in meta["choices"])
        raise ConfigError(f"config key {key}: {value!r} is not allowed; allowed values: {allowed}")
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and value < lo or hi is not None and value > hi:
        raise ConfigError(f"config key {key}: {value!r} is out of range; allowed: {lo} <= value <= {hi}")
    if want is float and value != value:
        raise ConfigError(f"config key {key}: NaN is not allowed")
    if meta.get("pattern") and not re.fullmatch(meta["pattern"], value):
        raise ConfigError(f"config key {key}: {value!r} does not match the allowed form {meta['pattern']}")
    return value


def from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a Config; unknown sections or keys are errors that list what is allowed."""
    sections = {}
    for sec, values in data.items():
        if sec not in SECTIONS:
            raise ConfigError(f"unknown config section [{sec}]; allowed: {', '.join(SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"config section [{sec}] must be a table")
        cls = SECTIONS[sec]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        checked = {}
        for key, value in values.items():
            if key not in fields:
                raise ConfigError(f"unknown config key {sec}.{key}; allowed keys of [{sec}]: {', '.join(fields)}")
            checked[key] = _check_value(sec, fields[key], value)
        sections[sec] = cls(**checked)
    cfg = Config(**sections)
    _check_cross(cfg)
    return cfg


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


def _check_kafka_options(options: dict) -> None:
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


def _check_cross(cfg: Config) -> None:
    _check_kafka_options(cfg.kafka.options)
    m = cfg.model
    if m.rating_min >= m.rating_max:
        raise ConfigError(f"config keys model.rating_min/model.rating_max: need rating_min < rating_max, "
                          f"got {m.rating_min} >= {m.rating_max}")


def _merge(base: dict, extra: dict) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for sec, values in extra.items():
        if isinstance(values, dict) and isinstance(out.get(sec), dict):
            out[sec].update(values)
        else:
            out[sec] = values
    return out


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def parse_override(text: str) -> tuple[str, str, Any]:
    """``section.key=value`` (value parsed as TOML when it can be, else taken as a string)."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    lhs, raw = text.split("=", 1)
    sec, key = lhs.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return sec, key, value


def load_config(*, profile: str | None = None, files: list[str | Path] | None = None,
                overrides: list[str] | None = None, base: bool = True) -> Config:
    """Load defaults < conf/dsgd.toml < conf/<profile>.toml < files < overrides, validated."""
    data: dict = {}
    if base:
        data = _merge(data, read_toml(conf_dir() / "dsgd.toml"))
    if profile:
        prof = conf_dir() / f"{profile}.toml"
        if not prof.exists():
            avail = sorted(p.stem for p in conf_dir().glob("*.toml") if p.stem != "dsgd")
            raise ConfigError(f"unknown profile {profile!r}; available: {', '.join(avail)}")
        data = _merge(data, read_toml(prof))
    for f in files or []:
        data = _merge(data, read_toml(f))
    for text in overrides or []:
        sec, key, value = parse_override(text)
        data = _merge(data, {sec: {key: value}})
    return from_dict(data)


def reference_markdown() -> str:
    """The configuration reference, generated from the declarations above (README embeds it)."""
    lines = []
    for sec, cls in SECTIONS.items():
        lines += [f"### [{sec}]", "", "| key | default | allowed | meaning |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            m = f.metadata
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            if m.get("choices"):
                allowed = ", ".join(f"`{c}`" for c in m["choices"])
            elif m.get("lo") is not None:
                allowed = f"{m['lo']} .. {m['hi']}"
            elif m.get("pattern"):
                allowed = f"`{m['pattern']}`"
            else:
                allowed = type(default).__name__
            lines.append(f"| `{f.name}` | `{json.dumps(default)}` | {allowed} | {m['doc']} |")
        lines.append("")
    return "\n".join(lines)
