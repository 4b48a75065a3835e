"""The ``dsgd`` command line (also ``python -m dsgd``). Every subcommand has ``--help``.

Common options (every subcommand): ``--profile NAME`` (conf/NAME.toml), ``--conf FILE`` (repeatable),
``--set section.key=value`` (repeatable). The resolved config is logged at start.
Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad config.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable

from dsgd.config import Config, ConfigError, load_config

log = logging.getLogger("dsgd")

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable]] = {}


def command(name: str, help_text: str, add_args: Callable[[argparse.ArgumentParser], None] | None = None):
    """Register a subcommand ``fn(args, cfg) -> int``."""

    def deco(fn: Callable) -> Callable:
        COMMANDS[name] = (help_text, add_args or (lambda p: None), fn)
        return fn

    return deco


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default=None, help="config profile: conf/PROFILE.toml (e.g. local)")
    p.add_argument("--conf", action="append", default=[], metavar="FILE", help="extra TOML config file")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                   help="override one config key (repeatable)")


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kafka", "py4j", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# ---- kafka ------------------------------------------------------------------------------------------
def _kafka_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("start", "stop", "status", "create-topic"),
                   help="start/stop the local KRaft broker, show its status, or create the configured topic")


@command("kafka", "manage the local single-node Kafka broker (start|stop|status|create-topic)", _kafka_args)
def cmd_kafka(args: argparse.Namespace, cfg: Config) -> int:
    from dsgd.kafka_broker import KafkaBroker, create_topic

    broker = KafkaBroker.from_config(cfg)
    if args.action == "start":
        broker.start()
        create_topic(broker.bootstrap, cfg.kafka.topic, cfg.kafka.partitions)
        broker.proc = None  # leave it running after this process exits
        print(json.dumps(broker.status()))
    elif args.action == "stop":
        broker.stop()
        print(json.dumps(broker.status()))
    elif args.action == "create-topic":
        create_topic(cfg.kafka.bootstrap_servers, cfg.kafka.topic, cfg.kafka.partitions)
        print(json.dumps({"topic": cfg.kafka.topic, "bootstrap": cfg.kafka.bootstrap_servers}))
    else:
        st = broker.status()
        print(json.dumps(st))
        return 0 if st["running"] else 3
    return 0


# ---- config -----------------------------------------------------------------------------------------
def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reference", action="store_true", help="print the configuration reference (Markdown)")


@command("config", "print the resolved config (JSON) or the configuration reference", _config_args)
def cmd_config(args: argparse.Namespace, cfg: Config) -> int:
    from dsgd.config import reference_markdown

    print(reference_markdown() if args.reference else json.dumps(cfg.to_dict(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    _load_plugins()
    parser = argparse.ArgumentParser(prog="dsgd", description="Streaming DSGD matrix factorization on Spark, "
                                     "Kafka and Delta.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, add_args, _fn) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p)
        add_args(p)
    return parser


def _load_plugins() -> None:
    """Import the modules that register further subcommands (streaming, batch, evaluation, demo)."""
    import importlib

    for mod in ("dsgd.demo", "streaming.cli", "batch.cli", "dsgd.evaluate_cli", "dsgd.standalone"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = load_config(profile=args.profile, files=args.conf, overrides=args.overrides)
    except ConfigError as exc:
        print(f"dsgd: bad config: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg.app.log_level)
    log.info("config: %s", cfg.to_json())
    _help, _add, fn = COMMANDS[args.command]
    try:
        return int(fn(args, cfg) or 0)
    except ConfigError as exc:
        print(f"dsgd: bad config: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
