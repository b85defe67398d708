"""A minimal asyncio HTTP/1.1 client for the scraper's hot path: ``GET`` with keep-alive.

Why not httpx here: the control plane makes one GET per node per interval (67 a second at
1,000 nodes, 15 s), and a profile of ``gpuwarden serve`` in ``bench/bench_control.py``
showed ~22 % of its samples inside ``httpx.AsyncClient.get`` (the client's layers: httpx ->
httpcore pool -> anyio stream -> h11), more than the ingest of the ~300 samples a snapshot
holds.  Measured on the bench machine, 3,000 GETs of a 15 kB snapshot from the bench's
fleet simulator, 16 at a time, in one run: httpx 2.4-3.4 ms of CPU per GET, this client
0.11-0.12 ms.  It is one ``asyncio.Protocol`` per connection that parses the status line,
the headers it needs and a Content-Length or chunked body straight out of the transport's
buffer.

What it does: plain ``http://`` only (the scraper hands anything else, and targets behind
a proxy from the environment, to httpx, which verifies TLS as everywhere else in
gpuwarden); one request at a time per connection; idle connections kept per origin (at
most ``max_idle`` in all) and dropped when the server closes them; a request on a reused
connection that the server closed before answering is retried once on a fresh one; one
deadline covers connect, send and the whole response.  Errors are :class:`HttpError` (its
``kind`` uses httpx's names: ``ConnectError``, ``ReadError``, ``RemoteProtocolError``) and
:class:`HttpTimeout`.  A body is capped (``max_body``, 256 MiB unless the caller says
less): a larger Content-Length is refused before its first byte is read, and a chunked or
read-until-close body is cut off once it passes the cap (kind ``ResponseTooLarge``), so a
node cannot make the control plane buffer an endless answer; a slow drip is ended by the
request's one deadline.
"""

from __future__ import annotations

import asyncio
import urllib.request
import zlib
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from gpuwarden.net import url_host

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 256 * 1024 * 1024


class HttpError(Exception):
    """The request failed below HTTP: no connection, a broken connection or a response that
    is not HTTP/1.x."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


class ResponseTooLarge(HttpError):
    def __init__(self, limit: int) -> None:
        super().__init__("ResponseTooLarge", f"the answer is over {limit} bytes")
        self.limit = limit


class HttpTimeout(HttpError):
    def __init__(self) -> None:
        super().__init__("TimeoutException", "timed out")


class _Stale(Exception):
    """A reused connection was closed by the server before any byte of the answer."""


@dataclass(frozen=True, slots=True)
class Response:
    status_code: int
    content: bytes


@dataclass(frozen=True, slots=True)
class Origin:
    host: str
    port: int
    path_prefix: str  # the URL's path without its trailing slash
    host_header: str


def parse_origin(url: str) -> Origin | None:
    """The parts of a plain ``http://`` base URL, or None for anything this client does not
    speak (https, credentials in the URL, a query)."""
    try:
        parts = urlsplit(url)
        port = parts.port or 80
    except ValueError:
        return None
    if parts.scheme != "http" or not parts.hostname or parts.username or parts.password \
            or parts.query or parts.fragment:
        return None
    host = parts.hostname
    shown = url_host(host)
    return Origin(host, port, parts.path.rstrip("/"),
                  shown if port == 80 else f"{shown}:{port}")


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; a response is parsed as its bytes arrive."""

    def __init__(self, client: FastHttpClient, key: tuple[str, int]) -> None:
        self._client = client
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle = False
        self.used = False  # has answered a request before
        self._waiter: asyncio.Future[Response] | None = None
        self._buf = bytearray()
        self._got_any = False
        self._status = 0
        self._body_at = -1  # where the body starts in _buf, once the head is read
        self._length = -1  # Content-Length; -1: chunked or until close
        self._chunked = False
        self._until_close = False
        self._keep_alive = True
        self._gzip = ""
        self._chunk_pos = 0
        self._chunks: list[bytes] = []
        self._chunked_bytes = 0
        self._max_body = MAX_BODY_BYTES

    # asyncio callbacks -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self._abort()  # bytes nobody asked for: the connection cannot be trusted
            return
        self._got_any = True
        self._buf += data
        try:
            if self._body_at >= 0 and len(self._buf) - self._body_at > self._max_body + \
                    MAX_HEADER_BYTES:  # the cap plus room for chunk framing
                raise ResponseTooLarge(self._max_body)
            self._parse()
        except HttpError as exc:
            self._fail(exc)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        if self.idle:
            self._client._forget(self)
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._until_close and self._body_at >= 0:
            self._finish(bytes(self._buf[self._body_at:]))
        elif self.used and not self._got_any:
            waiter.set_exception(_Stale())
        else:
            why = str(exc) if exc else "the server closed the connection mid-response"
            waiter.set_exception(HttpError("ReadError" if self._got_any else
                                           "RemoteProtocolError", why))

    # requests ---------------------------------------------------------------------------

    def request(self, data: bytes, max_body: int = MAX_BODY_BYTES) -> asyncio.Future[Response]:
        assert self.transport is not None
        self._max_body = max_body
        self._waiter = self._client.loop.create_future()
        self._buf.clear()
        self._got_any = False
        self._status = 0
        self._body_at = -1
        self._length = -1
        self._chunked = self._until_close = False
        self._keep_alive = True
        self._gzip = ""
        self._chunk_pos = 0
        self._chunks = []
        self._chunked_bytes = 0
        self.transport.write(data)
        return self._waiter

    def reusable(self) -> bool:
        return not self.closed and self._keep_alive and self.transport is not None \
            and not self.transport.is_closing()

    def _abort(self) -> None:
        self._keep_alive = False
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self._abort()

    # parsing ----------------------------------------------------------------------------

    def _parse(self) -> None:
        buf = self._buf
        if self._body_at < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    raise HttpError("RemoteProtocolError", "response head too large")
                return
            self._head(bytes(buf[:end]))
            self._body_at = end + 4
            if self._status in (204, 304) or 100 <= self._status < 200:
                if 100 <= self._status < 200:  # an interim answer: the real one follows
                    del buf[:self._body_at]
                    self._body_at = -1
                    self._parse()
                    return
                self._finish(b"")
                return
        if self._chunked:
            self._parse_chunks()
        elif self._length >= 0:
            if len(buf) - self._body_at >= self._length:
                if len(buf) - self._body_at > self._length:
                    self._keep_alive = False  # more than announced: do not reuse
                self._finish(bytes(buf[self._body_at:self._body_at + self._length]))
        elif len(buf) - self._body_at > self._max_body:
            raise ResponseTooLarge(self._max_body)

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        status = lines[0].split(b" ", 2)
        if len(status) < 2 or not status[0].startswith(b"HTTP/1.") or not status[1].isdigit():
            raise HttpError("RemoteProtocolError", f"not an HTTP/1.x answer: {lines[0][:60]!r}")
        self._status = int(status[1])
        http10 = status[0] == b"HTTP/1.0"
        connection = b""
        length = -1
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    raise HttpError("RemoteProtocolError", "bad Content-Length") from None
            elif name == b"transfer-encoding":
                self._chunked = b"chunked" in value.lower()
            elif name == b"connection":
                connection = value.strip().lower()
            elif name == b"content-encoding":
                self._gzip = value.strip().lower().decode("latin-1")
        self._keep_alive = connection != b"close" and (not http10 or connection == b"keep-alive")
        if not self._chunked:
            if length < 0:
                self._until_close = True
                self._keep_alive = False
            elif length > self._max_body:
                raise ResponseTooLarge(self._max_body)
            self._length = length

    def _parse_chunks(self) -> None:
        buf = self._buf
        pos = max(self._chunk_pos, self._body_at)
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            if self._length == 0:  # trailers, up to an empty line
                if eol == pos:
                    self._finish(b"".join(self._chunks))
                    return
                pos = eol + 2
                continue
            try:
                size = int(bytes(buf[pos:eol]).split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise HttpError("RemoteProtocolError", "bad chunk size") from None
            if size == 0:
                self._length = 0
                pos = eol + 2
                continue
            if self._chunked_bytes + size > self._max_body:
                raise ResponseTooLarge(self._max_body)
            if len(buf) < eol + 2 + size + 2:
                break
            self._chunks.append(bytes(buf[eol + 2:eol + 2 + size]))
            self._chunked_bytes += size
            pos = eol + 2 + size + 2
        if pos > self._body_at and pos - self._body_at > MAX_HEADER_BYTES:
            del buf[self._body_at:pos]  # chunks already taken: keep the buffer small
            pos = self._body_at
        self._chunk_pos = pos

    def _finish(self, body: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._gzip in ("gzip", "deflate"):
            try:  # never more than the cap: a small compressed body can inflate to GBs
                inflater = zlib.decompressobj(47 if self._gzip == "gzip" else 15)
                body = inflater.decompress(body, self._max_body + 1)
            except zlib.error as exc:
                waiter.set_exception(HttpError("DecodingError", str(exc)))
                return
            if len(body) > self._max_body:
                self._fail(ResponseTooLarge(self._max_body))
                return
        self.used = True
        waiter.set_result(Response(self._status, body))

    def _fail(self, exc: Exception) -> None:
        self._abort()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)


class FastHttpClient:
    """``await client.get(origin, path, headers, timeout)``; see the module doc."""

    def __init__(self, *, max_idle: int = 1024, user_agent: str = "gpuwarden") -> None:
        self.loop = asyncio.get_running_loop()
        self.max_idle = max_idle
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._idle_count = 0
        self._agent = user_agent
        self._closed = False

    async def get(self, origin: Origin, path: str, headers: dict[str, str] | None = None,
                  timeout: float = 5.0, max_body: int = MAX_BODY_BYTES) -> Response:
        lines = [f"GET {origin.path_prefix}{path} HTTP/1.1", f"Host: {origin.host_header}",
                 f"User-Agent: {self._agent}", "Accept: */*"]
        if headers:
            for k, v in headers.items():
                if any(c in k or c in v for c in "\r\n\0") or ":" in k:
                    raise HttpError("LocalProtocolError", f"illegal header {k!r}")
                lines.append(f"{k}: {v}")
        try:
            data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        except UnicodeEncodeError:
            raise HttpError("LocalProtocolError", "a header is not latin-1 text") from None
        try:
            async with asyncio.timeout(timeout):
                conn = self._take(origin)
                if conn is not None:
                    try:
                        return await self._send(conn, data, max_body)
                    except _Stale:
                        pass  # closed while idle, before the server saw this request
                conn = await self._connect(origin)
                try:
                    return await self._send(conn, data, max_body)
                except _Stale:
                    raise HttpError("RemoteProtocolError",
                                    "server closed the connection without an answer") from None
        except TimeoutError:
            raise HttpTimeout() from None

    async def _send(self, conn: _Connection, data: bytes, max_body: int) -> Response:
        try:
            response = await conn.request(data, max_body)
        except BaseException:
            conn.close()  # a timeout, a cancel or a broken answer: never reuse it
            raise
        self._give_back(conn)
        return response

    async def _connect(self, origin: Origin) -> _Connection:
        key = (origin.host, origin.port)
        try:
            _, conn = await self.loop.create_connection(lambda: _Connection(self, key),
                                                        origin.host, origin.port)
        except OSError as exc:
            raise HttpError("ConnectError", str(exc) or type(exc).__name__) from None
        return conn

    def _take(self, origin: Origin) -> _Connection | None:
        conns = self._idle.get((origin.host, origin.port))
        while conns:
            conn = conns.pop()
            self._idle_count -= 1
            conn.idle = False
            if conn.reusable():
                return conn
            conn.close()
        return None

    def _give_back(self, conn: _Connection) -> None:
        if self._closed or not conn.reusable() or self._idle_count >= self.max_idle:
            conn.close()
            return
        conn.idle = True
        self._idle.setdefault(conn.key, []).append(conn)
        self._idle_count += 1

    def _forget(self, conn: _Connection) -> None:
        """An idle connection the server closed."""
        conns = self._idle.get(conn.key)
        if conns and conn in conns:
            conns.remove(conn)
            self._idle_count -= 1
            if not conns:
                del self._idle[conn.key]
        conn.idle = False

    def close(self) -> None:
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.idle = False
                conn.close()
        self._idle.clear()
        self._idle_count = 0


class NodeFetcher:
    """The scraper's one way to GET from a node daemon: a plain ``http://`` base URL through
    :class:`FastHttpClient`, anything else (``https://``, a host the environment's proxy
    settings send through a proxy, or ``fast=False``) through the httpx ``client`` given,
    under the same rules either way: one deadline covers the whole exchange (a slow drip
    included) and the body stops at ``max_body`` (:class:`ResponseTooLarge`, never buffered
    whole).  Errors are :class:`HttpError` / :class:`HttpTimeout` from the fast path and
    httpx's own from the other."""

    def __init__(self, client: httpx.AsyncClient, *, fast: bool = True,
                 max_idle: int = 1024) -> None:
        self.client = client
        self.fast = fast
        self.max_idle = max_idle
        self._fast: FastHttpClient | None = None
        self._origins: dict[str, Origin | None] = {}

    async def get(self, base_url: str, path: str, headers: dict[str, str], timeout: float,
                  max_body: int) -> tuple[int, bytes]:
        """Status and body of ``GET base_url + path`` (an empty body unless 200)."""
        origin = self._origin(base_url)
        if origin is not None:
            if self._fast is None:
                self._fast = FastHttpClient(max_idle=self.max_idle)
            response = await self._fast.get(origin, path, headers, timeout, max_body)
            return response.status_code, response.content
        # httpx's timeout is per read, so a drip of a byte a second never ends it: one
        # deadline covers the whole exchange, as in FastHttpClient
        async with asyncio.timeout(timeout), self.client.stream(
                "GET", base_url + path, headers=headers, timeout=timeout) as response:
            if response.status_code != 200:
                return response.status_code, b""
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > max_body:
                raise ResponseTooLarge(max_body)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():  # decoded: a gzip bomb counts inflated
                size += len(chunk)
                if size > max_body:
                    raise ResponseTooLarge(max_body)
                chunks.append(chunk)
            return 200, b"".join(chunks)

    def _origin(self, base_url: str) -> Origin | None:
        """Where the fast client sends this URL's requests; None: httpx does."""
        if base_url in self._origins:
            return self._origins[base_url]
        origin = parse_origin(base_url) if self.fast else None
        if origin is not None and getattr(self.client, "trust_env", True):
            proxies = urllib.request.getproxies()
            if (proxies.get("http") or proxies.get("all")) and not \
                    urllib.request.proxy_bypass(origin.host):
                origin = None  # httpx honours HTTP_PROXY / ALL_PROXY / NO_PROXY
        self._origins[base_url] = origin
        return origin

    def close(self) -> None:
        """Close the fast client's connections (the httpx client is the caller's)."""
        if self._fast is not None:
            self._fast.close()
            self._fast = None
