"""Every error the API gives is an RFC 9457 problem document, a bug's 500 included (never
Starlette's bare "Internal Server Error" text)."""

from __future__ import annotations

import sqlite3

from fastapi.testclient import TestClient

from gpuwarden.api.app import create_app
from gpuwarden.config import ServeConfig
from gpuwarden.services.context import ControlPlane
from gpuwarden.state.db import StateDB


def test_a_bug_is_a_problem_document_too(tmp_path, caplog):
    cp = ControlPlane(config=ServeConfig(), db=StateDB(tmp_path / "state.db"),
                      store=None)  # type: ignore[arg-type]  # these routes read no store
    app = create_app(cp, run_scraper=False)

    def boom() -> None:
        raise RuntimeError("a bug")

    def locked() -> None:
        raise sqlite3.OperationalError("database is locked")

    app.add_api_route("/api/v1/boom", boom, methods=["POST"])
    app.add_api_route("/api/v1/locked", locked, methods=["POST"])
    client = TestClient(app, raise_server_exceptions=False)
    for path, name in (("/api/v1/boom", "RuntimeError"), ("/api/v1/locked", "OperationalError")):
        r = client.post(path)
        assert r.status_code == 500, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json() == {"type": "about:blank", "title": "Internal Server Error",
                            "status": 500, "detail": f"internal error ({name}); the "
                            "server's log has the details"}
        # the browser-facing headers too (Starlette sends a bug's 500 from outside the
        # app's own middleware)
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert "database is locked" in caplog.text  # the one Starlette does not log itself
