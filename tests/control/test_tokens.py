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


# -- the bearer-token rules the node daemon, the control plane and the CLI share ------------

LONG = "0123456789abcdef0123"


def test_generated_tokens_carry_at_least_128_bits(tmp_path):
    from gpuwarden.providers.secrets import ensure_token

    node = ensure_token(tmp_path / "node.token")
    assert len(node) == 64 and int(node, 16) >= 0  # 256 bits, hex
    assert ensure_token(tmp_path / "node.token") == node  # created once, then read
    assert oct((tmp_path / "node.token").stat().st_mode & 0o777) == "0o600"
    api = TokenStore(StateDB(tmp_path / "state.db")).create("viewer")
    assert api.startswith("gw_") and len(api) - 3 >= 43  # token_urlsafe(32): 256 bits


@pytest.mark.parametrize(("token", "expected"), [
    ("", "the token is empty"),
    ("short-token", "the token is 11 characters, shorter than the 16"),
    ("  fifteen-chars!!  \n", "15 characters"),
])
def test_a_short_node_token_is_refused_with_how_to_make_one(tmp_path, token, expected):
    from gpuwarden.node.daemon import TOKEN_ENV, resolve_token
    from gpuwarden.providers.secrets import ensure_token

    path = tmp_path / "token"
    path.write_text(token)
    path.chmod(0o600)
    with pytest.raises(GpuwardenError) as exc:
        resolve_token(path, False, "127.0.0.1")
    assert str(exc.value).startswith(f"--token-file {path}: ") and expected in str(exc.value)
    assert "openssl rand -hex 32" in str(exc.value)
    with pytest.raises(GpuwardenError, match=f"node token file {path}: .*openssl rand"):
        ensure_token(path)  # a provider's token file someone shortened
    if token:
        mp = pytest.MonkeyPatch()
        mp.setenv(TOKEN_ENV, token)
        try:
            with pytest.raises(GpuwardenError, match=f"^{TOKEN_ENV}: .*{expected}"):
                resolve_token(None, False, "127.0.0.1")
        finally:
            mp.undo()


def test_a_long_enough_node_token_is_accepted(tmp_path, monkeypatch):
    from gpuwarden.node.daemon import TOKEN_ENV, resolve_token

    path = tmp_path / "token"
    path.write_text(LONG[:16] + "\n")
    path.chmod(0o600)
    assert resolve_token(path, False, "0.0.0.0") == LONG[:16]
    monkeypatch.setenv(TOKEN_ENV, f"  {LONG}  ")
    assert resolve_token(None, False, "0.0.0.0") == LONG
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe" * 20)
    with pytest.raises(GpuwardenError, match="not a text file"):
        resolve_token(binary, False, "0.0.0.0")


def test_the_bearer_scheme_is_case_insensitive_on_the_node():
    from starlette.testclient import TestClient

    from gpuwarden.gpu.sim import SimSource
    from gpuwarden.node.app import create_app
    from gpuwarden.node.poller import GpuPoller

    poller = GpuPoller(SimSource(1, "h100", {}, seed=1), hostname="n1", interval=5)
    poller.poll_once()
    client = TestClient(create_app(poller.latest, token=LONG))
    for header in (f"Bearer {LONG}", f"bearer {LONG}", f"BEARER  {LONG} "):
        assert client.get("/metrics", headers={"Authorization": header}).status_code == 200
    for header in (LONG, f"Basic {LONG}", "Bearer", "Bearer ", f"Bearer {LONG}x"):
        assert client.get("/metrics", headers={"Authorization": header}).status_code == 401
