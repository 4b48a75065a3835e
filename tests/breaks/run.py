"""Break the code on purpose and check that the guarantee's test fails: one run per patch in this folder.

Each ``*.patch`` here is a ``git diff`` against the current main that breaks one promise of the README's
Guarantees table, headed by lines that say what it breaks and which test must catch it::

    Row: Exactly once
    Test: tests/kafka/test_stream_trainer.py::test_crash_at_every_point_then_restart_gives_the_factors_of_an_uninterrupted_run
    Break: the restart re-applies the batch whose factor commit it finds (the idempotency check skipped)

For each patch (all, or the names given), the committed tree (``git archive HEAD``) is copied to a
scratch folder beside the checkout's ``.venv`` and ``.jars`` (symlinked), the patch applied, and the
named tests run there with pytest. A break is *caught* when pytest exits 1 (tests ran and failed);
exit 0 means the tests missed the break; any other exit (collection error, no such test) means the patch
or its ``Test:`` line is wrong. One JSON line per patch, then a summary; the exit code is 0 only if every
break was caught.

    .venv/bin/python tests/breaks/run.py                # every break (~40 min on 2 cores)
    .venv/bin/python tests/breaks/run.py 07-delta-settings-lock
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
HEADER = re.compile(r"^(Row|Test|Break):\s*(.+)$")


@dataclass(frozen=True)
class Break:
    """One patch: its name, the Guarantees row it breaks, the tests that must fail and how it breaks it."""

    name: str
    path: Path
    row: str
    tests: tuple[str, ...]
    what: str


def read_break(path: Path) -> Break:
    """The header of ``path`` (lines before the first ``diff --git``); raises ValueError naming a missing key."""
    fields: dict[str, list[str]] = {"Row": [], "Test": [], "Break": []}
    for line in path.read_text().splitlines():
        if line.startswith("diff --git"):
            break
        m = HEADER.match(line)
        if m:
            fields[m.group(1)].append(m.group(2).strip())
    missing = [k for k, v in fields.items() if not v]
    if missing:
        raise ValueError(f"{path.name}: header lacks {', '.join(missing)} (see {Path(__file__).name})")
    return Break(path.stem, path, fields["Row"][0], tuple(fields["Test"]), " ".join(fields["Break"]))


def all_breaks() -> list[Break]:
    return [read_break(p) for p in sorted(HERE.glob("*.patch"))]


def _tree(dest: Path) -> None:
    """The committed tree at ``dest``, with the checkout's environment beside it."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    for env in (".venv", ".jars"):
        (dest / env).symlink_to(ROOT / env)


def _failed(output: str) -> list[str]:
    return sorted({m.group(1) for m in re.finditer(r"^(?:FAILED|ERROR) (\S+)", output, re.M)})


def _reason(output: str) -> str:
    """The first error line pytest printed (``E   ...``): which assertion caught the break."""
    lines = [m.group(1) for m in re.finditer(r"^E\s+(.+)$", output, re.M)]
    return " / ".join(lines[:2])[:400]


def run_break(b: Break, scratch: Path, timeout_s: float) -> dict:
    """Apply ``b`` to a fresh copy of HEAD and run its tests: the verdict as a JSON-able dict."""
    tree = scratch / b.name
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    _tree(tree)
    applied = subprocess.run(["git", "apply", str(b.path)], cwd=tree, capture_output=True, text=True)
    if applied.returncode:
        return {"break": b.name, "verdict": "does-not-apply", "detail": applied.stderr.strip()[:500]}
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [str(ROOT / ".venv/bin/python"), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
           f"--basetemp={scratch / (b.name + '-tmp')}", *b.tests]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"break": b.name, "verdict": "timeout", "seconds": round(time.monotonic() - t0, 1)}
    out = proc.stdout + proc.stderr
    verdict = {0: "missed", 1: "caught"}.get(proc.returncode, f"error (pytest exit {proc.returncode})")
    result = {"break": b.name, "verdict": verdict, "seconds": round(time.monotonic() - t0, 1),
              "failed": _failed(out), "reason": _reason(out), "row": b.row, "what": b.what}
    if verdict != "caught":
        result["tail"] = out.strip().splitlines()[-15:]
    shutil.rmtree(tree, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="patch names (file stems); default: every patch")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per break (default 900)")
    ap.add_argument("--list", action="store_true", help="print the breaks and exit")
    args = ap.parse_args(argv)
    breaks = all_breaks()
    if args.names:
        unknown = sorted(set(args.names) - {b.name for b in breaks})
        if unknown:
            ap.error(f"no such break: {', '.join(unknown)} (have: {', '.join(b.name for b in breaks)})")
        breaks = [b for b in breaks if b.name in args.names]
    if args.list:
        for b in breaks:
            print(f"{b.name}: {b.what}\n    row: {b.row}\n    test: {' '.join(b.tests)}")
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="dsgd-breaks-"))
    caught = 0
    for n, b in enumerate(breaks, 1):
        print(f"[{n}/{len(breaks)}] {b.name} ...", file=sys.stderr, flush=True)
        res = run_break(b, scratch, args.timeout)
        caught += res["verdict"] == "caught"
        print(json.dumps(res), flush=True)
    print(json.dumps({"breaks": len(breaks), "caught": caught, "not_caught": len(breaks) - caught}))
    shutil.rmtree(scratch, ignore_errors=True)
    return 0 if caught == len(breaks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
