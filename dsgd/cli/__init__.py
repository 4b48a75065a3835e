"""The ``dsgd`` command line: :func:`main` (``python -m dsgd``), subcommands in :mod:`dsgd.cli.registry`."""

from __future__ import annotations

from dsgd.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
