"""The scraper's HTTP/1.1 client against a real socket server speaking every framing a node
(or something in front of it) may answer with."""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from gpuwarden.metrics.http import FastHttpClient, HttpError, HttpTimeout, parse_origin

BODY = b'{"hello": "' + b"x" * 5000 + b'"}'


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[tuple[str, str | None, int]]] = []  # path, Authorization, port

    def do_GET(self) -> None:
        type(self).seen.append((self.path, self.headers.get("Authorization"),
                                self.client_address[1]))
        path = self.path.removeprefix("/base")
        if path == "/length":
            self._send(200, BODY)
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(BODY), 999):
                piece = BODY[i:i + 999]
                self.wfile.write(f"{len(piece):x};ext=1\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\nX-Trailer: 1\r\n\r\n")
        elif path == "/close":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(BODY)
            self.close_connection = True
        elif path == "/then-close":  # keep-alive framing, then the server hangs up
            self._send(200, BODY)
            self.close_connection = True
        elif path == "/gzip":
            self._send(200, gzip.compress(BODY), ("Content-Encoding", "gzip"))
        elif path == "/denied":
            self._send(401, b"no")
        elif path == "/slow":
            threading.Event().wait(1.0)
            self._send(200, BODY)
        elif path == "/empty":
            self._send(204, b"")
        else:
            self._send(404, b"not found")

    def _send(self, status: int, body: bytes, *extra: tuple[str, str]) -> None:
        self.send_response(status)
        for name, value in extra:
            self.send_header(name, value)
        if status != 204:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that timed out and left: expected here


@pytest.fixture
def server() -> Iterator[str]:
    Handler.seen = []
    httpd = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/base"
    httpd.shutdown()
    httpd.server_close()


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_origins() -> None:
    o = parse_origin("http://node-1:9400/prefix/")
    assert o is not None and (o.host, o.port, o.path_prefix, o.host_header) == (
        "node-1", 9400, "/prefix", "node-1:9400")
    assert parse_origin("http://[::1]/").host_header == "[::1]"  # type: ignore[union-attr]
    for url in ("https://node:9400", "http://user:pw@node", "http://node/?q=1", "ftp://x",
                "http://node:99999"):
        assert parse_origin(url) is None, url


def test_framings_and_keep_alive(server: str) -> None:
    origin = parse_origin(server)
    assert origin is not None

    async def go() -> None:
        client = FastHttpClient()
        for path in ("/length", "/chunked", "/gzip", "/length", "/close", "/length"):
            r = await client.get(origin, path, {"Authorization": "Bearer t"}, timeout=5)
            assert (r.status_code, r.content) == (200, BODY), path
        r = await client.get(origin, "/denied", None, timeout=5)
        assert (r.status_code, r.content) == (401, b"no")
        r = await client.get(origin, "/empty", None, timeout=5)
        assert (r.status_code, r.content) == (204, b"")
        client.close()

    run(go())
    paths = [p for p, _, _ in Handler.seen]
    assert paths[:3] == ["/base/length", "/base/chunked", "/base/gzip"]
    assert {a for _, a, _ in Handler.seen[:6]} == {"Bearer t"}
    ports = [port for _, _, port in Handler.seen]
    assert len(set(ports[:5])) == 1  # one kept-alive connection up to "Connection: close"
    assert ports[5] != ports[4]  # a new one after it


def test_a_connection_the_server_closed_is_replaced(server: str) -> None:
    """Keep-alive connections the server hangs up on, noticed while idle or only when the
    next request finds them closed: each next request still gets its answer."""
    origin = parse_origin(server)
    assert origin is not None

    async def go() -> None:
        client = FastHttpClient()
        for i in range(30):
            r = await client.get(origin, "/then-close", None, 5)
            assert r.content == BODY
            if i % 2:
                await asyncio.sleep(0.01)  # time to notice the close while idle
        client.close()

    run(go())
    assert len({port for _, _, port in Handler.seen}) == 30


def test_timeout_refused_and_garbage(server: str) -> None:
    origin = parse_origin(server)
    assert origin is not None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = parse_origin(f"http://127.0.0.1:{s.getsockname()[1]}")
    assert dead is not None
    garbage = socket.socket()
    garbage.bind(("127.0.0.1", 0))
    garbage.listen()

    def answer_garbage() -> None:
        conn, _ = garbage.accept()
        conn.recv(1000)
        conn.sendall(b"SSH-2.0-OpenSSH\r\n\r\n")
        conn.close()

    threading.Thread(target=answer_garbage, daemon=True).start()
    junk = parse_origin(f"http://127.0.0.1:{garbage.getsockname()[1]}")
    assert junk is not None

    async def go() -> None:
        client = FastHttpClient()
        with pytest.raises(HttpTimeout):
            await client.get(origin, "/slow", None, timeout=0.2)
        with pytest.raises(HttpError) as refused:
            await client.get(dead, "/x", None, timeout=2)
        assert refused.value.kind == "ConnectError"
        with pytest.raises(HttpError) as bad:
            await client.get(junk, "/x", None, timeout=2)
        assert bad.value.kind == "RemoteProtocolError"
        with pytest.raises(HttpError) as injected:  # a token file with a line break in it
            await client.get(origin, "/length", {"Authorization": "Bearer a\r\nX-Evil: 1"}, 2)
        assert injected.value.kind == "LocalProtocolError"
        # and the client still works
        assert (await client.get(origin, "/length", None, 5)).content == BODY
        client.close()

    run(go())
    garbage.close()
