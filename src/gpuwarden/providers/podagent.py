"""The pod agent: what a pod's bootstrap runs on the node port before ``gpuwarden node`` can.

Standard library only, so it runs before gpuwarden is installed (or when installing it
failed): :func:`gpuwarden.providers.bootstrap.render_script` writes this file out of the
generated script and runs it with the pod's ``python3``.  Two modes:

* ``receive``: wait for the cluster's secrets (node token, munge key).  ``gpuwarden up``
  delivers them once per boot with ``POST /bootstrap/secrets`` and ``Authorization: Bearer
  <enrollment key>``; the pod knows only the key's SHA-256 (``--sha256``, from the pod's
  environment), so reading the pod's environment through the RunPod API reveals no secret
  and lets no one else deliver.  The files are written 0600, the agent answers 204 and
  exits, and the bootstrap goes on.  ``GET /healthz`` answers 503 ``{"status":
  "bootstrap", "step": "waiting for secrets"}`` meanwhile.
* ``failed``: the bootstrap stopped; ``GET /healthz`` answers 503 ``{"status":
  "bootstrap-failed", "step": ..., "log": ...}`` with the failed step and the tail of the
  bootstrap's log (what ``pip`` or ``apt-get`` printed) until the pod is stopped, so
  ``gpuwarden up`` and ``gpuwarden status`` can say why.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import os
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

WAITING = "bootstrap"           # /healthz "status" while the pod waits for its secrets
FAILED = "bootstrap-failed"     # /healthz "status" once the bootstrap stopped
WAITING_STEP = "waiting for secrets"
SECRETS_PATH = "/bootstrap/secrets"
MAX_BODY = 16 * 1024
LOG_TAIL_LINES = 40
LOG_TAIL_CHARS = 4000
MUNGE_KEY_BYTES = (32, 4096)    # munged refuses a shorter key


def log_tail(path: Path, lines: int = LOG_TAIL_LINES, chars: int = LOG_TAIL_CHARS) -> str:
    """The last ``lines`` lines (at most ``chars`` characters) of the bootstrap's log."""
    try:
        data = path.read_bytes()[-chars * 4:]
    except OSError as exc:
        return f"(no log: {exc.strerror})"
    text = "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])
    return text[-chars:]


def _write_private(path: Path, data: bytes) -> None:
    """Write ``path`` 0600, owned by this user: a new file renamed over the old one, so a
    file the image shipped (Debian's munge package makes a munge.key owned by munge) keeps
    neither its owner nor its mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_secrets(doc: object) -> tuple[str, bytes]:
    """The node token and munge key of a delivery, or ValueError naming the field."""
    if not isinstance(doc, dict):
        raise ValueError("the body must be a JSON object with node_token and munge_key_b64")
    token = doc.get("node_token")
    if not isinstance(token, str) or not token or not token.isprintable() or " " in token:
        raise ValueError("node_token: a non-empty printable string without spaces")
    try:
        key = base64.b64decode(str(doc.get("munge_key_b64", "")), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("munge_key_b64: not base64") from None
    if not MUNGE_KEY_BYTES[0] <= len(key) <= MUNGE_KEY_BYTES[1]:
        raise ValueError(f"munge_key_b64: the key must be {MUNGE_KEY_BYTES[0]} to "
                         f"{MUNGE_KEY_BYTES[1]} bytes, not {len(key)}")
    return token, key


class _Handler(BaseHTTPRequestHandler):
    server: _AgentServer

    def log_message(self, format: str, *args: object) -> None:  # no secrets, no noise
        pass

    def _json(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/healthz":
            self._json(404, {"detail": "the node is bootstrapping; only /healthz answers"})
            return
        self._json(503, self.server.health())

    def do_POST(self) -> None:
        agent = self.server
        if self.path != SECRETS_PATH or agent.mode != "receive":
            self._json(404, {"detail": f"POST {self.path}: nothing to receive here"})
            return
        given = self.headers.get("Authorization", "")
        digest = hashlib.sha256(given.removeprefix("Bearer ").encode()).hexdigest()
        if not given.startswith("Bearer ") or not hmac.compare_digest(digest, agent.sha256):
            self._json(401, {"detail": "not the cluster's enrollment key"})
            return
        raw_length = self.headers.get("Content-Length") or "0"
        length = int(raw_length) if raw_length.isdigit() else 0
        if not 0 < length <= MAX_BODY:
            self._json(413, {"detail": f"the body must be 1 to {MAX_BODY} bytes"})
            return
        try:
            token, key = check_secrets(json.loads(self.rfile.read(length)))
        except ValueError as exc:  # json.JSONDecodeError is one
            self._json(400, {"detail": str(exc)})
            return
        with agent.lock:
            if agent.delivered:
                self._json(409, {"detail": "the secrets were delivered already"})
                return
            _write_private(agent.token_file, (token + "\n").encode())
            _write_private(agent.munge_key_file, key)
            agent.delivered = True
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.wfile.flush()
        agent.received.set()  # only now: main() then stops the server


class _AgentServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], args: argparse.Namespace) -> None:
        super().__init__(address, _Handler)
        self.mode: str = args.mode
        self.version: str = args.version
        self.sha256 = getattr(args, "sha256", "") or ""
        self.token_file = Path(getattr(args, "token_file", "") or ".")
        self.munge_key_file = Path(getattr(args, "munge_key_file", "") or ".")
        self.step: str = getattr(args, "step", "") or ""
        self.log = Path(getattr(args, "log", "") or ".")
        self.lock = threading.Lock()
        self.delivered = False
        self.received = threading.Event()

    def health(self) -> dict[str, object]:
        if self.mode == "receive":
            return {"status": WAITING, "step": WAITING_STEP, "version": self.version}
        return {"status": FAILED, "step": self.step, "log": log_tail(self.log),
                "version": self.version}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpuwarden-podagent")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--version", default="")
    sub = parser.add_subparsers(dest="mode", required=True)
    receive = sub.add_parser("receive", help="wait for the cluster's secrets, write them")
    receive.add_argument("--sha256", required=True, help="SHA-256 of the enrollment key")
    receive.add_argument("--token-file", required=True)
    receive.add_argument("--munge-key-file", required=True)
    receive.add_argument("--timeout", type=float, default=1800.0)
    failed = sub.add_parser("failed", help="report a failed bootstrap on /healthz")
    failed.add_argument("--step", required=True)
    failed.add_argument("--log", required=True)
    args = parser.parse_args(argv)
    server = _AgentServer((args.host, args.port), args)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        if args.mode == "failed":
            thread.join()
            return 1
        if not server.received.wait(args.timeout):
            print(f"gpuwarden-podagent: no secrets delivered within {args.timeout:.0f} s "
                  "(`gpuwarden up` delivers them; run it again)", file=sys.stderr)
            return 1
        return 0
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    raise SystemExit(main())
