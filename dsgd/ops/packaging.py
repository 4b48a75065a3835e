"""The ``--py-files`` zip for spark-submit: the packages ``dsgd``, ``streaming``, ``batch`` and the
bundled config as ``dsgd/conf`` (the layout ``build.sh`` writes as ``dist/dsgd_pyfiles.zip``; see
docs/cluster.md)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from dsgd.core.paths import PROJECT_ROOT

PYFILES_PACKAGES = ("dsgd", "streaming", "batch")


def build_pyfiles_zip(root: str | Path = PROJECT_ROOT, out: str | Path = "dist/dsgd_pyfiles.zip") -> Path:
    """Write the ``--py-files`` zip: every ``*.py`` of dsgd/, streaming/, batch/ and ``conf/`` as
    ``dsgd/conf/`` (``*.toml``, ``*.template``, ``*.properties``, ``*.py``), in sorted order. Returns the zip's path.

    Example
    -------
    >>> build_pyfiles_zip(".", "dist/dsgd_pyfiles.zip")
    PosixPath('dist/dsgd_pyfiles.zip')
    """
    root, out = Path(root), Path(out)
    if not out.is_absolute():
        out = root / out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for pkg in PYFILES_PACKAGES:
            for p in sorted((root / pkg).rglob("*.py")):
                if "__pycache__" not in p.parts:
                    z.write(p, p.relative_to(root).as_posix())
        for p in sorted((root / "conf").iterdir()):
            if p.suffix in (".toml", ".template", ".properties", ".py"):
                z.write(p, "dsgd/conf/" + p.name)
    tmp.replace(out)
    return out
