from __future__ import annotations

import dataclasses
import tomllib

import pytest

from dsgd import cli
from dsgd.core.config import SECTIONS, ConfigError, load_config, reference_markdown
from dsgd.core.paths import conf_dir


def test_conf_file_documents_every_declared_key_with_its_default():
    with (conf_dir() / "dsgd.toml").open("rb") as fh:
        data = tomllib.load(fh)
    assert set(data) == set(SECTIONS)
    for sec, cls in SECTIONS.items():
        declared = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
                    for f in dataclasses.fields(cls)}
        assert data[sec] == declared, f"conf/dsgd.toml [{sec}] differs from dsgd/core/config_keys.py"


def test_profile_file_and_overrides_apply_in_order(tmp_path):
    extra = tmp_path / "x.toml"
    extra.write_text('[model]\nrank = 7\nkind = "explicit"\n')
    cfg = load_config(profile="local", files=[extra], overrides=["model.rank=9", "kafka.topic=abc"])
    assert cfg.spark.master == "local[2]"
    assert (cfg.model.rank, cfg.model.kind, cfg.kafka.topic) == (9, "explicit", "abc")


@pytest.mark.parametrize("override, needle", [
    ('model.kind="bpr"', "model.kind: 'bpr' is not allowed; allowed values: 'implicit', 'explicit'"),
    ("model.rank=0", "model.rank: 0 is out of range"),
    ("model.rank=2.5", "model.rank: expected int"),
    ("model.lr=nan", "config key model.lr: NaN is not allowed"),
    ('stream.trigger_interval="soon"', "config key stream.trigger_interval: 'soon' does not match the allowed form "
                                       r"^\d+(\.\d+)?\s*(ms|milliseconds?|s|seconds?|m|minutes?|h|hours?)$"),
    ('kafka.bootstrap_servers="no port"', "config key kafka.bootstrap_servers: 'no port' does not match the allowed "
                                          r"form ^[^\s,]+:\d+(,[^\s,]+:\d+)*$"),
    ("model.colour=1", "unknown config key model.colour; allowed keys of [model]: kind, rank"),
    ("modle.rank=1", "unknown config section [modle]; allowed: app, spark"),
    ("model.rating_min=5", "rating_min < rating_max"),
    ('kafka.options={subscribe="x"}', "option 'subscribe' is set from config key kafka.topic"),
    ('kafka.options={"kafka.bootstrap.servers"="h:1"}', "set from config key kafka.bootstrap_servers"),
    ('kafka.options={"kafka.group.id"="g"}', "option 'kafka.group.id' is not allowed"),
    ('kafka.options={colour="red"}', "option 'colour' is unknown; allowed: Kafka consumer settings prefixed"),
    ('kafka.options={"kafka.x"=[1]}', "expected a string, number or boolean"),
    ('kafka.options="no"', "kafka.options: expected dict"),
])
def test_bad_value_fails_naming_the_key_and_what_is_allowed(override, needle, capsys):
    extra = ["model.rating_max=1"] if "rating_min" in override else []
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override, *extra])
    assert needle in str(err.value)
    # the command line: exit code 2 and the same message, before anything starts
    args = [a for o in (override, *extra) for a in ("--set", o)]
    assert cli.main(["config", *args]) == 2
    assert capsys.readouterr().err == f"dsgd: bad config: {err.value}\n"


def test_unknown_profile_lists_the_available_ones():
    with pytest.raises(ConfigError, match="available: local"):
        load_config(profile="nope")


def test_config_is_frozen_and_replace_validates():
    cfg = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.rank = 3  # type: ignore[misc]
    assert cfg.replace(model={"rank": 3}).model.rank == 3
    with pytest.raises(ConfigError):
        cfg.replace(model={"rank": -1})


def test_reference_lists_every_key():
    ref = reference_markdown()
    for sec, cls in SECTIONS.items():
        assert f"### [{sec}]" in ref
        for f in dataclasses.fields(cls):
            assert f"| `{f.name}` |" in ref


def test_the_session_bounds_the_drivers_status_store_and_spark_conf_overrides_it():
    from dsgd.store.session import STATUS_RETENTION, spark_settings

    conf = spark_settings(load_config(profile="local", overrides=['spark.conf={"spark.ui.retainedJobs" = "7"}']))
    assert conf["spark.sql.ui.retainedExecutions"] == STATUS_RETENTION["spark.sql.ui.retainedExecutions"] == "50"
    assert conf["spark.ui.retainedJobs"] == "7"
    assert all(int(conf[k]) > 0 for k in STATUS_RETENTION)
