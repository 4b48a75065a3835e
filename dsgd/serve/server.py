"""Run ``dsgd serve``: the reloader thread plus uvicorn on one socket, until SIGINT/SIGTERM.

The socket is bound here (so ``serve.port = 0`` can pick a free port and print it before serving), and
handed to uvicorn; one process, its request thread pool scoring in parallel (``serve.threads``), BLAS
limited to one thread per request.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import sys

from dsgd.core.config import Config

log = logging.getLogger("dsgd.serve")

TOKEN_ENV = "DSGD_SERVE_TOKEN"


def resolve_token(cfg: Config) -> str:
    """``serve.token``, else the environment variable DSGD_SERVE_TOKEN, else "" (no authentication)."""
    return cfg.serve.token or os.environ.get(TOKEN_ENV, "")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(cfg: Config, *, out=sys.stdout) -> int:
    """Serve until stopped; prints one JSON line with the URL once the socket listens."""
    import uvicorn
    from threadpoolctl import threadpool_limits

    from dsgd.serve.app import create_app
    from dsgd.serve.holder import Holder

    threadpool_limits(1, "blas")  # many requests in parallel, one BLAS thread each
    token = resolve_token(cfg)
    host = cfg.serve.host
    if not _loopback(host) and not token:
        log.warning("serve: listening on %s without a bearer token: anyone who reaches the port can query", host)
    sock = bind(host, cfg.serve.port)
    port = sock.getsockname()[1]
    holder = Holder(cfg).start()
    app = create_app(cfg, holder, token=token)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                           loop="uvloop", http="httptools", timeout_graceful_shutdown=5))
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    print(json.dumps({"serving": url, "docs": f"{url}/docs", "auth": bool(token),
                      "factors": holder.factors_table.uri}), file=out, flush=True)
    log.info("serve: listening on %s (token %s)", url, "required" if token else "off")
    try:
        server.run(sockets=[sock])
    finally:
        holder.stop()
        sock.close()
    return 0
