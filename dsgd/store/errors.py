"""Errors of the Delta store: typed, so callers (the CLI, the trainer) can react to each."""

from __future__ import annotations


class StaleModel(RuntimeError):
    """The factors table moved (another writer committed) since the rows to write were computed."""


class IncompatibleTable(ValueError):
    """A table was written with another model shape (rank, kind) than the config asks for; the message
    names the config key to change."""
