"""The fenced code blocks of README.md and docs/*.md, shared by the docs tests."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def code_blocks(langs: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """(``file:line`` of the opening fence, language, body) of every block in one of ``langs``, in
    document order ("" is a block without a language)."""
    out = []
    for doc in DOCS:
        text = doc.read_text()
        for m in _BLOCK.finditer(text):
            if m.group(1) in langs:
                out.append((f"{doc.relative_to(ROOT)}:{text[: m.start()].count(chr(10)) + 1}", m.group(1), m.group(2)))
    return out
