"""`schemathesis run --checks all` against a live `serve`: the published OpenAPI document is
true (every status, content type, header and schema a route answers with is documented,
every schema-valid request is accepted, every schema-violating one refused) and no input
gets a server error."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import start_daemon, start_serve, stop

pytestmark = pytest.mark.slow
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
BUDGET_S = 60  # the run takes about 20 s; a hung one fails instead of holding `make test`


@pytest.fixture(scope="module")
def serve(tmp_path_factory, request):
    node = start_daemon(["--gpu-backend", "sim", "--sim-gpus", "2", "--no-auth",
                         "--sim-profile", "0=train", "--interval", "1", "--hostname", "s1"])
    request.addfinalizer(node.proc.terminate)
    home = tmp_path_factory.mktemp("home")
    config = home / "gpuwarden.yaml"
    config.write_text(yaml.safe_dump({
        "cluster": "schemathesis", "scrape": {"interval": 1, "timeout": 1.0},
        "nodes": [{"name": "s1", "url": node.url, "cost_per_hour": 3}]}))
    s = start_serve(config, home)
    request.addfinalizer(lambda: stop(s.proc))
    s.wait(lambda: s.get("/api/v1/gpus").json(), what="the node's GPUs scraped")
    return s


def test_the_openapi_document_is_true(serve):
    """Examples, coverage (boundaries, every status and method), fuzzing and stateful
    phases, each check schemathesis has; a handful of examples per operation keeps it
    bounded.  ``--workers 1``: Python 3.11's ``ast`` is not thread-safe, and Hypothesis
    parses lambdas to describe strategies (``AST constructor recursion depth mismatch``)."""
    run = subprocess.run(
        [str(SCHEMATHESIS), "--no-color", "run", f"{serve.url}/api/v1/openapi.json",
         "--checks", "all", "--generation-database", "none",
         "--header", f"Authorization: Bearer {serve.admin}",
         "--exclude-path", "/api/v1/stream",  # an endless event stream
         "--max-examples", "5", "--workers", "1", "--continue-on-failure",
         "--suppress-health-check", "all",
         # a failing run's seed replays it: GPUWARDEN_SCHEMATHESIS_SEED=<seed> pytest ...
         *(["--seed", os.environ["GPUWARDEN_SCHEMATHESIS_SEED"]]
           if os.environ.get("GPUWARDEN_SCHEMATHESIS_SEED") else [])],
        capture_output=True, text=True, timeout=BUDGET_S)
    out = run.stdout + run.stderr
    summary = out[out.rfind("SUMMARY"):]
    assert run.returncode == 0, out[-12_000:]
    tested = re.search(r"Tested: (\d+)", summary)
    assert tested and int(tested.group(1)) >= 40, summary
    assert re.search(r"\d+ generated, \d+ passed", summary), summary
    assert "Runtime Error" not in out and "errors" not in summary.splitlines()[-1], summary


def test_what_the_document_cannot_say_is_accepted_or_refused_as_it_says(serve):
    """Relations between parameters, which no schema states: a window whose end comes
    before its start, a step too fine for 11,000 points; and an admin revoking the token
    the request is made with (409, the token still works)."""
    selector = 'DCGM_FI_DEV_GPU_UTIL{node="s1"}'
    backwards = serve.get("/api/v1/query", params={"selector": selector, "start": 2000,
                                                  "end": 1000})
    assert backwards.status_code == 200 and backwards.json()["end"] == 2000, backwards.text
    fine = serve.get("/api/v1/query", params={"selector": selector, "start": 0,
                                             "end": 86_400, "step": 1e-9}).json()
    assert 86_400 / fine["step"] <= 11_000 and fine["step"] == 7.856, fine["step"]
    history = serve.get("/api/v1/gpus/s1/0/history", params={"start": 0, "end": 1e9,
                                                             "step": 1})
    assert history.status_code == 200 and history.json()["step"] > 1e9 / 11_000, history.text
    me = serve.get("/api/v1/tokens").json()
    own = next(t["id"] for t in me if t["prefix"] == serve.admin[:7] and not t["revoked"])
    refused = httpx.delete(f"{serve.url}/api/v1/tokens/{own}", timeout=10,
                           headers={"Authorization": f"Bearer {serve.admin}"})
    assert refused.status_code == 409 and "another admin token" in refused.json()["detail"]
    assert serve.get("/api/v1/me").status_code == 200
    not_allowed = httpx.get(f"{serve.url}/api/v1/logout", timeout=10)
    assert not_allowed.status_code == 405 and not_allowed.headers["allow"] == "POST"
