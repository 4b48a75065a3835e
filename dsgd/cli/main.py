"""The ``dsgd`` command line (also ``python -m dsgd``). Every subcommand has ``--help``.

Common options (every subcommand): ``--profile NAME`` (conf/NAME.toml), ``--conf FILE`` (repeatable),
``--set section.key=value`` (repeatable). The jobs log the keys they run with that differ from
the defaults (the whole resolved config: ``dsgd config``).
Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad config.

The subcommands register themselves (:mod:`dsgd.cli.registry`): the library's own ones from the
modules in :data:`OWN_COMMANDS`, the jobs' ones (``streaming``, ``batch``) from the modules named by
the ``dsgd.commands`` entry points of the installed package, so the library never imports a job.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from importlib.metadata import entry_points

from dsgd.cli.registry import COMMANDS
from dsgd.core.config import ConfigError, load_config
from dsgd.core.logs import setup_logging
from dsgd.store.errors import IncompatibleTable

log = logging.getLogger("dsgd")

#: The library's own subcommand modules.
OWN_COMMANDS = ("dsgd.cli.config", "dsgd.cli.kafka", "dsgd.cli.cluster", "dsgd.cli.evaluate", "dsgd.cli.report",
                "dsgd.cli.serve")
#: Entry-point group naming the jobs' subcommand modules.
ENTRY_POINT_GROUP = "dsgd.commands"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default=None, help="config profile: conf/PROFILE.toml (e.g. local)")
    p.add_argument("--conf", action="append", default=[], metavar="FILE", help="extra TOML config file")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                   help="override one config key (repeatable)")


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
    """Import every module that registers subcommands: the library's own, then the entry points'."""
    for mod in OWN_COMMANDS:
        importlib.import_module(mod)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        importlib.import_module(ep.value)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = load_config(profile=args.profile, files=args.conf, overrides=args.overrides)
    except ConfigError as exc:
        print(f"dsgd: bad config: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg.app.log_level)
    log.debug("config: %s", cfg.to_json())  # the jobs log the keys they run with (Config.describe)
    _help, _add, fn = COMMANDS[args.command]
    try:
        return int(fn(args, cfg) or 0)
    except (ConfigError, IncompatibleTable) as exc:
        print(f"dsgd: bad config: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
