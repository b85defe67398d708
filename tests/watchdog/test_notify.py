"""Notifications through real Apprise to a real local HTTP receiver (json://)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gpuwarden.state.db import StateDB
from gpuwarden.watchdog.alerts import AlertBook
from gpuwarden.watchdog.evaluators import EVALUATORS
from gpuwarden.watchdog.notify import Notifier
from gpuwarden.watchdog.rules import load_rules
from tests.watchdog.test_alerts import gpu, view


class Receiver:
    def __init__(self, fail_first: int = 0) -> None:
        self.received: list[dict] = []
        self.attempts = 0
        self.fail_first = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.attempts += 1
                if outer.attempts <= outer.fail_first:
                    self.send_response(500)
                else:
                    outer.received.append(json.loads(body))
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def drive(book, rule_ids, v, notifier):
    rules = {r.id: r for r in load_rules({rid: {"for": "0s"} for rid in rule_ids})}
    results = [(rules[rid], EVALUATORS[rules[rid].kind](v, rules[rid],
                                                         book.open_subjects(rid)))
               for rid in rule_ids]
    transitions = book.apply(results, v.now)
    notifier.enqueue(transitions, v.now)
    notifier.deliver(v.now)
    return transitions


def test_one_message_per_cycle_exactly_once_per_transition(tmp_path, receiver):
    db = StateDB(tmp_path / "state.db")
    book, notifier = AlertBook(db), Notifier(db, [receiver.url])
    drive(book, ["gpu_idle", "thermal_throttle"],
          view([gpu(index=0, util=0), gpu(index=1, events={"hw_slowdown": True})], now=100),
          notifier)
    assert len(receiver.received) == 1  # two transitions, one grouped message
    first = receiver.received[0]
    assert "2 firing" in first["title"]
    assert "GPU 0 on n1" in first["message"] and "throttling" in first["message"]
    # nothing changes: nothing is sent
    drive(book, ["gpu_idle", "thermal_throttle"],
          view([gpu(index=0, util=0), gpu(index=1, events={"hw_slowdown": True})], now=115),
          notifier)
    assert len(receiver.received) == 1
    drive(book, ["gpu_idle", "thermal_throttle"],
          view([gpu(index=0, util=90), gpu(index=1, events={"hw_slowdown": True})], now=130),
          notifier)
    assert len(receiver.received) == 2 and "1 resolved" in receiver.received[1]["title"]
    assert notifier.stats.failures == 0


def test_failed_delivery_is_retried_until_it_arrives(tmp_path):
    receiver = Receiver(fail_first=2)
    try:
        db = StateDB(tmp_path / "state.db")
        book, notifier = AlertBook(db), Notifier(db, [receiver.url])
        drive(book, ["gpu_idle"], view([gpu(util=0)], now=0), notifier)
        assert receiver.received == [] and notifier.stats.failures == 1
        notifier.deliver(1.0)   # backoff (2 s) not over: no attempt
        assert receiver.attempts == 1
        notifier.deliver(2.5)   # second attempt fails too
        notifier.deliver(7.0)   # backoff 4 s over: third attempt arrives
        assert len(receiver.received) == 1 and notifier.stats.failures == 2
        assert "1 firing" in receiver.received[0]["title"]
        notifier.deliver(60.0)
        assert len(receiver.received) == 1  # exactly once
        row = db.connect().execute("SELECT status, attempts FROM notifications").fetchone()
        assert tuple(row) == ("sent", 3)
    finally:
        receiver.close()


def test_silenced_alerts_are_recorded_but_not_sent(tmp_path, receiver):
    db = StateDB(tmp_path / "state.db")
    book, notifier = AlertBook(db), Notifier(db, [receiver.url])
    book.silence(author="ops", duration=3600, rule="gpu_idle")
    [t] = drive(book, ["gpu_idle"], view([gpu(util=0)], now=0), notifier)
    assert t.alert.silenced and book.list()[0].state == "firing"
    assert receiver.received == []


def test_rate_limit_delays_but_never_drops(tmp_path, receiver):
    db = StateDB(tmp_path / "state.db")
    book = AlertBook(db)
    notifier = Notifier(db, [receiver.url], rate_limit_per_minute=2)
    for i in range(4):  # four cycles, each with a transition
        drive(book, ["gpu_idle"], view([gpu(util=0 if i % 2 == 0 else 90)], now=i * 10.0),
              notifier)
    assert len(receiver.received) == 2
    notifier.deliver(100.0)
    assert len(receiver.received) == 4


def test_target_urls_never_stored(tmp_path, receiver):
    db = StateDB(tmp_path / "state.db")
    secret_url = receiver.url + "?token=s3cr3t"
    drive(AlertBook(db), ["gpu_idle"], view([gpu(util=0)], now=0), Notifier(db, [secret_url]))
    db.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"s3cr3t" not in raw


def test_an_owner_gets_their_message_and_the_url_is_never_stored(tmp_path):
    from gpuwarden.config import OwnersConfig

    alice, admins = Receiver(), Receiver()
    try:
        owners = OwnersConfig(notify="json://127.0.0.1:9/nobody-{user}",
                              users={"alice": alice.url + "?token=0wn3r"})
        db = StateDB(tmp_path / "state.db")
        n = Notifier(db, [admins.url], owners=owners.url_for)
        assert n.message("job 7 ended", "report", "info", 0.0, users=["alice", "alice"]) == 2
        assert n.message("to alice only", "x", "info", 1.0, users=["alice"], admins=False) == 1
        assert n.message("nobody", "x", "info", 1.0, users=["bad/../user"], admins=False) == 0
        assert n.deliver(2.0) == 3
        assert [m["title"] for m in alice.received] == ["job 7 ended", "to alice only"]
        assert [m["title"] for m in admins.received] == ["job 7 ended"]
        db.close()
        raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
        assert b"0wn3r" not in raw and b"owner:alice" in raw
    finally:
        alice.close()
        admins.close()


def test_the_owner_template_names_the_user_and_refuses_other_placeholders():
    from pydantic import ValidationError

    from gpuwarden.config import OwnersConfig

    o = OwnersConfig(notify="mailto://{user}@example.org", users={"bob": "ntfy://bob"})
    assert o.url_for("carol") == "mailto://carol@example.org"
    assert o.url_for("bob") == "ntfy://bob"
    assert o.url_for("x@y/../z") is None and o.url_for("") is None
    with pytest.raises(ValidationError, match=r"only the placeholder \{user\}"):
        OwnersConfig(notify="mailto://{name}@example.org")
