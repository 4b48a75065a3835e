"""The warehouse's Delta tables read natively with ``deltalake`` (delta-rs): no JVM, no Spark.

What was checked on deltalake 1.6.6 against tables the trainer writes (/work/notes/serving-research.md):
``DeltaTable.to_pyarrow_table`` refuses the factors table (reader feature ``deletionVectors``), while
``DeltaTable.scan(columns=, predicate=)`` (DataFusion) reads it, deletion vectors applied; strings
come back as ``string_view``, cast to ``string`` here. ``load_cdf`` gives the rows added since a
version on tables without the change-data-feed property: appends are ``insert`` rows, a rewrite
(compaction, rollback) shows ``delete`` rows, OPTIMIZE shows nothing. Polling ``update_incremental()``
+ ``version()`` on a kept table object costs ~1-2 ms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
from deltalake import DeltaTable


def _plain(table: pa.Table) -> pa.Table:
    """``string_view``/``large_string`` columns as ``string`` (pyarrow kernels need it)."""
    fields = [pa.field(f.name, pa.string()) if f.type in (pa.string_view(), pa.large_string()) else f
              for f in table.schema]
    return table.cast(pa.schema(fields)) if fields != list(table.schema) else table


@dataclass
class Table:
    """One Delta table at ``uri``, opened lazily (it may not exist yet) and kept open for polling."""

    uri: str
    storage_options: dict = field(default_factory=dict)
    _dt: DeltaTable | None = None

    def open(self) -> DeltaTable | None:
        """The table object, None while no Delta table exists at the URI."""
        if self._dt is None:
            if not DeltaTable.is_deltatable(self.uri, storage_options=self.storage_options or None):
                return None
            self._dt = DeltaTable(self.uri, storage_options=self.storage_options or None)
        return self._dt

    def latest_version(self) -> int | None:
        """The newest committed version (re-reading only the new log entries), None if no table."""
        dt = self.open()
        if dt is None:
            return None
        dt.update_incremental()
        return int(dt.version())

    def at(self, version: int) -> DeltaTable:
        """A table object pinned to ``version`` (the one being loaded; the polled one moves on)."""
        return DeltaTable(self.uri, version=version, storage_options=self.storage_options or None)

    def scan(self, version: int, columns: list[str], predicate: str | None = None) -> pa.Table:
        """Rows of ``version`` (deletion vectors applied), only ``columns``, filtered by ``predicate``."""
        return _plain(pa.table(self.at(version).scan(columns=columns, predicate=predicate)))

    def changes(self, after: int, upto: int, columns: list[str], predicate: str | None = None
                ) -> tuple[pa.Table, set[str]]:
        """Rows changed by the commits ``after+1 .. upto`` and the set of their change types
        (``insert`` only for plain appends)."""
        cols = [*columns, "_change_type"]
        reader = self.at(upto).load_cdf(starting_version=after + 1, ending_version=upto, columns=cols,
                                        predicate=predicate)
        t = _plain(pa.table(reader))
        kinds = set(t.column("_change_type").unique().to_pylist()) if t.num_rows else set()
        return t.drop_columns(["_change_type"]), kinds

    def commit_time(self, version: int) -> float | None:
        """Epoch seconds of commit ``version`` (None if its entry is gone)."""
        for entry in self.at(version).history(1):
            if int(entry.get("version", version)) == version and entry.get("timestamp") is not None:
                return float(entry["timestamp"]) / 1000.0
        return None

