"""A closed-loop HTTP/1.1 load generator on one thread: each client sends its requests one after
another on its own connection, all clients at once, multiplexed with ``selectors``.

Threads with ``http.client`` (one per client) cost the measured machine about 0.7 ms of CPU per
request and a wake-up, a GIL hand-over and a context switch for every response; on a machine whose
cores the server also needs, that load generator takes CPU and scheduling slots from the server it
measures. Here the requests are encoded once, before the clock starts, and one thread waits on all
the sockets. A connection the server closes (gunicorn's sync workers close every one) is opened
again for the client's next request, inside that request's latency, as ``http.client`` does.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time
from dataclasses import dataclass, field


class LoadError(RuntimeError):
    """The server did not answer a request in time, or answered something that is not HTTP."""


def request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    """One HTTP/1.1 request, encoded."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class _Client:
    requests: list[bytes]
    results: list[tuple[int, float]] = field(default_factory=list)  # (status, seconds)
    sock: socket.socket | None = None
    sent: int = 0
    buffer: bytearray = field(default_factory=bytearray)
    started: float = 0.0
    deadline: float = 0.0


def _parse(buffer: bytearray, eof: bool) -> tuple[int, bool] | None:
    """``(status, keep_alive)`` once ``buffer`` holds a whole response, else ``None``."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if eof:
            raise LoadError("connection closed before the response's headers")
        return None
    head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    version, status = head[0].split(" ", 2)[:2]
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    keep_alive = version == "HTTP/1.1" and headers.get("connection") != "close"
    length = headers.get("content-length")
    if length is not None:
        if len(buffer) - end - 4 < int(length):
            if eof:
                raise LoadError("connection closed inside the response's body")
            return None
    elif not eof:  # no length: the body ends when the server closes
        return None
    else:
        keep_alive = False
    return int(status), keep_alive


def run(port: int, clients: list[list[bytes]], timeout: float = 30.0) -> tuple[list[list[tuple[int, float]]], float]:
    """Send every client's requests in order, the clients side by side. Returns each client's
    ``(status, latency in seconds)`` per request, and the wall time of the whole run."""
    selector = selectors.DefaultSelector()
    states = [_Client(list(reqs)) for reqs in clients]

    def start(client: _Client) -> None:
        client.started = time.perf_counter()
        client.deadline = client.started + timeout
        client.buffer.clear()
        client.sent = 0
        if client.sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            code = sock.connect_ex(("127.0.0.1", port))
            if code not in (0, errno.EINPROGRESS):
                raise LoadError(f"connect: {errno.errorcode.get(code, code)}")
            client.sock = sock
            selector.register(sock, selectors.EVENT_WRITE, client)
        else:
            selector.modify(client.sock, selectors.EVENT_WRITE, client)

    def close(client: _Client) -> None:
        assert client.sock is not None
        selector.unregister(client.sock)
        client.sock.close()
        client.sock = None

    def finish(client: _Client, status: int, keep_alive: bool) -> bool:
        client.results.append((status, time.perf_counter() - client.started))
        if not keep_alive:
            close(client)
        if len(client.results) == len(client.requests):
            if client.sock is not None:
                close(client)
            return False
        start(client)
        return True

    began = time.perf_counter()
    active = 0
    for client in states:
        if client.requests:
            start(client)
            active += 1
    while active:
        events = selector.select(timeout=1.0)
        now = time.perf_counter()
        for key, mask in events:
            client = key.data
            sock = client.sock
            if mask & selectors.EVENT_WRITE:
                if client.sent == 0 and (code := sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)):
                    raise LoadError(f"connect: {errno.errorcode.get(code, code)}")
                data = client.requests[len(client.results)]
                client.sent += sock.send(data[client.sent :])
                if client.sent == len(data):
                    selector.modify(sock, selectors.EVENT_READ, client)
                continue
            chunk = sock.recv(65536)
            client.buffer += chunk
            parsed = _parse(client.buffer, eof=not chunk)
            if parsed is not None and not finish(client, *parsed):
                active -= 1
        for client in states:
            if client.sock is not None and now > client.deadline:
                raise LoadError(f"no answer within {timeout:.0f} s")
    selector.close()
    return [client.results for client in states], time.perf_counter() - began
