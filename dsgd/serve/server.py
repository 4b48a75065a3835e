"""Run ``dsgd serve``: the reloader thread plus uvicorn on one socket, until SIGINT/SIGTERM.

The socket is bound here (so ``serve.port = 0`` can pick a free port and print it before serving), and
handed to uvicorn; each process's request thread pool scores in parallel (``serve.threads``), BLAS
limited to one thread per request. ``serve.workers`` > 1 hands the socket to uvicorn's supervisor,
which spawns that many worker processes (each with its own reloader and model; Python's GIL otherwise
caps one process near one core's worth of request handling), restarts one that dies and stops them all
on SIGINT/SIGTERM.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from dsgd.core.config import Config

log = logging.getLogger("dsgd.serve")

TOKEN_ENV = "DSGD_SERVE_TOKEN"
WORKER_CONFIG_ENV = "DSGD_SERVE_WORKER_CONFIG"  # a worker's resolved config, JSON (environ is owner-only)
MULTIPROC_ENV = "DSGD_SERVE_MULTIPROC"  # the Prometheus directory serve made for its workers


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


def _uvicorn_config(app, **kw):
    import uvicorn

    return uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", loop="uvloop",
                          http="httptools", timeout_graceful_shutdown=5, **kw)


def _app(cfg: Config):
    """This process's app: BLAS at one thread per request, the reloader started, the routes on its state."""
    from threadpoolctl import threadpool_limits

    from dsgd.serve.app import create_app
    from dsgd.serve.holder import Holder

    threadpool_limits(1, "blas")  # many requests in parallel, one BLAS thread each
    holder = Holder(cfg).start()
    return holder, create_app(cfg, holder, token=resolve_token(cfg))


def worker_app():
    """uvicorn's app factory in a ``serve.workers`` > 1 worker (spawned: it reads the config the parent left in
    its environment). Any failure exits with uvicorn's start-up failure code, so the supervisor stops
    instead of respawning a worker that cannot start."""
    from uvicorn.config import STARTUP_FAILURE

    from dsgd.core.config import from_dict
    from dsgd.core.logs import setup_logging

    try:
        cfg = from_dict(json.loads(os.environ[WORKER_CONFIG_ENV]))
        setup_logging(cfg.app.log_level)
        return _app(cfg)[1]
    except Exception:
        log.exception("serve: worker %d failed to start", os.getpid())
        sys.exit(STARTUP_FAILURE)


def _print_url(cfg: Config, port: int, out) -> None:
    host, token = cfg.serve.host, resolve_token(cfg)
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    from dsgd.serve.holder import warehouse_root

    print(json.dumps({"serving": url, "docs": f"{url}/docs", "auth": bool(token), "workers": cfg.serve.workers,
                      "factors": f"{warehouse_root(cfg)}/factors"}), file=out, flush=True)
    log.info("serve: listening on %s (token %s, %d worker(s))", url, "required" if token else "off",
             cfg.serve.workers)


def serve(cfg: Config, *, out=sys.stdout) -> int:
    """Serve until stopped; prints one JSON line with the URL once the socket listens."""
    host = cfg.serve.host
    if not _loopback(host) and not resolve_token(cfg):
        log.warning("serve: listening on %s without a bearer token: anyone who reaches the port can query", host)
    sock = bind(host, cfg.serve.port)
    try:
        if cfg.serve.workers == 1:
            return _serve_here(cfg, sock, out)
        return _serve_workers(cfg, sock, out)
    finally:
        sock.close()


def _serve_here(cfg: Config, sock: socket.socket, out) -> int:
    import uvicorn

    holder, app = _app(cfg)
    _print_url(cfg, sock.getsockname()[1], out)
    try:
        uvicorn.Server(_uvicorn_config(app)).run(sockets=[sock])
    finally:
        holder.stop()
    return 0


def _worker_config(cfg: Config) -> str:
    from dsgd.core.config import ConfigError

    try:
        return json.dumps(cfg.to_dict())
    except TypeError as e:  # e.g. a TOML date inside a table value
        raise ConfigError(f"serve.workers > 1 hands the config to its workers as JSON, which cannot hold it: {e}; "
                          "use strings or numbers there, or serve.workers = 1") from e


def _serve_workers(cfg: Config, sock: socket.socket, out) -> int:
    """uvicorn's supervisor on ``sock``; its spawned workers count in one Prometheus multiprocess directory."""
    import signal

    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess
    from uvicorn.supervisors.multiprocess import SIGNALS

    payload = _worker_config(cfg)
    _print_url(cfg, sock.getsockname()[1], out)  # before the environment below: this process stays single-mode
    runtime = os.environ.get("RUNTIME_DIRECTORY") or os.environ.get("XDG_RUNTIME_DIR") or None
    shared = Path(tempfile.mkdtemp(prefix="dsgd-serve-", dir=runtime if runtime and os.path.isdir(runtime) else None))
    handlers = {sig: signal.getsignal(sig) for sig in SIGNALS}
    env = {WORKER_CONFIG_ENV: payload, "PROMETHEUS_MULTIPROC_DIR": str(shared), MULTIPROC_ENV: str(shared)}
    saved = {k: os.environ.get(k) for k in env}
    try:
        os.environ.update(env)  # inherited by the spawned workers
        supervisor = Multiprocess(_uvicorn_config("dsgd.serve.server:worker_app", factory=True,
                                                  workers=cfg.serve.workers), sockets=[sock])
        supervisor.run()
        if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes):
            log.error("serve: a worker failed to start (its error is above); stopped")
            return 1
        return 0
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for sig, h in handlers.items():
            signal.signal(sig, h)
        shutil.rmtree(shared, ignore_errors=True)
