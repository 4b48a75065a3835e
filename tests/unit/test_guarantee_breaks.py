"""Every row of the README's Guarantees table has a recorded break (tests/breaks/*.patch) that still
applies to the code and names one of the row's own tests; ``tests/breaks/run.py`` runs them."""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

import pytest

from tests.breaks.run import Break, all_breaks

ROOT = Path(__file__).resolve().parents[2]


def _norm(text: str) -> str:
    return " ".join(text.replace("`", "").split()).lower()


@functools.cache
def guarantee_rows() -> list[tuple[str, list[str]]]:
    """(promise, test references) of each row of README.md's Guarantees table."""
    section = ROOT.joinpath("README.md").read_text().split("\n## Guarantees", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or cells[0] in ("promise", "") or set(cells[0]) <= set("-"):
            continue
        rows.append((cells[0], re.findall(r"`(tests/[^`\s]+)`", cells[-1])))
    return rows


BREAKS = all_breaks()


def _row_of(b: Break) -> tuple[str, list[str]] | None:
    return next((r for r in guarantee_rows() if _norm(r[0]).startswith(_norm(b.row))), None)


def test_the_table_is_read() -> None:
    rows = guarantee_rows()
    assert len(rows) >= 30 and all(tests for _, tests in rows), [r for r in rows if not r[1]]


def test_every_guarantee_row_has_a_break() -> None:
    covered = {row[0] for row in map(_row_of, BREAKS) if row is not None}
    missing = [promise[:80] for promise, _ in guarantee_rows() if promise not in covered]
    assert not missing, f"Guarantees rows without a break in tests/breaks/: {missing}"


@pytest.mark.parametrize("b", BREAKS, ids=[b.name for b in BREAKS])
def test_a_break_names_its_row_and_one_of_the_rows_tests(b: Break) -> None:
    row = _row_of(b)
    assert row is not None, f"{b.name}: Row {b.row!r} begins no promise of the Guarantees table"
    for test in b.tests:
        assert any(test == ref or test.startswith(ref + "::") or test.startswith(ref + "[") for ref in row[1]), (
            f"{b.name}: {test} is not among the row's tests {row[1]}")


@pytest.mark.parametrize("b", BREAKS, ids=[b.name for b in BREAKS])
def test_a_break_applies_to_the_committed_code(b: Break) -> None:
    """Against the index (HEAD on a clean clone), so a change that moves the broken code shows here."""
    res = subprocess.run(["git", "apply", "--check", "--cached", str(b.path)], cwd=ROOT, capture_output=True,
                         text=True)
    assert res.returncode == 0, f"{b.name} no longer applies: {res.stderr.strip()}"
    changed = re.findall(r"^diff --git a/(\S+)", b.path.read_text(), re.M)
    assert changed and not any(f.startswith("tests/") for f in changed), (
        f"{b.name} must break the product, not a test: {changed}")
