"""Every ``dsgd ...`` command line of README.md and docs/*.md parses with the real CLI parser, its
``--profile``/``--set`` config validates, and every Python snippet compiles (no JVM: a renamed option,
a dropped key or a broken snippet fails here)."""

from __future__ import annotations

import shlex

import pytest

from dsgd.cli.main import build_parser
from dsgd.core.config import load_config
from tests.doc_blocks import code_blocks


def _blocks(lang: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(where, body) for where, _, body in code_blocks(lang)]


def _command_lines() -> list[tuple[str, list[str]]]:
    found = []
    for where, body in _blocks(("bash", "sh", "console", "")):
        for line in body.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv[:1] == ["dsgd"]:
                found.append((where, argv[1:]))
    return found


COMMANDS = _command_lines()


def test_the_docs_hold_commands_and_snippets_to_check():
    assert len(COMMANDS) >= 25 and len(_blocks(("python",))) >= 8, (len(COMMANDS), len(_blocks(("python",))))


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[f"{w} {' '.join(a)[:50]}" for w, a in COMMANDS])
def test_a_documented_command_line_parses_and_its_config_validates(where, argv):
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{where}: `dsgd {' '.join(argv)}` is rejected by the CLI parser (exit {exc.code})")
    load_config(profile=args.profile, overrides=args.overrides)  # ConfigError names the bad key


@pytest.mark.parametrize(("where", "code"), _blocks(("python",)), ids=[w for w, _ in _blocks(("python",))])
def test_a_documented_python_snippet_compiles(where, code):
    compile(code, where, "exec")
