"""Where the engine finds its local resources: project root, resolved jars, bundled config."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def conf_dir() -> Path:
    """The folder holding ``dsgd.toml`` and the broker template (source tree, else the installed wheel)."""
    src = PROJECT_ROOT / "conf"
    if (src / "dsgd.toml").exists():
        return src
    return Path(str(resources.files("dsgd.conf")))


def jars_root() -> Path:
    """Root of the jar folders resolved by ``build.sh`` (override with ``DSGD_JARS``)."""
    return Path(os.environ.get("DSGD_JARS", PROJECT_ROOT / ".jars"))


def spark_jars_dir() -> Path:
    return jars_root() / "spark"


def broker_jars_dir() -> Path:
    return jars_root() / "kafka"
