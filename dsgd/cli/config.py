"""``dsgd config``: the resolved config, or the configuration reference."""

from __future__ import annotations

import argparse
import json

from dsgd.cli.registry import command
from dsgd.core.config import Config


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reference", action="store_true", help="print the configuration reference (Markdown)")


@command("config", "print the resolved config (JSON) or the configuration reference", _config_args)
def cmd_config(args: argparse.Namespace, cfg: Config) -> int:
    from dsgd.core.config import reference_markdown

    print(reference_markdown() if args.reference else json.dumps(cfg.redacted(), indent=2))
    return 0
