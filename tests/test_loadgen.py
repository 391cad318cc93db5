"""bench.loadgen, the load generator of bench.approvals, against a small HTTP server: answers on
kept-alive and on closed connections, status codes, bodies split over several reads, and a server
that stops answering."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench import loadgen

pytestmark = pytest.mark.pure  # the embedded pass runs it (conftest.PURE)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = 201 if body == b"make" else 409
        answer = b"x" * 200_000  # larger than one read
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        if self.path == "/close":
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(params=["HTTP/1.1", "HTTP/1.0"])
def server(request: pytest.FixtureRequest):
    handler = type("Handler", (_Handler,), {"protocol_version": request.param})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("path", ["/keep", "/close"])
def test_each_client_gets_each_answer_in_order(server: ThreadingHTTPServer, path: str) -> None:
    port = server.server_address[1]
    clients = [[loadgen.request("POST", path, {"X-Client": str(i)}, body) for body in (b"make", b"no", b"make")]
               for i in range(5)]  # fmt: skip
    results, wall = loadgen.run(port, clients)
    assert [[status for status, _ in mine] for mine in results] == [[201, 409, 201]] * 5
    assert all(0 < seconds <= wall for mine in results for _, seconds in mine)


def test_a_server_that_does_not_answer_is_an_error() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(loadgen.LoadError, match="no answer within 1 s"):
            loadgen.run(port, [[loadgen.request("GET", "/", {})]], timeout=1)


def test_a_connection_closed_mid_answer_is_an_error() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def half_answer() -> None:
            conn, _ = listener.accept()
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            conn.close()

        threading.Thread(target=half_answer, daemon=True).start()
        with pytest.raises(loadgen.LoadError, match="inside the response's body"):
            loadgen.run(port, [[loadgen.request("GET", "/", {})]])
