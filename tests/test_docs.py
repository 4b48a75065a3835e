"""The user docs cannot drift from the code: the configuration reference is regenerated and compared,
and the tables of the user guide list exactly the quarantine reasons, metrics columns and commands
the code has."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _guide() -> str:
    return (DOCS / "user-guide.md").read_text()


def test_configuration_md_is_the_output_of_dsgd_config_reference():
    out = subprocess.run([sys.executable, "-m", "dsgd", "config", "--reference"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert (DOCS / "configuration.md").read_text() == out, (
        "docs/configuration.md is out of date; regenerate it with: "
        ".venv/bin/python -m dsgd config --reference > docs/configuration.md")


def _contract_reasons(text: str) -> list[tuple[str, str]]:
    """The two-column ``| `reason` | meaning |`` rows of the event-contract section."""
    section = re.split(r"^## (?:\d+\. )?The event contract$", text, flags=re.M)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z_]+)` \| ([^|\n]*) \|$", section, flags=re.M)


def test_readme_and_user_guide_list_exactly_the_reasons_of_the_contract_reference():
    """Names, descriptions and order, read from the one place they are defined (dsgd.core.contract)."""
    from dsgd.core.contract import REASONS
    from streaming.events import REASONS as SPARK_REASONS

    assert SPARK_REASONS is REASONS
    for path in (ROOT / "README.md", DOCS / "user-guide.md"):
        assert _contract_reasons(path.read_text()) == list(REASONS.items()), (
            f"{path.name}: the reason table differs from dsgd.core.contract.REASONS")


def test_user_guide_lists_every_metrics_column():
    from streaming.trainer import METRICS_SCHEMA

    columns = {c.split()[0] for c in METRICS_SCHEMA.split(", ")}
    section = _guide().split("**The `metrics` table.**", 1)[1].split("**The Spark UI.**", 1)[0]
    documented = set(re.findall(r"`([a-z_]+)`", section))
    assert columns <= documented, f"metrics columns missing from the user guide: {columns - documented}"


def test_every_dsgd_command_in_the_docs_exists():
    from dsgd.cli import build_parser
    from dsgd.cli.registry import COMMANDS

    build_parser()  # loads the subcommand plugins
    text = "".join(p.read_text() for p in DOCS.glob("*.md"))
    used = set(re.findall(r"(?<!from)(?:^|[\s`(])dsgd ([a-z][a-z-]+)", text))  # not `from dsgd import`
    assert used, "no dsgd commands found in the docs"
    assert used <= set(COMMANDS), f"the docs use commands that do not exist: {used - set(COMMANDS)}"


def test_files_the_docs_point_to_exist():
    text = "".join(p.read_text() for p in DOCS.glob("*.md"))
    for rel in sorted(set(re.findall(r"`((?:conf|streaming|batch|dsgd)/[\w./-]+\.(?:py|toml|example))`", text))):
        assert (ROOT / rel).exists(), f"the docs reference {rel}, which does not exist"
    for link in re.findall(r"\]\(([\w-]+\.md)(?:#[\w-]+)?\)", text):
        assert (DOCS / link).exists(), f"broken link to docs/{link}"


def test_monitoring_doc_lists_every_prometheus_metric():
    from dsgd.core import metric_names

    names = {v for k, v in vars(metric_names).items() if k.isupper() and isinstance(v, str)}
    text = (DOCS / "monitoring.md").read_text()
    documented = set(re.findall(r"^\| `(dsgd_[a-z_]+?)(?:_total)?(?:\{[a-z,]+\})?` \|", text, flags=re.M))
    assert names <= documented, f"metrics missing from docs/monitoring.md: {names - documented}"
