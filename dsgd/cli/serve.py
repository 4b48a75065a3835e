"""``dsgd serve``: HTTP recommendations from the live Delta model, no JVM (see docs/serving.md)."""

from __future__ import annotations

import argparse

from dsgd.cli.registry import command
from dsgd.core.config import Config


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=None, help="bind address (default serve.host, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default serve.port; 0 = a free one)")


@command("serve", "HTTP recommendations from the live Delta model (FastAPI, hot reload, fold-in; no JVM)",
         _serve_args)
def cmd_serve(args: argparse.Namespace, cfg: Config) -> int:
    from dsgd.serve.server import serve

    over = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    return serve(cfg.replace(serve=over) if over else cfg)
