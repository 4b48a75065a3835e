"""The project's setup promises: offline second run, no network jar resolution, required layout."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_second_setup_run_makes_no_network_request():
    closed = "http://127.0.0.1:9"  # nothing listens on the discard port: any request would fail
    env = {**os.environ, "HTTP_PROXY": closed, "HTTPS_PROXY": closed, "http_proxy": closed,
           "https_proxy": closed, "ALL_PROXY": closed, "PIP_NO_INDEX": "1",
           "MAVEN_OPTS": "-Dhttp.proxyHost=127.0.0.1 -Dhttp.proxyPort=9 -Dhttps.proxyHost=127.0.0.1 "
                         "-Dhttps.proxyPort=9"}
    run = subprocess.run(["bash", str(ROOT / "build.sh")], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "python env up to date" in run.stderr
    assert run.stderr.count("jars up to date") == 2


def test_network_jar_resolution_is_used_nowhere_in_the_code():
    banned = ["spark.jars." + "packages", "configure_spark_" + "with_delta_pip"]
    files = [p for ext in ("*.py", "*.sh", "*.toml", "*.ipynb") for p in ROOT.rglob(ext)
             if ".venv" not in p.parts and ".jars" not in p.parts]
    offenders = [(p, b) for p in files for b in banned if b in p.read_text(errors="ignore")]
    assert offenders == []


def test_required_layout_exists():
    for name in ("dsgd", "streaming", "batch", "conf", "notebooks", "tests", "bench"):
        assert (ROOT / name).is_dir(), name
    for name in ("build.sh", ".ci/run", "README.md"):
        assert (ROOT / name).is_file(), name


def test_ci_runs_exactly_the_readme_test_command():
    """CI runs the README's test command on the whole suite: only pytest reporting options may follow it,
    nothing that selects, deselects or skips tests."""
    readme = (ROOT / "README.md").read_text()
    quickstart = re.search(r"## Quickstart.*?```bash\n(.*?)```", readme, re.S)
    assert quickstart and re.search(r"^\./build\.sh test\s+#", quickstart.group(1), re.M)
    commands = [ln.strip() for ln in (ROOT / ".ci/run").read_text().splitlines()
                if ln.strip() and not ln.lstrip().startswith("#") and "build.sh" in ln]
    assert len(commands) == 1, commands
    args = shlex.split(commands[0])
    assert args[:2] == ["./build.sh", "test"], args
    allowed = {"-q", "-v", "-ra", "-rA", "-p", "no:cacheprovider"}
    extra = [a for a in args[2:] if a not in allowed and not re.fullmatch(r"--durations=\d+", a)]
    assert extra == [], f"CI passes {extra} to pytest: it would not run the README's whole suite"


def test_every_pinned_dependency_of_the_package_is_in_requirements_txt():
    """build.sh installs requirements.txt, then the package without its dependencies: a dependency
    pinned in pyproject.toml alone would be missing on a fresh machine."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {line.split("==")[0].strip().lower(): line.split("==")[1].strip()
            for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line and not line.startswith("#")}
    for dep in project["dependencies"]:
        name, version = (x.strip() for x in dep.split("=="))
        assert pins.get(name.lower()) == version, f"{dep} (pyproject.toml) is not pinned alike in requirements.txt"
