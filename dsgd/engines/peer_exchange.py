"""All-to-all message exchange between the tasks of one Spark barrier stage, over direct TCP.

``BarrierTaskContext.allGather`` goes through the driver and its JVM side polls for completion once a
second, so each call costs ~1 s. DSGD exchanges item blocks after every stratum; it uses
``allGather`` once, to publish each task's listening address, and then sends the messages straight
to the peers. Every connection starts with a per-stage secret (shipped to the tasks in the closure),
so a stray client cannot inject data. Executors must be able to open TCP connections to each other
on ephemeral ports (as they already do for shuffle in most deployments).

Example (inside a barrier task)
-------------------------------
>>> with PeerExchange(BarrierTaskContext.get(), secret) as peers:
...     everyone = peers.all_gather(b"my bytes")   # list of bytes, in partition order
"""

from __future__ import annotations

import hmac
import socket
import struct
import threading
from typing import Any

_LEN = struct.Struct("!Q")
_CONNECT_TIMEOUT_S = 60.0
_IO_TIMEOUT_S = 600.0


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_LEN.pack(len(payload)) + payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError("peer closed the connection in the middle of a message")
        got += k
    return bytes(buf)


def _recv(sock: socket.socket) -> bytes:
    (n,) = _LEN.unpack(_recv_exact(sock, _LEN.size))
    return _recv_exact(sock, n)


class PeerExchange:
    """Direct connections from this barrier task to every other task of the stage."""

    def __init__(self, ctx: Any, secret: bytes) -> None:
        self.ctx = ctx
        self.secret = secret
        self.me = ctx.partitionId()
        self.n = len(ctx.getTaskInfos())
        self.outgoing: dict[int, socket.socket] = {}
        self.incoming: dict[int, socket.socket] = {}

    def __enter__(self) -> PeerExchange:
        host = self.ctx.getTaskInfos()[self.me].address.rsplit(":", 1)[0] or "127.0.0.1"
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("", 0))
            server.listen(max(1, self.n))
            server.settimeout(_CONNECT_TIMEOUT_S)
            addresses = self.ctx.allGather(f"{host}:{server.getsockname()[1]}")
            acceptor = threading.Thread(target=self._accept, args=(server,), daemon=True)
            acceptor.start()
            for peer, addr in enumerate(addresses):
                if peer == self.me:
                    continue
                h, p = addr.rsplit(":", 1)
                sock = socket.create_connection((h, int(p)), timeout=_CONNECT_TIMEOUT_S)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(_IO_TIMEOUT_S)
                sock.sendall(self.secret + struct.pack("!I", self.me))
                self.outgoing[peer] = sock
            acceptor.join(_CONNECT_TIMEOUT_S + 5)
            if len(self.incoming) != self.n - 1:
                raise ConnectionError(f"barrier task {self.me}: {len(self.incoming)} of {self.n - 1} peers connected")
        except BaseException:
            self.close()
            raise
        finally:
            server.close()
        return self

    def _accept(self, server: socket.socket) -> None:
        try:
            while len(self.incoming) < self.n - 1:
                sock, _ = server.accept()
                sock.settimeout(_IO_TIMEOUT_S)
                hello = _recv_exact(sock, len(self.secret) + 4)  # fixed size: no length from strangers
                token, peer = hello[:-4], struct.unpack("!I", hello[-4:])[0]
                if not hmac.compare_digest(token, self.secret) or not 0 <= peer < self.n:
                    sock.close()  # not one of ours
                    continue
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.incoming[peer] = sock
        except OSError:
            return  # the connecting side reports the missing peer

    def all_gather(self, payload: bytes) -> list[bytes]:
        """Send ``payload`` to every peer and return every task's payload, indexed by partition id."""
        errors: list[BaseException] = []

        def send_all() -> None:
            try:
                for sock in self.outgoing.values():
                    _send(sock, payload)
            except BaseException as exc:  # re-raised below
                errors.append(exc)

        sender = threading.Thread(target=send_all, daemon=True)  # no deadlock on full TCP buffers
        sender.start()
        out: list[bytes] = [b""] * self.n
        out[self.me] = payload
        for peer, sock in sorted(self.incoming.items()):
            out[peer] = _recv(sock)
        sender.join()
        if errors:
            raise errors[0]
        return out

    def close(self) -> None:
        for sock in [*self.outgoing.values(), *self.incoming.values()]:
            try:
                sock.close()
            except OSError:
                pass
        self.outgoing.clear()
        self.incoming.clear()

    def __exit__(self, *exc: Any) -> None:
        self.close()
