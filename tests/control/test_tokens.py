from __future__ import annotations

import pytest

from gpuwarden.errors import GpuwardenError
from gpuwarden.state.db import StateDB
from gpuwarden.state.tokens import TokenStore, role_at_least


def test_tokens_are_stored_hashed_and_roles_ordered(tmp_path):
    db = StateDB(tmp_path / "state.db")
    tokens = TokenStore(db)
    admin = tokens.ensure_admin()
    assert admin is not None and tokens.ensure_admin() is None  # only the first time
    viewer = tokens.create("viewer", "ci")
    assert tokens.authenticate(viewer).role == "viewer"
    assert tokens.authenticate(admin).role == "admin"
    assert tokens.authenticate(viewer + "x") is None
    assert tokens.authenticate("not-a-token") is None
    db.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert viewer.encode() not in raw and admin.encode() not in raw
    assert role_at_least("admin", "operator") and not role_at_least("viewer", "operator")


def test_revoke(tmp_path):
    tokens = TokenStore(StateDB(tmp_path / "state.db"))
    token = tokens.create("operator")
    [info] = tokens.list()
    assert tokens.revoke(info.id) and not tokens.revoke(info.id)
    assert tokens.authenticate(token) is None
    with pytest.raises(GpuwardenError, match="--role 'root'"):
        tokens.create("root")
