"""A real headless Chromium (the Debian package; ``./build.sh test`` installs it) for the page tests.

:func:`loaded_images` opens a COPY of a page with a probe script appended, which records every image's
natural size after the load event; ``chromium --headless --dump-dom`` prints the DOM after load, probe
included. :func:`screenshot` takes a full-width PNG of a page.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]
_PROBE = ("<script>window.addEventListener('load', () => { const p = document.createElement('pre'); "
          "p.id = 'dsgd-probe'; p.textContent = JSON.stringify([...document.images].map(i => ({alt: i.alt, "
          "complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}))); "
          "document.body.appendChild(p); });</script>")


def chromium() -> str:
    """The Chromium binary; a clear failure (not a skip) when it is missing."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "chromium is not installed: run the tests with ./build.sh test (it installs the Debian package " \
                 "chromium) or apt-get install chromium"
    return path


def _run(args: list[str], profile: Path, timeout: float) -> subprocess.CompletedProcess:
    profile.mkdir(parents=True, exist_ok=True)
    return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=timeout)


def loaded_images(page: Path, workdir: Path, timeout: float = 120) -> list[dict]:
    """``[{"alt", "complete", "width", "height"}]`` of every image of ``page`` as Chromium loaded it."""
    probe = workdir / f"probe-{page.name}"
    text = page.read_text(encoding="utf-8")
    probe.write_text(text.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    out = _run(["--dump-dom", "--virtual-time-budget=10000", probe.resolve().as_uri()], workdir / "profile-dom",
               timeout)
    found = re.search(r'<pre id="dsgd-probe">(.*?)</pre>', out.stdout, flags=re.S)
    assert found, f"the page's load event never ran (chromium rc={out.returncode}): {out.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def screenshot(page: Path, png: Path, workdir: Path, *, width: int = 1150, height: int = 2700,
               timeout: float = 120) -> Path:
    """A PNG of ``page`` at ``width`` x ``height`` pixels."""
    out = _run([f"--screenshot={png.resolve()}", f"--window-size={width},{height}", "--virtual-time-budget=10000",
                page.resolve().as_uri()], workdir / "profile-shot", timeout)
    assert png.is_file() and png.stat().st_size > 0, f"no screenshot (rc={out.returncode}): {out.stderr[-2000:]}"
    return png
