"""How ``serve`` and ``demo`` end: every way to stop them takes the same clean path.

Ctrl-C (SIGINT, which a terminal sends to the whole foreground process group, a pipe's
other end included), SIGTERM, SIGHUP (the terminal closed), a closed stdout (``| head``, a
``tee`` killed by the same Ctrl-C) and ``--duration`` all *request* a stop.  While uvicorn
serves, a request sets its ``should_exit`` (a graceful shutdown: lifespan, background tasks);
before that, it raises :class:`Stop` in the main thread so a long start is cut short.  Once
a stop is under way further signals are ignored, so a second Ctrl-C cannot cut the teardown
in half and leave daemons behind.
"""

from __future__ import annotations

import _thread
import contextlib
import errno
import os
import select
import signal
import stat
import sys
import threading
from collections.abc import Iterator
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stop(KeyboardInterrupt):
    """A stop was requested (a signal, a closed stdout); ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Stopper:
    """Turns signals, a lost stdout and timers into one stop request."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.server: Any = None  # the uvicorn.Server while it serves
        self._thread_reason: str | None = None
        self._lock = threading.Lock()

    @property
    def stopping(self) -> bool:
        return self.reason is not None

    def _on_signal(self, signum: int, _frame: object) -> None:
        reason, self._thread_reason = self._thread_reason, None
        self._stop(reason or signal.Signals(signum).name)

    def _stop(self, reason: str) -> None:  # main thread only
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
        if self.server is not None:
            self.server.should_exit = True
        else:
            raise Stop(reason)

    def request(self, reason: str) -> None:
        """Ask for a stop from any thread."""
        if threading.current_thread() is threading.main_thread():
            self._stop(reason)
            return
        if self.server is not None:
            with self._lock:
                if self.reason is None:
                    self.reason = reason
            self.server.should_exit = True
            return
        if self.reason is None:
            self._thread_reason = reason
            _thread.interrupt_main(signal.SIGTERM)  # runs _on_signal in the main thread

    # -- stdout --------------------------------------------------------------------------

    def settle(self, reason: str) -> None:
        """Mark the stop as under way (without raising): the teardown that follows is not
        to be cut short by a late signal."""
        with self._lock:
            if self.reason is None:
                self.reason = reason

    def say(self, text: str, end: str = "\n", flush: bool = True) -> None:
        """Print a line; a stdout that is gone (EPIPE, EIO) requests a stop instead of
        raising, and later lines go nowhere."""
        try:
            print(text, end=end, flush=True)
        except (BrokenPipeError, OSError) as exc:
            if not isinstance(exc, BrokenPipeError) and exc.errno not in (errno.EPIPE,
                                                                           errno.EIO):
                raise
            self.lost_stdout()

    def lost_stdout(self) -> None:
        detach_stdout()
        self.request("stdout closed")

    def watch_stdout(self) -> None:
        """When stdout is a pipe or socket, stop as soon as its reader goes away (not only
        at the next print)."""
        try:
            mode = os.fstat(1).st_mode
        except OSError:
            return
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            return
        threading.Thread(target=self._watch, name="stdout-watch", daemon=True).start()

    def _watch(self) -> None:
        poller = select.poll()
        poller.register(1, 0)  # POLLERR / POLLHUP are always reported
        while not self.stopping:
            try:
                events = poller.poll(500)
            except OSError:
                return
            if any(ev & (select.POLLERR | select.POLLHUP) for _, ev in events):
                self.lost_stdout()
                return
            if any(ev & select.POLLNVAL for _, ev in events):
                return


def detach_stdout() -> None:
    """Point fd 1 (and fd 2 when it is the same pipe) at /dev/null, so neither the next
    print nor the interpreter's final flush fails on a pipe nobody reads."""
    try:
        out = os.fstat(1)
    except OSError:
        out = None
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        with contextlib.suppress(OSError):
            err = os.fstat(2)
            if out is not None and (err.st_dev, err.st_ino) == (out.st_dev, out.st_ino):
                os.dup2(devnull, 2)
        os.dup2(devnull, 1)
    finally:
        os.close(devnull)
    with contextlib.suppress(Exception):
        sys.stdout.flush()


@contextlib.contextmanager
def stop_requests() -> Iterator[Stopper]:
    """SIGINT, SIGTERM and SIGHUP request a stop for the duration of the block."""
    stopper = Stopper()
    previous = {s: signal.signal(s, stopper._on_signal) for s in SIGNALS}
    try:
        yield stopper
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def make_server(app: Any, closing: threading.Event, **config: Any) -> Any:
    """A ``uvicorn.Server`` for ``app`` that sets ``closing`` the moment it is asked to exit
    (by this module's stopper or by uvicorn's own signal handling), so the app's long-lived
    responses end and the graceful shutdown is quick."""
    import uvicorn

    class _Server(uvicorn.Server):
        _exit = False

        @property  # type: ignore[override]
        def should_exit(self) -> bool:
            return self._exit

        @should_exit.setter
        def should_exit(self, value: bool) -> None:
            self._exit = value
            if value:
                closing.set()

    # forwarded headers are the app's to believe (serve's trusted_proxies), not uvicorn's
    # (which by default believes any process on 127.0.0.1)
    config.setdefault("proxy_headers", False)
    return _Server(uvicorn.Config(app, **config))
