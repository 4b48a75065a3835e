"""Item 11: every invalid key or value fails at start-up (exit 2) naming the key and what is allowed.

The cases are generated from the declarations in dsgd/core/config_keys.py, so a new key is covered automatically.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess

import pytest

from dsgd import cli
from dsgd.core.config import SECTIONS
from tests.faults.helpers import PYTHON, ROOT, cli_env

pytestmark = [pytest.mark.faults]


def _cases() -> list[tuple[str, str, list[str]]]:
    """(key, --set value, fragments the error message must contain) for every declared key."""
    out = []
    for sec, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            key, meta = f"{sec}.{f.name}", f.metadata
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            kind = type(default)
            if meta.get("choices"):
                out.append((key, "not_a_choice", ["allowed values", *(repr(c) for c in meta["choices"])]))
            if meta.get("lo") is not None or meta.get("hi") is not None:
                lo, hi = meta.get("lo"), meta.get("hi")
                bad = hi + max(1, abs(hi)) if hi is not None else lo - 1  # hi + 1 rounds to hi for 1e30
                bad = int(bad) if kind is int else float(bad)
                out.append((key, repr(bad), ["out of range", f"{lo} <= value <= {hi}"]))
                if lo is not None and lo > (-1 if kind is int else -1.0):
                    below = int(lo) - 1 if kind is int else float(lo) - 1.0
                    out.append((key, repr(below), ["out of range"]))
            if meta.get("pattern"):
                out.append((key, '"has space!"', ["does not match the allowed form", meta["pattern"]]))
            if kind is bool:
                out.append((key, "maybe", ["expected bool", "'maybe'"]))
            elif kind is int:
                out.append((key, '"abc"', ["expected int"]))
                out.append((key, "1.5", ["expected int"]))
            elif kind is float:
                out.append((key, '"abc"', ["expected float"]))
                out.append((key, "nan", ["NaN"]))
            elif kind is str:
                out.append((key, "5", ["expected str"]))
            elif kind is dict:
                out.append((key, "5", ["expected dict"]))
            elif kind is list:
                out.append((key, "5", ["expected list"]))
    return out


CASES = _cases()


def test_the_generated_cases_cover_every_declared_key():
    declared = {f"{s}.{f.name}" for s, c in SECTIONS.items() for f in dataclasses.fields(c)}
    assert {k for k, _, _ in CASES} == declared


@pytest.mark.parametrize(("key", "value", "fragments"), CASES, ids=[f"{k}={v}" for k, v, _ in CASES])
def test_invalid_value_of_every_key_fails_at_start_up_naming_the_key_and_the_allowed_values(
        key, value, fragments, capsys):
    rc = cli.main(["stream", "--available-now", "--set", f"{key}={value}"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"config key {key}" in err, err
    for frag in fragments:
        assert frag in err, f"{frag!r} not in {err!r}"


@pytest.mark.parametrize(("override", "fragments"), [
    ("model.ranks=3", ["unknown config key model.ranks", "allowed keys of [model]", "rank"]),
    ("modle.rank=3", ["unknown config section [modle]", "model"]),
    ("model.rating_min=5", ["model.rating_min", "rating_min < rating_max"]),
    ("rank=3", ["must look like section.key=value"]),
])
def test_unknown_keys_and_inconsistent_values_fail_at_start_up(override, fragments, capsys):
    args = ["stream", "--set", override]
    if "rating_min" in override:
        args += ["--set", "model.rating_max=5"]
    rc = cli.main(args)
    err = capsys.readouterr().err
    assert rc == 2, err
    for frag in fragments:
        assert frag in err, f"{frag!r} not in {err!r}"


def test_bad_config_file_and_real_cli_process_exit_2(tmp_path):
    """The same through a real ``python -m dsgd stream`` process (no JVM is started for a bad config)."""
    bad = tmp_path / "bad.toml"
    bad.write_text('[stream]\ntrigger = "sometimes"\n')
    for args in (["--conf", str(bad)], ["--set", "kafka.max_offsets_per_trigger=-5"],
                 ["--conf", str(tmp_path / "missing.toml")]):
        proc = subprocess.run([PYTHON, "-m", "dsgd", "stream", "--available-now", *args], cwd=ROOT, env=cli_env(),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert re.search(r"bad config: (config key \w+\.\w+|config file)", proc.stderr), proc.stderr
        assert "SparkSession" not in proc.stderr
