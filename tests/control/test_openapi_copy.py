"""The web UI's typed client is generated from web/openapi.json: that copy must be the
control plane's own document, or an API change reaches users before it breaks the UI's
build.  Refresh it with `cd web && npm run refresh:api`."""

from __future__ import annotations

import json

from gpuwarden.api.app import create_app
from tests.conftest import ROOT


def test_web_openapi_json_is_the_apps_document() -> None:
    app = create_app(None, run_scraper=False)  # type: ignore[arg-type]  # openapi() reads no cp
    copy = json.loads((ROOT / "web" / "openapi.json").read_text())
    assert copy == json.loads(json.dumps(app.openapi())), (
        "web/openapi.json is stale: run `cd web && npm run refresh:api` and commit it "
        "with web/src/api/schema.d.ts")
