"""The subcommand registry: every ``dsgd`` subcommand registers itself here with :func:`command`.

The library's own commands live in ``dsgd/cli/``; the jobs (``streaming/``, ``batch/``) register theirs
from their own ``cli`` modules, which ``dsgd.cli.main`` finds through the ``dsgd.commands`` entry
points (pyproject.toml), so the library never imports a job.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable]] = {}


def command(name: str, help_text: str, add_args: Callable[[argparse.ArgumentParser], None] | None = None):
    """Register a subcommand ``fn(args, cfg) -> int``."""

    def deco(fn: Callable) -> Callable:
        COMMANDS[name] = (help_text, add_args or (lambda p: None), fn)
        return fn

    return deco
