"""Where the engine finds its local resources: project root, resolved jars, bundled config."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def conf_dir() -> Path:
    """The folder holding ``dsgd.toml`` and the broker template: the source tree, else the installed
    wheel, else (``--py-files`` zip) a private copy extracted once from the zip."""
    src = PROJECT_ROOT / "conf"
    if (src / "dsgd.toml").exists():
        return src
    bundled = resources.files("dsgd.conf")
    folder = Path(str(bundled))
    if (folder / "dsgd.toml").exists():
        return folder
    return _extract(bundled)


def _extract(bundled) -> Path:
    files = {f.name: f.read_bytes() for f in bundled.iterdir() if f.is_file()}
    digest = hashlib.sha256(b"".join(k.encode() + b"\0" + v for k, v in sorted(files.items()))).hexdigest()[:16]
    out = Path(tempfile.gettempdir()) / f"dsgd-conf-{os.getuid()}-{digest}"
    if not (out / "dsgd.toml").exists():
        tmp = Path(tempfile.mkdtemp(prefix="dsgd-conf-tmp-"))
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        try:
            tmp.rename(out)
        except OSError:  # another process extracted it first
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def jars_root() -> Path:
    """Root of the jar folders resolved by ``build.sh`` (override with ``DSGD_JARS``)."""
    return Path(os.environ.get("DSGD_JARS", PROJECT_ROOT / ".jars"))


def spark_jars_dir() -> Path:
    return jars_root() / "spark"


def broker_jars_dir() -> Path:
    return jars_root() / "kafka"
