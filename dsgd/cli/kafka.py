"""``dsgd kafka start|stop|status|create-topic``: the local single-node KRaft broker."""

from __future__ import annotations

import argparse
import json

from dsgd.cli.registry import command
from dsgd.core.config import Config


def _kafka_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("start", "stop", "status", "create-topic"),
                   help="start/stop the local KRaft broker, show its status, or create the configured topic")


@command("kafka", "manage the local single-node Kafka broker (start|stop|status|create-topic)", _kafka_args)
def cmd_kafka(args: argparse.Namespace, cfg: Config) -> int:
    from dsgd.ops.kafka_broker import KafkaBroker, create_topic

    broker = KafkaBroker.from_config(cfg)
    if args.action == "start":
        broker.start()
        create_topic(broker.bootstrap, cfg.kafka.topic, cfg.kafka.partitions)
        broker.proc = None  # leave it running after this process exits
        print(json.dumps(broker.status()))
    elif args.action == "stop":
        print(json.dumps(stop_report(broker)))
    elif args.action == "create-topic":
        create_topic(cfg.kafka.bootstrap_servers, cfg.kafka.topic, cfg.kafka.partitions)
        print(json.dumps({"topic": cfg.kafka.topic, "bootstrap": cfg.kafka.bootstrap_servers}))
    else:
        st = broker.status()
        print(json.dumps(st))
        return 0 if st["running"] else 3
    return 0


def stop_report(broker) -> dict:
    """Stop ``broker`` and say what was stopped: ``stopped_pid`` (None when no broker was running)."""
    before = broker.status()
    pid = before["pid"] if before["running"] else None
    broker.stop()
    return {"stopped_pid": pid, "message": f"stopped the broker (pid {pid})" if pid else "no broker was running",
            **broker.status()}
