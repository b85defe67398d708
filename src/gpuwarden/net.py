"""Listening sockets for the daemons: bind before serving, so a busy port is one clear line."""

from __future__ import annotations

import ipaddress
import socket

from gpuwarden.errors import GpuwardenError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on connections whose
    # socket says proto == IPPROTO_TCP, and accepted sockets inherit it from this one.  With
    # Nagle on, a response written as head + body waits for the client's delayed ACK: every
    # API answer took >= 40 ms (bench/bench_control.py).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise GpuwardenError(
            f"--host {host} --port {port}: cannot listen there ({exc.strerror}); "
            "pick another --port or stop what uses it"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock
